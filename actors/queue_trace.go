package actors

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

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
	return q.deps.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindInternal))
}

// commitSpan covers one durable write; end it when the committer reports.
func (q *queueActor) commitSpan(ctx context.Context) trace.Span {
	_, span := q.startChild(ctx, telemetry.SpanCommit)
	return span
}

// endSpan records err (if any) and ends span.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// deliverySpan starts the span of one delivery: a child of the consumer's
// Lease call, linked to the context the message was created in.
func (q *queueActor) deliverySpan(parent context.Context, m *message) trace.Span {
	_, span := q.startChild(parent, telemetry.SpanDeliver)
	if !span.IsRecording() {
		return span // skip the parsing below when nobody records
	}
	span.SetAttributes(telemetry.MessagingAttrs(telemetry.OpReceive, q.cfg.Name, m.id)...)
	span.SetAttributes(telemetry.KeyFairnessKey.String(m.rec.GetFairnessKey()), telemetry.KeyAttempt.Int64(int64(m.rec.GetAttemptCount())))
	if tp := m.rec.GetCreationTraceparent(); tp != "" {
		carrier := propagation.MapCarrier{"traceparent": tp, "tracestate": m.rec.GetCreationTracestate()}
		created := trace.SpanContextFromContext(otel.GetTextMapPropagator().Extract(context.Background(), carrier))
		if created.IsValid() {
			span.AddLink(trace.Link{SpanContext: created})
		}
	}
	return span
}

// debug logs a per-message event at DEBUG with the span's trace ids; the
// check keeps the hot path free of attribute building when DEBUG is off.
func (q *queueActor) debug(ctx context.Context, msg string, attrs ...slog.Attr) {
	if q.deps.log.Enabled(ctx, slog.LevelDebug) {
		q.deps.log.LogAttrs(ctx, slog.LevelDebug, msg, append(attrs, slog.String("queue_id", q.cfg.Name))...)
	}
}
