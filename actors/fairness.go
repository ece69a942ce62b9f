package actors

import (
	"time"

	"github.com/fila-dev/filad/telemetry"
)

// fairnessMeter counts one queue's deliveries per fairness key for the
// fila.fairness.* metrics (Fila story 6.2) and reports, with each reading,
// which keys are backlogged, so the telemetry side can work out a fair
// share over a time window (telemetry.FairShare). The first maxKeys keys
// to be delivered or backlogged get series of their own for the queue's
// life; later keys are summed under telemetry.OtherFairnessKey. A series
// that came and went with traffic would make a cumulative counter jump, so
// the set of named keys only grows, to its cap. maxKeys 0 turns it off.
type fairnessMeter struct {
	maxKeys int
	named   map[string]bool
	// deltas are deliveries per series since the last reading; weights
	// each series' latest weight.
	deltas  map[string]int64
	weights map[string]int64
	// reported: the last reading named a backlogged series, so the next
	// one must be sent even if empty (to say the backlog is gone).
	reported bool
	// other caches the summed weight of the backlogged keys past the cap:
	// past manyKeys active keys it is worked out at most every
	// oldestReadyEvery.
	other struct {
		at     time.Time
		weight int64
	}
}

func newFairnessMeter(maxKeys int) *fairnessMeter {
	return &fairnessMeter{maxKeys: maxKeys, named: map[string]bool{}, deltas: map[string]int64{}, weights: map[string]int64{}}
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
	s := f.series(key)
	f.deltas[s]++
	if s != telemetry.OtherFairnessKey {
		f.weights[s] = weight
	}
}

// reading returns every series delivered since the last reading or
// backlogged in ready now, and starts counting afresh; nil when there is
// nothing new to say (no deliveries, and nothing backlogged now or at the
// last reading). It costs one look-up per named key, and one step per
// active key past the cap (at most once a second past manyKeys).
func (f *fairnessMeter) reading(ready *drr[*message]) map[string]telemetry.KeyReading {
	if f.maxKeys == 0 || (len(f.deltas) == 0 && ready.active == 0 && !f.reported) {
		return nil
	}
	out := make(map[string]telemetry.KeyReading, len(f.deltas)+1)
	for s, n := range f.deltas {
		out[s] = telemetry.KeyReading{Deliveries: n, Weight: f.weights[s]}
	}
	clear(f.deltas)
	namedActive := 0
	if ready.active > 0 {
		if len(f.named) < f.maxKeys && ready.active <= manyKeys {
			// Backlogged keys are named as they are seen (in round
			// order, so which ones is the same every time), so a starved
			// key, never delivered, still gets its series.
			ready.forEachActive(func(key string) { f.series(key) })
		}
		backlogged := func(key string, k *drrKey[*message]) {
			namedActive++
			r := out[key]
			r.Backlogged, r.Weight = true, k.weight
			out[key] = r
		}
		// Walk the smaller of the two sets.
		if len(f.named) <= len(ready.keys) {
			for key := range f.named {
				if k := ready.keys[key]; k != nil {
					backlogged(key, k)
				}
			}
		} else {
			for key, k := range ready.keys {
				if f.named[key] {
					backlogged(key, k)
				}
			}
		}
	}
	if namedActive < ready.active {
		r := out[telemetry.OtherFairnessKey]
		r.Backlogged, r.Weight = true, f.otherWeight(ready)
		out[telemetry.OtherFairnessKey] = r
	} else if r, ok := out[telemetry.OtherFairnessKey]; ok {
		r.Weight = max(f.other.weight, 1)
		out[telemetry.OtherFairnessKey] = r
	}
	f.reported = ready.active > 0
	return out
}

// otherWeight is the summed weight of the active keys past the cap.
func (f *fairnessMeter) otherWeight(ready *drr[*message]) int64 {
	now := time.Now()
	if ready.active <= manyKeys || now.Sub(f.other.at) >= oldestReadyEvery {
		f.other.at, f.other.weight = now, 0
		for key, k := range ready.keys {
			if !f.named[key] {
				f.other.weight += k.weight
			}
		}
	}
	return max(f.other.weight, 1)
}
