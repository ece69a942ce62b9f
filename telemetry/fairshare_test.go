package telemetry

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestFairShareRatios(t *testing.T) {
	t.Parallel()
	// Readings in one bucket; "b*" marks a series backlogged at the end.
	type key struct {
		name       string
		delivered  int64
		backlogged bool
		weight     int64
	}
	for _, tc := range []struct {
		name string
		keys []key
		want map[string]float64
	}{
		{"equal weights, equal deliveries, all backlogged",
			[]key{{"a", 305, true, 1}, {"b", 305, true, 1}, {"c", 305, true, 1}},
			map[string]float64{"a": 1, "b": 1, "c": 1}},
		{"weights 1:2:3 served 1:2:3",
			[]key{{"a", 100, true, 1}, {"b", 200, true, 2}, {"c", 300, true, 3}},
			map[string]float64{"a": 1, "b": 1, "c": 1}},
		{"a starved key reads 0",
			[]key{{"a", 500, true, 1}, {"starved", 0, true, 1}},
			map[string]float64{"a": 2, "starved": 0}},
		{"a key that got all it wanted is fair, whatever its volume",
			[]key{{"small", 3, false, 1}, {"big", 600, true, 1}},
			map[string]float64{"small": 1, "big": 1}},
		{"a drained key served past its share while another starved",
			[]key{{"a", 500, false, 1}, {"b", 0, true, 1}},
			map[string]float64{"a": 2, "b": 0}},
		{"nobody backlogged: everyone got what they wanted",
			[]key{{"a", 7, false, 1}, {"b", 1, false, 3}},
			map[string]float64{"a": 1, "b": 1}},
		{"no deliveries: no ratio (no consumers is not unfairness)",
			[]key{{"a", 0, true, 1}, {"b", 0, true, 1}},
			map[string]float64{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := NewFairShare()
			now := time.Unix(1000*int64(FairShareBucket/time.Second), 0) // a bucket's start
			r := map[string]KeyReading{}
			for _, k := range tc.keys {
				r[k.name] = KeyReading{Deliveries: k.delivered, Backlogged: k.backlogged, Weight: k.weight}
			}
			f.Record(now, r)
			require.InDeltaMapValues(t, tc.want, ratios(f, now.Add(time.Second)), 1e-9)
		})
	}
}

func TestFairShareWindowDecaysAndForgetsBacklog(t *testing.T) {
	t.Parallel()
	f := NewFairShare()
	start := time.Unix(1000*int64(FairShareBucket/time.Second), 0)
	f.Record(start, map[string]KeyReading{"a": {Deliveries: 10, Backlogged: true, Weight: 1}, "b": {Deliveries: 10, Backlogged: true, Weight: 1}})
	// A later reading in the same bucket leaves b out: b drained, and
	// what it got was what it wanted.
	f.Record(start.Add(time.Second), map[string]KeyReading{"a": {Deliveries: 20, Backlogged: true, Weight: 1}})
	require.InDeltaMapValues(t, map[string]float64{"a": 1, "b": 1}, ratios(f, start.Add(2*time.Second)), 1e-9)

	// Buckets add up: in the next one a gets nothing while c does.
	next := start.Add(FairShareBucket)
	f.Record(next, map[string]KeyReading{"a": {Backlogged: true, Weight: 1}, "c": {Deliveries: 30, Backlogged: true, Weight: 1}})
	got := ratios(f, next)
	require.InDelta(t, 30.0/(30+15), got["a"], 1e-9, "a: 30 of the 45 fairness gave it")
	require.InDelta(t, 2.0, got["c"], 1e-9)

	require.Len(t, ratios(f, start.Add(FairShareWindow-time.Second)), 3, "within the window")
	require.Empty(t, ratios(f, next.Add(FairShareWindow)), "a window with nothing in it has no ratio: keys that left decay")
	var totals int64
	f.Totals(func(_ string, n int64) { totals += n })
	require.EqualValues(t, 70, totals, "totals count every delivery")
	kept := f.KeepTotals()
	require.Empty(t, ratios(kept, next), "a kept FairShare has no window")
}

func ratios(f *FairShare, now time.Time) map[string]float64 {
	out := map[string]float64{}
	f.Ratios(now, func(s string, v float64) { out[s] = v })
	return out
}
