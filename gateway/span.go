package gateway

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/telemetry"
)

// annotate adds filad's and the messaging conventions' attributes to the
// RPC's server span (made by otelgrpc); see telemetry.MessagingAttrs. It
// costs nothing when the span is not recording.
func annotate(ctx context.Context, op, queue, msgID string, extra ...attribute.KeyValue) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(telemetry.MessagingAttrs(op, queue, msgID)...)
	span.SetAttributes(extra...)
}

// annotateBatch marks a batch RPC's server span with the messaging
// conventions' batch size.
func annotateBatch(ctx context.Context, op string, n int) {
	annotate(ctx, op, "", "", attribute.Int("messaging.batch.message_count", n))
}

// linkCreationContexts links a batch RPC's server span to the trace
// context each message carries (its traceparent header), per the messaging
// conventions for batch sends. Nothing is done when the span is not
// recording.
func linkCreationContexts(ctx context.Context, msgs []*filav1.EnqueueRequest) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	prop := otel.GetTextMapPropagator()
	for _, m := range msgs {
		tp := m.GetHeaders()["traceparent"]
		if tp == "" {
			continue
		}
		carrier := propagation.MapCarrier{"traceparent": tp, "tracestate": m.GetHeaders()["tracestate"]}
		if sc := trace.SpanContextFromContext(prop.Extract(context.Background(), carrier)); sc.IsValid() {
			span.AddLink(trace.Link{SpanContext: sc})
		}
	}
}
