package telemetry

import "sync/atomic"

// QueueReading is what the fila.* instruments report for one queue.
type QueueReading struct {
	// Counts are totals since the queue was created (or since filad
	// started, for a recovered queue); in a queue actor's delta, the
	// changes since its last reading.
	Counts [numCounts]int64
	// Gauges are the values now.
	Gauges [numGauges]int64
	// Keys are the per-fairness-key figures (capped per queue; see
	// OtherFairnessKey): deliveries summed like Counts, ratios replaced
	// like Gauges. Never modified once published: Add makes a new map.
	Keys map[string]KeyReading
}

// KeyReading is one fairness key's figures in a QueueReading.
type KeyReading struct {
	// Deliveries counts the key's deliveries.
	Deliveries int64
	// ShareRatio is the key's share of the last window's deliveries over
	// its share of the weight; set when HasRatio.
	ShareRatio float64
	HasRatio   bool
}

// OtherFairnessKey is the fairness_key of the series that sums a queue's
// keys past its cap.
const OtherFairnessKey = "(other)"

// Add folds a queue actor's delta into r: counts add up, gauges take the
// delta's values.
func (r *QueueReading) Add(delta QueueReading) {
	for i, n := range delta.Counts {
		r.Counts[i] += n
	}
	r.Gauges = delta.Gauges
	if len(delta.Keys) == 0 {
		return
	}
	keys := make(map[string]KeyReading, len(r.Keys)+len(delta.Keys))
	for k, v := range r.Keys {
		keys[k] = v
	}
	for k, d := range delta.Keys {
		v := keys[k]
		v.Deliveries += d.Deliveries
		if d.HasRatio {
			v.ShareRatio, v.HasRatio = d.ShareRatio, true
		}
		keys[k] = v
	}
	r.Keys = keys
}

// Board publishes per-queue readings from one writer (the telemetry actor)
// to any number of readers (the instruments' callback, ListQueues) without
// locks: the writer swaps in a new immutable map, a reader loads whichever
// map is current and never waits on an actor. A queue missing from the map
// has no series.
type Board struct {
	p atomic.Pointer[map[string]QueueReading]
}

// Snapshot returns the current readings. The map must not be modified.
func (b *Board) Snapshot() map[string]QueueReading {
	if m := b.p.Load(); m != nil {
		return *m
	}
	return nil
}

// Publish replaces the readings; m must not be modified afterwards.
func (b *Board) Publish(m map[string]QueueReading) { b.p.Store(&m) }
