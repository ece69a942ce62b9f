package telemetry

import "go.opentelemetry.io/otel/attribute"

// Span attribute keys filad sets (SPEC §6). Header values never become
// attributes; the fairness key is the one value the spec asks for.
const (
	KeyQueueID     = attribute.Key(AttrQueueID)
	KeyMsgID       = attribute.Key("msg_id")
	KeyFairnessKey = attribute.Key("fairness_key")
	KeyAttempt     = attribute.Key("fila.attempt_count")
	// KeyOutcome is what a nack led to: retry, retry_delayed, dead_letter
	// or drop (docs/failures.md).
	KeyOutcome = attribute.Key("fila.outcome")
)

// Values of messaging.operation.type.
const (
	OpSend    = "send"
	OpReceive = "receive"
	OpSettle  = "settle"
)

// MessagingAttrs are filad's and the messaging semantic conventions'
// attributes for an operation on queue (and message msgID, if not empty).
// An empty op leaves out messaging.system and messaging.operation.type, for
// admin calls.
func MessagingAttrs(op, queue, msgID string) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 6)
	if op != "" {
		attrs = append(attrs, attribute.String("messaging.system", "fila"), attribute.String("messaging.operation.type", op))
	}
	if queue != "" {
		attrs = append(attrs, attribute.String("messaging.destination.name", queue), KeyQueueID.String(queue))
	}
	if msgID != "" {
		attrs = append(attrs, attribute.String("messaging.message.id", msgID), KeyMsgID.String(msgID))
	}
	return attrs
}
