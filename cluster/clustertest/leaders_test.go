package clustertest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/fila-dev/filad/client"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/telemetry/telemetrytest"
)

// Leader balance and rolling restarts (issue 25) against real processes.

// balanceInterval is the tests' cluster.leader_balance_interval_ms: short,
// so that a balance completes within a test; it decides no outcome.
const balanceInterval = "1000"

// balancePartitions: with the meta group, 9 groups, 3 a node.
const balancePartitions = 8

// balancedNodes is the Env of three nodes with leader balance at the
// tests' interval over balancePartitions partitions.
func balancedNodes() func(i int, nodes []*Node) []string {
	return clusterEnv("FILA_CLUSTER__PARTITIONS="+fmt.Sprint(balancePartitions),
		"FILA_CLUSTER__LEADER_BALANCE_INTERVAL_MS="+balanceInterval)
}

// dialAll is a client per node, closed when the test ends.
func dialAll(t *testing.T, c *Cluster) []*client.Client {
	clients := make([]*client.Client, len(c.Nodes))
	for i, n := range c.Nodes {
		cl, err := client.Dial(n.Addr, client.Options{DialOptions: []grpc.DialOption{FastReconnect()}})
		require.NoError(t, err)
		t.Cleanup(func() { _ = cl.Close() })
		clients[i] = cl
	}
	return clients
}

// statusOf is node i's GetClusterStatus, nil when it does not answer.
func statusOf(clients []*client.Client, i int) *filav1.GetClusterStatusResponse {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := clients[i].Admin().GetClusterStatus(ctx, &filav1.GetClusterStatusRequest{})
	if err != nil {
		return nil
	}
	return st
}

// ledBy is how many groups each node id leads in st.
func ledBy(st *filav1.GetClusterStatusResponse) map[uint64]uint32 {
	out := map[uint64]uint32{}
	for _, n := range st.GetNodes() {
		out[n.GetNodeId()] = n.GetGroupsLed()
	}
	return out
}

// totalMoves counts the leader balance moves c's nodes logged so far.
func totalMoves(t *testing.T, c *Cluster) int {
	n := 0
	for _, node := range c.Nodes {
		n += moves(t, node)
	}
	return n
}

// moves counts the leader balance moves node n logged so far.
func moves(t *testing.T, n *Node) int {
	b, err := os.ReadFile(n.logPath)
	require.NoError(t, err)
	return strings.Count(string(b), "leader balance: moving a group's leadership")
}

// TestLeaderBalanceAfterAFailover: three nodes, one killed: the two
// survivors lead every group. Once it is back, leaderships move back
// until each node leads its share (3 of 9), and then nothing moves: over
// five balance intervals of a settled cluster, no node logs a move.
func TestLeaderBalanceAfterAFailover(t *testing.T) {
	c := Start(t, Options{Nodes: 3, Env: balancedNodes()})
	clients := dialAll(t, c)
	const groups = balancePartitions + 1
	back := c.Nodes[2]
	back.Kill()
	telemetrytest.Await(t, StartTimeout, func() (bool, string) {
		st := statusOf(clients, 0)
		led := ledBy(st)
		return st != nil && led[1]+led[2] == groups && led[3] == 0, fmt.Sprintf("with node 3 down, node 1 sees leaders %v", led)
	})
	require.NoError(t, back.Restart())
	spread := func() (bool, string) {
		var views []string
		for i := range c.Nodes {
			st := statusOf(clients, i)
			led := ledBy(st)
			if st == nil || led[1] != 3 || led[2] != 3 || led[3] != 3 {
				return false, fmt.Sprintf("node %d sees leaders per node %v (views so far: %v)", i+1, led, views)
			}
			views = append(views, fmt.Sprint(led))
		}
		return true, ""
	}
	start := time.Now()
	telemetrytest.Await(t, 2*StartTimeout, spread)
	total := func() int { return totalMoves(t, c) }
	before := total()
	t.Logf("node 3 back: every node leads 3 of %d groups after %v, %d balance moves", groups, time.Since(start).Round(time.Millisecond), before)
	require.GreaterOrEqual(t, before, 3, "node 3 came back leading nothing; 3 groups must have moved to it")
	holdsStill(t, spread, total)
}

// holdsStill waits for a while of stability: five intervals in which
// spread holds and no balancer moves anything (total counts the moves
// logged). An election on a busy machine (or a status call that times
// out) breaks a window without a bug, so a broken window starts another;
// ping-pong, a move in a balanced cluster, breaks every window, and the
// deadline fails the test.
func holdsStill(t *testing.T, spread func() (bool, string), total func() int) {
	t.Helper()
	telemetrytest.Await(t, 4*StartTimeout, func() (bool, string) {
		if ok, why := spread(); !ok {
			return false, why
		}
		at, settled := total(), time.Now()
		for time.Since(settled) < 5*time.Second {
			if ok, why := spread(); !ok {
				return false, "the spread broke within a window: " + why
			}
			pause(context.Background())
		}
		if moved := total() - at; moved != 0 {
			return false, fmt.Sprintf("%d balance moves in a balanced cluster (ping-pong)", moved)
		}
		return true, ""
	})
}

// TestRollingRestartUnderLoad restarts every node in turn with SIGTERM
// while the checker's workload runs: each node hands its leaderships off,
// stops, starts again and is waited for until it has caught up with
// every group's commit index, before the next. The checker must find
// nothing lost and nothing resurrected. The longest time any group went
// without a leader (sampled from every node's status) is reported, not
// asserted (issue 25's failover target is about 1.5 s).
func TestRollingRestartUnderLoad(t *testing.T) {
	seed := knob(t, "CLUSTERTEST_SEED", uint64(time.Now().UnixNano()))
	rounds := int(knob(t, "CLUSTERTEST_ROLLS", 1))
	t.Logf("seed %d; %d round(s) of restarts", seed, rounds)
	var gaps *leaderGaps
	r := runChecked(t, Options{Nodes: 3, Env: balancedNodes()}, rand.New(rand.NewPCG(seed, 1)), 100_000,
		func(c *Cluster, clients []*client.Client) error {
			gaps = watchLeaders(clients, balancePartitions+1)
			defer gaps.stop()
			for round := range rounds {
				for i, n := range c.Nodes {
					took := time.Now()
					if err := n.Stop(); err != nil {
						return err
					}
					stopped := time.Since(took)
					if err := n.Restart(); err != nil {
						return err
					}
					if err := awaitCaughtUp(clients, i); err != nil {
						return err
					}
					t.Logf("round %d: node %d stopped in %v, serving and caught up %v later", round+1, i+1,
						stopped.Round(time.Millisecond), (time.Since(took) - stopped).Round(time.Millisecond))
				}
			}
			return nil
		})
	require.True(t, r.report.OK(), "%s", r.report)
	require.Positive(t, r.report.EnqueueOK, "the workload enqueued nothing")
	require.Positive(t, r.report.AckOK, "the workload acked nothing")
	worst, group := gaps.worst()
	t.Logf("longest time without a leader: %v (group %d; sampled every %v); per group: %v", worst.Round(time.Millisecond), group, gapSample, gaps.perGroup())
}

// awaitCaughtUp waits until node i answers and has applied, in every
// group, what another node saw committed when it answered: a caught-up
// voter.
func awaitCaughtUp(clients []*client.Client, i int) error {
	other := (i + 1) % len(clients)
	var want *filav1.GetClusterStatusResponse
	deadline := time.Now().Add(StartTimeout)
	for time.Now().Before(deadline) {
		if want == nil {
			want = statusOf(clients, other)
		}
		got := statusOf(clients, i)
		if want != nil && got != nil && len(got.GetGroups()) == len(want.GetGroups()) {
			behind := false
			for g, grp := range got.GetGroups() {
				behind = behind || grp.GetLeaderNodeId() == 0 || grp.GetAppliedIndex() < want.GetGroups()[g].GetCommitIndex()
			}
			if !behind {
				return nil
			}
		}
		pause(context.Background())
	}
	return fmt.Errorf("node %d not caught up after %v", i+1, StartTimeout)
}

// gapSample is how often watchLeaders looks.
const gapSample = 20 * time.Millisecond

// leaderGaps records, per group, the longest stretch during which no
// node that answered said it led the group.
type leaderGaps struct {
	mu      sync.Mutex
	since   map[uint64]time.Time // when the group's current gap began
	longest map[uint64]time.Duration
	done    chan struct{}
	wg      sync.WaitGroup
}

func watchLeaders(clients []*client.Client, groups int) *leaderGaps {
	w := &leaderGaps{since: map[uint64]time.Time{}, longest: map[uint64]time.Duration{}, done: make(chan struct{})}
	w.wg.Go(func() {
		tk := time.NewTicker(gapSample)
		defer tk.Stop()
		for {
			select {
			case <-w.done:
				return
			case <-tk.C:
			}
			led := map[uint64]bool{}
			for i := range clients {
				st := statusOf(clients, i)
				for _, grp := range st.GetGroups() {
					if grp.GetLeaderNodeId() == st.GetNodeId() && st.GetNodeId() != 0 {
						led[grp.GetGroupId()] = true
					}
				}
			}
			now := time.Now()
			w.mu.Lock()
			for g := range uint64(groups) {
				start, open := w.since[g]
				switch {
				case led[g] && open:
					w.longest[g] = max(w.longest[g], now.Sub(start))
					delete(w.since, g)
				case !led[g] && !open:
					w.since[g] = now
				}
			}
			w.mu.Unlock()
		}
	})
	return w
}

func (w *leaderGaps) stop() {
	close(w.done)
	w.wg.Wait()
	now := time.Now()
	for g, start := range w.since {
		w.longest[g] = max(w.longest[g], now.Sub(start))
	}
}

func (w *leaderGaps) worst() (time.Duration, uint64) {
	var worst time.Duration
	var group uint64
	for g, d := range w.longest {
		if d > worst {
			worst, group = d, g
		}
	}
	return worst, group
}

func (w *leaderGaps) perGroup() map[uint64]time.Duration {
	out := map[uint64]time.Duration{}
	for g, d := range w.longest {
		out[g] = d.Round(time.Millisecond)
	}
	return out
}

// TestLeaderBalanceOfFiveNodesAtReplicationFactor3: with fewer replicas
// than nodes, each node's balancer sees only the groups it holds, so its
// counts of the others may be short. Five nodes, 10 groups (share 2), one
// killed and restarted: leaderships move to it, and then a settled cluster
// moves nothing over five intervals (no ping-pong). Each node's count is
// its own (a node knows exactly what it leads).
func TestLeaderBalanceOfFiveNodesAtReplicationFactor3(t *testing.T) {
	const partitions, groups = 9, 10
	c := Start(t, Options{Nodes: 5, Env: clusterEnv("FILA_CLUSTER__PARTITIONS="+fmt.Sprint(partitions),
		"FILA_CLUSTER__LEADER_BALANCE_INTERVAL_MS="+balanceInterval, "FILA_CLUSTER__REPLICATION_FACTOR=3")})
	clients := dialAll(t, c)
	// own is what each of clients' nodes says it leads itself, and the sum.
	own := func() (map[uint64]uint32, uint32, string) {
		led, total := map[uint64]uint32{}, uint32(0)
		for i := range clients {
			st := statusOf(clients, i)
			if st == nil {
				return nil, 0, fmt.Sprintf("node %d does not answer", i+1)
			}
			led[uint64(i+1)] = ledBy(st)[uint64(i+1)]
			total += led[uint64(i+1)]
		}
		return led, total, ""
	}
	back := c.Nodes[4]
	back.Kill()
	clients = clients[:4]
	telemetrytest.Await(t, StartTimeout, func() (bool, string) {
		led, total, why := own()
		return led != nil && total == groups, fmt.Sprintf("with node 5 down the others lead %v %s", led, why)
	})
	require.NoError(t, back.Restart())
	clients = dialAll(t, c)
	settled := func() (bool, string) {
		led, total, why := own()
		if led == nil {
			return false, why
		}
		for id, n := range led {
			if n > 3 || (id == 5 && n == 0) {
				return false, fmt.Sprintf("leaders per node %v", led)
			}
		}
		return total == groups, fmt.Sprintf("leaders per node %v (%d groups)", led, total)
	}
	telemetrytest.Await(t, 2*StartTimeout, settled)
	total := func() int { return totalMoves(t, c) }
	led, _, _ := own()
	t.Logf("node 5 back: leaders per node %v, %d balance moves", led, total())
	holdsStill(t, settled, total)
}
