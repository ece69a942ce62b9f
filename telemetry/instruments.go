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

// QueueInstruments are the synchronous instruments a queue actor records
// on; recording on them takes no lock shared between queues in the SDK
// (each queue's attribute set has its own aggregation).
type QueueInstruments struct {
	// CommitDuration, WaitDuration, ProcessDuration and LuaDuration record
	// their specs, in seconds.
	CommitDuration, WaitDuration, ProcessDuration, LuaDuration metric.Float64Histogram
	// LuaErrors, LuaBreakerActivations and ThrottleDecisions count their
	// specs.
	LuaErrors, LuaBreakerActivations, ThrottleDecisions metric.Int64Counter
}

// NewQueueInstruments creates the queue actors' synchronous instruments on mp.
func NewQueueInstruments(mp metric.MeterProvider) (*QueueInstruments, error) {
	m := mp.Meter(ScopeName, metric.WithInstrumentationVersion(Version))
	var qi QueueInstruments
	for _, h := range []struct {
		into    *metric.Float64Histogram
		spec    MetricSpec
		buckets []float64
	}{
		// fsync'd commits take 0.2–5 ms; unsynced ones tens of µs.
		{&qi.CommitDuration, CommitDuration, []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1}},
		// Waits and processing run from sub-millisecond to hours.
		{&qi.WaitDuration, WaitDuration, messageBuckets},
		{&qi.ProcessDuration, ProcessDuration, messageBuckets},
		// A hook's budget is milliseconds: 10 µs … 1 s.
		{&qi.LuaDuration, LuaDuration, []float64{0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1}},
	} {
		inst, err := m.Float64Histogram(h.spec.Name, metric.WithUnit(h.spec.Unit),
			metric.WithDescription(h.spec.Description), metric.WithExplicitBucketBoundaries(h.buckets...))
		if err != nil {
			return nil, fmt.Errorf("telemetry: %s: %w", h.spec.Name, err)
		}
		*h.into = inst
	}
	for _, c := range []struct {
		into *metric.Int64Counter
		spec MetricSpec
	}{{&qi.LuaErrors, LuaErrors}, {&qi.LuaBreakerActivations, LuaBreakerActivations}, {&qi.ThrottleDecisions, ThrottleDecisions}} {
		inst, err := m.Int64Counter(c.spec.Name, metric.WithUnit(c.spec.Unit), metric.WithDescription(c.spec.Description))
		if err != nil {
			return nil, fmt.Errorf("telemetry: %s: %w", c.spec.Name, err)
		}
		*c.into = inst
	}
	return &qi, nil
}

// messageBuckets bound a message's wait or processing time, in seconds.
var messageBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600}

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
