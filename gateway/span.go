package gateway

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Messaging semantic-convention values for messaging.operation.type.
const (
	opSend    = "send"
	opReceive = "receive"
	opSettle  = "settle"
)

// Span attribute keys filad sets on its RPC spans.
const (
	AttrQueueID     = attribute.Key("queue_id")
	AttrMsgID       = attribute.Key("msg_id")
	AttrFairnessKey = attribute.Key("fairness_key")
)

// annotate adds filad's and the messaging conventions' attributes to the
// RPC's server span (made by otelgrpc). Empty arguments are skipped. It costs
// nothing when the span is not recording.
func annotate(ctx context.Context, op, queue, msgID string) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	attrs := make([]attribute.KeyValue, 0, 6)
	if op != "" {
		attrs = append(attrs, attribute.String("messaging.system", "fila"), attribute.String("messaging.operation.type", op))
	}
	if queue != "" {
		attrs = append(attrs, AttrQueueID.String(queue), attribute.String("messaging.destination.name", queue))
	}
	if msgID != "" {
		attrs = append(attrs, AttrMsgID.String(msgID), attribute.String("messaging.message.id", msgID))
	}
	span.SetAttributes(attrs...)
}
