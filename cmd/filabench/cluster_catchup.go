package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/fila-dev/filad/client"
	"github.com/fila-dev/filad/cluster"
	"github.com/fila-dev/filad/config"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// clusterCatchup is issue 25's catch-up at size: a queue of
// -cluster-backlog 1 KiB messages on N nodes; a follower of its partition
// dies and is replaced as docs/cluster.md says (a new node under a new id
// joins; once it is a voter wherever it ranks, the dead one is removed).
// It reports the time from the new node's start until it is a voter
// wherever it ranks (its snapshots installed, caught up) and until the
// groups are whole again without the dead one, and the leader's Enqueue
// p99 (one caller, one message per call) during that against before it.
func (e *bench) clusterCatchup(ctx context.Context, nodes int) ([]result, error) {
	if nodes < 3 {
		fmt.Fprintf(e.out, "  (no catch-up: it needs -cluster 3 or more, so that the dead node leaves a majority)\n")
		return nil, nil
	}
	b, err := e.startBacklog(ctx, nodes)
	if err != nil {
		return nil, err
	}
	defer b.close()
	c, t, q, backlog, payload := b.c, b.t, b.q, b.n, b.payload
	leaderAddr, err := leaderOf(ctx, t.conn, q)
	if err != nil {
		return nil, err
	}
	leader := c.node(leaderAddr)
	if leader == nil {
		return nil, fmt.Errorf("leader %s is no node of the cluster", leaderAddr)
	}
	baseline := 20 * time.Second
	if e.f.short {
		baseline = time.Second
	}
	probe, err := startEnqueueProbe(ctx, leaderAddr, q, payload)
	if err != nil {
		return nil, err
	}
	defer probe.stop()
	select {
	case <-time.After(baseline):
	case <-ctx.Done():
		return nil, ctx.Err()
	}

	var dead *clusterNode
	for _, n := range c.nodes {
		if n != leader {
			dead = n
			break
		}
	}
	dead.kill()
	added, err := c.joiner(leader)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := added.start(); err != nil {
		return nil, err
	}
	var liveAddrs []string
	for _, n := range c.nodes {
		if n != dead {
			liveAddrs = append(liveAddrs, n.addr)
		}
	}
	rf := config.Defaults().Cluster.ReplicationFactor
	ranked := c.ids() // the dead one included: rendezvous does not know it is down
	if err := awaitGroups(ctx, liveAddrs, func(g *filav1.ClusterGroupStatus) bool {
		return len(g.GetLearnerIds()) == 0 &&
			(!slices.Contains(cluster.ReplicasOf(g.GetGroupId(), ranked, rf), uint64(added.id)) || slices.Contains(g.GetVoterIds(), uint64(added.id)))
	}); err != nil {
		return nil, fmt.Errorf("node %d joining: %w", added.id, err)
	}
	joined := time.Since(start)
	fmt.Fprintf(e.out, "  node %d a voter wherever it ranks %v after its start\n", added.id, joined.Round(time.Millisecond))
	lt, err := newFiladTarget(leader.addr) // t may be dialed at the dead node
	if err != nil {
		return nil, err
	}
	defer lt.close()
	if _, err := lt.client.Admin().RemoveNode(ctx, &filav1.RemoveNodeRequest{NodeId: uint64(dead.id)}); err != nil {
		return nil, fmt.Errorf("remove-node %d: %w", dead.id, err)
	}
	live := slices.DeleteFunc(c.ids(), func(id uint64) bool { return id == uint64(dead.id) })
	if err := awaitGroups(ctx, liveAddrs, func(g *filav1.ClusterGroupStatus) bool {
		want := cluster.ReplicasOf(g.GetGroupId(), live, rf)
		slices.Sort(want)
		return len(g.GetLearnerIds()) == 0 && slices.Equal(slices.Sorted(slices.Values(g.GetVoterIds())), want)
	}); err != nil {
		return nil, fmt.Errorf("removing node %d: %w", dead.id, err)
	}
	whole := time.Since(start)
	fmt.Fprintf(e.out, "  groups whole without node %d %v after node %d's start\n", dead.id, whole.Round(time.Millisecond), added.id)
	before, during, failed := probe.split(start, start.Add(whole))
	if len(before) == 0 || len(during) == 0 {
		return nil, fmt.Errorf("the probe's enqueues: %d before, %d during the catch-up", len(before), len(during))
	}
	p99 := func(d []time.Duration) float64 { return float64(percentile(d, 0.99).Microseconds()) / 1000 }
	note := fmt.Sprintf("queue of %d × 1 KiB, %d nodes; load average %s", backlog, nodes, loadAverage())
	w := "catch-up: a dead follower replaced by a new node under a new id"
	return []result{
		{Workload: w, Target: targetSync, Value: joined.Seconds(), Unit: "s to a voter where it ranks", Note: note + "; target ≤ 90"},
		{Workload: w, Target: targetSync, Value: whole.Seconds(), Unit: "s to groups whole", Note: note},
		{Workload: w, Target: targetSync, Value: p99(before), Unit: "ms Enqueue p99 before", Note: fmt.Sprintf("%d calls", len(before))},
		{Workload: w, Target: targetSync, Value: p99(during), Unit: "ms Enqueue p99 during", Note: fmt.Sprintf("%d calls, %d failed (a leadership moved)", len(during), failed)},
		{Workload: w, Target: targetSync, Value: p99(during) / p99(before), Unit: "× p99 during / before", Note: "target ≤ 3"},
	}, nil
}

// ids are the cluster's node ids.
func (c *benchCluster) ids() []uint64 {
	ids := make([]uint64, len(c.nodes))
	for i, n := range c.nodes {
		ids[i] = uint64(n.id)
	}
	return ids
}

// joiner is a new node of c (the next id, fresh ports and data directory)
// that joins through via, added to c's nodes but not started.
func (c *benchCluster) joiner(via *clusterNode) (*clusterNode, error) {
	last := c.nodes[len(c.nodes)-1]
	n, err := c.addNode(last.bin, last.metrics != "")
	if err != nil {
		return nil, err
	}
	n.setEnv("FILA_CLUSTER__JOIN=" + via.internal)
	return n, nil
}

// awaitGroups polls the cluster status of every node of addrs until each
// group, as its leader sees it (a node taken out of a group no longer
// does), satisfies ok, for up to ten minutes; its error names the groups
// that did not.
func awaitGroups(ctx context.Context, addrs []string, ok func(*filav1.ClusterGroupStatus) bool) error {
	var admins []filav1.FilaAdminClient
	for _, a := range addrs {
		t, err := newFiladTarget(a)
		if err != nil {
			return err
		}
		defer t.close()
		admins = append(admins, t.client.Admin())
	}
	deadline := time.Now().Add(10 * time.Minute)
	var behind []string
	for time.Now().Before(deadline) {
		led := map[uint64]*filav1.ClusterGroupStatus{}
		groups := 0
		for _, admin := range admins {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			st, err := admin.GetClusterStatus(cctx, &filav1.GetClusterStatusRequest{})
			cancel()
			if err != nil {
				continue
			}
			groups = max(groups, len(st.GetGroups()))
			for _, g := range st.GetGroups() {
				if g.GetLeaderNodeId() == st.GetNodeId() {
					led[g.GetGroupId()] = g
				}
			}
		}
		behind = behind[:0]
		for id := range uint64(groups) {
			switch g := led[id]; {
			case g == nil:
				behind = append(behind, fmt.Sprintf("group %d: no leader answered", id))
			case !ok(g):
				behind = append(behind, fmt.Sprintf("group %d: voters %v, learners %v, leader %d", id, g.GetVoterIds(), g.GetLearnerIds(), g.GetLeaderNodeId()))
			}
		}
		if groups > 0 && len(behind) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("not within ten minutes (%s)", strings.Join(behind, "; "))
}

// enqueueProbe is one caller making unary Enqueues one after another at
// a queue's leader, recording when each was made and how long it took.
type enqueueProbe struct {
	cl     *client.Client
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	calls  []probeCall
}

type probeCall struct {
	at   time.Time
	took time.Duration
	err  error
}

func startEnqueueProbe(ctx context.Context, addr, q string, payload []byte) (*enqueueProbe, error) {
	cl, err := client.Dial(addr, client.Options{TracerProvider: tracenoop.NewTracerProvider(), MeterProvider: metricnoop.NewMeterProvider()})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	p := &enqueueProbe{cl: cl, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for ctx.Err() == nil {
			at := time.Now()
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := cl.Enqueue(cctx, q, nil, payload)
			cancel()
			if ctx.Err() != nil {
				return
			}
			p.mu.Lock()
			p.calls = append(p.calls, probeCall{at: at, took: time.Since(at), err: err})
			p.mu.Unlock()
		}
	}()
	return p, nil
}

// stop ends the probe and waits for its caller; called once.
func (p *enqueueProbe) stop() {
	p.cancel()
	<-p.done
	_ = p.cl.Close()
}

// split is the latencies of the calls that succeeded before from and
// within [from, to], and how many within failed.
func (p *enqueueProbe) split(from, to time.Time) (before, during []time.Duration, failed int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.calls {
		switch {
		case c.at.Before(from) && c.err == nil:
			before = append(before, c.took)
		case c.at.Before(from):
		case c.at.After(to):
		case c.err != nil:
			failed++
		default:
			during = append(during, c.took)
		}
	}
	return before, during, failed
}
