package cluster

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// countObserver records what a driver's Observer is told.
type countObserver struct {
	mu        sync.Mutex
	persisted int // entries, summed
	appends   int // Persisted calls
	committed int
	took      []time.Duration
	leaders   map[uint64][]uint64 // group → leaders in the order learnt
}

func (o *countObserver) Persisted(entries int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if entries <= 0 {
		panic(fmt.Sprintf("Persisted(%d)", entries))
	}
	o.persisted += entries
	o.appends++
}

func (o *countObserver) Committed(_ uint64, took time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.committed++
	o.took = append(o.took, took)
}

func (o *countObserver) LeaderChanged(group, leader uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.leaders[group] = append(o.leaders[group], leader)
}

func (o *countObserver) read() (persisted, appends, committed int, took []time.Duration, leaders map[uint64][]uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	l := map[uint64][]uint64{}
	for g, ids := range o.leaders {
		l[g] = slices.Clone(ids)
	}
	return o.persisted, o.appends, o.committed, slices.Clone(o.took), l
}

// The observer hears every acknowledged proposal once (on the node that
// proposed it), every entry persisted, and each new leader a node learns.
func TestObserverCountsCommitsAppendsAndLeaders(t *testing.T) {
	c := newTestCluster(t, 3, 1)
	const n = 25
	var want []string
	for i := range n {
		v := fmt.Sprintf("v%d", i)
		c.put(1, v)
		want = append(want, v)
	}
	c.converged(1, want)
	first := c.leader(1, 0)
	committed := 0
	for _, id := range c.peers {
		persisted, appends, got, took, leaders := c.obs[id].read()
		committed += got
		// Each node persists the n values, the term's empty entries and the
		// bootstrap's conf changes; an append holds at least one.
		if persisted < n || appends == 0 || appends > persisted {
			t.Errorf("node %d: %d entries in %d appends, want >= %d entries", id, persisted, appends, n)
		}
		for _, d := range took {
			if d <= 0 || d > patience {
				t.Errorf("node %d: a commit took %v", id, d)
			}
		}
		if l := leaders[1]; len(l) == 0 || l[len(l)-1] != first {
			t.Errorf("node %d learnt leaders %v, want the last %d", id, l, first)
		}
	}
	// An unknown outcome (a leadership lost mid-put) is retried and not
	// counted: exactly the acknowledged proposals are.
	if committed != n {
		t.Errorf("%d commits observed over the nodes, want %d", committed, n)
	}

	c.kill(first)
	next := c.leader(1, first)
	deadline := time.Now().Add(patience)
	for _, id := range c.peers {
		if id == first {
			continue
		}
		for {
			_, _, _, _, leaders := c.obs[id].read()
			if l := leaders[1]; len(l) >= 2 && l[len(l)-1] == next {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d learnt leaders %v, want %d last after %d", id, leaders[1], next, first)
			}
			time.Sleep(5 * time.Millisecond) // polls the observer; the outcome is the driver's
		}
	}
}
