package raftlog_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/fila-dev/filad/cluster/raftlog"
)

// logImage is what a group's log says at one moment.
type logImage struct {
	first uint64
	ents  []*pb.Entry
	hs    *pb.HardState
}

func readImage(t *testing.T, s raft.Storage) logImage {
	t.Helper()
	first, err := s.FirstIndex()
	require.NoError(t, err)
	last, err := s.LastIndex()
	require.NoError(t, err)
	img := logImage{first: first}
	if last >= first {
		img.ents, err = s.Entries(first, last+1, math.MaxUint64)
		require.NoError(t, err)
	}
	img.hs, _, err = s.InitialState()
	require.NoError(t, err)
	return img
}

// String is the log as index:term pairs after its first index.
func (g logImage) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "from %d:", g.first)
	for _, e := range g.ents {
		fmt.Fprintf(&b, " %d:%d", e.GetIndex(), e.GetTerm())
	}
	return b.String()
}

func (g logImage) last() uint64 { return g.first + uint64(len(g.ents)) - 1 }

// prefixOf reports whether every entry of g is the one o has at its index.
func (g logImage) prefixOf(o logImage) bool {
	for _, e := range g.ents {
		i := e.GetIndex()
		if i < o.first || i > o.last() || !proto.Equal(e, o.ents[i-o.first]) {
			return false
		}
	}
	return true
}

func sameHardState(a, b *pb.HardState) bool {
	if raft.IsEmptyHardState(a) || raft.IsEmptyHardState(b) {
		return raft.IsEmptyHardState(a) == raft.IsEmptyHardState(b)
	}
	return proto.Equal(a, b)
}

func requireSameImage(t *testing.T, want, got logImage, what string) {
	t.Helper()
	require.Equal(t, want.first, got.first, "%s: first index", what)
	requireSameEntries(t, want.ents, got.ents, "%s", what)
	require.True(t, sameHardState(want.hs, got.hs), "%s: hard state: want %v, got %v", what, want.hs, got.hs)
}

// requireConsistent checks a log recovered after a crash during a Write that
// took the log from before to after: it is before's log or after's, cut
// short at most; never a mix of the two (an entry the Write's truncation
// removed beside one it wrote: etcd-io/etcd#22442); its HardState is one of
// the two and commits nothing it lacks; and with after's HardState it is
// after's log whole, since the HardState is written last.
func requireConsistent(t *testing.T, got, before, after logImage, what string) {
	t.Helper()
	inBefore := got.first == before.first && got.prefixOf(before)
	inAfter := got.first == after.first && got.prefixOf(after)
	require.True(t, inBefore || inAfter, "%s: log %s is neither before's (%s) nor after's (%s) cut short",
		what, got, before, after)
	require.True(t, sameHardState(got.hs, before.hs) || sameHardState(got.hs, after.hs), "%s: hard state %v", what, got.hs)
	require.LessOrEqual(t, got.hs.GetCommit(), got.last(), "%s: commit beyond the last index", what)
	if sameHardState(got.hs, after.hs) && !sameHardState(got.hs, before.hs) {
		requireSameImage(t, after, got, what+" (with after's hard state)")
	}
}

// entryIndexes lists group's r keys as they are in the DB, whether inside
// the log or not.
func entryIndexes(t *testing.T, db *badger.DB, group uint64) []uint64 {
	t.Helper()
	prefix := binary.BigEndian.AppendUint64([]byte{'r', 0}, group)
	var out []uint64
	require.NoError(t, db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			out = append(out, binary.BigEndian.Uint64(it.Item().Key()[10:]))
		}
		return nil
	}))
	return out
}

func runOps(t *testing.T, n *node, group uint64, ops []op) {
	t.Helper()
	for _, o := range ops {
		require.NoError(t, o.apply(n, group), o.name)
	}
}

func imagesOf(t *testing.T, n *node, groups []uint64) map[uint64]logImage {
	t.Helper()
	out := map[uint64]logImage{}
	for _, g := range groups {
		out[g] = readImage(t, n.log(g))
	}
	return out
}

// TestCrashBetweenTransactions makes each Write span many badger
// transactions (three ops each), takes a crash image of the DB dir after
// every one of them (a kill -9 there), and checks that each image recovers
// every group to a consistent log; the image after the last transaction,
// before any sync, and the DB after a sync and reopen, hold the Write whole,
// with no entry of a truncated suffix left on disk.
func TestCrashBetweenTransactions(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup map[uint64][]op
		write map[uint64][]op
	}{
		{
			// The etcd-io/etcd#22442 shape: a follower's uncommitted
			// suffix from term 1 is replaced by a new leader's entries.
			name:  "conflicting suffix",
			setup: map[uint64][]op{1: {appendOp(1, 10, 1), hardStateOp(1, 1, 3)}},
			write: map[uint64][]op{1: {appendOp(4, 6, 2), hardStateOp(2, 2, 5)}},
		},
		{
			name:  "snapshot over a log, then entries",
			setup: map[uint64][]op{1: {appendOp(1, 10, 1), hardStateOp(1, 1, 4)}},
			write: map[uint64][]op{1: {snapshotOp(20, 2, 1, 2, 3), appendOp(21, 23, 2), hardStateOp(2, 1, 20)}},
		},
		{
			name:  "snapshot inside a conflicting log",
			setup: map[uint64][]op{1: {appendOp(1, 12, 1), hardStateOp(1, 1, 2)}},
			write: map[uint64][]op{1: {snapshotOp(5, 1, 1, 2, 3), appendOp(6, 7, 3), hardStateOp(3, 2, 5)}},
		},
		{
			name: "many groups",
			setup: map[uint64][]op{
				1: {appendOp(1, 6, 1), hardStateOp(1, 1, 2)},
				2: {appendOp(1, 8, 1), hardStateOp(1, 2, 3)},
				3: {appendOp(1, 2, 1)},
			},
			write: map[uint64][]op{
				1: {appendOp(7, 9, 1), hardStateOp(1, 1, 7)},
				2: {appendOp(4, 5, 3), hardStateOp(3, 3, 4)},
				3: {snapshotOp(9, 2, 1), hardStateOp(2, 1, 9)},
				4: {appendOp(1, 4, 1), hardStateOp(1, 1, 0)},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := newNode(t, t.TempDir())
			var groups []uint64
			for g, ops := range tc.setup {
				runOps(t, n, g, ops)
			}
			for g := range tc.write {
				groups = append(groups, g)
			}
			before := imagesOf(t, n, groups)

			raftlog.SetTxnLimits(n.s, math.MaxInt32, 3)
			var crashes []string
			raftlog.SetTxnHooks(n.s, nil, func() error {
				crashes = append(crashes, crashImage(t, n.dir))
				return nil
			})
			w := n.s.NewWrite()
			for g, ops := range tc.write {
				for _, o := range ops {
					o.write(w, g)
				}
			}
			require.NoError(t, w.Commit())
			after := imagesOf(t, n, groups)
			require.Greater(t, len(crashes), 2, "the Write should span several transactions")

			for i, dir := range crashes {
				c := newNode(t, dir)
				for _, g := range groups {
					got := readImage(t, c.log(g))
					what := fmt.Sprintf("group %d, crash after transaction %d of %d", g, i+1, len(crashes))
					requireConsistent(t, got, before[g], after[g], what)
					if i == len(crashes)-1 {
						requireSameImage(t, after[g], got, "crash after the last transaction")
					}
				}
				require.NoError(t, c.db.Close())
				c.db = nil
			}

			require.NoError(t, n.db.Sync())
			n.reopen()
			for _, g := range groups {
				requireSameImage(t, after[g], readImage(t, n.log(g)), "after sync and reopen")
				keys := entryIndexes(t, n.db, g)
				if len(keys) > 0 {
					require.LessOrEqual(t, keys[len(keys)-1], after[g].last(), "group %d: an r key past the last index is left on disk", g)
				}
			}
		})
	}
}

// TestCrashDuringCompaction compacts in transactions of three deletes with a
// crash image after each: every image keeps every entry at and above the
// compaction index and a first index that only moved forward.
func TestCrashDuringCompaction(t *testing.T) {
	n := newNode(t, t.TempDir())
	const g = 1
	runOps(t, n, g, []op{appendOp(1, 20, 1), hardStateOp(1, 1, 16), appliedOp(15, 1)})
	before := readImage(t, n.log(g))
	raftlog.SetTxnLimits(n.s, math.MaxInt32, 3)
	var crashes []string
	raftlog.SetTxnHooks(n.s, nil, func() error {
		crashes = append(crashes, crashImage(t, n.dir))
		return nil
	})
	require.NoError(t, n.s.Compact(g, 12, 15))
	require.Greater(t, len(crashes), 2)
	for _, dir := range crashes {
		c := newNode(t, dir)
		got := readImage(t, c.log(g))
		require.Equal(t, uint64(13), got.first, "the bounds move first, in one transaction")
		require.True(t, got.prefixOf(before))
		require.Equal(t, before.last(), got.last())
		term, err := c.log(g).Term(12)
		require.NoError(t, err)
		require.Equal(t, uint64(1), term, "the term at the compaction index is kept")
		require.NoError(t, c.db.Close())
		c.db = nil
	}
	keys := entryIndexes(t, n.db, g)
	require.Equal(t, uint64(12), keys[0], "entries below the compaction index are deleted")
}

// TestFailedCommit fails a Write's badger commit before its first
// transaction (nothing changes, in memory or on disk) and before its second
// (memory answers what the disk holds, a consistent log); and an invalid
// Write (an append leaving a gap, a commit index past the log) writes
// nothing, not even other groups' ops.
func TestFailedCommit(t *testing.T) {
	setup := []op{appendOp(1, 10, 1), hardStateOp(1, 1, 3)}
	write := []op{appendOp(4, 6, 2), hardStateOp(2, 2, 5)}
	var before, after logImage
	{
		ms := raft.NewMemoryStorage()
		for _, o := range setup {
			require.NoError(t, o.mem(ms))
		}
		before = readImage(t, ms)
		for _, o := range write {
			require.NoError(t, o.mem(ms))
		}
		after = readImage(t, ms)
	}
	boom := errors.New("disk on fire")
	for _, tc := range []struct {
		name   string
		failAt int // the transaction whose commit fails, from 1
	}{
		{name: "before the first transaction", failAt: 1},
		{name: "before the second transaction", failAt: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := newNode(t, t.TempDir())
			const g = 3
			runOps(t, n, g, setup)
			raftlog.SetTxnLimits(n.s, math.MaxInt32, 3)
			txns := 0
			raftlog.SetTxnHooks(n.s, func() error {
				if txns++; txns == tc.failAt {
					return boom
				}
				return nil
			}, nil)
			w := n.s.NewWrite()
			for _, o := range write {
				o.write(w, g)
			}
			require.ErrorIs(t, w.Commit(), boom)
			got := readImage(t, n.log(g))
			if tc.failAt == 1 {
				requireSameImage(t, before, got, "after a failed commit")
			}
			requireConsistent(t, got, before, after, "after a failed commit")
			raftlog.SetTxnHooks(n.s, nil, nil)
			n.reopen()
			requireSameImage(t, got, readImage(t, n.log(g)), "memory against disk")
		})
	}

	t.Run("an invalid Write", func(t *testing.T) {
		n := newNode(t, t.TempDir())
		runOps(t, n, 1, setup)
		w := n.s.NewWrite()
		w.Append(2, ents(1, 2, 1))
		w.Append(1, ents(12, 12, 1)) // leaves a gap after 10
		require.ErrorContains(t, w.Commit(), "gap")
		w = n.s.NewWrite()
		w.Append(2, ents(1, 2, 1))
		w.SetHardState(1, hardState(1, 1, 11)) // commits past the last index
		require.ErrorContains(t, w.Commit(), "beyond the last index")
		requireSameImage(t, before, readImage(t, n.log(1)), "group 1")
		requireSameImage(t, logImage{first: 1}, readImage(t, n.log(2)), "group 2")
		n.reopen()
		requireSameImage(t, before, readImage(t, n.log(1)), "group 1 on disk")
		require.Empty(t, entryIndexes(t, n.db, 2))
	})
}

// TestCompactRefuses checks the compaction rule: never beyond the synced
// applied index the caller names, the stored applied record, or the log.
func TestCompactRefuses(t *testing.T) {
	n := newNode(t, t.TempDir())
	const g = 1
	runOps(t, n, g, []op{appendOp(1, 10, 1), appliedOp(6, 1)})
	for _, tc := range []struct {
		name                 string
		index, syncedApplied uint64
		want                 string
	}{
		{name: "beyond the synced applied index", index: 6, syncedApplied: 5, want: "synced applied index 5"},
		{name: "beyond the applied record", index: 7, syncedApplied: 8, want: "applied index 6"},
		{name: "beyond the log", index: 11, syncedApplied: 11, want: "last index 10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.ErrorContains(t, n.s.Compact(g, tc.index, tc.syncedApplied), tc.want)
			first, err := n.log(g).FirstIndex()
			require.NoError(t, err)
			require.Equal(t, uint64(1), first)
			require.Equal(t, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, entryIndexes(t, n.db, g))
		})
	}
}
