package telemetry

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// RegisterInstruments creates the observable fila.* instruments of Counts
// and Gauges on mp. One callback reads board at each collection, so the hot
// path pays nothing for them, a deleted queue's series disappear with it,
// and an idle queue reports 0.
func RegisterInstruments(mp metric.MeterProvider, board *Board) (metric.Registration, error) {
	m := mp.Meter(ScopeName, metric.WithInstrumentationVersion(Version))
	var counters [numCounts]metric.Int64ObservableCounter
	var gauges [numGauges]metric.Int64ObservableGauge
	var ageGauges [numGauges]metric.Float64ObservableGauge // for the SinceUnixMillis ones
	var all []metric.Observable
	for i, spec := range Counts {
		inst, err := m.Int64ObservableCounter(spec.Name, metric.WithUnit(spec.Unit), metric.WithDescription(spec.Description))
		if err != nil {
			return nil, fmt.Errorf("telemetry: %s: %w", spec.Name, err)
		}
		counters[i] = inst
		all = append(all, inst)
	}
	for i, spec := range Gauges {
		var inst metric.Observable
		var err error
		if spec.SinceUnixMillis {
			ageGauges[i], err = m.Float64ObservableGauge(spec.Name, metric.WithUnit(spec.Unit), metric.WithDescription(spec.Description))
			inst = ageGauges[i]
		} else {
			gauges[i], err = m.Int64ObservableGauge(spec.Name, metric.WithUnit(spec.Unit), metric.WithDescription(spec.Description))
			inst = gauges[i]
		}
		if err != nil {
			return nil, fmt.Errorf("telemetry: %s: %w", spec.Name, err)
		}
		all = append(all, inst)
	}
	throughput, err := m.Int64ObservableCounter(FairnessThroughput.Name, metric.WithUnit(FairnessThroughput.Unit), metric.WithDescription(FairnessThroughput.Description))
	if err != nil {
		return nil, fmt.Errorf("telemetry: %s: %w", FairnessThroughput.Name, err)
	}
	ratio, err := m.Float64ObservableGauge(FairShareRatio.Name, metric.WithUnit(FairShareRatio.Unit), metric.WithDescription(FairShareRatio.Description))
	if err != nil {
		return nil, fmt.Errorf("telemetry: %s: %w", FairShareRatio.Name, err)
	}
	all = append(all, throughput, ratio)
	reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		now := time.Now()
		nowMS := now.UnixMilli()
		for q, r := range board.Snapshot() {
			set := metric.WithAttributeSet(attribute.NewSet(attribute.String(AttrQueueID, q)))
			if r.Fair != nil {
				keySet := func(key string) metric.MeasurementOption {
					return metric.WithAttributeSet(attribute.NewSet(attribute.String(AttrQueueID, q), attribute.String(AttrFairnessKey, key)))
				}
				r.Fair.Totals(func(key string, n int64) { o.ObserveInt64(throughput, n, keySet(key)) })
				r.Fair.Ratios(now, func(key string, v float64) { o.ObserveFloat64(ratio, v, keySet(key)) })
			}
			for i, inst := range counters {
				o.ObserveInt64(inst, r.Counts[i], set)
			}
			for i, spec := range Gauges {
				if spec.SinceUnixMillis {
					age := 0.0
					if at := r.Gauges[i]; at > 0 {
						age = float64(max(nowMS-at, 0)) / 1000
					}
					o.ObserveFloat64(ageGauges[i], age, set)
				} else {
					o.ObserveInt64(gauges[i], r.Gauges[i], set)
				}
			}
		}
		return nil
	}, all...)
	if err != nil {
		return nil, fmt.Errorf("telemetry: register callback: %w", err)
	}
	return reg, nil
}

// Bucket bounds of the per-queue histograms, in their specs' units.
var (
	// CommitBuckets: fsync'd commits take 0.2–5 ms; unsynced ones tens of µs.
	CommitBuckets = []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1}
	// MessageBuckets bound a message's wait or processing time: from
	// sub-millisecond to hours.
	MessageBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600}
	// LuaBuckets: a hook's budget is milliseconds, 10 µs … 1 s.
	LuaBuckets = []float64{0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1}
	// SizeBuckets bound a message's size in bytes: 64 B … 4 MiB (the
	// default max_message_bytes is 1 MiB).
	SizeBuckets = []float64{64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304}
)

// QueueMetrics are one queue's synchronous instruments, on its
// QueueSeries: recording takes no lock, and the series leave the export
// with the queue. On a nil QueueSeries every instrument is nil and records
// nothing.
type QueueMetrics struct {
	// CommitDuration, ReadDuration, WaitDuration and ProcessDuration
	// record their specs in seconds; MessageSize records MessageSize in
	// bytes.
	CommitDuration, ReadDuration, WaitDuration, ProcessDuration, MessageSize *Histogram
	// LuaBreakerActivations counts its spec.
	LuaBreakerActivations *Counter
	// Refused counts EnqueueRefused by reason (RefusedMaxDepth,
	// RefusedMaxBytes); made up front, so a queue's refusals read 0, not
	// no data, until the first.
	Refused map[string]*Counter
	series  *QueueSeries
}

// NewQueueMetrics makes the instruments of q.
func NewQueueMetrics(q *QueueSeries) *QueueMetrics {
	return &QueueMetrics{
		series:                q,
		CommitDuration:        q.Histogram(CommitDuration, CommitBuckets),
		ReadDuration:          q.Histogram(ReadDuration, CommitBuckets),
		WaitDuration:          q.Histogram(WaitDuration, MessageBuckets),
		ProcessDuration:       q.Histogram(ProcessDuration, MessageBuckets),
		MessageSize:           q.Histogram(MessageSize, SizeBuckets),
		LuaBreakerActivations: q.Counter(LuaBreakerActivations),
		Refused: map[string]*Counter{
			RefusedMaxDepth: q.Counter(EnqueueRefused, attribute.String(AttrReason, RefusedMaxDepth)),
			RefusedMaxBytes: q.Counter(EnqueueRefused, attribute.String(AttrReason, RefusedMaxBytes)),
		},
	}
}

// Lua returns the duration histogram and error counter of hook.
func (m *QueueMetrics) Lua(hook string) (*Histogram, *Counter) {
	a := attribute.String(AttrHook, hook)
	return m.series.Histogram(LuaDuration, LuaBuckets, a), m.series.Counter(LuaErrors, a)
}

// Throttle returns the counter of throttle decisions on key with result.
func (m *QueueMetrics) Throttle(key, result string) *Counter {
	return m.series.Counter(ThrottleDecisions, attribute.String(AttrThrottleKey, key), attribute.String(AttrResult, result))
}

// NewCommitItems creates the fila.storage.commit.messages histogram on mp
// and returns the storage committer's hook recording it.
func NewCommitItems(mp metric.MeterProvider) (func(items int), error) {
	m := mp.Meter(ScopeName, metric.WithInstrumentationVersion(Version))
	h, err := m.Int64Histogram(CommitItems.Name, metric.WithUnit(CommitItems.Unit), metric.WithDescription(CommitItems.Description),
		metric.WithExplicitBucketBoundaries(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384))
	if err != nil {
		return nil, fmt.Errorf("telemetry: %s: %w", CommitItems.Name, err)
	}
	return func(items int) { h.Record(context.Background(), int64(items)) }, nil
}

// RegisterAlarms creates the fila.alarm.active gauge on mp: one series per
// name, 1 while raised(i) for names[i].
func RegisterAlarms(mp metric.MeterProvider, names []string, raised func(i int) bool) (metric.Registration, error) {
	m := mp.Meter(ScopeName, metric.WithInstrumentationVersion(Version))
	g, err := m.Int64ObservableGauge(AlarmActive.Name, metric.WithUnit(AlarmActive.Unit), metric.WithDescription(AlarmActive.Description))
	if err != nil {
		return nil, fmt.Errorf("telemetry: %s: %w", AlarmActive.Name, err)
	}
	sets := make([]metric.ObserveOption, len(names))
	for i, n := range names {
		sets[i] = metric.WithAttributeSet(attribute.NewSet(attribute.String(AttrAlarm, n)))
	}
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for i := range names {
			v := int64(0)
			if raised(i) {
				v = 1
			}
			o.ObserveInt64(g, v, sets[i])
		}
		return nil
	}, g)
}

// RegisterThrottleTokens creates fila.throttle.tokens_remaining on mp,
// read from tokens (throttle key → tokens now) at each collection.
func RegisterThrottleTokens(mp metric.MeterProvider, tokens func() map[string]float64) (metric.Registration, error) {
	m := mp.Meter(ScopeName, metric.WithInstrumentationVersion(Version))
	g, err := m.Float64ObservableGauge(ThrottleTokens.Name, metric.WithUnit(ThrottleTokens.Unit), metric.WithDescription(ThrottleTokens.Description))
	if err != nil {
		return nil, fmt.Errorf("telemetry: %s: %w", ThrottleTokens.Name, err)
	}
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for k, v := range tokens() {
			o.ObserveFloat64(g, v, metric.WithAttributes(attribute.String(AttrThrottleKey, k)))
		}
		return nil
	}, g)
}

// StorageReading is the store's and its disk's figures at one collection.
type StorageReading struct {
	// Size is StorageSize; Free is DiskFree. ok false: not readable now.
	Size, Free int64
	OK         bool
}

// RegisterStorage creates fila.storage.size, fila.storage.disk.free and
// fila.storage.disk.min_free (minFree, the limit) on mp, read at each
// collection.
func RegisterStorage(mp metric.MeterProvider, minFree int64, read func() StorageReading) (metric.Registration, error) {
	m := mp.Meter(ScopeName, metric.WithInstrumentationVersion(Version))
	var gs [3]metric.Int64ObservableGauge
	for i, spec := range []MetricSpec{StorageSize, DiskFree, DiskMinFree} {
		g, err := m.Int64ObservableGauge(spec.Name, metric.WithUnit(spec.Unit), metric.WithDescription(spec.Description))
		if err != nil {
			return nil, fmt.Errorf("telemetry: %s: %w", spec.Name, err)
		}
		gs[i] = g
	}
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(gs[2], minFree)
		if r := read(); r.OK {
			o.ObserveInt64(gs[0], r.Size)
			o.ObserveInt64(gs[1], r.Free)
		}
		return nil
	}, gs[0], gs[1], gs[2])
}

// ProcessReading is the process's figures at one collection; a negative
// value is not readable here.
type ProcessReading struct {
	UserCPU, SystemCPU time.Duration
	RSS, FDs           int64
	// Anonymous is the resident set less its file-backed pages.
	Anonymous int64
}

// RegisterProcess creates the process.* instruments on mp, read at each
// collection.
func RegisterProcess(mp metric.MeterProvider, read func() ProcessReading) (metric.Registration, error) {
	m := mp.Meter(ScopeName, metric.WithInstrumentationVersion(Version))
	cpu, err := m.Float64ObservableCounter(ProcessCPUTime.Name, metric.WithUnit(ProcessCPUTime.Unit), metric.WithDescription(ProcessCPUTime.Description))
	if err != nil {
		return nil, fmt.Errorf("telemetry: %s: %w", ProcessCPUTime.Name, err)
	}
	rss, err := m.Int64ObservableGauge(ProcessMemory.Name, metric.WithUnit(ProcessMemory.Unit), metric.WithDescription(ProcessMemory.Description))
	if err != nil {
		return nil, fmt.Errorf("telemetry: %s: %w", ProcessMemory.Name, err)
	}
	fds, err := m.Int64ObservableGauge(ProcessFDs.Name, metric.WithUnit(ProcessFDs.Unit), metric.WithDescription(ProcessFDs.Description))
	if err != nil {
		return nil, fmt.Errorf("telemetry: %s: %w", ProcessFDs.Name, err)
	}
	anon, err := m.Int64ObservableGauge(ProcessAnonymousMemory.Name, metric.WithUnit(ProcessAnonymousMemory.Unit), metric.WithDescription(ProcessAnonymousMemory.Description))
	if err != nil {
		return nil, fmt.Errorf("telemetry: %s: %w", ProcessAnonymousMemory.Name, err)
	}
	user := metric.WithAttributeSet(attribute.NewSet(attribute.String("cpu.mode", "user")))
	system := metric.WithAttributeSet(attribute.NewSet(attribute.String("cpu.mode", "system")))
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		r := read()
		if r.UserCPU >= 0 {
			o.ObserveFloat64(cpu, r.UserCPU.Seconds(), user)
			o.ObserveFloat64(cpu, r.SystemCPU.Seconds(), system)
		}
		if r.RSS >= 0 {
			o.ObserveInt64(rss, r.RSS)
		}
		if r.FDs >= 0 {
			o.ObserveInt64(fds, r.FDs)
		}
		if r.Anonymous >= 0 {
			o.ObserveInt64(anon, r.Anonymous)
		}
		return nil
	}, cpu, rss, fds, anon)
}
