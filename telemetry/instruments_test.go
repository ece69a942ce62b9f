package telemetry

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
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
			case metricdata.Gauge[float64]: // ages in seconds, rounded to whole ones
				for _, p := range d.DataPoints {
					out[m.Name] = append(out[m.Name], metricdata.DataPoint[int64]{Attributes: p.Attributes, Value: int64(math.Round(p.Value))})
				}
			}
			require.NotEmpty(t, m.Unit, m.Name)
			require.NotEmpty(t, m.Description, m.Name)
		}
	}
	return out
}

func TestInstrumentsReadTheBoard(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	board := &Board{}
	_, err := RegisterInstruments(mp, board)
	require.NoError(t, err)
	// Distinct values per instrument, so a mix-up of any two shows.
	var r QueueReading
	want := map[string]int64{}
	for i, spec := range Counts {
		r.Counts[i] = int64(10 + i)
		want[spec.Name] = int64(10 + i)
	}
	for i, spec := range Gauges {
		r.Gauges[i] = int64(20 + i)
		if spec.SinceUnixMillis { // a Unix time 20+i seconds ago: reported as that age
			r.Gauges[i] = time.Now().Add(-time.Duration(20+i) * time.Second).UnixMilli()
		}
		want[spec.Name] = int64(20 + i)
	}
	board.Publish(map[string]QueueReading{"a": r})
	got := collect(t, reader)
	require.Len(t, got, len(Counts)+len(Gauges), "one instrument per table entry")
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

func TestReadingAddSumsCountsAndReplacesGauges(t *testing.T) {
	var total QueueReading
	for i := range 3 {
		var d QueueReading
		for c := range d.Counts {
			d.Counts[c] = int64(c + 1)
		}
		for g := range d.Gauges {
			d.Gauges[g] = int64(i*10 + g)
		}
		total.Add(d)
	}
	for c, n := range total.Counts {
		require.Equal(t, int64(3*(c+1)), n, Counts[c].Name)
	}
	for g, n := range total.Gauges {
		require.Equal(t, int64(20+g), n, Gauges[g].Name)
	}
}

func TestEveryMetricIsNamed(t *testing.T) {
	seen := map[string]bool{}
	for _, spec := range append(append(Counts[:], Gauges[:]...), CommitDuration, AlarmActive) {
		require.NotEmpty(t, spec.Name)
		require.NotEmpty(t, spec.Unit, spec.Name)
		require.NotEmpty(t, spec.Description, spec.Name)
		require.False(t, seen[spec.Name], "%s twice", spec.Name)
		seen[spec.Name] = true
	}
}
