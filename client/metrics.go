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

// metricAttrs are a measurement's attributes besides the operation name and
// system: the queue, the server's address and, for a failure, error.type.
func (c *Client) metricAttrs(queue string, err error) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, len(c.server)+2)
	attrs = append(append(attrs, attribute.String("messaging.destination.name", queue)), c.server...)
	if err != nil {
		attrs = append(attrs, attribute.String("error.type", errorType(err)))
	}
	return attrs
}

// recordSend counts n messages sent to queue (err: they were not stored)
// and the duration of the operation that sent them, from start.
func (c *Client) recordSend(ctx context.Context, queue string, n int, start time.Time, err error) {
	attrs := c.metricAttrs(queue, err)
	c.metrics.sent.Add(ctx, int64(n), telemetry.OpSend, system, attrs...)
	c.recordOperation(ctx, telemetry.OpSend, start, attrs)
}

// recordSettle records the duration of an ack or nack of messages of queue.
func (c *Client) recordSettle(ctx context.Context, op, queue string, start time.Time, err error) {
	c.recordOperation(ctx, op, start, c.metricAttrs(queue, err))
}

func (c *Client) recordOperation(ctx context.Context, op string, start time.Time, attrs []attribute.KeyValue) {
	attrs = append(attrs, c.metrics.duration.AttrOperationType(messagingconv.OperationTypeAttr(telemetry.OperationType(op))))
	c.metrics.duration.Record(ctx, time.Since(start).Seconds(), op, system, attrs...)
}

// recordProcess records a handler's run over a message of queue.
func (c *Client) recordProcess(ctx context.Context, queue string, start time.Time, err error) {
	c.metrics.process.Record(ctx, time.Since(start).Seconds(), telemetry.OpProcess, system, c.metricAttrs(queue, err)...)
}

// errorType is error.type for err: its gRPC status code, or its Go type.
func errorType(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Code().String()
	}
	return fmt.Sprintf("%T", err)
}
