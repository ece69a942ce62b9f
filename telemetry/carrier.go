package telemetry

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// HeaderReader is the read side of an actor envelope header
// (protoactor's actor.ReadonlyMessageHeader satisfies it).
type HeaderReader interface {
	Get(key string) string
	Keys() []string
}

// EnvelopeCarrier adapts an actor envelope header to a
// propagation.TextMapCarrier for extraction. Set is a no-op: envelopes are
// written through propagation.MapCarrier before they are sent.
type EnvelopeCarrier struct{ H HeaderReader }

var _ propagation.TextMapCarrier = EnvelopeCarrier{}

// Get returns the value of key, or "".
func (c EnvelopeCarrier) Get(key string) string {
	if c.H == nil {
		return ""
	}
	return c.H.Get(key)
}

// Set does nothing; see the type's doc.
func (EnvelopeCarrier) Set(string, string) {}

// Keys lists the header's keys.
func (c EnvelopeCarrier) Keys() []string {
	if c.H == nil {
		return nil
	}
	return c.H.Keys()
}

// InjectHeaders returns a new envelope header map carrying ctx's span context
// and baggage by the global propagator, or nil when ctx carries none.
func InjectHeaders(ctx context.Context) map[string]string {
	// Every call and every message passes here: with nothing to carry (no
	// incoming trace, telemetry off) it costs no allocation.
	if !trace.SpanContextFromContext(ctx).IsValid() && baggage.FromContext(ctx).Len() == 0 {
		return nil
	}
	m := propagation.MapCarrier{}
	otel.GetTextMapPropagator().Inject(ctx, m)
	if len(m) == 0 {
		return nil
	}
	return m
}

// ExtractHeaders returns ctx with the span context and baggage found in an
// envelope header.
func ExtractHeaders(ctx context.Context, h HeaderReader) context.Context {
	if h == nil {
		return ctx
	}
	return otel.GetTextMapPropagator().Extract(ctx, EnvelopeCarrier{h})
}

// SetPropagators installs the W3C TraceContext and Baggage propagators
// globally. filad does this whether or not it exports, so a producer's
// trace context always reaches the consumer.
func SetPropagators() {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
}
