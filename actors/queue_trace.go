package actors

import (
	"context"
	"errors"
	"log/slog"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/telemetry"
)

// W3C trace-context header names, as the message carries them to consumers.
const (
	traceparentHeader = "traceparent"
	tracestateHeader  = "tracestate"
)

// startChild starts span name under ctx's span. Under a parent that was not
// sampled, the child would not be either (the sampler is parent-based), so
// it returns the parent's non-recording span instead of making another:
// per-message paths pay next to nothing for the traces nobody records.
func (q *queueActor) startChild(ctx context.Context, name string) (context.Context, trace.Span) {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() && !sc.IsSampled() {
		return ctx, trace.SpanFromContext(ctx)
	}
	return q.deps.tracer.Start(ctx, name, internalSpan)
}

// internalSpan is made once: an option per span was an allocation per
// message.
var internalSpan = trace.WithSpanKind(trace.SpanKindInternal)

// commitSpan covers one durable write; end it when the committer reports.
func (q *queueActor) commitSpan(ctx context.Context) trace.Span {
	_, span := q.startChild(ctx, telemetry.SpanCommit)
	return span
}

// endSpan records err (if any), with its error.type, and ends span.
func endSpan(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.SetAttributes(attribute.String("error.type", errorType(err)))
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// errorType names err's kind for error.type: one of the actors' errors,
// low in cardinality, never the message text.
func errorType(err error) string {
	for _, e := range []struct {
		err  error
		name string
	}{
		{ErrOutcomeUnknown, "outcome_unknown"}, {ErrQueueNotFound, "queue_not_found"}, {ErrNotLeased, "not_leased"}, {ErrLeaseExpired, "lease_expired"},
		{ErrInvalid, "invalid_argument"}, {ErrOverloaded, "overloaded"}, {ErrStorage, "storage"},
		{ErrShuttingDown, "shutting_down"}, {ErrFailedPrecondition, "failed_precondition"},
	} {
		if errors.Is(err, e.err) {
			return e.name
		}
	}
	return "_OTHER"
}

// deliverySpan starts the span of one lease, from delivery to its settle or
// expiry, when the message's creation context was sampled: it is a child of
// that context (the fila.queue.enqueue span), so it lands in the producer's
// trace whatever the consumer's stream decided, and it links to the Consume
// call's span when that was sampled (a link to a span nobody recorded is a
// dead end: at 1% sampling, nearly every one). A message whose creation was not sampled carries no creation
// context and gets no span: nil, at no cost. Messages carry only sampled
// creation contexts, so the parse below runs for sampled messages alone.
func (q *queueActor) deliverySpan(stream context.Context, m *message, rec *storagev1.MessageRecord) trace.Span {
	tp := rec.GetCreationTraceparent()
	if tp == "" {
		return nil
	}
	carrier := propagation.MapCarrier{traceparentHeader: tp, tracestateHeader: rec.GetCreationTracestate()}
	created := trace.SpanContextFromContext(otel.GetTextMapPropagator().Extract(context.Background(), carrier))
	if !created.IsSampled() {
		return nil
	}
	_, span := q.deps.tracer.Start(trace.ContextWithRemoteSpanContext(context.Background(), created), telemetry.SpanDeliver, linkIfSampled(stream)...)
	if !span.IsRecording() {
		return nil
	}
	span.SetAttributes(telemetry.MessagingAttrs(telemetry.OpDeliver, q.cfg.Name, m.id)...)
	span.SetAttributes(telemetry.KeyFairnessKey.String(m.idx.FairnessKey), telemetry.KeyAttempt.Int64(int64(m.idx.AttemptCount)))
	return span
}

// settleSpan starts the span of an ack or nack of m: under m's delivery
// span when that is recorded (its creation was sampled), so the settle is
// in the message's trace whatever the call's sampling, linked to the call
// if that was sampled;
// else a child of the call.
func (q *queueActor) settleSpan(call context.Context, m *message) (context.Context, trace.Span) {
	span := m.deliverySpan()
	if span == nil {
		return q.startChild(call, telemetry.SpanSettle)
	}
	return q.deps.tracer.Start(trace.ContextWithSpan(context.Background(), span), telemetry.SpanSettle, linkIfSampled(call)...)
}

// linkIfSampled are the start options of an internal span in a message's
// trace: linked to the call of ctx only if that call's span was sampled,
// so every link leads to a span a backend has.
func linkIfSampled(ctx context.Context) []trace.SpanStartOption {
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal)}
	if sc := trace.SpanContextFromContext(ctx); sc.IsSampled() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
	}
	return opts
}

// spanContext carries m's delivery span, if any, for a measurement's
// exemplar.
func spanContext(m *message) context.Context {
	span := m.deliverySpan()
	if span == nil {
		return context.Background()
	}
	return trace.ContextWithSpan(context.Background(), span)
}

// endDelivery ends m's delivery span, if it has one, with how the lease
// ended: ack, nack's outcome, or expired.
func endDelivery(m *message, outcome string) {
	if m.deliverySpan() == nil {
		return
	}
	m.span.SetAttributes(telemetry.KeyOutcome.String(outcome))
	m.span.End()
	m.span = nil
}

// debug logs a per-message event at DEBUG with the span's trace ids; the
// check keeps the hot path free of attribute building when DEBUG is off.
func (q *queueActor) debug(ctx context.Context, msg string, attrs ...slog.Attr) {
	if q.deps.log.Enabled(ctx, slog.LevelDebug) {
		q.deps.log.LogAttrs(ctx, slog.LevelDebug, msg, append(attrs, slog.String("queue_id", q.cfg.Name))...)
	}
}
