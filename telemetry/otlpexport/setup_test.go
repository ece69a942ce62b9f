package otlpexport

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.uber.org/goleak"

	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSetupDisabled(t *testing.T) {
	tc := config.TelemetryDefaults()
	tests := []struct {
		name string
		cfg  *config.Telemetry
		env  map[string]string
	}{
		{"no telemetry section", nil, nil},
		{"OTEL_SDK_DISABLED", &tc, map[string]string{"OTEL_SDK_DISABLED": "true"}},
	}
	for _, tt := range tests {
		h, err := Setup(context.Background(), tt.cfg, SetupOptions{Getenv: func(k string) string { return tt.env[k] }})
		require.NoError(t, err, tt.name)
		require.False(t, h.Enabled, tt.name)
		_, span := h.TracerProvider.Tracer("x").Start(context.Background(), "s")
		require.False(t, span.IsRecording(), "%s: the no-op provider records nothing", tt.name)
		require.NoError(t, h.Shutdown(context.Background()), tt.name)
	}
}

func TestSetupEnabledBuildsExporters(t *testing.T) {
	tc := config.TelemetryDefaults()
	tc.OTLPEndpoint = "127.0.0.1:1" // never dialled: exporters connect lazily
	tc.TraceSampleRatio = 1
	h, err := Setup(context.Background(), &tc, SetupOptions{Logger: slog.Default(), Getenv: func(string) string { return "" },
		ExportTimeout: 100 * time.Millisecond})
	require.NoError(t, err)
	require.True(t, h.Enabled)
	_, span := h.TracerProvider.Tracer("x").Start(context.Background(), "s")
	require.True(t, span.SpanContext().IsSampled(), "ratio 1.0 samples everything")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Nothing listens, so the final flush fails; Shutdown still returns
	// within its bound and stops every exporter goroutine (goleak checks).
	_ = h.Shutdown(ctx)
	// The propagators are W3C TraceContext and Baggage.
	require.ElementsMatch(t, []string{"traceparent", "tracestate", "baggage"}, otel.GetTextMapPropagator().Fields())
}

// TestInstanceIDIsStablePerDataDir (issue 21, Deliver 2): the same data
// directory gives the same service.instance.id after a restart, another
// directory another one, and OTEL_RESOURCE_ATTRIBUTES still wins.
func TestInstanceIDIsStablePerDataDir(t *testing.T) {
	instance := func(dir string) string {
		res, err := newResource(context.Background(), "fila", dir, 0)
		require.NoError(t, err)
		v, ok := res.Set().Value(semconv.ServiceInstanceIDKey)
		require.True(t, ok)
		return v.AsString()
	}
	dir := t.TempDir()
	first := instance(dir)
	require.Equal(t, first, instance(dir), "a restart keeps its id")
	require.Equal(t, first, instance(dir+"/."), "the same directory however written")
	require.NotEqual(t, first, instance(t.TempDir()), "another data directory, another instance")
	require.Len(t, first, 36)
	require.NotEqual(t, instance(""), instance(""), "no data directory: random per process")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=mine")
	require.Equal(t, "mine", instance(dir), "OTEL_RESOURCE_ATTRIBUTES wins")
}

// A cluster node's resource names it by fila.node.id; a single node's
// has no such attribute.
func TestResourceNamesTheClusterNode(t *testing.T) {
	res, err := newResource(context.Background(), "fila", t.TempDir(), 3)
	require.NoError(t, err)
	v, ok := res.Set().Value(telemetry.AttrNodeID)
	require.True(t, ok)
	require.Equal(t, int64(3), v.AsInt64())
	res, err = newResource(context.Background(), "fila", t.TempDir(), 0)
	require.NoError(t, err)
	_, ok = res.Set().Value(telemetry.AttrNodeID)
	require.False(t, ok, "a single node has no node id")
}
