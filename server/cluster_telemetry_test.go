package server_test

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/config"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/server"
	"github.com/fila-dev/filad/telemetry"
	"github.com/fila-dev/filad/telemetry/telemetrytest"
)

// Issue 24, telemetry across nodes: in a three-node cluster each node
// reports the partitions it leads (summing to the partitions), a queue's
// gauges come from its leader only and leave a node that loses the
// lead, the raft instruments record, and the admin API names the leader,
// the replicas and the members.
func TestClusterTelemetryAndReplicationFields(t *testing.T) {
	const partitions = 4 // threeNodes' cluster.partitions
	hs := make([]*telemetrytest.Harness, 3)
	faults := make([]string, 3)
	tr := startTrio(t, trioOptions{
		cfg: func(i int, cfg *config.Config) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			faults[i] = l.Addr().String()
			require.NoError(t, l.Close()) // free for the node; a test-only race for the port
			cfg.Cluster.FaultControlAddr = faults[i]
		},
		opts: func(i int) server.Options {
			hs[i] = telemetrytest.New(t)
			return server.Options{TracerProvider: hs[i].TracerProvider, MeterProvider: hs[i].MeterProvider}
		},
	})
	addrs := tr.addrs
	ctx := clusterCtx(t)
	untilServed(t, tr, -1, func(conn *grpc.ClientConn, md *metadata.MD) error {
		_, err := filav1.NewFilaAdminClient(conn).CreateQueue(ctx, &filav1.CreateQueueRequest{Name: "tele"}, grpc.Trailer(md))
		if status.Code(err) == codes.AlreadyExists {
			return nil
		}
		return err
	})
	for i := range 3 {
		untilServed(t, tr, -1, func(conn *grpc.ClientConn, md *metadata.MD) error {
			_, err := filav1.NewFilaServiceClient(conn).Enqueue(ctx, &filav1.EnqueueRequest{Queue: "tele", Payload: []byte(fmt.Sprint("m", i))}, grpc.Trailer(md))
			if status.Code(err) == codes.NotFound {
				return status.Error(codes.Unavailable, "not applied here yet")
			}
			return err
		})
	}

	depth := attribute.String(telemetry.AttrQueueID, "tele")
	// servedBy waits until exactly one node (not skip) reports the queue's
	// depth, at 3, and the others none: the queue's leader. Leadership may
	// move on a busy machine meanwhile; the answer is the state it settled in.
	servedBy := func(skip int) int {
		t.Helper()
		deadline := time.Now().Add(waitFor)
		for {
			var with []int
			var seen []string
			for i, h := range hs {
				if v, ok := h.Value(t, telemetry.MetricQueueDepth, depth); ok {
					with = append(with, i)
					seen = append(seen, fmt.Sprintf("node %d: %d", i+1, v))
					if v != 3 {
						with = append(with, -1) // not settled
					}
				}
			}
			if len(with) == 1 && with[0] != skip {
				return with[0]
			}
			if time.Now().After(deadline) {
				t.Fatalf("queue depth reported by %v, want exactly one node (not %d)", seen, skip+1)
			}
			time.Sleep(10 * time.Millisecond) // polls the nodes' readers
		}
	}
	leader := servedBy(-1)

	// Partitions led sum to the partitions, each counted by one node.
	eventuallyTrue(t, func() (bool, string) {
		sum, each := int64(0), []int64{}
		for _, h := range hs {
			v, ok := h.Value(t, telemetry.RaftPartitionsLed.Name)
			if !ok {
				return false, "a node reports no fila.raft.partitions_led"
			}
			sum += v
			each = append(each, v)
		}
		return sum == partitions, fmt.Sprintf("partitions led %v, want a sum of %d", each, partitions)
	})
	for i, h := range hs {
		require.Positive(t, h.HistogramCount(t, telemetry.RaftEntriesPerAppend.Name), "node %d appended entries", i+1)
		n, ok := h.Value(t, telemetry.RaftLeaderChanges.Name)
		require.True(t, ok && n >= 1, "node %d learnt a leader: %d", i+1, n)
		_, ok = h.Value(t, telemetry.RaftApplyLag.Name, attribute.Int64(telemetry.AttrGroup, 0))
		require.True(t, ok, "node %d reports the meta group's apply lag", i+1)
	}
	require.Positive(t, hs[leader].HistogramCount(t, telemetry.RaftCommitDuration.Name), "the leader timed its commits")

	// The raft commit's span is a child of the queue's storage commit, in
	// the enqueue's trace, and says nothing of the payload.
	var commits []sdktrace.ReadOnlySpan
	for _, h := range hs {
		commits = append(commits, h.Spans(telemetry.SpanCommit)...)
	}
	raft := hs[leader].FindSpan(t, telemetry.SpanRaftCommit, func(s sdktrace.ReadOnlySpan) bool {
		return slices.ContainsFunc(commits, func(c sdktrace.ReadOnlySpan) bool { return c.SpanContext().SpanID() == s.Parent().SpanID() })
	})
	var keys []string
	for _, a := range raft.Attributes() {
		keys = append(keys, string(a.Key))
	}
	require.ElementsMatch(t, []string{telemetry.AttrRaftGroup, "fila.raft.batch.ops"}, keys)

	// The admin API: the leader's id, three replicas, three members, on
	// every node (a follower names where the queue lives).
	eventuallyTrue(t, func() (bool, string) {
		var got []string
		for i, a := range addrs {
			resp, err := filav1.NewFilaAdminClient(dialAddr(t, a)).ListQueues(ctx, &filav1.ListQueuesRequest{})
			if err != nil {
				return false, err.Error()
			}
			if resp.GetClusterNodeCount() != 3 {
				return false, fmt.Sprintf("node %d: cluster_node_count %d", i+1, resp.GetClusterNodeCount())
			}
			for _, q := range resp.GetQueues() {
				got = append(got, fmt.Sprintf("%s@%d", q.GetName(), q.GetLeaderNodeId()))
			}
		}
		want := []string{}
		for range addrs {
			want = append(want, fmt.Sprintf("tele@%d", leader+1), fmt.Sprintf("tele.dlq@%d", leader+1))
		}
		slices.Sort(got)
		slices.Sort(want)
		return slices.Equal(got, want), fmt.Sprintf("ListQueues %v, want %v", got, want)
	})
	eventuallyTrue(t, func() (bool, string) {
		st, err := filav1.NewFilaAdminClient(dialAddr(t, addrs[leader])).GetStats(ctx, &filav1.GetStatsRequest{Queue: "tele"})
		if err != nil {
			return false, err.Error()
		}
		return st.GetLeaderNodeId() == uint64(leader+1) && st.GetReplicationCount() == 3,
			fmt.Sprintf("GetStats leader %d replicas %d, want %d and 3", st.GetLeaderNodeId(), st.GetReplicationCount(), leader+1)
	})

	// Cut the leader off: it steps down, its queue actors stop, and its
	// gauges for the queue go with them while it keeps running; the new
	// leader reports them.
	for i := range addrs {
		if i != leader {
			cutLink(t, faults[leader], i+1)
		}
	}
	next := servedBy(leader)
	hs[leader].AssertNoSeries(t, telemetry.MetricQueueDepth, depth)
	eventuallyTrue(t, func() (bool, string) {
		v, ok := hs[leader].Value(t, telemetry.RaftPartitionsLed.Name)
		return ok && v == 0, fmt.Sprintf("the cut-off node leads %d partitions", v)
	})
	require.NotEqual(t, leader, next)
}

// cutLink cuts a node's link to peer both ways, over its fault control
// port (transport.Faults.ControlHandler).
func cutLink(t *testing.T, addr string, peer int) {
	t.Helper()
	resp, err := http.Post(fmt.Sprintf("http://%s/cut?peer=%d&dir=both", addr, peer), "text/plain", nil)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode, "cut %d", peer)
}
