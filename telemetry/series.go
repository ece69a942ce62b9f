package telemetry

import (
	"context"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// SeriesSet holds every live queue's synchronous figures: its histograms
// and counters, recorded on the hot path with atomics. An exporter reads
// them at each collection (otlpexport turns them into a metric Producer),
// so a deleted queue's series leave the next export: the SDK's own
// synchronous instruments keep every attribute set they have seen for the
// life of the process, and under queue churn they fill the cardinality
// limit, after which new queues' latency folds into the overflow series.
// A queue created again starts its series afresh, with a new start time.
type SeriesSet struct {
	mu     sync.RWMutex
	queues map[string]*QueueSeries
}

// NewSeriesSet returns an empty set.
func NewSeriesSet() *SeriesSet { return &SeriesSet{queues: map[string]*QueueSeries{}} }

// SeriesProvider is what a meter provider whose readers also export a
// SeriesSet implements (otlpexport's and telemetrytest's do).
type SeriesProvider interface {
	Series() *SeriesSet
}

// Open starts the series of queue, replacing any it had. On a nil set it
// returns nil, whose instruments record nothing.
func (s *SeriesSet) Open(queue string) *QueueSeries {
	if s == nil {
		return nil
	}
	q := &QueueSeries{queue: queue, start: time.Now(), byKey: map[seriesKey]*seriesItem{}}
	s.mu.Lock()
	s.queues[queue] = q
	s.mu.Unlock()
	return q
}

// Drop ends queue's series if they are still q (a queue created again
// under the name has series of its own, which stay).
func (s *SeriesSet) Drop(queue string, q *QueueSeries) {
	if s == nil || q == nil {
		return
	}
	s.mu.Lock()
	if s.queues[queue] == q {
		delete(s.queues, queue)
	}
	s.mu.Unlock()
}

// Each calls fn with every series of every live queue, by metric name,
// then queue, then attributes, so an export is stable.
func (s *SeriesSet) Each(fn func(SeriesPoint)) {
	if s == nil {
		return
	}
	s.mu.RLock()
	qs := make([]*QueueSeries, 0, len(s.queues))
	for _, q := range s.queues {
		qs = append(qs, q)
	}
	s.mu.RUnlock()
	var items []SeriesPoint
	for _, q := range qs {
		q.mu.Lock()
		for _, it := range q.items {
			items = append(items, SeriesPoint{Spec: it.spec, Queue: q.queue, Start: q.start, Attrs: it.attrs, Histogram: it.hist, Counter: it.counter})
		}
		q.mu.Unlock()
	}
	sort.SliceStable(items, func(i, j int) bool {
		if items[i].Spec.Name != items[j].Spec.Name {
			return items[i].Spec.Name < items[j].Spec.Name
		}
		return items[i].Queue < items[j].Queue
	})
	for _, it := range items {
		fn(it)
	}
}

// SeriesPoint is one series of a SeriesSet: a histogram or a counter.
type SeriesPoint struct {
	Spec  MetricSpec
	Queue string
	// Start is when the queue's series began (cumulative start time).
	Start time.Time
	// Attrs are the series' attributes, queue_id included.
	Attrs     attribute.Set
	Histogram *Histogram
	Counter   *Counter
}

// QueueSeries is one queue's series. Its instruments are made once and
// kept by the queue actor; recording on them takes no lock.
type QueueSeries struct {
	queue string
	start time.Time
	mu    sync.Mutex
	items []*seriesItem
	byKey map[seriesKey]*seriesItem
}

type seriesKey struct {
	name  string
	attrs attribute.Distinct
}

type seriesItem struct {
	spec    MetricSpec
	attrs   attribute.Set
	hist    *Histogram
	counter *Counter
}

// item returns the series of spec with queue_id and attrs, making it with
// mk the first time.
func (q *QueueSeries) item(spec MetricSpec, attrs []attribute.KeyValue, mk func(*seriesItem)) *seriesItem {
	set := attribute.NewSet(append([]attribute.KeyValue{attribute.String(AttrQueueID, q.queue)}, attrs...)...)
	key := seriesKey{spec.Name, set.Equivalent()}
	q.mu.Lock()
	defer q.mu.Unlock()
	if it := q.byKey[key]; it != nil {
		return it
	}
	it := &seriesItem{spec: spec, attrs: set}
	mk(it)
	q.byKey[key] = it
	q.items = append(q.items, it)
	return it
}

// Histogram returns the queue's histogram of spec with attrs (besides
// queue_id) and bucket bounds; nil, which records nothing, on a nil q.
func (q *QueueSeries) Histogram(spec MetricSpec, bounds []float64, attrs ...attribute.KeyValue) *Histogram {
	if q == nil {
		return nil
	}
	return q.item(spec, attrs, func(it *seriesItem) { it.hist = newHistogram(bounds) }).hist
}

// Counter returns the queue's counter of spec with attrs (besides
// queue_id); nil, which counts nothing, on a nil q.
func (q *QueueSeries) Counter(spec MetricSpec, attrs ...attribute.KeyValue) *Counter {
	if q == nil {
		return nil
	}
	return q.item(spec, attrs, func(it *seriesItem) { it.counter = &Counter{} }).counter
}

// Counter is a monotonic count.
type Counter struct{ n atomic.Int64 }

// Add adds n; a no-op on nil.
func (c *Counter) Add(n int64) {
	if c != nil {
		c.n.Add(n)
	}
}

// Value is the count now.
func (c *Counter) Value() int64 { return c.n.Load() }

// Histogram is an explicit-bucket histogram with one exemplar per bucket:
// the latest measurement made inside a sampled span, so a slow bucket
// links to a trace that exists.
type Histogram struct {
	bounds    []float64
	counts    []atomic.Uint64 // len(bounds)+1
	count     atomic.Uint64
	sum       atomic.Uint64 // float64 bits
	exemplars []atomic.Pointer[Exemplar]
}

// Exemplar is one measurement with the trace it was made in.
type Exemplar struct {
	Value   float64
	Time    time.Time
	TraceID trace.TraceID
	SpanID  trace.SpanID
}

func newHistogram(bounds []float64) *Histogram {
	return &Histogram{bounds: bounds, counts: make([]atomic.Uint64, len(bounds)+1), exemplars: make([]atomic.Pointer[Exemplar], len(bounds)+1)}
}

// Record adds v; when ctx carries a sampled span, v becomes its bucket's
// exemplar. A no-op on nil.
func (h *Histogram) Record(ctx context.Context, v float64) {
	if h == nil || math.IsNaN(v) {
		return
	}
	i, _ := slices.BinarySearch(h.bounds, v) // buckets are (prev, bound]
	h.counts[i].Add(1)
	h.count.Add(1)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			break
		}
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsSampled() {
		h.exemplars[i].Store(&Exemplar{Value: v, Time: time.Now(), TraceID: sc.TraceID(), SpanID: sc.SpanID()})
	}
}

// HistogramSnapshot is a histogram's state at one moment.
type HistogramSnapshot struct {
	Bounds       []float64
	BucketCounts []uint64
	Count        uint64
	Sum          float64
	Exemplars    []Exemplar
}

// Snapshot reads h. Concurrent records may land in Count a moment before
// their bucket: Count is taken as the buckets' sum, so the two agree.
func (h *Histogram) Snapshot() HistogramSnapshot {
	s := HistogramSnapshot{Bounds: h.bounds, BucketCounts: make([]uint64, len(h.counts)), Sum: math.Float64frombits(h.sum.Load())}
	for i := range h.counts {
		s.BucketCounts[i] = h.counts[i].Load()
		s.Count += s.BucketCounts[i]
		if e := h.exemplars[i].Load(); e != nil {
			s.Exemplars = append(s.Exemplars, *e)
		}
	}
	return s
}
