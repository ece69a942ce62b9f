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

func TestRoundTripAcrossReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, SyncWrites: true})
	require.NoError(t, err)
	var b Batch
	for _, q := range []string{"a", "ab"} {
		b.PutQueue(&storagev1.QueueRecord{Name: q, VisibilityTimeoutMs: 1000})
		for i := range 3 {
			b.PutMessage(q, fmt.Sprintf("id-%d", i), &storagev1.MessageRecord{Payload: []byte(q), AttemptCount: uint32(i)})
		}
	}
	b.PutLease("a", "id-1", &storagev1.LeaseRecord{ExpiresAtUnixMs: 42})
	require.NoError(t, s.Write(&b))
	require.NoError(t, s.Close())

	s = open(t, dir)
	qs, err := s.Queues()
	require.NoError(t, err)
	require.Len(t, qs, 2)
	require.Equal(t, "a", qs[0].GetName())
	require.EqualValues(t, 1000, qs[0].GetVisibilityTimeoutMs())

	// "a" must not see "ab"'s keys although one name starts the other.
	qc, err := s.LoadQueue("a")
	require.NoError(t, err)
	require.Len(t, qc.Messages, 3)
	for i, m := range qc.Messages {
		require.Equal(t, fmt.Sprintf("id-%d", i), m.ID, "messages load in id order")
		require.Equal(t, "a", string(m.Record.GetPayload()))
		require.EqualValues(t, i, m.Record.GetAttemptCount())
	}
	require.Len(t, qc.Leases, 1)
	require.EqualValues(t, 42, qc.Leases["id-1"].GetExpiresAtUnixMs())
}

func TestBatchIsAtomicAndOrdered(t *testing.T) {
	t.Parallel()
	s := open(t, t.TempDir())
	var put, del Batch
	put.PutMessage("q", "x", &storagev1.MessageRecord{Payload: []byte("1")})
	put.PutLease("q", "x", &storagev1.LeaseRecord{ExpiresAtUnixMs: 1})
	del.DeleteMessage("q", "x")
	del.DeleteLease("q", "x")
	done := make(chan error, 2)
	s.Submit(&put, func(err error) { done <- err })
	s.Submit(&del, func(err error) { done <- err })
	require.NoError(t, <-done)
	require.NoError(t, <-done)
	qc, err := s.LoadQueue("q")
	require.NoError(t, err)
	require.Empty(t, qc.Messages, "the later delete wins")
	require.Empty(t, qc.Leases)
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

func TestPurgeQueueLeavesOthers(t *testing.T) {
	t.Parallel()
	s := open(t, t.TempDir())
	var b Batch
	for _, q := range []string{"a", "ab"} {
		b.PutQueue(&storagev1.QueueRecord{Name: q})
		b.PutMessage(q, "m", &storagev1.MessageRecord{})
		b.PutLease(q, "m", &storagev1.LeaseRecord{})
	}
	require.NoError(t, s.Write(&b))
	require.NoError(t, s.PurgeQueue("a"))
	qc, err := s.LoadQueue("a")
	require.NoError(t, err)
	require.Empty(t, qc.Messages)
	require.Empty(t, qc.Leases)
	qc, err = s.LoadQueue("ab")
	require.NoError(t, err)
	require.Len(t, qc.Messages, 1)
	require.Len(t, qc.Leases, 1)
	qs, err := s.Queues()
	require.NoError(t, err)
	require.Len(t, qs, 2, "purge keeps queue records")
}

func TestSubmitAfterCloseFails(t *testing.T) {
	t.Parallel()
	s, err := Open(Options{Dir: t.TempDir()})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "close twice is safe")
	var b Batch
	b.DeleteQueue("q")
	require.ErrorIs(t, s.Write(&b), ErrClosed)
}

func TestDeferredBatchesRideWithTheNextCommit(t *testing.T) {
	t.Parallel()
	s := open(t, t.TempDir())
	// Alone, a deferred batch is still committed (after DeferMax).
	var lease Batch
	lease.PutLease("q", "m", &storagev1.LeaseRecord{ExpiresAtUnixMs: 7})
	done := make(chan error, 1)
	s.Defer(&lease, func(err error) { done <- err })
	require.NoError(t, <-done)
	qc, err := s.LoadQueue("q")
	require.NoError(t, err)
	require.Len(t, qc.Leases, 1)

	// Followed by a batch someone waits on, it shares that commit, in order.
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
	qc, err = s.LoadQueue("q")
	require.NoError(t, err)
	require.NotContains(t, qc.Leases, "n", "the later delete wins")
}
