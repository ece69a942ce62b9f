package actors

import "github.com/fila-dev/filad/telemetry"

// FairnessWindow is the number of deliveries over which a queue works out
// each fairness key's fair-share ratio.
const FairnessWindow = 1000

// fairnessMeter counts one queue's deliveries per fairness key for the
// fila.fairness.* metrics (Fila story 6.2). The first maxKeys keys to be
// delivered get series of their own for the queue's life; later keys are
// summed under telemetry.OtherFairnessKey. A series that came and went
// with traffic would make a cumulative counter jump, so the set of named
// keys only grows, to its cap. maxKeys 0 turns it off.
type fairnessMeter struct {
	maxKeys int
	named   map[string]bool
	// deltas are deliveries per series since the last reading.
	deltas map[string]int64
	// window counts this window's deliveries, and each key's latest
	// weight, per fairness key.
	window   map[string]windowCount
	inWindow int
	// ratios are the last complete window's fair-share ratios per series.
	ratios map[string]float64
}

type windowCount struct{ deliveries, weight int64 }

func newFairnessMeter(maxKeys int) *fairnessMeter {
	return &fairnessMeter{maxKeys: maxKeys, named: map[string]bool{}, deltas: map[string]int64{}, window: map[string]windowCount{}}
}

// series is the series key counts for: itself, or OtherFairnessKey.
func (f *fairnessMeter) series(key string) string {
	if f.named[key] {
		return key
	}
	if len(f.named) < f.maxKeys {
		f.named[key] = true
		return key
	}
	return telemetry.OtherFairnessKey
}

// delivered counts one delivery of key, whose weight is weight.
func (f *fairnessMeter) delivered(key string, weight int64) {
	if f.maxKeys == 0 {
		return
	}
	f.deltas[f.series(key)]++
	f.window[key] = windowCount{deliveries: f.window[key].deliveries + 1, weight: weight}
	if f.inWindow++; f.inWindow >= FairnessWindow {
		f.closeWindow()
	}
}

// closeWindow works out each series' ratio of its share of the window's
// deliveries to its keys' share of the weight of every key delivered in
// it: 1.0 is exactly fair. Keys folded into OtherFairnessKey are one
// series, their shares summed.
func (f *fairnessMeter) closeWindow() {
	var total, weights float64
	for _, c := range f.window {
		total += float64(c.deliveries)
		weights += float64(c.weight)
	}
	share, weightShare := map[string]float64{}, map[string]float64{}
	for key, c := range f.window {
		s := f.series(key)
		share[s] += float64(c.deliveries) / total
		weightShare[s] += float64(c.weight) / weights
	}
	f.ratios = make(map[string]float64, len(share))
	for s, v := range share {
		f.ratios[s] = v / weightShare[s]
	}
	clear(f.window)
	f.inWindow = 0
}

// reading returns the deliveries per series since the last reading and the
// latest ratios, and starts counting afresh; nil when there is nothing.
func (f *fairnessMeter) reading() map[string]telemetry.KeyReading {
	if len(f.deltas) == 0 && f.ratios == nil {
		return nil
	}
	out := make(map[string]telemetry.KeyReading, len(f.deltas)+len(f.ratios))
	for s, n := range f.deltas {
		r := out[s]
		r.Deliveries = n
		out[s] = r
	}
	for s, v := range f.ratios {
		r := out[s]
		r.ShareRatio, r.HasRatio = v, true
		out[s] = r
	}
	clear(f.deltas)
	return out
}
