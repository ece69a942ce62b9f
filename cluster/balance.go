package cluster

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Leader balance (issue 25; docs/cluster.md, "Leader balance";
// docs/decisions.md). After a failover the survivors lead every group;
// when the node comes back, each node that leads more than its share
// hands one group at a time to a caught-up voter that leads at least two
// fewer, pausing between moves. Each node moves only what it leads: the
// leader alone knows how far each follower's log is (Driver.Progress), and
// no node needs to ask another to act.

// Balancer defaults.
const (
	// DefaultBalanceInterval is the pause between two moves of one node,
	// and between its looks when there is nothing to move.
	DefaultBalanceInterval = 5 * time.Second
	// DefaultBalanceMaxLag is how many entries a target's log may lack of
	// the commit index and still take over: raft's transfer first brings
	// its log up to the leader's, and the group takes no writes meanwhile.
	DefaultBalanceMaxLag = 64
)

// BalanceOptions configures a Balancer; zero fields take the defaults.
type BalanceOptions struct {
	Driver *Driver
	// Members are the nodes leadership is spread over.
	Members func() []uint64
	// Groups are the groups counted and moved: the meta group and the
	// partitions.
	Groups   []uint64
	Interval time.Duration
	MaxLag   uint64
	// LeadCount, if set, asks node how many groups it leads (false when
	// it did not answer). A node that holds only some of the groups (a
	// replication factor below the node count) counts the others' leads
	// only over those, which may be short: two nodes that each see the
	// other leading nothing hand a group back and forth. A target's count
	// is asked before a move, so the rule that a move never makes the
	// target lead more than its giver did holds.
	LeadCount func(ctx context.Context, node uint64) (int, bool)
	// Costs, if set, is what leading each group costs the node that takes
	// it over: the messages its queues hold, which a new leader loads
	// before it serves them (a group missing from the map costs 0). Of
	// the groups it could move, a node moves the cheapest (then the one to
	// the target leading fewest): handing a big partition to a node that
	// just joined is an outage of seconds that moving small ones usually
	// avoids. Asked once per look that finds a move to make. nil: every
	// group costs the same.
	Costs func() map[uint64]int64
	// TransferTimeout bounds one move; 5 election timeouts of the
	// driver's when 0.
	TransferTimeout time.Duration
	Logger          *slog.Logger
}

// Balancer is one node's part of leader balance: a goroutine that looks
// every Interval and makes at most one move. Stop it.
type Balancer struct {
	opts BalanceOptions
	stop chan struct{}
	done sync.WaitGroup
}

// StartBalancer starts a node's balancer.
func StartBalancer(opts BalanceOptions) *Balancer {
	opts.Interval = cmp.Or(opts.Interval, DefaultBalanceInterval)
	opts.MaxLag = cmp.Or(opts.MaxLag, DefaultBalanceMaxLag)
	opts.TransferTimeout = cmp.Or(opts.TransferTimeout, 5*time.Duration(opts.Driver.opts.ElectionTicks)*opts.Driver.opts.Tick)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	b := &Balancer{opts: opts, stop: make(chan struct{})}
	b.done.Go(b.run)
	return b
}

// Stop ends the balancer, a move under way included.
func (b *Balancer) Stop() {
	close(b.stop)
	b.done.Wait()
}

func (b *Balancer) run() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-b.stop:
			cancel()
		case <-ctx.Done(): // run ended first
		}
	}()
	t := time.NewTicker(b.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.opts.Driver.Done():
			return
		case <-t.C:
			b.step(ctx)
		}
	}
}

// step makes at most one move.
func (b *Balancer) step(ctx context.Context) {
	d := b.opts.Driver
	counts, settled, partial := leadCounts(d, b.opts.Groups)
	if !settled {
		return // an election under way: look again once it is over
	}
	members := b.opts.Members()
	self := d.opts.NodeID
	share := (len(b.opts.Groups) + len(members) - 1) / max(len(members), 1)
	if counts[self] <= share {
		return
	}
	var best move
	var costs map[uint64]int64 // asked once there is a move to weigh
	asked := map[uint64]bool{}
	for _, g := range b.opts.Groups {
		if st, _ := d.Status(g); !st.Leading {
			continue
		}
		commit, peers, err := d.Progress(ctx, g)
		if err != nil {
			continue // no longer leading it
		}
		if partial && b.opts.LeadCount != nil {
			for _, p := range peers {
				// Only a possible target is asked: one the local count
				// already rules out (the asked count is never lower) or
				// that lags is not, nor is anyone twice a step.
				if p.Node == self || asked[p.Node] || counts[self]-counts[p.Node] < 2 || !caughtUp(p, commit, b.opts.MaxLag) {
					continue
				}
				asked[p.Node] = true
				if n, ok := b.opts.LeadCount(ctx, p.Node); ok {
					counts[p.Node] = max(counts[p.Node], n)
				} else {
					counts[p.Node] = counts[self] // unknown: not a target
				}
			}
		}
		if to, ok := pickTarget(self, counts, members, peers, commit, b.opts.MaxLag); ok {
			if costs == nil && b.opts.Costs != nil {
				costs = b.opts.Costs()
			}
			m := move{group: g, to: to, cost: costs[g]}
			if best.to == 0 || m.before(best, counts) {
				best = m
			}
		}
	}
	if best.to == 0 {
		return
	}
	b.opts.Logger.Info("leader balance: moving a group's leadership", slog.Uint64("group", best.group),
		slog.Uint64("to_node", best.to), slog.Int("leads", counts[self]), slog.Int("target_leads", counts[best.to]), slog.Int("share", share),
		slog.Int64("cost", best.cost))
	tctx, cancel := context.WithTimeout(ctx, b.opts.TransferTimeout)
	defer cancel()
	if err := d.TransferLeader(tctx, best.group, best.to); err != nil && ctx.Err() == nil {
		b.opts.Logger.Warn("leader balance: the move did not complete; the next look tries again",
			slog.Uint64("group", best.group), slog.Uint64("to_node", best.to), slog.Any("error", err))
	}
}

// move is a group's leadership to hand to node to; cost is the group's
// (BalanceOptions.Costs).
type move struct {
	group, to uint64
	cost      int64
}

// before: m is the better of two moves: the cheaper, then the one to the
// target leading fewer groups (counts), then the lower group.
func (m move) before(o move, counts map[uint64]int) bool {
	return cmp.Or(cmp.Compare(m.cost, o.cost), cmp.Compare(counts[m.to], counts[o.to]), cmp.Compare(m.group, o.group)) < 0
}

// leadCounts is how many of groups each node leads as this node sees
// them; settled is false while one of them has no leader known. Only the
// groups this node holds a replica of are counted: of the others it has
// no raft view (a replication factor below the node count), so another
// node's count may be short of the truth there, which partial says.
func leadCounts(d *Driver, groups []uint64) (counts map[uint64]int, settled, partial bool) {
	counts = map[uint64]int{}
	for _, g := range groups {
		st, _ := d.Status(g)
		if !st.Holds(d.opts.NodeID) {
			partial = true
			continue
		}
		if st.Leader == 0 {
			return counts, false, partial
		}
		counts[st.Leader]++
	}
	return counts, true, partial
}

// pickTarget is the voter of a group self leads to hand it to: a member
// leading at least two fewer groups than self (so that a move never makes
// the target lead more than self did: no move is undone by the next),
// caught up (heard from lately, streaming, within maxLag of commit),
// leading the fewest; ties go to the lowest id.
func pickTarget(self uint64, counts map[uint64]int, members []uint64, peers []PeerProgress, commit, maxLag uint64) (uint64, bool) {
	var to uint64
	for _, p := range peers {
		switch {
		case p.Node == self, !slices.Contains(members, p.Node), counts[self]-counts[p.Node] < 2,
			!caughtUp(p, commit, maxLag):
			continue
		}
		if to == 0 || counts[p.Node] < counts[to] {
			to = p.Node
		}
	}
	return to, to != 0
}

// caughtUp: p is a voter, heard from lately, streaming, within maxLag of
// commit (a learner cannot lead).
func caughtUp(p PeerProgress, commit, maxLag uint64) bool {
	return !p.Learner && p.Active && p.Replicating && p.Match+maxLag >= commit
}

// HandOff moves every group of groups this node leads to a caught-up
// voter (the one leading the fewest, counting the moves made), all at
// once, and returns when each has moved or timeout passed: what a node
// does before a graceful stop, so that its groups are led elsewhere at
// once instead of after an election timeout without a leader. It returns
// how many moved; a group with no caught-up voter stays (its followers
// elect once this node stops).
func HandOff(ctx context.Context, d *Driver, groups []uint64, timeout time.Duration, log *slog.Logger) int {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	counts, _, _ := leadCounts(d, groups)
	self := d.opts.NodeID
	var wg sync.WaitGroup
	var mu sync.Mutex
	moved := 0
	for _, g := range groups {
		if st, _ := d.Status(g); !st.Leading {
			continue
		}
		commit, peers, err := d.Progress(ctx, g)
		if err != nil {
			continue
		}
		var to uint64
		for _, p := range peers {
			if p.Node != self && caughtUp(p, commit, DefaultBalanceMaxLag) && (to == 0 || counts[p.Node] < counts[to]) {
				to = p.Node
			}
		}
		if to == 0 {
			continue
		}
		counts[to]++
		wg.Go(func() {
			err := d.TransferLeader(ctx, g, to)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				moved++
			} else if !errors.Is(err, ErrNotLeader) {
				log.Info("stopping: a group's leadership not handed off; its followers elect once this node stops",
					slog.Uint64("group", g), slog.Uint64("to_node", to), slog.Any("error", err))
			}
		})
	}
	wg.Wait()
	return moved
}
