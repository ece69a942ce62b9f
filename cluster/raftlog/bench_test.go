package raftlog_test

import (
	"fmt"
	"math"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/stretchr/testify/require"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/fila-dev/filad/cluster/raftlog"
)

// benchNode opens a DB with the options storage.Open gives filad's (16 MiB
// memtables, a 4 KiB value threshold), SyncWrites off as in cluster mode.
func benchNode(b *testing.B) *node {
	dir := b.TempDir()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil).WithSyncWrites(false).
		WithMemTableSize(16 << 20).WithNumMemtables(2).WithBlockCacheSize(16 << 20).WithValueThreshold(4 << 10))
	require.NoError(b, err)
	b.Cleanup(func() { _ = db.Close() })
	return &node{t: b, dir: dir, db: db, s: raftlog.New(db)}
}

// BenchmarkLoop is one driver loop's persistence: 16 groups appending 8
// entries of 1 KiB each with a HardState, in one Write, then one sync.
func BenchmarkLoop(b *testing.B) {
	b.Run("commit", func(b *testing.B) { benchmarkLoop(b, false) })
	b.Run("commit+sync", func(b *testing.B) { benchmarkLoop(b, true) })
}

func benchmarkLoop(b *testing.B, sync bool) {
	const groups, perGroup = 16, 8
	n := benchNode(b)
	data := make([]byte, 1<<10)
	next := uint64(1)
	b.SetBytes(groups * perGroup * int64(len(data)))
	for b.Loop() {
		w := n.s.NewWrite()
		for g := uint64(1); g <= groups; g++ {
			es := make([]*pb.Entry, perGroup)
			for i := range es {
				es[i] = &pb.Entry{Index: new(next + uint64(i)), Term: new(uint64(1)), Data: data}
			}
			w.Append(g, es)
			w.SetHardState(g, hardState(1, 1, next-1))
		}
		if sync {
			require.NoError(b, n.commit(w))
		} else {
			require.NoError(b, w.Commit())
		}
		next += perGroup
	}
}

// BenchmarkEntries reads back the 64 entries last appended, as raft does to
// apply them or to send them to a follower: of 1 KiB, which badger keeps in
// its LSM tree, and of 8 KiB, which it keeps in the value log.
func BenchmarkEntries(b *testing.B) {
	for _, size := range []int{1 << 10, 8 << 10} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) { benchmarkEntries(b, size) })
	}
}

func benchmarkEntries(b *testing.B, size int) {
	n := benchNode(b)
	data := make([]byte, size)
	es := make([]*pb.Entry, 1024)
	for i := range es {
		es[i] = &pb.Entry{Index: new(uint64(i + 1)), Term: new(uint64(1)), Data: data}
	}
	w := n.s.NewWrite()
	w.Append(1, es)
	require.NoError(b, n.commit(w))
	l := n.log(1)
	for b.Loop() {
		got, err := l.Entries(1024-63, 1025, math.MaxUint64)
		if err != nil || len(got) != 64 {
			b.Fatal(len(got), err)
		}
	}
}
