package client

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/semconv/v1.43.0/messagingconv"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/telemetry"
)

// system is messaging.system: filad speaks Fila's API.
const system messagingconv.SystemAttr = "fila"

// instruments are the messaging conventions' client metrics
// (messagingconv: the names, units and descriptions are the spec's).
type instruments struct {
	sent     messagingconv.ClientSentMessages
	consumed messagingconv.ClientConsumedMessages
	duration messagingconv.ClientOperationDuration
	process  messagingconv.ProcessDuration
}

// newInstruments makes the instruments on mp. An instrument that cannot be
// made goes to otel.Handle and records nothing: metrics never stop a client.
func newInstruments(mp metric.MeterProvider) instruments {
	m := mp.Meter(ScopeName, metric.WithInstrumentationVersion(telemetry.Version))
	var in instruments
	var err error
	handle := func(e error) {
		if e != nil {
			otel.Handle(fmt.Errorf("client: %w", e))
		}
	}
	in.sent, err = messagingconv.NewClientSentMessages(m)
	handle(err)
	in.consumed, err = messagingconv.NewClientConsumedMessages(m)
	handle(err)
	in.duration, err = messagingconv.NewClientOperationDuration(m, metric.WithExplicitBucketBoundaries(durationBuckets...))
	handle(err)
	in.process, err = messagingconv.NewProcessDuration(m, metric.WithExplicitBucketBoundaries(durationBuckets...))
	handle(err)
	return in
}

// durationBuckets are the conventions' advice for messaging durations
// (seconds), with filad's sub-millisecond calls given buckets of their own.
var durationBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// setKey names one attribute set of the client's measurements.
type setKey struct {
	op, queue string
	err       string // error.type; "" for success
	typed     bool   // with messaging.operation.type (operation.duration)
}

// metricSet is the attribute set of a measurement of op on queue:
// messaging.operation.name, messaging.system, the queue, the server's
// address, error.type for a failure (err not nil) and, if typed,
// messaging.operation.type. Sets are made once per key and kept (a
// client talks to few queues, and error types are gRPC codes), so a
// message's measurements cost no allocation.
func (c *Client) metricSet(op, queue string, err error, typed bool) attribute.Set {
	key := setKey{op: op, queue: queue, typed: typed}
	if err != nil {
		key.err = errorType(err)
	}
	if set, ok := c.sets.Load(key); ok {
		return set.(attribute.Set)
	}
	attrs := append([]attribute.KeyValue{
		attribute.String("messaging.operation.name", op), attribute.String("messaging.system", string(system)),
		attribute.String("messaging.destination.name", queue),
	}, c.server...)
	if key.err != "" {
		attrs = append(attrs, attribute.String("error.type", key.err))
	}
	if typed {
		attrs = append(attrs, attribute.String("messaging.operation.type", telemetry.OperationType(op)))
	}
	set, _ := c.sets.LoadOrStore(key, attribute.NewSet(attrs...))
	return set.(attribute.Set)
}

// recordSend counts a message sent to queue (err: it was not stored) and
// the duration of the operation that sent it, from start.
func (c *Client) recordSend(ctx context.Context, queue string, start time.Time, err error) {
	c.recordSent(ctx, queue, 1, err)
	c.recordOperation(ctx, telemetry.OpSend, queue, start, err)
}

// recordSent counts n messages sent to queue (err: they were not stored).
func (c *Client) recordSent(ctx context.Context, queue string, n int, err error) {
	c.metrics.sent.AddSet(ctx, int64(n), c.metricSet(telemetry.OpSend, queue, err, false))
}

// recordOperation records the duration of op (send, ack, nack) on queue,
// from start.
func (c *Client) recordOperation(ctx context.Context, op, queue string, start time.Time, err error) {
	c.metrics.duration.RecordSet(ctx, time.Since(start).Seconds(), c.metricSet(op, queue, err, true))
}

// recordConsumed counts n messages a stream on queue delivered.
func (c *Client) recordConsumed(ctx context.Context, queue string, n int) {
	c.metrics.consumed.AddSet(ctx, int64(n), c.metricSet(telemetry.OpReceive, queue, nil, false))
}

// recordProcess records a handler's run over a message of queue.
func (c *Client) recordProcess(ctx context.Context, queue string, start time.Time, err error) {
	c.metrics.process.RecordSet(ctx, time.Since(start).Seconds(), c.metricSet(telemetry.OpProcess, queue, err, false))
}

// errorType is error.type for err: its gRPC status code, or its Go type.
func errorType(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Code().String()
	}
	return fmt.Sprintf("%T", err)
}
