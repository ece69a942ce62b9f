package clustertest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/fila-dev/filad/client"
	"github.com/fila-dev/filad/cluster"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/telemetry/telemetrytest"
)

// roles waits until every group, as its leader among clients' nodes sees
// it, holds cond of its voters and learners.
func roles(t *testing.T, clients []*client.Client, what string, cond func(group uint64, voters, learners []uint64) bool) {
	t.Helper()
	telemetrytest.Await(t, 6*OpTimeout, func() (bool, string) {
		// Each group as its leader sees it: with a replication factor below
		// the node count, a node may hold no replica of a group (any more).
		views := map[uint64]*filav1.ClusterGroupStatus{}
		groups := 0
		for _, cl := range clients {
			ctx, cancel := context.WithTimeout(context.Background(), OpTimeout)
			st, err := cl.Admin().GetClusterStatus(ctx, &filav1.GetClusterStatusRequest{})
			cancel()
			if err != nil {
				continue // a node down
			}
			groups = len(st.GetGroups())
			for _, g := range st.GetGroups() {
				if g.GetLeaderNodeId() == st.GetNodeId() {
					views[g.GetGroupId()] = g
				}
			}
		}
		if groups == 0 {
			return false, what + ": no node answers GetClusterStatus"
		}
		for id := range uint64(groups) {
			g := views[id]
			if g == nil {
				return false, fmt.Sprintf("%s: no leader of group %d answers", what, id)
			}
			if !cond(id, g.GetVoterIds(), g.GetLearnerIds()) {
				return false, fmt.Sprintf("%s: group %d has voters %v, learners %v", what, id, g.GetVoterIds(), g.GetLearnerIds())
			}
		}
		return true, ""
	})
}

// TestRealRunReplacesADeadNode is the documented replacement under the
// checker's workload (docs/cluster.md, "Replacing a dead node"): three
// nodes; one is killed with SIGKILL and stays dead; a fourth joins
// (cluster.join) and becomes a voter of the groups it ranks in; the dead
// one is removed (RemoveNode) and leaves every group for the fourth, and restarted on its old
// data disrupts nothing; then another node is killed, and the two left
// of the three members serve: nothing
// acknowledged is lost, nothing resurrected (the checker, at the drain).
func TestRealRunReplacesADeadNode(t *testing.T) {
	c := Start(t, Options{Nodes: 3, Env: clusterEnv()})
	dial := func(n *Node) *client.Client {
		cl, err := client.Dial(n.Addr, client.Options{DialOptions: []grpc.DialOption{FastReconnect()}})
		require.NoError(t, err)
		t.Cleanup(func() { _ = cl.Close() })
		return cl
	}
	// The workload runs through node 3, the one that stays up: its calls
	// are proxied to whichever node leads.
	survivor := dial(c.Nodes[2])
	const queue = "checker"
	ctx, cancel := context.WithTimeout(context.Background(), OpTimeout)
	require.NoError(t, survivor.CreateQueue(ctx, queue, client.QueueConfig{VisibilityTimeoutMS: 1000}))
	cancel()

	h := NewHistory()
	produceCtx, stopProducers := context.WithCancel(context.Background())
	consumeCtx, stopConsumers := context.WithCancel(context.Background())
	defer stopProducers()
	defer stopConsumers()
	backlog := func(ctx context.Context) {
		for ctx.Err() == nil && h.Count(Enqueue, OK)-h.Count(Ack, OK) > 64 {
			pause(ctx)
		}
	}
	var producers, consumers sync.WaitGroup
	for w := range 2 {
		producers.Go(func() { Produce(produceCtx, survivor, h, queue, w, fmt.Sprintf("p%d", w), 100_000, backlog) })
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(w)))
		consumers.Go(func() { Consume(consumeCtx, survivor, h, queue, 10+w, rng, 0.9) })
	}
	enqueued := func(n int) {
		t.Helper()
		telemetrytest.Await(t, 6*OpTimeout, func() (bool, string) {
			return h.Count(Enqueue, OK) >= n, fmt.Sprintf("only %d enqueues acknowledged, want %d", h.Count(Enqueue, OK), n)
		})
	}
	enqueued(50)

	dead := c.Nodes[0]
	dead.Kill()
	t.Logf("node 1 killed at %d acknowledged enqueues", h.Count(Enqueue, OK))
	enqueued(h.Count(Enqueue, OK) + 50)

	joined, err := c.Add(t, func(n *Node) []string {
		return []string{
			"FILA_CLUSTER__ENABLED=true", "FILA_CLUSTER__NODE_ID=4",
			"FILA_CLUSTER__INTERNAL_LISTEN_ADDR=" + n.InternalAddr,
			"FILA_CLUSTER__JOIN=" + c.Nodes[1].InternalAddr + "," + c.Nodes[2].InternalAddr,
			"FILA_CLUSTER__PARTITIONS=4",
		}
	})
	require.NoError(t, err)
	// At the default replication factor, 3 of the 4 members: node 4 joins
	// the groups it ranks in (the others wait for node 1's removal), and
	// no live node leaves for it while node 1, wanted, is down.
	roles(t, []*client.Client{dial(c.Nodes[1]), survivor, dial(joined)}, "node 4 a voter where it ranks, nodes 2 and 3 kept", func(g uint64, voters, learners []uint64) bool {
		wanted := slices.Contains(cluster.ReplicasOf(g, []uint64{1, 2, 3, 4}, 3), 4)
		return slices.Contains(voters, 4) == wanted && len(learners) == 0 && slices.Contains(voters, 2) && slices.Contains(voters, 3)
	})
	enqueued(h.Count(Enqueue, OK) + 50)

	ctx, cancel = context.WithTimeout(context.Background(), OpTimeout)
	_, err = survivor.Admin().RemoveNode(ctx, &filav1.RemoveNodeRequest{NodeId: 1})
	cancel()
	require.NoError(t, err)
	roles(t, []*client.Client{dial(c.Nodes[1]), survivor, dial(joined)}, "node 1 gone from every group, node 4 in", func(_ uint64, voters, learners []uint64) bool {
		return !slices.Contains(voters, 1) && !slices.Contains(learners, 1) && slices.Contains(voters, 4) && len(voters) == 3
	})
	enqueued(h.Count(Enqueue, OK) + 50)

	// The removed node comes back on its old data: it still believes it
	// is a voter and campaigns, and the others refuse its messages, so it
	// disrupts nothing (and never serves: it stays unready until killed).
	restarted := make(chan error, 1)
	go func() { restarted <- dead.Restart() }()
	t.Cleanup(func() { dead.Kill(); <-restarted })

	c.Nodes[1].Kill()
	t.Logf("node 2 killed at %d acknowledged enqueues; nodes 3 and 4 serve", h.Count(Enqueue, OK))
	enqueued(h.Count(Enqueue, OK) + 50)
	stopProducers()
	producers.Wait()
	stopConsumers()
	consumers.Wait()
	Produce(context.Background(), dial(joined), h, queue, 4, "tail", 10, nil)

	drainCtx, stopDrain := context.WithCancel(context.Background())
	defer stopDrain()
	require.NoError(t, Drain(drainCtx, survivor, h, queue, 100))
	r := Check(h.Ops())
	t.Logf("checker: %s", r)
	require.True(t, r.OK(), "%s", r)
	require.Positive(t, r.AckOK, "the workload acked nothing")
}
