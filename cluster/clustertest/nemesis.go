package clustertest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// FaultKind is what the nemesis does to a node.
type FaultKind int

const (
	// Kill9 sends SIGKILL, then restarts the node on its data directory.
	Kill9 FaultKind = iota + 1
	// Pause sends SIGSTOP, waits, then SIGCONT.
	Pause
	// Isolate cuts the node's raft links to every other node, waits, then
	// heals them (a network partition of one node from the rest).
	Isolate
)

func (k FaultKind) String() string {
	switch k {
	case Kill9:
		return "kill -9 + restart"
	case Isolate:
		return "isolate"
	}
	return "pause"
}

// Fault is one step of a nemesis schedule.
type Fault struct {
	Kind FaultKind
	// Node is the index of the node it hits, unless AtLeader.
	Node int
	// AtLeader hits the node leading the workload's queue when the fault
	// lands (Cluster.Leader), Node when none is known.
	AtLeader bool
	// After is how long the nemesis waits before the fault.
	After time.Duration
	// For is how long a Pause or an Isolate lasts.
	For time.Duration
}

// Schedule draws kills, pauses and isolations in a random order from seed
// (every kill, and every other isolation, at the leader of the moment;
// the other isolations and the pauses at a random node),
// so that a failing run replays with the same seed. Waits are 100–600 ms,
// pauses 200–1500 ms and isolations 1.5–3 s (longer than an election
// timeout, so that an isolated leader is replaced): when faults land is
// what varies, and no verdict depends on it.
func Schedule(seed uint64, nodes, kills, pauses int, isolations ...int) []Fault {
	rng := rand.New(rand.NewPCG(seed, 0x636c7573746572))
	var fs []Fault
	for range kills {
		fs = append(fs, Fault{Kind: Kill9})
	}
	for range pauses {
		fs = append(fs, Fault{Kind: Pause})
	}
	for _, n := range isolations {
		for range n {
			fs = append(fs, Fault{Kind: Isolate})
		}
	}
	rng.Shuffle(len(fs), func(i, j int) { fs[i], fs[j] = fs[j], fs[i] })
	isolated := 0
	for i := range fs {
		fs[i].Node = rng.IntN(max(nodes, 1))
		switch fs[i].Kind {
		case Kill9:
			fs[i].AtLeader = true
		case Isolate:
			fs[i].AtLeader = isolated%2 == 0
			isolated++
		}
		fs[i].After = time.Duration(100+rng.IntN(500)) * time.Millisecond
		switch fs[i].Kind {
		case Pause:
			fs[i].For = time.Duration(200+rng.IntN(1300)) * time.Millisecond
		case Isolate:
			fs[i].For = time.Duration(1500+rng.IntN(1500)) * time.Millisecond
		}
	}
	return fs
}

// Run applies the schedule, logging each fault through logf, and returns
// the first error (a node that did not come back) or ctx's. Every paused
// node is resumed before it returns.
func (c *Cluster) Run(ctx context.Context, schedule []Fault, logf func(format string, args ...any)) error {
	for i, f := range schedule {
		if err := sleep(ctx, f.After); err != nil {
			return err
		}
		n, what := c.Nodes[f.Node], "node"
		if f.AtLeader && c.Leader != nil {
			if i, ok := c.Leader(ctx); ok {
				n, what = c.Nodes[i], "leader"
			}
		}
		start := time.Now()
		switch f.Kind {
		case Kill9:
			n.Kill()
			if err := n.Restart(); err != nil {
				return err
			}
			logf("nemesis %d/%d: %s %d killed with SIGKILL, serving again after %v", i+1, len(schedule), what, n.Index+1, time.Since(start).Round(time.Millisecond))
		case Pause:
			if err := n.Pause(); err != nil {
				return err
			}
			err := sleep(ctx, f.For)
			if rerr := n.Resume(); rerr != nil {
				return rerr
			}
			if err != nil {
				return err
			}
			logf("nemesis %d/%d: node %d paused (SIGSTOP) for %v", i+1, len(schedule), n.Index+1, f.For)
		case Isolate:
			if err := c.Isolate(n); err != nil {
				return err
			}
			err := sleep(ctx, f.For)
			if rerr := c.Rejoin(n); rerr != nil {
				return rerr
			}
			if err != nil {
				return err
			}
			logf("nemesis %d/%d: %s %d isolated from the others for %v", i+1, len(schedule), what, n.Index+1, f.For)
		default:
			return fmt.Errorf("clustertest: fault kind %d", f.Kind)
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
