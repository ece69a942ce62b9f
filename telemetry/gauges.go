package telemetry

import "sync/atomic"

// QueueGauges is the latest gauge reading of one queue.
type QueueGauges struct {
	// Depth is the number of ready messages.
	Depth int64
	// Leases is the number of leased (in-flight) messages.
	Leases int64
	// Consumers is the number of open lease streams.
	Consumers int64
}

// GaugeBoard publishes per-queue gauge readings from one writer (the
// telemetry actor) to any number of readers (the observable-gauge callback,
// ListQueues) without locks: the writer swaps in a new immutable map, a
// reader loads whichever map is current. A queue missing from the map has no
// series.
type GaugeBoard struct {
	p atomic.Pointer[map[string]QueueGauges]
}

// Snapshot returns the current readings. The map must not be modified.
func (b *GaugeBoard) Snapshot() map[string]QueueGauges {
	if m := b.p.Load(); m != nil {
		return *m
	}
	return nil
}

// Publish replaces the readings; m must not be modified afterwards.
func (b *GaugeBoard) Publish(m map[string]QueueGauges) { b.p.Store(&m) }
