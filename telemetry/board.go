package telemetry

import (
	"sync/atomic"
	"time"
)

// QueueReading is what the fila.* instruments report for one queue.
type QueueReading struct {
	// Counts are totals since the queue was created (or since filad
	// started, for a recovered queue); in a queue actor's delta, the
	// changes since its last reading.
	Counts [numCounts]int64
	// Gauges are the values now.
	Gauges [numGauges]int64
	// Keys, in a queue actor's delta only, are the per-fairness-key
	// figures (capped per queue; see OtherFairnessKey): every series
	// delivered since the last reading or backlogged now. nil: nothing
	// changed since the last reading's keys.
	Keys map[string]KeyReading
	// Fair, in the aggregate, holds the per-key figures the deltas'
	// Keys were recorded into; nil until the first.
	Fair *FairShare
}

// KeyReading is one fairness series' figures in a queue actor's delta.
type KeyReading struct {
	// Deliveries counts the series' deliveries since the last reading.
	Deliveries int64
	// Backlogged: the series has ready messages now.
	Backlogged bool
	// Weight is the series' weight (for OtherFairnessKey, its keys'
	// summed).
	Weight int64
}

// OtherFairnessKey is the fairness_key of the series that sums a queue's
// keys past its cap.
const OtherFairnessKey = "(other)"

// Add folds a queue actor's delta into r: counts add up, gauges take the
// delta's values, and the delta's keys are recorded into r.Fair now.
func (r *QueueReading) Add(delta QueueReading) {
	for i, n := range delta.Counts {
		r.Counts[i] += n
	}
	r.Gauges = delta.Gauges
	if delta.Keys == nil {
		return
	}
	if r.Fair == nil {
		r.Fair = NewFairShare()
	}
	r.Fair.Record(time.Now(), delta.Keys)
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
