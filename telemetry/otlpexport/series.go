package otlpexport

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/fila-dev/filad/telemetry"
)

// SeriesProducer exports set's per-queue histograms and counters through
// every reader it is given to (sdkmetric.WithProducer), under filad's
// instrumentation scope.
func SeriesProducer(set *telemetry.SeriesSet) sdkmetric.Producer { return seriesProducer{set} }

type seriesProducer struct{ set *telemetry.SeriesSet }

func (p seriesProducer) Produce(context.Context) ([]metricdata.ScopeMetrics, error) {
	now := time.Now()
	var out []metricdata.Metrics
	var cur *metricdata.Metrics
	p.set.Each(func(pt telemetry.SeriesPoint) {
		if cur == nil || cur.Name != pt.Spec.Name {
			out = append(out, metricdata.Metrics{Name: pt.Spec.Name, Description: pt.Spec.Description, Unit: pt.Spec.Unit})
			cur = &out[len(out)-1]
			if pt.Histogram != nil {
				cur.Data = metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality}
			} else {
				cur.Data = metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true}
			}
		}
		switch d := cur.Data.(type) {
		case metricdata.Histogram[float64]:
			if pt.Histogram == nil {
				return
			}
			s := pt.Histogram.Snapshot()
			dp := metricdata.HistogramDataPoint[float64]{Attributes: pt.Attrs, StartTime: pt.Start, Time: now,
				Count: s.Count, Bounds: s.Bounds, BucketCounts: s.BucketCounts, Sum: s.Sum}
			for _, e := range s.Exemplars {
				dp.Exemplars = append(dp.Exemplars, metricdata.Exemplar[float64]{Time: e.Time, Value: e.Value,
					TraceID: e.TraceID[:], SpanID: e.SpanID[:]})
			}
			d.DataPoints = append(d.DataPoints, dp)
			cur.Data = d
		case metricdata.Sum[int64]:
			if pt.Counter == nil {
				return
			}
			d.DataPoints = append(d.DataPoints, metricdata.DataPoint[int64]{Attributes: pt.Attrs, StartTime: pt.Start, Time: now, Value: pt.Counter.Value()})
			cur.Data = d
		}
	})
	if len(out) == 0 {
		return nil, nil
	}
	return []metricdata.ScopeMetrics{{
		Scope:   instrumentation.Scope{Name: telemetry.ScopeName, Version: telemetry.Version},
		Metrics: out,
	}}, nil
}
