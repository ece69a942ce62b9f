package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/fila-dev/filad/telemetry/telemetrytest"
)

// The target of a move leads at least two fewer than the mover, is a
// member and caught up, and leads the fewest of those.
func TestPickTarget(t *testing.T) {
	members := []uint64{1, 2, 3}
	up := func(node, match uint64) PeerProgress {
		return PeerProgress{Node: node, Match: match, Active: true, Replicating: true}
	}
	for _, tc := range []struct {
		name   string
		counts map[uint64]int
		peers  []PeerProgress
		want   uint64
	}{
		{"the one back from a failover", map[uint64]int{1: 5, 2: 4, 3: 0}, []PeerProgress{up(1, 100), up(2, 100), up(3, 100)}, 3},
		{"a spread within one moves nothing", map[uint64]int{1: 4, 2: 3, 3: 3}, []PeerProgress{up(1, 100), up(2, 100), up(3, 100)}, 0},
		{"a lagging target is passed over", map[uint64]int{1: 5, 2: 3, 3: 0}, []PeerProgress{up(1, 100), up(2, 100), up(3, 10)}, 2},
		{"a target not heard from is passed over", map[uint64]int{1: 6, 2: 6, 3: 0},
			[]PeerProgress{up(1, 100), up(2, 100), {Node: 3, Match: 100, Replicating: true}}, 0},
		{"a probed target is passed over", map[uint64]int{1: 6, 2: 6, 3: 0},
			[]PeerProgress{up(1, 100), up(2, 100), {Node: 3, Match: 100, Active: true}}, 0},
		{"a voter that is no member is passed over", map[uint64]int{1: 6, 2: 6}, []PeerProgress{up(1, 100), up(2, 100), up(4, 100)}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := pickTarget(1, tc.counts, members, tc.peers, 100, DefaultBalanceMaxLag)
			if got != tc.want || ok != (tc.want != 0) {
				t.Fatalf("pickTarget = %d, %v; want %d", got, ok, tc.want)
			}
		})
	}
}

// Of two moves the cheaper goes first, then the one to the target
// leading fewer, then the lower group.
func TestMoveBefore(t *testing.T) {
	counts := map[uint64]int{2: 1, 3: 0}
	for _, tc := range []struct {
		name string
		a, b move
		want bool
	}{
		{"cheaper first", move{group: 5, to: 2, cost: 10}, move{group: 1, to: 3, cost: 1_000_000}, true},
		{"dearer after", move{group: 1, to: 3, cost: 1_000_000}, move{group: 5, to: 2, cost: 10}, false},
		{"equal cost: the target leading fewer", move{group: 5, to: 3}, move{group: 1, to: 2}, true},
		{"all equal: the lower group", move{group: 1, to: 3}, move{group: 5, to: 3}, true},
		{"a move is not before itself", move{group: 1, to: 3}, move{group: 1, to: 3}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.a.before(tc.b, counts); got != tc.want {
				t.Fatalf("%+v before %+v = %v, want %v", tc.a, tc.b, got, tc.want)
			}
		})
	}
}

// Three drivers: whatever the first elections gave, the balancers end
// with every node leading its share of six groups, and then move nothing.
// Node 1, which led all six, keeps the two that cost most to take over
// (BalanceOptions.Cost): it moves the cheap ones first, and moving those
// evens the spread.
func TestBalancersSpreadLeadership(t *testing.T) {
	groups := []uint64{0, 1, 2, 3, 4, 5}
	c := newTestCluster(t, 3, groups...)
	for _, g := range groups {
		c.leader(g, 0)
	}
	// Everything led by node 1 first: the worst spread.
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	for _, g := range groups {
		for {
			l := c.leader(g, 0)
			if l == 1 {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("group %d never moved to node 1 (led by %d)", g, l)
			}
			_ = c.node(l).TransferLeader(ctx, g, 1)
		}
	}
	members := func() []uint64 { return c.peers }
	dear := []uint64{0, 1} // the ones moved first if cost did not count
	costs := func() map[uint64]int64 {
		m := map[uint64]int64{}
		for _, g := range groups {
			m[g] = int64(g) // the cheap ones differ too: the order is the cost's
		}
		for _, g := range dear {
			m[g] = 1_000_000
		}
		return m
	}
	// Every follower caught up in node 1's view before the balancers
	// start: a cheap group whose followers still lag (just moved to node
	// 1) is no candidate, and a dear one could then be moved first.
	for _, g := range groups {
		telemetrytest.Await(t, patience, func() (bool, string) {
			commit, peers, err := c.node(1).Progress(ctx, g)
			if err != nil {
				return false, err.Error()
			}
			for _, p := range peers {
				if !caughtUp(p, commit, DefaultBalanceMaxLag) {
					return false, fmt.Sprintf("group %d: node %d not caught up: %+v", g, p.Node, p)
				}
			}
			return true, ""
		})
	}
	for _, id := range c.peers {
		b := StartBalancer(BalanceOptions{Driver: c.node(id), Members: members, Groups: groups,
			Interval: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler), Costs: costs})
		t.Cleanup(b.Stop)
	}
	deadline := time.Now().Add(patience)
	for {
		counts, settled, _ := leadCounts(c.node(1), groups)
		if settled && counts[1] == 2 && counts[2] == 2 && counts[3] == 2 {
			for _, g := range dear {
				if st, _ := c.node(1).Status(g); !st.Leading {
					t.Fatalf("group %d, the dearest to take over, moved from node 1 (led by %d)", g, st.Leader)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leadership not spread: %v", counts)
		}
		time.Sleep(10 * time.Millisecond) // polls the drivers' status; the outcome is theirs
	}
}
