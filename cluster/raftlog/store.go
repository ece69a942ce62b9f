package raftlog

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"

	badger "github.com/dgraph-io/badger/v4"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Store is the Raft logs of all the groups in one badger DB. It is safe for
// concurrent use; each group's log is served by its [Log].
type Store struct {
	db *badger.DB

	mu   sync.Mutex // guards logs
	logs map[uint64]*Log

	// maxSize and maxCount bound one badger transaction: half of badger's
	// limits, as package storage's committer does, so that the estimate
	// of an op's size may be off.
	maxSize, maxCount int64
	// beforeCommit and afterTxn, when a test sets them, run before and
	// after each badger transaction a Write or Compact commits; an error
	// from either fails the write there.
	beforeCommit, afterTxn func() error
}

// New returns the store of the logs kept in db. db may hold other keys (the
// state machine's); the store reads and writes only its own prefixes.
func New(db *badger.DB) *Store {
	return &Store{
		db:       db,
		logs:     map[uint64]*Log{},
		maxSize:  db.MaxBatchSize() / 2,
		maxCount: db.MaxBatchCount() / 2,
	}
}

// Log returns group's log, reading its bounds from the DB the first time.
// The same *Log is returned for the life of the Store.
func (s *Store) Log(group uint64) (*Log, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.logs[group]; l != nil {
		return l, nil
	}
	l := &Log{s: s, group: group}
	v, err := l.load()
	if err != nil {
		return nil, err
	}
	l.v = v
	s.logs[group] = l
	return l, nil
}

// Log is one group's Raft log. Its methods other than the raft.Storage ones
// are on [Store] and [Write]. FirstIndex, LastIndex and the Term of recently
// appended entries are answered from memory; Entries, and Term of older
// entries, read the DB.
type Log struct {
	s     *Store
	group uint64

	mu sync.RWMutex // guards v and err; held for writing while a write of this group commits
	v  view
	// err, once set, is what every call answers: a commit failed and the
	// state could not be read back, so memory may not match the DB.
	err error
}

var _ raft.Storage = (*Log)(nil)

// view is a group's durable state as memory keeps it.
type view struct {
	logState
	// runs are the terms of the entries [runs[0].start, last], one run per
	// term; entries below runs[0].start (after a restart, all but the last)
	// are looked up in the DB.
	runs []termRun
}

type termRun struct{ start, term uint64 }

func (v view) clone() view {
	v.runs = slices.Clone(v.runs)
	return v
}

// cachedTerm is the term of entry i from memory, if memory has it.
func (v view) cachedTerm(i uint64) (uint64, bool) {
	switch {
	case i == v.base:
		return v.baseTerm, true
	case len(v.runs) == 0 || i < v.runs[0].start || i > v.last:
		return 0, false
	}
	j := sort.Search(len(v.runs), func(j int) bool { return v.runs[j].start > i }) - 1
	return v.runs[j].term, true
}

// truncateRuns forgets the terms of entries at and after from.
func (v *view) truncateRuns(from uint64) {
	j := sort.Search(len(v.runs), func(j int) bool { return v.runs[j].start >= from })
	v.runs = v.runs[:j]
}

// appendRun records that entry i, the new last, has term t.
func (v *view) appendRun(i, t uint64) {
	if n := len(v.runs); n == 0 || v.runs[n-1].term != t {
		v.runs = append(v.runs, termRun{start: i, term: t})
	}
}

// dropRunsBelow forgets runs wholly below index from, keeping the run that
// covers it.
func (v *view) dropRunsBelow(from uint64) {
	j := sort.Search(len(v.runs), func(j int) bool { return v.runs[j].start > from })
	if j > 1 {
		v.runs = slices.Delete(v.runs, 0, j-1)
	}
}

// load reads the group's view from the DB.
func (l *Log) load() (view, error) {
	var v view
	err := l.s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(groupKey(prefixState, l.group))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil // a group never written: the empty log
		}
		if err != nil {
			return err
		}
		b, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		if v.logState, err = decodeState(b); err != nil {
			return err
		}
		if c := v.hs.GetCommit(); c > v.last {
			return fmt.Errorf("raftlog: hard state commits %d, beyond the last index %d", c, v.last)
		}
		if v.last > v.base {
			e, err := readEntry(txn, l.group, v.last)
			if err != nil {
				return err
			}
			v.runs = []termRun{{start: v.last, term: e.GetTerm()}}
		}
		return nil
	})
	if err != nil {
		return view{}, fmt.Errorf("raftlog: group %d: load: %w", l.group, err)
	}
	return v, nil
}

func readEntry(txn *badger.Txn, group, index uint64) (*pb.Entry, error) {
	item, err := txn.Get(entryKey(group, index))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("raftlog: entry %d inside the log is missing: %w", index, raft.ErrUnavailable)
	}
	if err != nil {
		return nil, err
	}
	return decodeEntry(item, index)
}

func decodeEntry(item *badger.Item, index uint64) (*pb.Entry, error) {
	b, err := item.ValueCopy(nil)
	if err != nil {
		return nil, err
	}
	e := &pb.Entry{}
	if err := proto.Unmarshal(b, e); err != nil {
		return nil, fmt.Errorf("raftlog: entry %d: %w", index, err)
	}
	if e.GetIndex() != index {
		return nil, fmt.Errorf("raftlog: the entry under index %d says index %d", index, e.GetIndex())
	}
	return e, nil
}

// InitialState implements raft.Storage: the stored HardState (nil if none
// was ever set) and the ConfState of the applied record (empty if none).
func (l *Log) InitialState() (*pb.HardState, *pb.ConfState, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.err != nil {
		return nil, nil, l.err
	}
	var hs *pb.HardState
	if l.v.hs != nil {
		hs = proto.CloneOf(l.v.hs)
	}
	a, err := l.s.Applied(l.group)
	if err != nil {
		return nil, nil, err
	}
	return hs, a.GetConfState(), nil
}

// Entries implements raft.Storage: the entries [lo, hi), at least one if any,
// and after the first only as many as fit in maxSize bytes of their encoding
// (raft's rule, as MemoryStorage applies it). The slice is the caller's.
func (l *Log) Entries(lo, hi, maxSize uint64) ([]*pb.Entry, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.err != nil {
		return nil, l.err
	}
	v := l.v
	switch {
	case lo <= v.base:
		return nil, raft.ErrCompacted
	case hi > v.last+1:
		return nil, fmt.Errorf("raftlog: group %d: entries up to %d asked, beyond the last index %d", l.group, hi, v.last)
	case v.last == v.base:
		return nil, raft.ErrUnavailable
	case lo > hi:
		return nil, fmt.Errorf("raftlog: group %d: entries from %d to %d asked", l.group, lo, hi)
	}
	ents := make([]*pb.Entry, 0, min(hi-lo, 64))
	err := l.s.db.View(func(txn *badger.Txn) error {
		prefix := groupKey(prefixEntry, l.group)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: hi-lo > 1, PrefetchSize: int(min(hi-lo, 16))})
		defer it.Close()
		var size uint64
		want := lo
		for it.Seek(entryKey(l.group, lo)); it.Valid() && want < hi; it.Next() {
			i, err := entryIndex(it.Item().Key())
			if err != nil {
				return err
			}
			if i != want {
				return fmt.Errorf("raftlog: entry %d inside the log is missing: %w", want, raft.ErrUnavailable)
			}
			e, err := decodeEntry(it.Item(), i)
			if err != nil {
				return err
			}
			size += uint64(proto.Size(e))
			if len(ents) > 0 && size > maxSize {
				return nil
			}
			ents = append(ents, e)
			want++
		}
		if want < hi { // the iterator ran out inside the log
			return fmt.Errorf("raftlog: entry %d inside the log is missing: %w", want, raft.ErrUnavailable)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("raftlog: group %d: %w", l.group, err)
	}
	return ents, nil
}

// Term implements raft.Storage. The term of the entry before FirstIndex is
// kept; below that it is ErrCompacted, above LastIndex ErrUnavailable.
func (l *Log) Term(i uint64) (uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.err != nil {
		return 0, l.err
	}
	return l.term(i)
}

// term is Term with l.mu held.
func (l *Log) term(i uint64) (uint64, error) {
	v := l.v
	switch {
	case i < v.base:
		return 0, raft.ErrCompacted
	case i > v.last:
		return 0, raft.ErrUnavailable
	}
	if t, ok := v.cachedTerm(i); ok {
		return t, nil
	}
	var t uint64
	err := l.s.db.View(func(txn *badger.Txn) error {
		e, err := readEntry(txn, l.group, i)
		t = e.GetTerm()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("raftlog: group %d: %w", l.group, err)
	}
	return t, nil
}

// LastIndex implements raft.Storage.
func (l *Log) LastIndex() (uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.v.last, l.err
}

// FirstIndex implements raft.Storage.
func (l *Log) FirstIndex() (uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.v.base + 1, l.err
}

// Snapshot implements raft.Storage. The snapshot's data travels out of band,
// so this is its metadata only: the applied record, which [SetApplied] and a
// snapshot's [Write.ApplySnapshot] keep.
func (l *Log) Snapshot() (*pb.Snapshot, error) {
	a, err := l.s.Applied(l.group)
	if err != nil {
		return nil, err
	}
	return &pb.Snapshot{Metadata: a}, nil
}

// HardState is the group's stored HardState, nil if none was set.
func (l *Log) HardState() *pb.HardState {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.v.hs == nil {
		return nil
	}
	return proto.CloneOf(l.v.hs)
}
