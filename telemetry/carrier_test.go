package telemetry

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"
)

func TestEnvelopeCarrierRoundTrip(t *testing.T) {
	SetPropagators()
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5}, TraceFlags: trace.FlagsSampled,
	})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	header := InjectHeaders(ctx)
	require.Contains(t, header, "traceparent")
	got := trace.SpanContextFromContext(ExtractHeaders(context.Background(), mapHeader(header)))
	require.Equal(t, sc.TraceID(), got.TraceID())
	require.Equal(t, sc.SpanID(), got.SpanID())
	require.True(t, got.IsRemote())
	require.Nil(t, InjectHeaders(context.Background()), "no context, no header")
	allocs := testing.AllocsPerRun(100, func() { InjectHeaders(context.Background()) })
	require.Zero(t, allocs, "nothing to carry costs no allocation")
	require.Equal(t, context.Background(), ExtractHeaders(context.Background(), nil))
}

type mapHeader map[string]string

func (m mapHeader) Get(k string) string { return m[k] }
func (m mapHeader) Keys() []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}
