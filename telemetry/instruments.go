package telemetry

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// ScopeName is the instrumentation scope of filad's own instruments and spans.
const ScopeName = "github.com/fila-dev/filad"

// Metric names, as SPEC §6 fixes them.
const (
	MetricEnqueued    = "fila.messages.enqueued"
	MetricLeased      = "fila.messages.leased"
	MetricAcked       = "fila.messages.acked"
	MetricNacked      = "fila.messages.nacked"
	MetricQueueDepth  = "fila.queue.depth"
	MetricLeaseActive = "fila.leases.active"
)

// AttrQueueID is the attribute naming the queue on every fila.* series.
const AttrQueueID = "queue_id"

// RegisterInstruments creates the six fila.* instruments on mp. All are
// observable: one callback reads board at each collection, so the hot path
// pays nothing for metrics, a deleted queue's series disappear with it, and
// an idle queue reports 0. The counters are monotonic totals the queue actors
// count at the moment each change is durable.
func RegisterInstruments(mp metric.MeterProvider, board *Board) (metric.Registration, error) {
	m := mp.Meter(ScopeName)
	unit := metric.WithUnit("{message}")
	counters := []struct {
		name, desc string
		value      func(QueueReading) int64
	}{
		{MetricEnqueued, "Messages accepted durably by Enqueue.", func(r QueueReading) int64 { return r.Enqueued }},
		{MetricLeased, "Messages delivered to consumers under a lease.", func(r QueueReading) int64 { return r.Leased }},
		{MetricAcked, "Messages acknowledged and deleted.", func(r QueueReading) int64 { return r.Acked }},
		{MetricNacked, "Messages returned to ready by Nack.", func(r QueueReading) int64 { return r.Nacked }},
	}
	gauges := []struct {
		name, desc string
		value      func(QueueReading) int64
	}{
		{MetricQueueDepth, "Ready messages in the queue now.", func(r QueueReading) int64 { return r.Depth }},
		{MetricLeaseActive, "Leased (in-flight) messages in the queue now.", func(r QueueReading) int64 { return r.Leases }},
	}
	type observed struct {
		inst  metric.Int64Observable
		value func(QueueReading) int64
	}
	var all []observed
	for _, c := range counters {
		inst, err := m.Int64ObservableCounter(c.name, unit, metric.WithDescription(c.desc))
		if err != nil {
			return nil, fmt.Errorf("telemetry: %s: %w", c.name, err)
		}
		all = append(all, observed{inst, c.value})
	}
	for _, g := range gauges {
		inst, err := m.Int64ObservableGauge(g.name, unit, metric.WithDescription(g.desc))
		if err != nil {
			return nil, fmt.Errorf("telemetry: %s: %w", g.name, err)
		}
		all = append(all, observed{inst, g.value})
	}
	insts := make([]metric.Observable, len(all))
	for i, o := range all {
		insts[i] = o.inst
	}
	reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for q, r := range board.Snapshot() {
			set := metric.WithAttributeSet(attribute.NewSet(attribute.String(AttrQueueID, q)))
			for _, ob := range all {
				o.ObserveInt64(ob.inst, ob.value(r), set)
			}
		}
		return nil
	}, insts...)
	if err != nil {
		return nil, fmt.Errorf("telemetry: register callback: %w", err)
	}
	return reg, nil
}
