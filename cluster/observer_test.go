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
		persisted, appends, got, took, _ := c.obs[id].read()
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
	}
	// An unknown outcome (a leadership lost mid-put) is retried and not
	// counted: exactly the acknowledged proposals are.
	if committed != n {
		t.Errorf("%d commits observed over the nodes, want %d", committed, n)
	}

	c.learnt(0, 1)

	c.kill(first)
	c.learnt(first, 2)
}

// learnt waits until every live node other than gone (0: none) has
// learnt at least min leaders of group 1, the last of them the node that
// leads it now. The leader is read again on each poll: a busy machine may
// hold a further election meanwhile.
func (c *testCluster) learnt(gone uint64, min int) {
	c.t.Helper()
	deadline := time.Now().Add(patience)
	for _, id := range c.peers {
		if id == gone {
			continue
		}
		for {
			leader := c.leader(1, gone)
			_, _, _, _, leaders := c.obs[id].read()
			if l := leaders[1]; len(l) >= min && l[len(l)-1] == leader {
				break
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("node %d learnt leaders %v, want at least %d, the last %d", id, leaders[1], min, leader)
			}
			time.Sleep(5 * time.Millisecond) // polls the observer; the outcome is the driver's
		}
	}
}
