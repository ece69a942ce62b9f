package storage

import (
	badger "github.com/dgraph-io/badger/v4"
)

// RawPut is a key and value outside this package's layout, written by
// ApplyCommitted with the batches it applies: a replicated log's own
// records (its applied index), which must commit with or after them.
type RawPut struct{ Key, Value []byte }

// ApplyCommitted writes batches that a replicated log has committed, in
// their order, and then extra, and returns once all of it is written. It
// is how a replica applies its log to the store; nothing else should use
// it.
//
// Unlike Submit it checks no owner: each batch had one when it was
// proposed, and one log applies the batches of many owners together. The
// batches go to the committer as one request, so they share its
// transactions (split between units as Submit's are, and a DeleteQueueItems
// stepped as there) and are applied whole or, after a crash, in part up to
// a unit: extra is a unit of its own after theirs, so it is never durable
// before them. A log replaying from its applied index therefore applies
// some units twice, which is harmless: every op is a put or a delete.
//
// It makes nothing durable of its own accord when the store was opened
// without SyncWrites; the log it applies is the durable record (DB.Sync
// makes both durable).
func (s *Badger) ApplyCommitted(batches []*Batch, extra []RawPut) error {
	m := &Batch{owner: MetaOwner, owned: true}
	for _, b := range batches {
		base := len(m.ops)
		for _, u := range b.units {
			m.units = append(m.units, base+u)
		}
		m.ops = append(m.ops, b.ops...)
		m.size += b.size
		m.prefixes = m.prefixes || b.prefixes
	}
	if len(extra) > 0 {
		m.units = append(m.units, len(m.ops))
		for _, p := range extra {
			o := op{key: p.Key, value: p.Value}
			m.ops = append(m.ops, o)
			m.size += o.size()
		}
	}
	if len(m.ops) == 0 {
		return nil
	}
	// A DeletePrefix is applied in steps, which only the background lane
	// takes; nothing else writes to a replica's store meanwhile, so its
	// turns cost no one.
	m.background = m.prefixes
	ch := make(chan error, 1)
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	s.reqs <- request{batch: m, done: func(err error) { ch <- err }}
	s.mu.RUnlock()
	return <-ch
}

// DB is the badger database under the store, for a replicated log that
// keeps its records beside the store's (the cluster's raft log: keys of
// its own prefixes, which this package never writes). Nothing else may
// write to it.
func (s *Badger) DB() *badger.DB { return s.db }
