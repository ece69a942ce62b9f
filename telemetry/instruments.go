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

// Instruments are the fila.* counters. The gauges are observable and read a
// GaugeBoard, so they need no handle here. Counters are safe for concurrent use.
type Instruments struct {
	Enqueued metric.Int64Counter
	Leased   metric.Int64Counter
	Acked    metric.Int64Counter
	Nacked   metric.Int64Counter
}

// NewInstruments creates the counters and registers the observable gauges on
// mp, reading board at each collection.
func NewInstruments(mp metric.MeterProvider, board *GaugeBoard) (*Instruments, error) {
	m := mp.Meter(ScopeName)
	counter := func(name, desc string) (metric.Int64Counter, error) {
		c, err := m.Int64Counter(name, metric.WithUnit("{message}"), metric.WithDescription(desc))
		if err != nil {
			return nil, fmt.Errorf("telemetry: counter %s: %w", name, err)
		}
		return c, nil
	}
	var inst Instruments
	var err error
	for _, c := range []struct {
		dst        *metric.Int64Counter
		name, desc string
	}{
		{&inst.Enqueued, MetricEnqueued, "Messages accepted durably by Enqueue."},
		{&inst.Leased, MetricLeased, "Messages delivered to consumers under a lease."},
		{&inst.Acked, MetricAcked, "Messages acknowledged and deleted."},
		{&inst.Nacked, MetricNacked, "Messages returned to ready by Nack."},
	} {
		if *c.dst, err = counter(c.name, c.desc); err != nil {
			return nil, err
		}
	}
	depth, err := m.Int64ObservableGauge(MetricQueueDepth, metric.WithUnit("{message}"),
		metric.WithDescription("Ready messages in the queue now."))
	if err != nil {
		return nil, fmt.Errorf("telemetry: gauge %s: %w", MetricQueueDepth, err)
	}
	leases, err := m.Int64ObservableGauge(MetricLeaseActive, metric.WithUnit("{message}"),
		metric.WithDescription("Leased (in-flight) messages in the queue now."))
	if err != nil {
		return nil, fmt.Errorf("telemetry: gauge %s: %w", MetricLeaseActive, err)
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for q, g := range board.Snapshot() {
			set := metric.WithAttributeSet(attribute.NewSet(attribute.String(AttrQueueID, q)))
			o.ObserveInt64(depth, g.Depth, set)
			o.ObserveInt64(leases, g.Leases, set)
		}
		return nil
	}, depth, leases)
	if err != nil {
		return nil, fmt.Errorf("telemetry: gauge callback: %w", err)
	}
	return &inst, nil
}

// QueueAttrs returns the attribute option for a queue's series; build it once
// per queue, not per call.
func QueueAttrs(queue string) metric.MeasurementOption {
	return metric.WithAttributeSet(attribute.NewSet(attribute.String(AttrQueueID, queue)))
}
