package storagetest

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
)

// runWrites: batches apply atomically, in order, and all land.
func runWrites(t *testing.T, open func(t *testing.T) storage.Store) {
	t.Run("RoundTrip", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		WriteSample(t, s)
		RequireSample(t, s)
		qc, err := s.LoadQueue("nothing")
		require.NoError(t, err)
		require.Empty(t, qc.Messages)
		require.Empty(t, qc.Leases)
	})

	t.Run("BatchesApplyAtomicallyInOrder", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		var put, del storage.Batch
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
	})

	t.Run("DeleteSettledRemovesMessageIndexAndLease", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		var put storage.Batch
		for _, id := range []string{"x", "y"} {
			put.PutMessageIndexed("q", id, &storagev1.MessageRecord{Payload: []byte(id)}, storage.Index{Weight: 1})
			put.PutLease("q", id, &storagev1.LeaseRecord{ExpiresAtUnixMs: 1})
		}
		require.NoError(t, s.Write(&put))
		var del storage.Batch
		del.DeleteSettled("q", "x")
		require.Equal(t, 1, del.Units(), "one unit: all of the message or none")
		require.NoError(t, s.Write(&del))
		qc, err := s.LoadQueue("q")
		require.NoError(t, err)
		require.Len(t, qc.Messages, 1, "only x is gone")
		require.Equal(t, "y", qc.Messages[0].ID)
		require.NotContains(t, qc.Leases, "x")
		require.Contains(t, qc.Leases, "y")
		idx, err := s.LoadIndex("q", nil)
		require.NoError(t, err)
		require.Len(t, idx.Messages, 1, "x's index record is gone too")
		require.Equal(t, "y", idx.Messages[0].ID)
	})

	t.Run("LoadIndexHandsEachMessageWithItsLease", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		var put storage.Batch
		for _, id := range []string{"a", "b", "c"} {
			put.PutMessageIndexed("q", id, &storagev1.MessageRecord{Payload: []byte(id)}, storage.Index{Weight: 1})
		}
		put.PutLease("q", "b", &storagev1.LeaseRecord{ExpiresAtUnixMs: 5})
		put.MarkIndexed("q")
		require.NoError(t, s.Write(&put))
		var got []string
		qi, err := s.LoadIndex("q", func(m storage.IndexedMessage, l *storagev1.LeaseRecord) error {
			got = append(got, fmt.Sprintf("%s:%d", m.ID, l.GetExpiresAtUnixMs()))
			return nil
		})
		require.NoError(t, err)
		require.Equal(t, []string{"a:0", "b:5", "c:0"}, got, "in id order, each with its lease")
		require.Empty(t, qi.Messages, "handed over, not kept")
		require.True(t, qi.Indexed)
	})

	t.Run("DeferredBatchesCommitInOrder", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		// Alone, a deferred batch is still committed.
		var lease storage.Batch
		lease.PutLease("q", "m", &storagev1.LeaseRecord{ExpiresAtUnixMs: 7})
		done := make(chan error, 1)
		s.Defer(&lease, func(err error) { done <- err })
		require.NoError(t, <-done)
		// Followed by a batch someone waits on, it is applied before it.
		DeferThenWrite(t, s)
		qc, err := s.LoadQueue("q")
		require.NoError(t, err)
		require.Contains(t, qc.Leases, "m")
	})

	t.Run("ConcurrentWritesAllLand", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		const writers = 64
		before := s.Stats()
		var wg sync.WaitGroup
		for i := range writers {
			wg.Go(func() {
				var b storage.Batch
				b.PutMessage("q", fmt.Sprintf("%03d", i), &storagev1.MessageRecord{Payload: make([]byte, 100)})
				if err := s.Write(&b); err != nil {
					t.Errorf("write: %v", err)
				}
			})
		}
		wg.Wait()
		require.EqualValues(t, writers, s.Stats().Batches-before.Batches)
		qc, err := s.LoadQueue("q")
		require.NoError(t, err)
		require.Len(t, qc.Messages, writers)
	})

	t.Run("MoveMessageIsOneUnit", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		var b storage.Batch
		b.PutMessage("src", "m", &storagev1.MessageRecord{Payload: []byte("p")})
		b.PutLease("src", "m", &storagev1.LeaseRecord{ExpiresAtUnixMs: 1})
		require.NoError(t, s.Write(&b))
		var mv storage.Batch
		mv.MoveMessage("src", "src.dlq", "m", &storagev1.MessageRecord{Payload: []byte("p"), AttemptCount: 3})
		require.Equal(t, 1, mv.Units(), "a move is one unit: never split between transactions")
		require.NoError(t, s.Write(&mv))
		qc, err := s.LoadQueue("src")
		require.NoError(t, err)
		require.Empty(t, qc.Messages)
		require.Empty(t, qc.Leases)
		qc, err = s.LoadQueue("src.dlq")
		require.NoError(t, err)
		require.Len(t, qc.Messages, 1)
		require.EqualValues(t, 3, qc.Messages[0].Record.GetAttemptCount())
	})

	t.Run("WritesAfterCloseFail", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		require.NoError(t, s.Close())
		require.NoError(t, s.Close(), "close twice is safe")
		var b storage.Batch
		b.DeleteQueue("q")
		require.ErrorIs(t, s.Write(&b), storage.ErrClosed)
		done := make(chan error, 1)
		s.Submit(&b, func(err error) { done <- err })
		require.ErrorIs(t, <-done, storage.ErrClosed)
	})
}
