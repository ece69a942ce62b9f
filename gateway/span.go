package gateway

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

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
