// Package telemetrytest is the in-memory OpenTelemetry harness filad's tests
// share: a meter provider on a ManualReader and a tracer provider on a
// SpanRecorder, which a test injects into a broker (server.Options) and then
// asserts on with exact values.
package telemetrytest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/fila-dev/filad/telemetry"
	"github.com/fila-dev/filad/telemetry/otlpexport"
)

// Harness holds in-memory providers. Its methods are safe for concurrent use.
type Harness struct {
	// Reader collects metrics on demand.
	Reader *sdkmetric.ManualReader
	// Recorder keeps every ended span.
	Recorder *tracetest.SpanRecorder
	// MeterProvider and TracerProvider are what a broker under test uses;
	// MeterProvider's Series are collected with its instruments.
	MeterProvider  *MeterProvider
	TracerProvider *sdktrace.TracerProvider
}

// MeterProvider is an SDK meter provider whose reader also collects a
// telemetry.SeriesSet (filad's per-queue histograms and counters).
type MeterProvider struct {
	*sdkmetric.MeterProvider
	series *telemetry.SeriesSet
}

var _ telemetry.SeriesProvider = (*MeterProvider)(nil)

// Series returns the set the provider's reader collects.
func (p *MeterProvider) Series() *telemetry.SeriesSet { return p.series }

// New returns a harness that samples every span, unless opts set another
// sampler; its providers are shut down when the test ends.
func New(t testing.TB, opts ...sdktrace.TracerProviderOption) *Harness {
	series := telemetry.NewSeriesSet()
	h := &Harness{Reader: sdkmetric.NewManualReader(sdkmetric.WithProducer(otlpexport.SeriesProducer(series))), Recorder: tracetest.NewSpanRecorder()}
	h.MeterProvider = &MeterProvider{sdkmetric.NewMeterProvider(sdkmetric.WithReader(h.Reader)), series}
	h.TracerProvider = sdktrace.NewTracerProvider(append([]sdktrace.TracerProviderOption{
		sdktrace.WithSpanProcessor(h.Recorder), sdktrace.WithSampler(sdktrace.AlwaysSample())}, opts...)...)
	t.Cleanup(func() {
		_ = h.MeterProvider.Shutdown(context.Background())
		_ = h.TracerProvider.Shutdown(context.Background())
	})
	return h
}

// SeriesOf returns the names of the metrics that have a series with
// attribute kv, each once.
func (h *Harness) SeriesOf(t testing.TB, kv attribute.KeyValue) []string {
	t.Helper()
	var out []string
	for _, sm := range h.Collect(t).ScopeMetrics {
		for _, m := range sm.Metrics {
			if hasSeriesWith(m.Data, kv) {
				out = append(out, m.Name)
			}
		}
	}
	return out
}

func hasSeriesWith(data metricdata.Aggregation, kv attribute.KeyValue) bool {
	var sets []attribute.Set
	switch d := data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			sets = append(sets, p.Attributes)
		}
	case metricdata.Sum[float64]:
		for _, p := range d.DataPoints {
			sets = append(sets, p.Attributes)
		}
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			sets = append(sets, p.Attributes)
		}
	case metricdata.Gauge[float64]:
		for _, p := range d.DataPoints {
			sets = append(sets, p.Attributes)
		}
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			sets = append(sets, p.Attributes)
		}
	case metricdata.Histogram[int64]:
		for _, p := range d.DataPoints {
			sets = append(sets, p.Attributes)
		}
	}
	for _, s := range sets {
		if v, ok := s.Value(kv.Key); ok && v == kv.Value {
			return true
		}
	}
	return false
}

// Collect reads every metric now.
func (h *Harness) Collect(t testing.TB) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := h.Reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("collect metrics: %v", err)
	}
	return rm
}

// Value returns the int64 value of metric name's series with exactly attrs,
// and whether that series exists.
func (h *Harness) Value(t testing.TB, name string, attrs ...attribute.KeyValue) (int64, bool) {
	t.Helper()
	want := attribute.NewSet(attrs...)
	for _, sm := range h.Collect(t).ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			var points []metricdata.DataPoint[int64]
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				points = d.DataPoints
			case metricdata.Gauge[int64]:
				points = d.DataPoints
			default:
				t.Fatalf("metric %s: unexpected data %T", name, m.Data)
			}
			for _, p := range points {
				if p.Attributes.Equals(&want) {
					return p.Value, true
				}
			}
		}
	}
	return 0, false
}

// Float returns the value of float gauge name's series with exactly attrs,
// and whether that series exists.
func (h *Harness) Float(t testing.TB, name string, attrs ...attribute.KeyValue) (float64, bool) {
	t.Helper()
	want := attribute.NewSet(attrs...)
	for _, sm := range h.Collect(t).ScopeMetrics {
		for _, m := range sm.Metrics {
			if g, ok := m.Data.(metricdata.Gauge[float64]); ok && m.Name == name {
				for _, p := range g.DataPoints {
					if p.Attributes.Equals(&want) {
						return p.Value, true
					}
				}
			}
		}
	}
	return 0, false
}

// HistogramCount returns how many measurements histogram name's series
// with exactly attrs holds (0 when it has none).
func (h *Harness) HistogramCount(t testing.TB, name string, attrs ...attribute.KeyValue) uint64 {
	t.Helper()
	want := attribute.NewSet(attrs...)
	for _, sm := range h.Collect(t).ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					if p.Attributes.Equals(&want) {
						return p.Count
					}
				}
			case metricdata.Histogram[int64]:
				for _, p := range d.DataPoints {
					if p.Attributes.Equals(&want) {
						return p.Count
					}
				}
			}
		}
	}
	return 0
}

// settleWithin bounds how long an assertion waits for the value it wants.
// filad publishes readings asynchronously (queue actor → telemetry actor →
// board), so each assertion awaits its value instead of reading once; a
// value that never arrives fails the test.
const settleWithin = 10 * time.Second

// AssertCounter fails the test unless counter name's series with attrs is
// exactly want, or becomes so within settleWithin.
func (h *Harness) AssertCounter(t testing.TB, name string, attrs []attribute.KeyValue, want int64) {
	t.Helper()
	h.assertValue(t, "counter", name, attrs, want)
}

// AssertGauge fails the test unless gauge name's series with attrs is
// exactly want, or becomes so within settleWithin.
func (h *Harness) AssertGauge(t testing.TB, name string, attrs []attribute.KeyValue, want int64) {
	t.Helper()
	h.assertValue(t, "gauge", name, attrs, want)
}

func (h *Harness) assertValue(t testing.TB, kind, name string, attrs []attribute.KeyValue, want int64) {
	t.Helper()
	h.await(t, func() (bool, string) {
		got, ok := h.Value(t, name, attrs...)
		if !ok {
			return false, fmt.Sprintf("%s %s{%v}: no series", kind, name, attrs)
		}
		return got == want, fmt.Sprintf("%s %s{%v} = %d, want %d", kind, name, attrs, got, want)
	})
}

// AssertNoSeries fails the test unless metric name has no series with
// attrs, or has none within settleWithin.
func (h *Harness) AssertNoSeries(t testing.TB, name string, attrs ...attribute.KeyValue) {
	t.Helper()
	h.await(t, func() (bool, string) {
		v, ok := h.Value(t, name, attrs...)
		return !ok, fmt.Sprintf("%s{%v} still reported (value %d)", name, attrs, v)
	})
}

// await polls cond until it holds, failing with its last word at the deadline.
func (h *Harness) await(t testing.TB, cond func() (bool, string)) {
	t.Helper()
	Await(t, settleWithin, cond)
}

// Await polls cond until it holds, and fails t with cond's last word
// when within passes first: for tests that wait on a state they can only
// observe, with a bound generous enough for a busy machine.
func Await(t testing.TB, within time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(why)
		}
		time.Sleep(2 * time.Millisecond) // between looks; the outcome is cond's
	}
}

// Spans returns the ended spans called name (all ended spans if name is "").
func (h *Harness) Spans(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range h.Recorder.Ended() {
		if name == "" || s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// FindSpan returns the first ended span called name for which match (nil:
// any) holds, failing the test if there is none.
func (h *Harness) FindSpan(t testing.TB, name string, match func(sdktrace.ReadOnlySpan) bool) sdktrace.ReadOnlySpan {
	t.Helper()
	// A span may end a moment after the reply its test waited for (a
	// server span ends once the response is written): await it.
	deadline := time.Now().Add(spanWait)
	for {
		for _, s := range h.Spans(name) {
			if match == nil || match(s) {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ended span %q matching within %s (have %d spans of that name)", name, spanWait, len(h.Spans(name)))
		}
		time.Sleep(time.Millisecond)
	}
}

// spanWait bounds FindSpan's wait for a span to end: generous, as a busy
// machine can delay a goroutine by seconds; a span that is there returns at
// once.
const spanWait = 20 * time.Second

// HasAttr reports whether span s carries attribute kv exactly.
func HasAttr(s sdktrace.ReadOnlySpan, kv attribute.KeyValue) bool {
	for _, a := range s.Attributes() {
		if a.Key == kv.Key && a.Value == kv.Value {
			return true
		}
	}
	return false
}

// RequireChildOf fails the test unless child's parent is parent.
func RequireChildOf(t testing.TB, child sdktrace.ReadOnlySpan, parent trace.SpanContext) {
	t.Helper()
	if child.Parent().SpanID() != parent.SpanID() || child.SpanContext().TraceID() != parent.TraceID() {
		t.Fatalf("span %q: parent %s/%s, want %s/%s", child.Name(),
			child.SpanContext().TraceID(), child.Parent().SpanID(), parent.TraceID(), parent.SpanID())
	}
}

// RequireLinked fails the test unless span s links to target.
func RequireLinked(t testing.TB, s sdktrace.ReadOnlySpan, target trace.SpanContext) {
	t.Helper()
	for _, l := range s.Links() {
		if l.SpanContext.TraceID() == target.TraceID() && l.SpanContext.SpanID() == target.SpanID() {
			return
		}
	}
	t.Fatalf("span %q has no link to %s/%s (links: %v)", s.Name(), target.TraceID(), target.SpanID(), s.Links())
}
