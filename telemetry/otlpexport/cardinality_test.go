package otlpexport

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/fila-dev/filad/telemetry"
)

// TestCardinalityLimitHolds floods the board with far more queues than the
// limit: each instrument still reports at most CardinalityLimit series, and
// memory does not grow with every collection.
func TestCardinalityLimitHolds(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := NewMeterProvider(resource.Empty(), reader)
	board := &telemetry.Board{}
	_, err := telemetry.RegisterInstruments(mp, board)
	require.NoError(t, err)
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	var first uint64
	for round := range 5 {
		readings := map[string]telemetry.QueueReading{}
		for i := range 5 * CardinalityLimit {
			readings[fmt.Sprintf("flood-%d-%d", round, i)] = telemetry.QueueReading{Counts: [len(telemetry.Counts)]int64{1}, Gauges: [len(telemetry.Gauges)]int64{1}}
		}
		board.Publish(readings)
		var rm metricdata.ResourceMetrics
		require.NoError(t, reader.Collect(context.Background(), &rm))
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				var points int
				switch d := m.Data.(type) {
				case metricdata.Sum[int64]:
					points = len(d.DataPoints)
				case metricdata.Gauge[int64]:
					points = len(d.DataPoints)
				}
				require.LessOrEqual(t, points, CardinalityLimit, "%s series", m.Name)
			}
		}
		board.Publish(nil)
		if round == 0 {
			first = heap()
		}
	}
	last := heap()
	t.Logf("heap after the first flood %.1f MB, after the fifth %.1f MB", float64(first)/(1<<20), float64(last)/(1<<20))
	require.Less(t, float64(last), float64(first)*1.5+(4<<20), "memory does not grow flood after flood")
}
