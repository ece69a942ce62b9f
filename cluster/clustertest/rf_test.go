package clustertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fila-dev/filad/client"
	"github.com/fila-dev/filad/cluster"
	"github.com/fila-dev/filad/storage"
)

// A replication factor below the node count (issue 25 item 7): five nodes,
// each partition on three of them.

const rfPartitions = 4

// fiveAtRF3 is the Env of five nodes with replication factor 3.
func fiveAtRF3() func(i int, nodes []*Node) []string {
	return clusterEnv("FILA_CLUSTER__REPLICATION_FACTOR=3", fmt.Sprintf("FILA_CLUSTER__PARTITIONS=%d", rfPartitions))
}

// holders splits node indexes (0-based) into those that should hold
// queue's partition (cluster.ReplicasOf over nodes 1..n) and the others.
func holders(queue string, n int) (in, out []int) {
	var ids []uint64
	for i := range n {
		ids = append(ids, uint64(i+1))
	}
	want := cluster.ReplicasOf(cluster.GroupOf(storage.Owner{Family: queue}, rfPartitions), ids, 3)
	for i := range n {
		if slices.Contains(want, uint64(i+1)) {
			in = append(in, i)
		} else {
			out = append(out, i)
		}
	}
	return in, out
}

// roundTrip enqueues a fresh message through cl, until one is acknowledged
// (a call refused or of unknown outcome is tried again under a new id),
// then leases and acks through cl until it has that one back: every
// delivery on the way is acked. It fails the test if bound passes first.
func roundTrip(t *testing.T, cl *client.Client, queue, prefix string, bound time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	var want string
	var lastErr error
	for i := 0; want == ""; i++ {
		if ctx.Err() != nil {
			require.FailNow(t, "no enqueue was acknowledged", "through %s: %v", prefix, lastErr)
		}
		id := fmt.Sprintf("%s-%d", prefix, i)
		callCtx, done := context.WithTimeout(ctx, OpTimeout)
		_, lastErr = cl.Enqueue(callCtx, queue, nil, []byte(id))
		done()
		if lastErr == nil {
			want = id
		} else {
			pause(ctx)
		}
	}
	for ctx.Err() == nil {
		streamCtx, closeStream := context.WithCancel(ctx)
		s, err := cl.Lease(streamCtx, queue, 16)
		for err == nil {
			m, nerr := s.Next()
			if nerr != nil {
				err = nerr
				break
			}
			ackCtx, done := context.WithTimeout(ctx, OpTimeout)
			aerr := cl.Ack(ackCtx, m)
			done()
			if string(m.GetPayload()) == want && aerr == nil {
				closeStream()
				return
			}
		}
		closeStream()
		lastErr = err
		pause(ctx)
	}
	require.FailNow(t, "the message did not come back", "%s through %s: %v", want, prefix, errors.Join(lastErr, ctx.Err()))
}

// TestFiveNodesAtReplicationFactor3: each partition's voters are the three
// nodes rendezvous hashing ranks for it, as every one of them sees it, and
// the other two hold no replica of it. From every node, the two that hold
// none of the queue's partition included, a message goes the whole way
// (enqueue, lease, ack): their unary calls reach the leader through a
// member, their streams are refused naming the leader they asked a
// member for. Then the partition's leader is killed -9, and from each of
// the four left the same works again, once the survivors elected.
func TestFiveNodesAtReplicationFactor3(t *testing.T) {
	c := Start(t, Options{Nodes: 5, Env: fiveAtRF3()})
	clients := dialAll(t, c)
	ids := []uint64{1, 2, 3, 4, 5}
	for g := uint64(1); g <= rfPartitions; g++ {
		want := cluster.ReplicasOf(g, ids, 3)
		require.Eventually(t, func() bool {
			for i := range clients {
				st := statusOf(clients, i)
				if st == nil || len(st.GetGroups()) <= int(g) {
					return false
				}
				voters := slices.Sorted(slices.Values(st.GetGroups()[g].GetVoterIds()))
				holds := slices.Contains(want, uint64(i+1))
				if holds && !slices.Equal(voters, slices.Sorted(slices.Values(want))) || !holds && len(voters) > 0 {
					return false
				}
			}
			return true
		}, OpTimeout*4, 50*time.Millisecond, "partition %d: voters are not %v on every node that holds it, or a node that should not holds it", g, want)
	}

	const queue = "rf3"
	ctx, cancel := context.WithTimeout(context.Background(), OpTimeout)
	require.NoError(t, clients[0].CreateQueue(ctx, queue, client.QueueConfig{VisibilityTimeoutMS: 1000}))
	cancel()
	in, out := holders(queue, len(c.Nodes))
	require.Len(t, in, 3)
	require.Len(t, out, 2)
	for i := range clients {
		roundTrip(t, clients[i], queue, fmt.Sprintf("node%d", i+1), OpTimeout*6)
	}

	leader, ok := leaderOf(context.Background(), clients, queue)
	require.True(t, ok, "no node names the queue's leader")
	require.Contains(t, in, leader, "the leader holds no replica of the partition")
	c.Nodes[leader].Kill()
	for i := range clients {
		if i != leader {
			roundTrip(t, clients[i], queue, fmt.Sprintf("after-node%d", i+1), OpTimeout*12)
		}
	}
}

// TestRealRunOfFiveNodesAtReplicationFactor3 is the checker's run against
// five nodes at replication factor 3 under kills, pauses and isolations:
// a producer and a consumer on each node, so two of them reach the
// queue's partition only through its members.
func TestRealRunOfFiveNodesAtReplicationFactor3(t *testing.T) {
	r := runWorkload(t, Options{Nodes: 5, Env: fiveAtRF3()}).report
	require.True(t, r.OK(), "%s", r)
	require.Positive(t, r.EnqueueOK, "the workload enqueued nothing")
	require.Positive(t, r.AckOK, "the workload acked nothing")
}
