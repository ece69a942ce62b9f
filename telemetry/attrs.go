package telemetry

import "go.opentelemetry.io/otel/attribute"

// Span attribute keys of filad's own (SPEC §6), under messaging.fila.* as
// the messaging conventions ask of system-specific ones. Header values
// never become attributes; the fairness key is the one value the spec asks
// for. The queue and the message id are the conventions'
// messaging.destination.name and messaging.message.id (filad's spans also
// carried them as queue_id and msg_id until issue 21; no dashboard or rule
// read those, so they went at once). Metric series keep queue_id and
// fairness_key (docs/decisions.md, issue 21).
const (
	KeyFairnessKey = attribute.Key("messaging.fila.fairness_key")
	KeyAttempt     = attribute.Key("messaging.fila.attempt_count")
	// KeyOutcome is how a lease or a nack ended: ack, expired, or a nack's
	// retry, retry_delayed, dead_letter or drop (docs/failures.md).
	KeyOutcome = attribute.Key("messaging.fila.outcome")
)

// Operations, as messaging.operation.name.
const (
	OpSend    = "send"
	OpReceive = "receive"
	OpAck     = "ack"
	OpNack    = "nack"
	// OpExtend pushes a lease's expiry out.
	OpExtend = "extend"
	// OpDeliver is the broker's lease of a message to a consumer.
	OpDeliver = "deliver"
	// OpProcess is a consumer's handling of a message (client spans).
	OpProcess = "process"
)

// opTypes gives each client operation its messaging.operation.type;
// filad's own (extend, deliver) have none in the conventions.
var opTypes = map[string]string{
	OpSend: "send", OpReceive: "receive", OpAck: "settle", OpNack: "settle", OpProcess: "process",
}

// OperationType is op's messaging.operation.type ("" for filad's own
// operations). Only a messaging client's spans carry it: the conventions
// put it on producer, consumer and client spans, and on the broker's spans
// of the same send it would count the send again in span-derived metrics.
func OperationType(op string) string { return opTypes[op] }

// MessagingAttrs are the messaging semantic conventions' attributes for
// operation op on queue (and message msgID, if not empty), without
// messaging.operation.type (see OperationType). An empty op leaves out
// messaging.system and the operation, for admin calls.
func MessagingAttrs(op, queue, msgID string) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 5)
	if op != "" {
		attrs = append(attrs, attribute.String("messaging.system", "fila"), attribute.String("messaging.operation.name", op))
	}
	if queue != "" {
		attrs = append(attrs, attribute.String("messaging.destination.name", queue))
	}
	if msgID != "" {
		attrs = append(attrs, attribute.String("messaging.message.id", msgID))
	}
	return attrs
}
