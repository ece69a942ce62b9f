package cluster

import (
	"errors"
	"log/slog"
	"maps"
	"sync"

	"go.etcd.io/raft/v3"

	"github.com/fila-dev/filad/cluster/raftlog"
)

// compactor discards the applied head of each group's log on a goroutine
// of its own, so that the driver's loop never waits for the deletes. It
// learns from the replica's apply and persist which index of each group
// is applied durably: applied and then covered by a DB.Sync that began
// after the apply committed (raftlog.Store.Compact's rule). Once that
// index is more than entries beyond the log's first index plus the tail
// it keeps, it compacts to the index less the tail, but not past what a
// follower catching up from a snapshot needs next (setFloor: the
// snapshot's index, then the follower's match, until it has caught up). A
// log compacted past that would send the follower another snapshot, which
// a write load faster than the stream outruns again (the 1M catch-up at
// 32 MiB/s did).
type compactor struct {
	log            *raftlog.Store
	entries, tail  uint64
	counters       *snapshotCounters
	logger         *slog.Logger
	wake           chan struct{}
	quit, finished chan struct{}
	stopOnce       sync.Once

	mu sync.Mutex
	// committed is each group's applied index as committed (not yet
	// synced); durable is what a sync covers, the compaction's bound.
	committed, durable map[uint64]uint64
	// floor, if set, is the highest index group's log may be compacted
	// to now; 0 for no bound.
	floor func(group uint64) uint64
}

// maxSnapshotHold bounds how far, in compaction intervals (entries), a
// follower catching up holds a log's compaction back: 3 intervals, 30,000
// entries at the default snapshot_entries, so that the log holds at most
// about three times what it holds without a hold (entries plus the tail)
// on disk. The 1M catch-up at 32 MiB/s needed 14,000.
const maxSnapshotHold = 3

// setFloor bounds every later compaction of a group by floor(group).
func (c *compactor) setFloor(floor func(group uint64) uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.floor = floor
}

func newCompactor(log *raftlog.Store, entries, tail int, counters *snapshotCounters, logger *slog.Logger) *compactor {
	c := &compactor{
		log: log, entries: uint64(max(entries, 1)), tail: uint64(max(tail, 0)), counters: counters, logger: logger,
		wake: make(chan struct{}, 1), quit: make(chan struct{}), finished: make(chan struct{}),
		committed: map[uint64]uint64{}, durable: map[uint64]uint64{},
	}
	go c.run()
	return c
}

// applied notes that group's applied record at index has committed.
func (c *compactor) applied(group, index uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.committed[group] = max(c.committed[group], index)
}

// beforeSync is what the sync about to begin covers.
func (c *compactor) beforeSync() map[uint64]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.committed)
}

// synced notes that covered is durable and wakes the goroutine.
func (c *compactor) synced(covered map[uint64]uint64) {
	c.mu.Lock()
	for g, i := range covered {
		c.durable[g] = max(c.durable[g], i)
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *compactor) stop() {
	c.stopOnce.Do(func() { close(c.quit) })
	<-c.finished
}

func (c *compactor) run() {
	defer close(c.finished)
	for {
		select {
		case <-c.quit:
			return
		case <-c.wake:
		}
		c.mu.Lock()
		durable, floor := maps.Clone(c.durable), c.floor
		c.mu.Unlock()
		for g, synced := range durable {
			select {
			case <-c.quit:
				return
			default:
			}
			c.compact(g, synced, floor)
		}
	}
}

// compact compacts group's log to synced less the tail, once that is due,
// and to at most floor(group) when that is above 0 (floor may be nil).
func (c *compactor) compact(group, synced uint64, floorOf func(uint64) uint64) {
	l, err := c.log.Log(group)
	if err != nil {
		return
	}
	first, err := l.FirstIndex()
	if err != nil || synced < first+c.entries+c.tail {
		return
	}
	index := synced - c.tail
	var floor uint64
	if floorOf != nil {
		floor = floorOf(group)
	}
	// The hold is bounded: a follower that died while catching up stays
	// recorded until it is removed.
	if floor > 0 && floor < index && index-floor <= maxSnapshotHold*c.entries {
		if floor < first {
			return
		}
		index = floor
	}
	err = c.log.Compact(group, index, synced)
	switch {
	case errors.Is(err, raft.ErrCompacted):
		// A snapshot moved the log past it meanwhile.
	case err != nil:
		c.logger.Warn("raft log compaction failed; it is tried again after the next sync",
			slog.Uint64("group", group), slog.Uint64("index", index), slog.Any("error", err))
	default:
		c.counters.compactions.Add(1)
		c.counters.compacted.Add(index - first + 1)
		c.logger.Debug("raft log compacted", slog.Uint64("group", group), slog.Uint64("below", index+1), slog.Uint64("entries", index-first+1))
	}
}
