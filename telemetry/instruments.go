package telemetry

import (
	"context"
	"fmt"

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
		inst, err := m.Int64ObservableGauge(spec.Name, metric.WithUnit(spec.Unit), metric.WithDescription(spec.Description))
		if err != nil {
			return nil, fmt.Errorf("telemetry: %s: %w", spec.Name, err)
		}
		gauges[i] = inst
		all = append(all, inst)
	}
	reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for q, r := range board.Snapshot() {
			set := metric.WithAttributeSet(attribute.NewSet(attribute.String(AttrQueueID, q)))
			for i, inst := range counters {
				o.ObserveInt64(inst, r.Counts[i], set)
			}
			for i, inst := range gauges {
				o.ObserveInt64(inst, r.Gauges[i], set)
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
// on; recording on them takes no lock in the SDK.
type QueueInstruments struct {
	// CommitDuration records CommitDuration, in seconds.
	CommitDuration metric.Float64Histogram
}

// NewQueueInstruments creates the queue actors' synchronous instruments on mp.
func NewQueueInstruments(mp metric.MeterProvider) (*QueueInstruments, error) {
	m := mp.Meter(ScopeName, metric.WithInstrumentationVersion(Version))
	h, err := m.Float64Histogram(CommitDuration.Name, metric.WithUnit(CommitDuration.Unit),
		metric.WithDescription(CommitDuration.Description),
		// fsync'd commits take 0.2–5 ms; unsynced ones tens of µs.
		metric.WithExplicitBucketBoundaries(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1))
	if err != nil {
		return nil, fmt.Errorf("telemetry: %s: %w", CommitDuration.Name, err)
	}
	return &QueueInstruments{CommitDuration: h}, nil
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
