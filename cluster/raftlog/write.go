package raftlog

import (
	"fmt"
	"slices"

	badger "github.com/dgraph-io/badger/v4"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Write gathers the log changes of any number of groups (what each group's
// Ready asks to persist) and commits them together: one badger transaction
// when they fit in half of badger's limits, else as few as it takes, ordered
// so that a crash between them leaves each group's log as some earlier moment
// had it (see the package doc). A Write is used by one goroutine; once
// committed it is empty again.
type Write struct {
	s   *Store
	ops []writeOp
}

type opKind uint8

const (
	opAppend opKind = iota
	opHardState
	opSnapshot
)

type writeOp struct {
	group uint64
	kind  opKind
	ents  []*pb.Entry
	hs    *pb.HardState
	snap  *pb.SnapshotMetadata
}

// NewWrite starts an empty Write.
func (s *Store) NewWrite() *Write { return &Write{s: s} }

// Append adds entries to group's log as raft's Ready.Entries asks: entries
// at and after the first one's index replace whatever the log had there, so a
// conflicting suffix is gone once Commit returns; entries at or below the
// compacted index are ignored. The entries must be consecutive and must not
// leave a gap after the last index (Commit refuses them). They are not
// copied, and must not be changed until Commit returns.
func (w *Write) Append(group uint64, ents []*pb.Entry) {
	if len(ents) > 0 {
		w.ops = append(w.ops, writeOp{group: group, kind: opAppend, ents: ents})
	}
}

// SetHardState stores hs as group's HardState; nil is ignored.
func (w *Write) SetHardState(group uint64, hs *pb.HardState) {
	if hs != nil {
		w.ops = append(w.ops, writeOp{group: group, kind: opHardState, hs: proto.CloneOf(hs)})
	}
}

// ApplySnapshot replaces group's log with the empty log after meta.Index
// (whose term is meta.Term), sets the applied record to meta and clears the
// snapshot marker, in one transaction. The caller must have written the
// snapshot's data into the state machine first. Commit answers
// raft.ErrSnapOutOfDate if the group has already applied meta.Index.
func (w *Write) ApplySnapshot(group uint64, meta *pb.SnapshotMetadata) {
	w.ops = append(w.ops, writeOp{group: group, kind: opSnapshot, snap: pb.EnsureSnapshotMetadata(proto.CloneOf(meta))})
}

// Empty reports whether the Write has nothing to commit.
func (w *Write) Empty() bool { return len(w.ops) == 0 }

// Commit writes everything added to the Write. It does not sync: the caller
// follows it with the DB's Sync before anything depends on it being durable.
// Readers of the groups' logs wait while it writes, and see all of it once it
// returns nil. On an error nothing of an invalid Write is written; if badger
// fails partway the logs answer what the DB then holds, which is a state the
// ordering keeps consistent.
func (w *Write) Commit() error {
	if len(w.ops) == 0 {
		return nil
	}
	var groups []uint64
	for _, op := range w.ops {
		groups = append(groups, op.group)
	}
	slices.Sort(groups)
	groups = slices.Compact(groups)
	plans := make(map[uint64]*groupPlan, len(groups))
	for _, g := range groups { // in order, so two Commits never deadlock
		l, err := w.s.Log(g)
		if err != nil {
			return err
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.err != nil {
			return l.err
		}
		plans[g] = &groupPlan{log: l, v: l.v.clone(), durable: l.v.logState, applied: -1}
	}
	var p plan
	for _, op := range w.ops {
		gp := plans[op.group]
		var err error
		switch op.kind {
		case opAppend:
			err = gp.append(&p, op.ents)
		case opHardState:
			gp.v.hs = op.hs
		case opSnapshot:
			err = gp.applySnapshot(&p, op.snap)
		}
		if err != nil {
			return fmt.Errorf("raftlog: group %d: %w", op.group, err)
		}
	}
	for _, g := range groups {
		st := plans[g].v.logState
		if c := st.hs.GetCommit(); c > st.last {
			// A state load would refuse, and raft would panic on.
			return fmt.Errorf("raftlog: group %d: hard state commits %d, beyond the last index %d", g, c, st.last)
		}
		if err := plans[g].setState(&p, st); err != nil {
			return err
		}
	}
	if err := w.s.run(p.units); err != nil {
		for _, g := range groups {
			plans[g].log.reload()
		}
		return fmt.Errorf("raftlog: commit: %w", err)
	}
	for _, g := range groups {
		plans[g].log.v = plans[g].v
	}
	w.ops = nil
	return nil
}

// plan is the badger writes of a Write or a Compact, in order; a unit is
// never split between transactions.
type plan struct{ units [][]kv }

type kv struct {
	key, value []byte // a nil value deletes
}

func (p *plan) add(u ...kv) { p.units = append(p.units, u) }

// deleteEntries adds the deletes of group's r keys [from, to].
func (p *plan) deleteEntries(group, from, to uint64) {
	for i := from; i <= to && i >= from; i++ {
		p.add(kv{key: entryKey(group, i)})
	}
}

// groupPlan is one group's part of a Write: v is the view once the Write's ops
// so far are applied, durable the h record as the units so far leave it.
type groupPlan struct {
	log     *Log
	v       view
	durable logState
	applied int64 // the applied index, once read; -1 before
}

func (gp *groupPlan) stateUnit(st logState) (kv, error) {
	b, err := st.encode()
	if err != nil {
		return kv{}, fmt.Errorf("raftlog: group %d: log state: %w", gp.log.group, err)
	}
	return kv{key: groupKey(prefixState, gp.log.group), value: b}, nil
}

// setState adds the write of h as st.
func (gp *groupPlan) setState(p *plan, st logState) error {
	u, err := gp.stateUnit(st)
	if err != nil {
		return err
	}
	p.add(u)
	gp.durable = st
	return nil
}

func (gp *groupPlan) append(p *plan, ents []*pb.Entry) error {
	v := &gp.v
	k := ents[0].GetIndex()
	lastNew := k + uint64(len(ents)) - 1
	if lastNew <= v.base {
		return nil // all compacted already
	}
	if k <= v.base {
		ents = ents[v.base+1-k:]
		k = v.base + 1
	}
	if k > v.last+1 {
		return fmt.Errorf("append at %d leaves a gap after the last index %d", k, v.last)
	}
	for i, e := range ents {
		if e.GetIndex() != k+uint64(i) {
			return fmt.Errorf("append: entry %d of a run from %d has index %d", i, k, e.GetIndex())
		}
	}
	if k <= gp.durable.last {
		// Overwriting entries the h record covers: first move its last
		// below them, so no transaction boundary shows a mix of old and new.
		st := gp.durable
		st.last = k - 1
		if err := gp.setState(p, st); err != nil {
			return err
		}
	}
	for _, e := range ents {
		b, err := proto.Marshal(e)
		if err != nil {
			return fmt.Errorf("append: entry %d: %w", e.GetIndex(), err)
		}
		p.add(kv{key: entryKey(gp.log.group, e.GetIndex()), value: b})
	}
	if lastNew < v.last {
		p.deleteEntries(gp.log.group, lastNew+1, v.last) // the conflicting suffix
	}
	v.truncateRuns(k)
	for _, e := range ents {
		v.appendRun(e.GetIndex(), e.GetTerm())
	}
	v.last = lastNew
	return nil
}

func (gp *groupPlan) applySnapshot(p *plan, meta *pb.SnapshotMetadata) error {
	if gp.applied < 0 {
		a, err := gp.log.s.Applied(gp.log.group)
		if err != nil {
			return err
		}
		gp.applied = int64(a.GetIndex())
	}
	if gp.applied != 0 && uint64(gp.applied) >= meta.GetIndex() {
		return raft.ErrSnapOutOfDate
	}
	a, err := proto.Marshal(meta)
	if err != nil {
		return fmt.Errorf("applied record: %w", err)
	}
	v := &gp.v
	oldBase, oldLast := v.base, v.last
	v.base, v.baseTerm, v.last, v.runs = meta.GetIndex(), meta.GetTerm(), meta.GetIndex(), nil
	st := gp.durable
	st.base, st.baseTerm, st.last = v.base, v.baseTerm, v.last
	h, err := gp.stateUnit(st)
	if err != nil {
		return err
	}
	p.add(h,
		kv{key: groupKey(prefixApplied, gp.log.group), value: a},
		kv{key: groupKey(prefixSnapshot, gp.log.group)})
	gp.durable = st
	gp.applied = int64(meta.GetIndex())
	p.deleteEntries(gp.log.group, oldBase, oldLast) // now all outside the log
	return nil
}

// run commits units in as few badger transactions as half of badger's limits
// allow, in order.
func (s *Store) run(units [][]kv) error {
	txn := s.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	var size, count int64
	for _, u := range units {
		var us int64
		for _, o := range u {
			us += int64(len(o.key) + len(o.value) + opOverhead)
		}
		if count > 0 && (size+us > s.maxSize || count+int64(len(u)) > s.maxCount) {
			if err := s.commit(txn); err != nil {
				return err
			}
			txn, size, count = s.db.NewTransaction(true), 0, 0
		}
		for _, o := range u {
			var err error
			if o.value == nil {
				err = txn.Delete(o.key)
			} else {
				err = txn.Set(o.key, o.value)
			}
			if err != nil {
				return err
			}
		}
		size += us
		count += int64(len(u))
	}
	return s.commit(txn)
}

// opOverhead is a generous bound on badger's per-entry bookkeeping, as
// package storage estimates it.
const opOverhead = 32

func (s *Store) commit(txn *badger.Txn) error {
	if s.beforeCommit != nil {
		if err := s.beforeCommit(); err != nil {
			return err
		}
	}
	if err := txn.Commit(); err != nil {
		return err
	}
	if s.afterTxn != nil {
		return s.afterTxn()
	}
	return nil
}

// reload makes l's view what the DB holds, after a write that may have
// stopped partway; l.mu is held. If even that fails, l answers the error
// from then on.
func (l *Log) reload() {
	v, err := l.load()
	if err != nil {
		l.err = err
		return
	}
	l.v = v
}
