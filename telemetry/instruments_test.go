package telemetry

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
)

func collect(t *testing.T, r *sdkmetric.ManualReader) map[string][]metricdata.DataPoint[int64] {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.Collect(context.Background(), &rm))
	out := map[string][]metricdata.DataPoint[int64]{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				require.True(t, d.IsMonotonic, "%s is a counter", m.Name)
				out[m.Name] = d.DataPoints
			case metricdata.Gauge[int64]:
				out[m.Name] = d.DataPoints
			}
			require.Equal(t, "{message}", m.Unit)
			require.NotEmpty(t, m.Description)
		}
	}
	return out
}

func TestInstrumentsReadTheBoard(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := newMeterProvider(resource.Empty(), reader)
	board := &Board{}
	_, err := RegisterInstruments(mp, board)
	require.NoError(t, err)
	board.Publish(map[string]QueueReading{"a": {Depth: 3, Leases: 2, Enqueued: 7, Leased: 4, Acked: 1, Nacked: 1}})
	got := collect(t, reader)
	want := map[string]int64{MetricQueueDepth: 3, MetricLeaseActive: 2, MetricEnqueued: 7, MetricLeased: 4, MetricAcked: 1, MetricNacked: 1}
	for name, v := range want {
		require.Len(t, got[name], 1, name)
		require.Equal(t, v, got[name][0].Value, name)
		q, _ := got[name][0].Attributes.Value(AttrQueueID)
		require.Equal(t, "a", q.AsString())
	}
	// A queue gone from the board has no series.
	board.Publish(map[string]QueueReading{"b": {}})
	got = collect(t, reader)
	require.Len(t, got[MetricQueueDepth], 1)
	require.True(t, got[MetricQueueDepth][0].Attributes.HasValue(attribute.Key(AttrQueueID)))
	q, _ := got[MetricQueueDepth][0].Attributes.Value(AttrQueueID)
	require.Equal(t, "b", q.AsString())
}

// TestCardinalityLimitHolds floods the board with far more queues than the
// limit: each instrument still reports at most CardinalityLimit series, and
// memory does not grow with every collection.
func TestCardinalityLimitHolds(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := newMeterProvider(resource.Empty(), reader)
	board := &Board{}
	_, err := RegisterInstruments(mp, board)
	require.NoError(t, err)
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	var first uint64
	for round := range 5 {
		readings := map[string]QueueReading{}
		for i := range 5 * CardinalityLimit {
			readings[fmt.Sprintf("flood-%d-%d", round, i)] = QueueReading{Depth: 1, Enqueued: 1}
		}
		board.Publish(readings)
		got := collect(t, reader)
		for name, points := range got {
			require.LessOrEqual(t, len(points), CardinalityLimit, "%s series", name)
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
