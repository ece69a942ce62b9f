package storage

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, dir string) *Badger {
	t.Helper()
	s, err := Open(Options{Dir: dir, SyncWrites: true})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func TestConcurrentWritesShareCommits(t *testing.T) {
	t.Parallel()
	s := open(t, t.TempDir())
	const writers = 64
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			var b Batch
			b.PutMessage("q", fmt.Sprint(i), &storagev1.MessageRecord{Payload: make([]byte, 100)})
			if err := s.Write(&b); err != nil {
				t.Errorf("write: %v", err)
			}
		})
	}
	wg.Wait()
	st := s.Stats()
	require.EqualValues(t, writers, st.Batches)
	require.Less(t, st.Commits, st.Batches, "group commit: concurrent writes share fsyncs")
	qc, err := s.LoadQueue("q")
	require.NoError(t, err)
	require.Len(t, qc.Messages, writers)
}

func TestDeferredBatchesRideWithTheNextCommit(t *testing.T) {
	t.Parallel()
	s := open(t, t.TempDir())
	// Order is in the contract suite; this is badger's group commit: a
	// deferred batch followed by one someone waits on shares its commit.
	before := s.Stats()
	var put, del Batch
	put.PutLease("q", "n", &storagev1.LeaseRecord{ExpiresAtUnixMs: 8})
	del.DeleteLease("q", "n")
	deferredDone := make(chan error, 1)
	s.Defer(&put, func(err error) { deferredDone <- err })
	require.NoError(t, s.Write(&del))
	require.NoError(t, <-deferredDone)
	after := s.Stats()
	require.EqualValues(t, 2, after.Batches-before.Batches)
	require.EqualValues(t, 1, after.Commits-before.Commits, "one commit for both")
}
