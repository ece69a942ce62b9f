package raftlog_test

import (
	"fmt"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/fila-dev/filad/cluster/raftlog"
)

// op is one change to a log, done to raft's MemoryStorage (the reference)
// and to the badger store alike.
type op struct {
	name string
	mem  func(ms *raft.MemoryStorage) error
	// write adds the op to a Write; ops that are not part of the Write
	// (the applied record, compaction) use do instead.
	write func(w *raftlog.Write, group uint64)
	do    func(n *node, group uint64) error
}

func appendOp(from, to, term uint64) op {
	return op{
		name:  fmt.Sprintf("append [%d, %d] term %d", from, to, term),
		mem:   func(ms *raft.MemoryStorage) error { return ms.Append(ents(from, to, term)) },
		write: func(w *raftlog.Write, g uint64) { w.Append(g, ents(from, to, term)) },
	}
}

func hardStateOp(term, vote, commit uint64) op {
	return op{
		name:  fmt.Sprintf("hard state term %d vote %d commit %d", term, vote, commit),
		mem:   func(ms *raft.MemoryStorage) error { return ms.SetHardState(hardState(term, vote, commit)) },
		write: func(w *raftlog.Write, g uint64) { w.SetHardState(g, hardState(term, vote, commit)) },
	}
}

func snapshotOp(index, term uint64, voters ...uint64) op {
	return op{
		name: fmt.Sprintf("apply snapshot at %d term %d", index, term),
		mem: func(ms *raft.MemoryStorage) error {
			return ms.ApplySnapshot(&pb.Snapshot{Metadata: meta(index, term, voters...)})
		},
		write: func(w *raftlog.Write, g uint64) { w.ApplySnapshot(g, meta(index, term, voters...)) },
	}
}

// appliedOp is the apply loop's record; MemoryStorage keeps the same facts
// (index, term, ConfState) as a snapshot it creates.
func appliedOp(index uint64, voters ...uint64) op {
	return op{
		name: fmt.Sprintf("applied %d", index),
		mem: func(ms *raft.MemoryStorage) error {
			_, err := ms.CreateSnapshot(index, &pb.ConfState{Voters: voters}, nil)
			return err
		},
		do: func(n *node, g uint64) error { return n.setApplied(g, index, &pb.ConfState{Voters: voters}) },
	}
}

// compactOp compacts with the applied index as the synced one: appliedOp
// syncs after writing it.
func compactOp(index uint64) op {
	return op{
		name: fmt.Sprintf("compact %d", index),
		mem:  func(ms *raft.MemoryStorage) error { return ms.Compact(index) },
		do:   func(n *node, g uint64) error { return n.s.Compact(g, index, index) },
	}
}

// apply does o to group's log on n: a Write op in a Write of its own,
// committed and synced.
func (o op) apply(n *node, group uint64) error {
	if o.do != nil {
		return o.do(n, group)
	}
	w := n.s.NewWrite()
	o.write(w, group)
	return n.commit(w)
}

// TestContractAgainstMemoryStorage runs each sequence of ops on raft's
// MemoryStorage and on the badger store, and after every op checks that the
// store answers every raft.Storage question as MemoryStorage does, both at
// once and after the DB is closed and reopened (so from disk alone).
func TestContractAgainstMemoryStorage(t *testing.T) {
	for _, tc := range []struct {
		name string
		ops  []op
		// errs[i], when set, is the error op i must fail with on both.
		errs map[int]error
	}{
		{name: "empty log"},
		{name: "append", ops: []op{appendOp(1, 5, 1), appendOp(6, 8, 1)}},
		{
			name: "a conflicting suffix is truncated",
			ops:  []op{appendOp(1, 5, 1), hardStateOp(1, 1, 2), appendOp(3, 4, 2), hardStateOp(2, 2, 3)},
		},
		{
			name: "truncated, then extended past the old last index",
			ops:  []op{appendOp(1, 10, 1), appendOp(4, 5, 2), appendOp(6, 12, 2)},
		},
		{
			name: "truncated twice in one term sequence",
			ops:  []op{appendOp(1, 9, 1), appendOp(7, 9, 2), appendOp(5, 6, 3), appendOp(7, 7, 3)},
		},
		{name: "an overlapping append of the same entries", ops: []op{appendOp(1, 5, 1), appendOp(2, 7, 1)}},
		{
			name: "compaction",
			ops:  []op{appendOp(1, 10, 1), appendOp(7, 10, 2), appendOp(11, 12, 2), appliedOp(8, 1, 2, 3), compactOp(4), compactOp(4), compactOp(3), compactOp(8)},
			errs: map[int]error{5: raft.ErrCompacted, 6: raft.ErrCompacted},
		},
		{
			name: "compact everything",
			ops:  []op{appendOp(1, 6, 1), appliedOp(6, 1), compactOp(6), appendOp(7, 8, 2)},
		},
		{
			name: "append over the compacted prefix",
			ops:  []op{appendOp(1, 10, 1), appliedOp(8, 1), compactOp(5), appendOp(3, 6, 2), appendOp(1, 4, 3)},
		},
		{
			name: "snapshot past the log",
			ops:  []op{appendOp(1, 5, 1), hardStateOp(1, 1, 3), snapshotOp(10, 3, 1, 2, 3), hardStateOp(3, 2, 10), appendOp(11, 12, 3)},
		},
		{
			name: "snapshot inside the log",
			ops:  []op{appendOp(1, 8, 1), snapshotOp(5, 1, 1, 2)},
		},
		{
			name: "an out-of-date snapshot",
			ops:  []op{snapshotOp(10, 3, 1), snapshotOp(8, 2, 1), snapshotOp(10, 3, 1), appendOp(11, 11, 3)},
			errs: map[int]error{1: raft.ErrSnapOutOfDate, 2: raft.ErrSnapOutOfDate},
		},
		{
			name: "hard state round trip",
			ops:  []op{hardStateOp(1, 0, 0), appendOp(1, 3, 1), hardStateOp(2, 3, 2), hardStateOp(5, 0, 3)},
		},
		{
			name: "applied record carries the ConfState",
			ops:  []op{appendOp(1, 3, 1), appliedOp(2, 1, 2), appliedOp(3, 1, 2, 3)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ms := raft.NewMemoryStorage()
			// live keeps its Store (and so its memory of terms) throughout;
			// cold is reopened after every op, so it answers from disk.
			live, cold := newNode(t, t.TempDir()), newNode(t, t.TempDir())
			const group = 7
			requireSameStorage(t, ms, live.log(group))
			for i, o := range tc.ops {
				werr := o.mem(ms)
				if want := tc.errs[i]; want != nil {
					require.ErrorIs(t, werr, want, "op %d (%s) on MemoryStorage", i, o.name)
				}
				for _, n := range []*node{live, cold} {
					requireSameErr(t, werr, o.apply(n, group), "op %d (%s)", i, o.name)
					requireSameStorage(t, ms, n.log(group))
				}
				cold.reopen()
				requireSameStorage(t, ms, cold.log(group))
			}
		})
	}
}

// TestManyGroupsInOneWrite commits every group's ops of a loop in one Write
// (appends, a conflicting truncation, a snapshot, HardStates) and checks each
// group against its own MemoryStorage, before and after a reopen; the
// groups' keys must not bleed into each other.
func TestManyGroupsInOneWrite(t *testing.T) {
	rounds := map[uint64][][]op{
		1: {{appendOp(1, 5, 1), hardStateOp(1, 1, 2)}, {appendOp(6, 9, 1), hardStateOp(1, 1, 6)}},
		2: {{appendOp(1, 5, 1)}, {appendOp(3, 4, 2), hardStateOp(2, 2, 2)}},
		3: {{appendOp(1, 3, 1)}, {snapshotOp(20, 4, 1, 2, 3), appendOp(21, 22, 4), hardStateOp(4, 1, 20)}},
		4: {{hardStateOp(1, 3, 0)}, {}},
		// Group ids that differ only in their high bytes, and a huge one.
		1 << 32:   {{appendOp(1, 2, 1)}, {appendOp(2, 3, 2)}},
		1<<64 - 1: {{appendOp(1, 4, 1)}, {appendOp(5, 5, 1)}},
	}
	n := newNode(t, t.TempDir())
	mems := map[uint64]*raft.MemoryStorage{}
	for g := range rounds {
		mems[g] = raft.NewMemoryStorage()
	}
	for r := range 2 {
		w := n.s.NewWrite()
		for g, rs := range rounds {
			for _, o := range rs[r] {
				require.NoError(t, o.mem(mems[g]))
				o.write(w, g)
			}
		}
		require.NoError(t, n.commit(w))
		for g := range rounds {
			requireSameStorage(t, mems[g], n.log(g))
		}
	}
	n.reopen()
	for g := range rounds {
		requireSameStorage(t, mems[g], n.log(g))
	}
}

// TestSnapshotMarker checks that the marker a snapshot receiver sets is read
// back after a restart, and that the snapshot's ApplySnapshot clears it with
// the log's reset.
func TestSnapshotMarker(t *testing.T) {
	n := newNode(t, t.TempDir())
	const g = 5
	_, ok, err := n.s.SnapshotMarker(g)
	require.NoError(t, err)
	require.False(t, ok)

	m := meta(40, 3, 1, 2, 3)
	require.NoError(t, n.db.Update(func(txn *badger.Txn) error { return raftlog.SetSnapshotMarker(txn, g, m) }))
	n.reopen()
	got, ok, err := n.s.SnapshotMarker(g)
	require.NoError(t, err)
	require.True(t, ok)
	require.True(t, proto.Equal(pb.EnsureSnapshotMetadata(m), got), "marker: %v", got)

	require.NoError(t, snapshotOp(40, 3, 1, 2, 3).apply(n, g))
	n.reopen()
	_, ok, err = n.s.SnapshotMarker(g)
	require.NoError(t, err)
	require.False(t, ok, "ApplySnapshot clears the marker")
	applied, err := n.s.Applied(g)
	require.NoError(t, err)
	require.True(t, proto.Equal(pb.EnsureSnapshotMetadata(m), applied), "applied: %v", applied)
}
