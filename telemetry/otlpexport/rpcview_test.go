package otlpexport

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/fila-dev/filad/telemetry"
)

// TestRPCViewGivesSubMillisecondBuckets (issue 21, Deliver 6): otelgrpc's
// call duration, recorded on filad's meter provider, has RPCBuckets, so a
// 0.2 ms call is not lumped with everything under otelgrpc's 5 ms, and
// another scope's instrument of the same name keeps its own.
func TestRPCViewGivesSubMillisecondBuckets(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := NewMeterProvider(resource.Empty(), reader)
	for _, scope := range []string{otelgrpc.ScopeName, "other"} {
		h, err := mp.Meter(scope).Float64Histogram(telemetry.RPCDuration.Name, metric.WithExplicitBucketBoundaries(0.005, 0.01))
		require.NoError(t, err)
		h.Record(context.Background(), 0.0002, metric.WithAttributes(attribute.String("rpc.method", "fila.v1.FilaService/Enqueue")))
	}
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	bounds := map[string][]float64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			bounds[sm.Scope.Name] = m.Data.(metricdata.Histogram[float64]).DataPoints[0].Bounds
		}
	}
	require.Equal(t, RPCBuckets, bounds[otelgrpc.ScopeName])
	require.Equal(t, []float64{0.005, 0.01}, bounds["other"])
}
