package raftlog_test

import (
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/fila-dev/filad/cluster/raftlog"
)

// openDB opens a badger DB as a cluster node would (SyncWrites off, the
// driver syncs), with small files so that crash images copy quickly.
func openDB(t testing.TB, dir string) *badger.DB { return openDBWith(t, dir, 1<<20) }

// openDBWith is openDB with memtables of the given size: a test that takes
// a crash image of a busy DB needs them large enough never to flush, since
// a flush running while the image is copied would tear it.
func openDBWith(t testing.TB, dir string, memtable int64) *badger.DB {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(dir).
		WithLogger(nil).
		WithSyncWrites(false).
		WithMemTableSize(memtable).
		WithValueLogFileSize(1 << 20).
		WithValueThreshold(1 << 10))
	require.NoError(t, err)
	return db
}

// node is one badger dir with the log store over it, reopened at will.
type node struct {
	t   testing.TB
	dir string
	db  *badger.DB
	s   *raftlog.Store
}

func newNode(t testing.TB, dir string) *node {
	n := &node{t: t, dir: dir}
	n.open()
	t.Cleanup(func() {
		if n.db != nil {
			_ = n.db.Close()
		}
	})
	return n
}

func (n *node) open() {
	n.db = openDB(n.t, n.dir)
	n.s = raftlog.New(n.db)
}

// reopen closes the DB and opens it again with a new Store, so that every
// answer afterwards comes from disk.
func (n *node) reopen() {
	n.t.Helper()
	require.NoError(n.t, n.db.Close())
	n.open()
}

func (n *node) log(group uint64) *raftlog.Log {
	n.t.Helper()
	l, err := n.s.Log(group)
	require.NoError(n.t, err)
	return l
}

// commit commits w and syncs, as the driver does once a loop.
func (n *node) commit(w *raftlog.Write) error {
	if err := w.Commit(); err != nil {
		return err
	}
	return n.db.Sync()
}

// setApplied writes the applied record in its own transaction, then syncs.
func (n *node) setApplied(group, index uint64, cs *pb.ConfState) error {
	term, err := n.log(group).Term(index)
	if err != nil {
		return err
	}
	meta := &pb.SnapshotMetadata{Index: new(index), Term: new(term), ConfState: cs}
	if err := n.db.Update(func(txn *badger.Txn) error { return raftlog.SetApplied(txn, group, meta) }); err != nil {
		return err
	}
	return n.db.Sync()
}

// crashImage copies n's badger dir as it is on disk now, without closing
// the DB: what a kill -9 at this instant leaves (the page cache survives a
// process's death; unsynced writes are in it). It returns the copy's dir.
func crashImage(t *testing.T, dir string) string {
	t.Helper()
	img := t.TempDir()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range ents {
		if !e.Type().IsRegular() || e.Name() == "LOCK" {
			continue
		}
		src, err := os.Open(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		dst, err := os.Create(filepath.Join(img, e.Name()))
		require.NoError(t, err)
		_, err = io.Copy(dst, src)
		require.NoError(t, err)
		require.NoError(t, src.Close())
		require.NoError(t, dst.Close())
	}
	return img
}

// ents makes entries [from, to] of term t; each one's data is its index and
// term, so entries from different terms differ, and of varying length, so
// that the Entries size limit has something to cut.
func ents(from, to, t uint64) []*pb.Entry {
	var out []*pb.Entry
	for i := from; i <= to; i++ {
		data := make([]byte, 3+(i*7)%23)
		data[0], data[1] = byte(i), byte(t)
		out = append(out, &pb.Entry{Index: new(i), Term: new(t), Data: data})
	}
	return out
}

func hardState(term, vote, commit uint64) *pb.HardState {
	return &pb.HardState{Term: new(term), Vote: new(vote), Commit: new(commit)}
}

func meta(index, term uint64, voters ...uint64) *pb.SnapshotMetadata {
	return &pb.SnapshotMetadata{Index: new(index), Term: new(term), ConfState: &pb.ConfState{Voters: voters}}
}

// requireSameStorage checks that got answers every raft.Storage question as
// want does: the bounds, every Term from below the compacted index to past
// the last, every Entries range (and, from each start to the end, every
// size around a cut point), the InitialState and the Snapshot's metadata.
func requireSameStorage(t *testing.T, want, got raft.Storage) {
	t.Helper()
	wf, err := want.FirstIndex()
	require.NoError(t, err)
	wl, err := want.LastIndex()
	require.NoError(t, err)
	gf, err := got.FirstIndex()
	require.NoError(t, err)
	gl, err := got.LastIndex()
	require.NoError(t, err)
	require.Equal(t, [2]uint64{wf, wl}, [2]uint64{gf, gl}, "first and last index")

	for i := max(wf, 2) - 2; i <= wl+1; i++ {
		wt, werr := want.Term(i)
		gt, gerr := got.Term(i)
		requireSameErr(t, werr, gerr, "Term(%d)", i)
		require.Equal(t, wt, gt, "Term(%d)", i)
	}

	for lo := max(wf, 1) - 1; lo <= wl+1; lo++ {
		for hi := lo; hi <= wl+1; hi++ {
			sizes := []uint64{0, math.MaxUint64}
			if hi == wl+1 { // every cut point of the longest range from lo
				sizes = entrySizes(want, lo, hi)
			}
			for _, maxSize := range sizes {
				we, werr := want.Entries(lo, hi, maxSize)
				ge, gerr := got.Entries(lo, hi, maxSize)
				requireSameErr(t, werr, gerr, "Entries(%d, %d, %d)", lo, hi, maxSize)
				requireSameEntries(t, we, ge, "Entries(%d, %d, %d)", lo, hi, maxSize)
			}
		}
	}

	whs, wcs, err := want.InitialState()
	require.NoError(t, err)
	ghs, gcs, err := got.InitialState()
	require.NoError(t, err)
	require.Equal(t, raft.IsEmptyHardState(whs), raft.IsEmptyHardState(ghs), "InitialState HardState emptiness")
	if !raft.IsEmptyHardState(whs) {
		require.True(t, proto.Equal(whs, ghs), "InitialState HardState: want %v, got %v", whs, ghs)
	}
	require.True(t, proto.Equal(pb.EnsureConfState(wcs), pb.EnsureConfState(gcs)), "InitialState ConfState: want %v, got %v", wcs, gcs)

	ws, err := want.Snapshot()
	require.NoError(t, err)
	gs, err := got.Snapshot()
	require.NoError(t, err)
	require.True(t, proto.Equal(ws.GetMetadata(), gs.GetMetadata()), "Snapshot metadata: want %v, got %v", ws.GetMetadata(), gs.GetMetadata())
}

// entrySizes are maxSize values around where Entries(lo, hi) should cut:
// 0 (one entry regardless), each running total and one byte under it, no
// limit.
func entrySizes(s raft.Storage, lo, hi uint64) []uint64 {
	sizes := []uint64{0, math.MaxUint64}
	all, err := s.Entries(lo, hi, math.MaxUint64)
	if err != nil {
		return sizes
	}
	var sum uint64
	for _, e := range all {
		sum += uint64(proto.Size(e))
		sizes = append(sizes, sum-1, sum)
	}
	return sizes
}

func requireSameErr(t *testing.T, want, got error, what string, args ...any) {
	t.Helper()
	if want == nil {
		require.NoError(t, got, append([]any{what}, args...)...)
		return
	}
	require.True(t, errors.Is(got, want), append([]any{what + ": want %v, got %v"}, append(args, want, got)...)...)
}

func requireSameEntries(t *testing.T, want, got []*pb.Entry, what string, args ...any) {
	t.Helper()
	require.Equal(t, len(want), len(got), append([]any{what + ": entry count"}, args...)...)
	for i := range want {
		require.True(t, proto.Equal(want[i], got[i]), append([]any{what + ": entry %d: want %v, got %v"}, append(args, i, want[i], got[i])...)...)
	}
}
