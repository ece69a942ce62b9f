package telemetry

import "go.opentelemetry.io/otel/attribute"

// Span attribute keys filad sets (SPEC §6). Header values never become
// attributes; the fairness key is the one value the spec asks for.
// Attributes of filad's own are under messaging.fila.*, as the messaging
// conventions ask of system-specific ones; queue_id, msg_id and
// fairness_key stay as SPEC §6 names them.
const (
	KeyQueueID     = attribute.Key(AttrQueueID)
	KeyMsgID       = attribute.Key("msg_id")
	KeyFairnessKey = attribute.Key("fairness_key")
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

// opTypes gives each operation its messaging.operation.type; filad's own
// (extend, deliver) have none in the conventions.
var opTypes = map[string]string{
	OpSend: "send", OpReceive: "receive", OpAck: "settle", OpNack: "settle", OpProcess: "process",
}

// MessagingAttrs are filad's and the messaging semantic conventions'
// attributes for operation op on queue (and message msgID, if not empty).
// An empty op leaves out messaging.system and the operation, for admin
// calls.
func MessagingAttrs(op, queue, msgID string) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 7)
	if op != "" {
		attrs = append(attrs, attribute.String("messaging.system", "fila"), attribute.String("messaging.operation.name", op))
		if typ := opTypes[op]; typ != "" {
			attrs = append(attrs, attribute.String("messaging.operation.type", typ))
		}
	}
	if queue != "" {
		attrs = append(attrs, attribute.String("messaging.destination.name", queue), KeyQueueID.String(queue))
	}
	if msgID != "" {
		attrs = append(attrs, attribute.String("messaging.message.id", msgID), KeyMsgID.String(msgID))
	}
	return attrs
}
