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
}

// Add folds a queue actor's delta into r: counts add up, gauges take the
// delta's values.
func (r *QueueReading) Add(delta QueueReading) {
	for i, n := range delta.Counts {
		r.Counts[i] += n
	}
	r.Gauges = delta.Gauges
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
