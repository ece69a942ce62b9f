package clustertest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/fila-dev/filad/client"
)

func TestMain(m *testing.M) {
	code := Main(m)
	if err := goleak.Find(); code == 0 && err != nil {
		fmt.Fprintln(os.Stderr, "goleak:", err)
		code = 1
	}
	os.Exit(code)
}

// knob reads a CLUSTERTEST_* setting: not FILA_*, so filad never sees it
// as config.
func knob(t *testing.T, name string, def uint64) uint64 {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseUint(v, 10, 64)
	require.NoError(t, err, "%s=%q", name, v)
	return n
}

// run is what one real run leaves: its history and what it did.
type run struct {
	ops                 []Op
	kills, pauses, sent int
	report              Report
}

var (
	realOnce sync.Once
	realRun  run
)

// realHistory runs the workload once per test binary against one filad
// process under the seeded nemesis and returns it, so the mutation test
// reuses the run instead of paying for another.
func realHistory(t *testing.T) run {
	realOnce.Do(func() { realRun = runWorkload(t, Options{Nodes: 1}) })
	if realRun.ops == nil {
		t.Fatal("the real run failed (see its test)")
	}
	return realRun
}

// runWorkload is runChecked under the seeded nemesis: SIGKILL and
// SIGSTOP of a node (and isolations, with more than one).
func runWorkload(t *testing.T, opts Options) run {
	seed := knob(t, "CLUSTERTEST_SEED", uint64(time.Now().UnixNano()))
	maxOps := int(knob(t, "CLUSTERTEST_OPS", 1500))
	kills, pauses := int(knob(t, "CLUSTERTEST_KILLS", 3)), int(knob(t, "CLUSTERTEST_PAUSES", 3))
	isolations := 0 // a single node has no one to be cut from
	if opts.Nodes > 1 {
		isolations = int(knob(t, "CLUSTERTEST_ISOLATIONS", 3))
	}
	t.Logf("seed %d (CLUSTERTEST_SEED=%d replays the fault schedule); at most %d enqueues; %d kills, %d pauses, %d isolations", seed, seed, maxOps, kills, pauses, isolations)
	rng := rand.New(rand.NewPCG(seed, 1))
	r := runChecked(t, opts, rng, maxOps, func(c *Cluster, _ []*client.Client) error {
		return c.Run(context.Background(), Schedule(rng.Uint64(), len(c.Nodes), kills, pauses, isolations), t.Logf)
	})
	r.kills, r.pauses = kills, pauses
	return r
}

// runChecked runs the checker's workload (a producer per node, at least
// 2, of maxOps enqueues in all, and as many consumers acking 90% and
// abandoning the rest to expire)
// against the cluster opts starts while nemesis breaks it; then heal, a
// tail of enqueues with no consumer (so the drain surely has work), the
// drain, and the check. The producers stop when nemesis returns.
func runChecked(t *testing.T, opts Options, rng *rand.Rand, maxOps int, nemesis func(c *Cluster, clients []*client.Client) error) run {
	start := time.Now()

	c := Start(t, opts)
	clients := dialAll(t, c)
	on := func(worker int) *client.Client { return clients[worker%len(clients)] }
	const queue = "checker"
	ctx, cancel := context.WithTimeout(context.Background(), OpTimeout)
	require.NoError(t, on(0).CreateQueue(ctx, queue, client.QueueConfig{VisibilityTimeoutMS: 1000}))
	cancel()

	h := NewHistory()
	var sent atomic.Int64
	produceCtx, stopProducers := context.WithCancel(context.Background())
	consumeCtx, stopConsumers := context.WithCancel(context.Background())
	defer stopProducers()
	defer stopConsumers()
	// Producers wait while more than 64 acknowledged enqueues are not yet
	// acked, so that most messages go the whole way, not only to the drain.
	backlog := func(ctx context.Context) {
		for ctx.Err() == nil && h.Count(Enqueue, OK)-h.Count(Ack, OK) > 64 {
			pause(ctx)
		}
	}
	var producers, consumers sync.WaitGroup
	workers := max(2, len(clients)) // a producer and a consumer on each node, at least two
	for w := range workers {
		producers.Go(func() {
			sent.Add(int64(Produce(produceCtx, on(w), h, queue, w, fmt.Sprintf("p%d", w), maxOps/workers, backlog)))
		})
		consumerRNG := rand.New(rand.NewPCG(rng.Uint64(), uint64(w)))
		consumers.Go(func() { Consume(consumeCtx, on(w), h, queue, 10+w, consumerRNG, 0.9) })
	}
	c.Leader = func(ctx context.Context) (int, bool) { return leaderOf(ctx, clients, queue) }
	nemesisErr := nemesis(c, clients)
	stopProducers()
	producers.Wait()
	require.NoError(t, nemesisErr)
	require.NoError(t, c.Heal())
	stopConsumers()
	consumers.Wait()
	for w := range workers {
		sent.Add(int64(Produce(context.Background(), on(w), h, queue, w, fmt.Sprintf("tail%d", w), 10, nil)))
	}
	workload := time.Since(start)

	drainCtx, stopDrain := context.WithCancel(context.Background())
	defer stopDrain()
	require.NoError(t, Drain(drainCtx, on(0), h, queue, 100))
	ops := h.Ops()
	r := Check(ops)
	t.Logf("real run: %d enqueues sent, %d ops recorded; workload %v, total %v", sent.Load(), len(ops),
		workload.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	t.Logf("checker: %s", r)
	if len(r.NotLinearizable) > 0 {
		visualize(t, ops, r.NotLinearizable)
	}
	return run{ops: ops, sent: int(sent.Load()), report: r}
}

// TestRealRunUnderKillsAndPauses is the checker against a real filad
// process with sync_writes, killed with SIGKILL and paused with SIGSTOP
// under load: nothing lost, nothing resurrected, no phantom, every id
// linearizable. CLUSTERTEST_SEED replays a run; CLUSTERTEST_OPS,
// CLUSTERTEST_KILLS and CLUSTERTEST_PAUSES make it longer.
func TestRealRunUnderKillsAndPauses(t *testing.T) {
	r := realHistory(t).report
	require.True(t, r.OK(), "%s", r)
	require.Positive(t, r.EnqueueOK, "the workload enqueued nothing")
	require.Positive(t, r.AckOK, "the workload acked nothing")
	require.Positive(t, r.DrainDeliveries, "the drain found nothing, though the tail enqueued with no consumer")
}

// TestRealRunOfAOneNodeCluster is the same run against filad with the
// cluster on and one member: every write goes through the raft log (a
// proposal, its commit, its apply), and every restart after a SIGKILL
// replays the log and elects before serving.
func TestRealRunOfAOneNodeCluster(t *testing.T) {
	r := runWorkload(t, Options{Nodes: 1, Env: func(i int, nodes []*Node) []string {
		n := nodes[i]
		return []string{
			"FILA_CLUSTER__ENABLED=true", "FILA_CLUSTER__NODE_ID=1",
			"FILA_CLUSTER__INTERNAL_LISTEN_ADDR=" + n.InternalAddr,
			"FILA_CLUSTER__INITIAL_MEMBERS=1=" + n.InternalAddr,
		}
	}}).report
	require.True(t, r.OK(), "%s", r)
	require.Positive(t, r.EnqueueOK, "the workload enqueued nothing")
	require.Positive(t, r.AckOK, "the workload acked nothing")
}

// TestRealRunOfAThreeNodeCluster is the run against three filad
// processes in one cluster: the clients talk to every node and follow
// the leaders' hints, while the nemesis kills and pauses nodes (one at a
// time), so partitions fail over under the workload.
func TestRealRunOfAThreeNodeCluster(t *testing.T) {
	r := runWorkload(t, Options{Nodes: 3, Env: clusterEnv()}).report
	require.True(t, r.OK(), "%s", r)
	require.Positive(t, r.EnqueueOK, "the workload enqueued nothing")
	require.Positive(t, r.AckOK, "the workload acked nothing")
}

// clusterEnv is the Env of a cluster of as many nodes as the harness
// starts, each an initial member, 4 partitions, with extra settings.
func clusterEnv(extra ...string) func(i int, nodes []*Node) []string {
	return func(i int, nodes []*Node) []string {
		var members []string
		for j, n := range nodes {
			members = append(members, fmt.Sprintf("%d=%s", j+1, n.InternalAddr))
		}
		return append([]string{
			"FILA_CLUSTER__ENABLED=true", fmt.Sprintf("FILA_CLUSTER__NODE_ID=%d", i+1),
			"FILA_CLUSTER__INTERNAL_LISTEN_ADDR=" + nodes[i].InternalAddr,
			"FILA_CLUSTER__INITIAL_MEMBERS=" + strings.Join(members, ","),
			"FILA_CLUSTER__PARTITIONS=4",
			"FILA_CLUSTER__FAULT_CONTROL_ADDR=" + nodes[i].ControlAddr,
		}, extra...)
	}
}

// TestRealRunCatchesUpBySnapshot: with a log compacted every few dozen
// entries, a node down while the other two take hundreds of enqueues
// comes back by snapshots (its log says so); then another node is killed,
// so that the returned one's state carries the quorum, and the drain and
// the checker find everything acknowledged exactly where it should be.
func TestRealRunCatchesUpBySnapshot(t *testing.T) {
	c := Start(t, Options{Nodes: 3, Env: clusterEnv("FILA_CLUSTER__SNAPSHOT_ENTRIES=20")})
	clients := make([]*client.Client, len(c.Nodes))
	for i, n := range c.Nodes {
		cl, err := client.Dial(n.Addr, client.Options{DialOptions: []grpc.DialOption{FastReconnect()}})
		require.NoError(t, err)
		t.Cleanup(func() { _ = cl.Close() })
		clients[i] = cl
	}
	const queue = "checker"
	ctx, cancel := context.WithTimeout(context.Background(), OpTimeout)
	require.NoError(t, clients[0].CreateQueue(ctx, queue, client.QueueConfig{VisibilityTimeoutMS: 1000}))
	cancel()
	h := NewHistory()
	Produce(context.Background(), clients[0], h, queue, 0, "before", 20, nil)
	back := c.Nodes[2]
	back.Kill()
	Produce(context.Background(), clients[0], h, queue, 0, "p0", 150, nil)
	Produce(context.Background(), clients[1], h, queue, 1, "p1", 150, nil)
	require.NoError(t, back.Restart())
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(back.logPath)
		return err == nil && strings.Contains(string(b), "raft snapshot received")
	}, OpTimeout*6, 50*time.Millisecond, "the restarted node installed no snapshot")
	c.Nodes[0].Kill()
	Produce(context.Background(), clients[2], h, queue, 2, "after", 20, nil)
	drainCtx, stopDrain := context.WithCancel(context.Background())
	defer stopDrain()
	require.NoError(t, Drain(drainCtx, clients[2], h, queue, 100))
	r := Check(h.Ops())
	t.Logf("checker: %s", r)
	require.True(t, r.OK(), "%s", r)
	require.Positive(t, r.EnqueueOK, "the workload enqueued nothing")
	require.Positive(t, r.DrainDeliveries, "the drain found nothing")
}

// TestRealRunCanFail proves the real run's verdict can fail: the real
// history, with one bug injected, must be flagged for that id, and only
// it. (A SIGKILL with sync_writes off does not lose data, the page cache
// survives a process kill, so the bug is injected into the history.)
func TestRealRunCanFail(t *testing.T) {
	real := realHistory(t)
	require.True(t, real.report.OK(), "the real run itself failed: %s", real.report)
	ops := real.ops
	// An id acknowledged at enqueue and found only by the drain: the tail.
	// Acknowledged: an enqueue whose outcome is unknown may rightly never
	// be found, so removing its delivery loses nothing.
	var drainedOnly, acked string
	var ackedAt int64
	seen, enqueued := map[string]int{}, map[string]bool{}
	for _, op := range ops {
		if op.Kind == Deliver && !op.Drain {
			seen[op.ID]++
		}
		if op.Kind == Enqueue && op.Outcome == OK {
			enqueued[op.ID] = true
		}
	}
	for _, op := range ops {
		if op.Kind == Deliver && op.Drain && seen[op.ID] == 0 && enqueued[op.ID] && drainedOnly == "" {
			drainedOnly = op.ID
		}
		if op.Kind == Ack && op.Outcome == OK && acked == "" {
			acked, ackedAt = op.ID, op.Return
		}
	}
	require.NotEmpty(t, drainedOnly)
	require.NotEmpty(t, acked)
	var end int64
	for _, op := range ops {
		if op.Kind == DrainEnd {
			end = op.Call
		}
	}

	for _, tc := range []struct {
		name   string
		mutate func([]Op) []Op
		id     string
		flags  func(Report) []string
	}{
		{"an acked enqueue missing from the drain is lost", func(ops []Op) []Op {
			var out []Op
			for _, op := range ops {
				if !(op.Kind == Deliver && op.ID == drainedOnly) {
					out = append(out, op)
				}
			}
			return out
		}, drainedOnly, func(r Report) []string { return r.Lost }},
		{"a delivery leased after an ok ack returned is a resurrection", func(ops []Op) []Op {
			return append(ops, Op{Kind: Deliver, ID: acked, Token: "injected", MessageID: messageID(ops, acked), Outcome: OK, Call: ackedAt + 1, Return: ackedAt + 2})
		}, acked, func(r Report) []string { return r.Resurrected }},
		{"a delivery nobody sent is a phantom", func(ops []Op) []Op {
			return append(ops,
				Op{Kind: Deliver, ID: "injected", Token: "injected", MessageID: "injected", Outcome: OK, Call: end - 2, Return: end - 1},
				Op{Kind: Ack, ID: "injected", Token: "injected", MessageID: "injected", Outcome: OK, Call: end - 1, Return: end})
		}, "injected", func(r Report) []string { return r.Phantoms }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Check(tc.mutate(append([]Op(nil), ops...)))
			require.False(t, r.OK(), "%s", r)
			require.Equal(t, []string{tc.id}, tc.flags(r), "%s", r)
			require.Equal(t, []string{tc.id}, r.NotLinearizable, "%s", r)
		})
	}
}

// messageID is the broker's id of the message with payload id.
func messageID(ops []Op, id string) string {
	for _, op := range ops {
		if op.Kind == Deliver && op.ID == id {
			return op.MessageID
		}
	}
	return ""
}

// visualize writes porcupine's view of the failing ids where it outlives
// the test, and says where.
func visualize(t *testing.T, ops []Op, ids []string) {
	f, err := os.CreateTemp("", "clustertest-*.html")
	if err != nil {
		t.Logf("porcupine visualisation: %v", err)
		return
	}
	_ = f.Close()
	if err := Visualize(ops, ids[:min(len(ids), 20)], f.Name()); err != nil {
		t.Logf("porcupine visualisation: %v", err)
		return
	}
	t.Logf("porcupine visualisation of %d ids: %s", min(len(ids), 20), f.Name())
}

// leaderOf asks the nodes in turn which node leads queue's partition
// (GetStats' leader_node_id; node ids are indexes + 1 here); false when
// none answers with one (a single node answers 0).
func leaderOf(ctx context.Context, clients []*client.Client, queue string) (int, bool) {
	for _, cl := range clients {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := cl.Stats(ctx, queue)
		cancel()
		if id := st.GetLeaderNodeId(); err == nil && id > 0 && int(id) <= len(clients) {
			return int(id) - 1, true
		}
	}
	return 0, false
}
