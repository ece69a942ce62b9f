package storage_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/storage/storagetest"
)

func TestBadgerContract(t *testing.T) {
	t.Parallel()
	storagetest.Run(t, func(t *testing.T) storage.Store {
		s, err := storage.Open(storage.Options{Dir: t.TempDir(), SyncWrites: true})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, s.Close()) })
		return s
	})
}

func TestMemoryContract(t *testing.T) {
	t.Parallel()
	storagetest.Run(t, func(t *testing.T) storage.Store {
		s := storage.NewMemory()
		t.Cleanup(func() { require.NoError(t, s.Close()) })
		return s
	})
}

func TestBadgerKeepsEverythingAcrossReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := storage.Open(storage.Options{Dir: dir, SyncWrites: true})
	require.NoError(t, err)
	storagetest.WriteSample(t, s)
	require.NoError(t, s.Close())
	s, err = storage.Open(storage.Options{Dir: dir, SyncWrites: true})
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	storagetest.RequireSample(t, s)
}

// TestBadgerDeferredBatchesRideWithTheNextCommit: order is in the contract;
// this is badger's group commit: a deferred batch followed by one someone
// waits on shares its commit.
func TestBadgerDeferredBatchesRideWithTheNextCommit(t *testing.T) {
	t.Parallel()
	s, err := storage.Open(storage.Options{Dir: t.TempDir(), SyncWrites: true})
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	before, after := storagetest.DeferThenWrite(t, s)
	require.EqualValues(t, 2, after.Batches-before.Batches)
	require.EqualValues(t, 1, after.Commits-before.Commits, "one commit for both")
}

func TestLateBadgerContract(t *testing.T) {
	t.Parallel()
	storagetest.Run(t, func(t *testing.T) storage.Store {
		s, err := storage.Open(storage.Options{Dir: t.TempDir(), SyncWrites: true})
		require.NoError(t, err)
		l := storagetest.Late(s)
		t.Cleanup(func() { require.NoError(t, l.Close()) })
		return l
	})
}

func TestLateMemoryContract(t *testing.T) {
	t.Parallel()
	storagetest.Run(t, func(t *testing.T) storage.Store {
		l := storagetest.Late(storage.NewMemory())
		t.Cleanup(func() { require.NoError(t, l.Close()) })
		return l
	})
}
