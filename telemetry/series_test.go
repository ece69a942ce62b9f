package telemetry

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/trace"
)

func TestHistogramBucketsSumAndExemplars(t *testing.T) {
	t.Parallel()
	set := NewSeriesSet()
	q := set.Open("q")
	h := q.Histogram(WaitDuration, []float64{1, 2})
	require.Same(t, h, q.Histogram(WaitDuration, []float64{1, 2}), "one series per spec and attributes")
	sampled := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled}))
	unsampled := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{3}, SpanID: trace.SpanID{4}}))
	for _, v := range []float64{0.5, 1, 1.5} {
		h.Record(unsampled, v)
	}
	h.Record(sampled, 3)
	s := h.Snapshot()
	require.Equal(t, []uint64{2, 1, 1}, s.BucketCounts, "(-inf,1] (1,2] (2,+inf)")
	require.EqualValues(t, 4, s.Count)
	require.InDelta(t, 6.0, s.Sum, 1e-9)
	require.Len(t, s.Exemplars, 1, "only a sampled span's measurement is an exemplar")
	require.Equal(t, trace.TraceID{1}, s.Exemplars[0].TraceID)

	var nilSeries *QueueSeries
	nilSeries.Histogram(WaitDuration, nil).Record(sampled, 1) // no-ops, no panic
	nilSeries.Counter(LuaErrors).Add(1)

	var names []string
	set.Each(func(p SeriesPoint) { names = append(names, p.Spec.Name) })
	require.Equal(t, []string{WaitDuration.Name}, names)
	again := set.Open("q")
	set.Drop("q", q) // the old one's drop leaves the new one
	names = nil
	again.Counter(LuaErrors).Add(1)
	set.Each(func(p SeriesPoint) { names = append(names, p.Spec.Name) })
	require.Equal(t, []string{LuaErrors.Name}, names)
	set.Drop("q", again)
	set.Each(func(SeriesPoint) { t.Fatal("dropped") })
}

// BenchmarkHistogramRecord compares a per-queue histogram record with the
// SDK's histogram it replaced (a queue's attribute set made once).
func BenchmarkHistogramRecord(b *testing.B) {
	ctx := context.Background()
	b.Run("filad", func(b *testing.B) {
		h := NewSeriesSet().Open("q").Histogram(WaitDuration, MessageBuckets)
		for i := 0; b.Loop(); i++ {
			h.Record(ctx, float64(i%1000)/1000)
		}
	})
	b.Run("sdk", func(b *testing.B) {
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		h, err := mp.Meter("x").Float64Histogram("h", metric.WithExplicitBucketBoundaries(MessageBuckets...))
		require.NoError(b, err)
		attr := metric.WithAttributeSet(attribute.NewSet(attribute.String(AttrQueueID, "q")))
		for i := 0; b.Loop(); i++ {
			h.Record(ctx, float64(i%1000)/1000, attr)
		}
	})
}
