package telemetry

import (
	"cmp"
	"math"
	"slices"
	"sync"
	"time"
)

// The fair-share window: FairShareBuckets buckets of FairShareBucket each.
const (
	// FairShareBucket is the length of one bucket of the fair-share window.
	FairShareBucket = 5 * time.Second
	// FairShareBuckets is how many buckets the window holds.
	FairShareBuckets = 12
	// FairShareWindow is how far back fila.fairness.fair_share_ratio looks.
	FairShareWindow = FairShareBucket * FairShareBuckets
)

// FairShare holds one queue's per-fairness-key figures: the cumulative
// deliveries per series (fila.fairness.throughput) and, in
// FairShareBucket-long buckets over the last FairShareWindow, each series'
// deliveries, whether it was backlogged (had ready messages) at the latest
// reading, and its weight. The telemetry actor records into it; the
// instruments' callback reads it at each collection, so the ratio is worked
// out against the clock and decays without any new reading. A mutex guards
// it: the callback waits on no actor, only on one Record at most.
type FairShare struct {
	mu      sync.Mutex
	totals  map[string]int64
	buckets [FairShareBuckets]fairBucket
}

type fairBucket struct {
	at   int64 // the bucket's number: Unix time / FairShareBucket
	keys map[string]*fairKey
}

type fairKey struct {
	deliveries int64
	backlogged bool
	weight     int64
}

// NewFairShare returns an empty FairShare.
func NewFairShare() *FairShare { return &FairShare{totals: map[string]int64{}} }

// KeepTotals returns a new FairShare with f's cumulative deliveries and an
// empty window: a deleted queue's counts go on, its window does not.
func (f *FairShare) KeepTotals() *FairShare {
	n := NewFairShare()
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, v := range f.totals {
		n.totals[k] = v
	}
	return n
}

// Record folds one reading in at now. keys must name every series that is
// backlogged now (a reading states the whole backlog): a series of the
// current bucket left out is no longer backlogged.
func (f *FairShare) Record(now time.Time, keys map[string]KeyReading) {
	at := now.UnixNano() / int64(FairShareBucket)
	f.mu.Lock()
	defer f.mu.Unlock()
	b := &f.buckets[at%FairShareBuckets]
	if b.at != at || b.keys == nil {
		b.at, b.keys = at, make(map[string]*fairKey, len(keys))
	}
	for _, k := range b.keys {
		k.backlogged = false
	}
	for s, r := range keys {
		f.totals[s] += r.Deliveries
		k := b.keys[s]
		if k == nil {
			k = &fairKey{}
			b.keys[s] = k
		}
		k.deliveries += r.Deliveries
		k.backlogged = r.Backlogged
		k.weight = max(r.Weight, 1)
	}
}

// Totals calls fn with each series' cumulative deliveries.
func (f *FairShare) Totals(fn func(series string, deliveries int64)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for s, n := range f.totals {
		fn(s, n)
	}
}

// Ratios calls fn with each series' fair-share ratio over the window
// ending at now (docs/telemetry.md has the formula): its deliveries over
// the deliveries max-min fairness by weight would have given it, bucket by
// bucket. A series that wanted nothing in the window, or a window with no
// deliveries, gives no ratio.
func (f *FairShare) Ratios(now time.Time, fn func(series string, ratio float64)) {
	at := now.UnixNano() / int64(FairShareBucket)
	actual, expected := map[string]float64{}, map[string]float64{}
	var scratch []share
	f.mu.Lock()
	for i := range f.buckets {
		b := &f.buckets[i]
		if b.keys == nil || b.at <= at-FairShareBuckets || b.at > at {
			continue
		}
		scratch = scratch[:0]
		for s, k := range b.keys {
			demand := float64(k.deliveries)
			if k.backlogged {
				demand = math.Inf(1)
			}
			scratch = append(scratch, share{series: s, delivered: float64(k.deliveries), demand: demand, weight: float64(k.weight)})
		}
		fairAllocation(scratch)
		for _, s := range scratch {
			actual[s.series] += s.delivered
			expected[s.series] += s.alloc
		}
	}
	f.mu.Unlock()
	for s, e := range expected {
		if e > 0 {
			fn(s, actual[s]/e)
		}
	}
}

// share is one series in one bucket: what it got, what it wanted (+Inf
// while backlogged), its weight, and what max-min fairness allots it.
type share struct {
	series                           string
	delivered, demand, weight, alloc float64
}

// fairAllocation shares the bucket's deliveries by weighted max-min
// fairness (water-filling): a series that wanted less than its weighted
// share gets what it wanted, and the rest is shared by weight among the
// others. DRR aims at exactly this allocation.
func fairAllocation(ss []share) {
	var total, weights float64
	for _, s := range ss {
		total += s.delivered
		weights += s.weight
	}
	if total == 0 {
		return
	}
	slices.SortFunc(ss, func(a, b share) int {
		return cmp.Compare(a.demand/a.weight, b.demand/b.weight)
	})
	remaining := total
	i := 0
	for ; i < len(ss); i++ {
		fair := remaining * ss[i].weight / weights
		if ss[i].demand > fair {
			break
		}
		ss[i].alloc = ss[i].demand
		remaining -= ss[i].demand
		weights -= ss[i].weight
	}
	for ; i < len(ss); i++ {
		ss[i].alloc = remaining * ss[i].weight / weights
	}
}
