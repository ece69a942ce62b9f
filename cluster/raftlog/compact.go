package raftlog

import (
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
	"go.etcd.io/raft/v3"
)

// Compact discards group's entries below index: FirstIndex becomes index+1,
// and the term of entry index is kept for matching, as MemoryStorage.Compact
// does. It answers raft.ErrCompacted if index is not above the compacted
// index already.
//
// The rule that makes it safe: index must be applied, and that application
// must be durable, which for an apply transaction (committed without a
// sync) means that a DB.Sync began after it committed. syncedApplied is the
// caller's word for the greatest such index; Compact refuses an index above
// it or above the stored applied record. Otherwise a crash could lose both
// the unsynced applied state and the entries that would replay it.
//
// The bounds move in one transaction; the deletes of the entries now outside
// the log follow in bounded transactions, so other writes interleave with a
// large compaction. Compact may run beside a Write of the same group.
func (s *Store) Compact(group, index, syncedApplied uint64) error {
	l, err := s.Log(group)
	if err != nil {
		return err
	}
	if err := l.moveBase(index, syncedApplied); err != nil {
		return err
	}
	return s.deleteBelow(group, index)
}

func (l *Log) moveBase(index, syncedApplied uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	v := l.v
	switch {
	case index <= v.base:
		return raft.ErrCompacted
	case index > v.last:
		return fmt.Errorf("raftlog: group %d: compact to %d, beyond the last index %d", l.group, index, v.last)
	case index > syncedApplied:
		return fmt.Errorf("raftlog: group %d: compact to %d, beyond the synced applied index %d", l.group, index, syncedApplied)
	}
	a, err := l.s.Applied(l.group)
	if err != nil {
		return err
	}
	if index > a.GetIndex() {
		return fmt.Errorf("raftlog: group %d: compact to %d, beyond the applied index %d", l.group, index, a.GetIndex())
	}
	t, err := l.term(index)
	if err != nil {
		return err
	}
	nv := v.clone()
	nv.base, nv.baseTerm = index, t
	nv.dropRunsBelow(index)
	gp := groupPlan{log: l}
	var p plan
	if err := gp.setState(&p, nv.logState); err != nil {
		return err
	}
	if err := l.s.run(p.units); err != nil {
		l.reload()
		return fmt.Errorf("raftlog: group %d: compact: %w", l.group, err)
	}
	l.v = nv
	return nil
}

// deleteChunk bounds the keys one round of deleteBelow holds in memory.
const deleteChunk = 10_000

// deleteBelow deletes every r key of group below index: all outside the log.
func (s *Store) deleteBelow(group, index uint64) error {
	end := entryKey(group, index)
	for {
		var p plan
		err := s.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: groupKey(prefixEntry, group)})
			defer it.Close()
			for it.Rewind(); it.Valid() && len(p.units) < deleteChunk; it.Next() {
				k := it.Item().KeyCopy(nil)
				if string(k) >= string(end) {
					break
				}
				p.add(kv{key: k})
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("raftlog: group %d: compact: %w", group, err)
		}
		if len(p.units) == 0 {
			return nil
		}
		if err := s.run(p.units); err != nil {
			return fmt.Errorf("raftlog: group %d: compact: %w", group, err)
		}
	}
}
