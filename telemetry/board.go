package telemetry

import "sync/atomic"

// QueueReading is what the fila.* instruments report for one queue.
type QueueReading struct {
	// Depth is the number of ready messages now.
	Depth int64
	// Leases is the number of leased (in-flight) messages now.
	Leases int64
	// Consumers is the number of open lease streams now.
	Consumers int64
	// Enqueued, Leased, Acked and Nacked are totals since the queue was
	// created (or since filad started, for a recovered queue).
	Enqueued, Leased, Acked, Nacked int64
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
