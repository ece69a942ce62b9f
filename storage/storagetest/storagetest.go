// Package storagetest is the contract every storage.Store must meet, as one
// suite that runs against each implementation (river's riverdrivertest is
// the model): badger in a temp dir and the in-memory store alike.
package storagetest

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
)

// Run runs the contract against stores made by open; each test gets its own
// store, which open arranges to close when the test ends.
func Run(t *testing.T, open func(t *testing.T) storage.Store) {
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

	t.Run("RetireThenReapLeavesOthers", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		var b storage.Batch
		for _, q := range []string{"a", "a.dlq", "ab"} {
			b.PutQueue(&storagev1.QueueRecord{Name: q})
			for i := range 5 {
				id := fmt.Sprintf("m%d", i)
				b.PutMessage(q, id, &storagev1.MessageRecord{})
				b.PutLease(q, id, &storagev1.LeaseRecord{})
			}
		}
		b.PutLease("a", "orphan", &storagev1.LeaseRecord{}) // a lease whose message is gone
		require.NoError(t, s.Write(&b))

		var retire storage.Batch
		retire.RetireQueues("a", "a.dlq")
		require.Equal(t, 1, retire.Units(), "a queue and its DLQ are retired in one unit")
		require.NoError(t, s.Write(&retire))
		requireQueues(t, s, "ab")
		deleted, err := s.DeletedQueues()
		require.NoError(t, err)
		require.Equal(t, []string{"a", "a.dlq"}, deleted)

		require.Equal(t, 7, Reap(t, s, "a", 2), "5 messages 2 a step, 6 leases 2 a step, then the step that forgets the queue")
		require.Equal(t, 3, Reap(t, s, "a.dlq", 10))
		for _, q := range []string{"a", "a.dlq"} {
			qc, err := s.LoadQueue(q)
			require.NoError(t, err)
			require.Empty(t, qc.Messages, q)
			require.Empty(t, qc.Leases, q)
		}
		deleted, err = s.DeletedQueues()
		require.NoError(t, err)
		require.Empty(t, deleted, "the last step clears the marks")
		qc, err := s.LoadQueue("ab")
		require.NoError(t, err)
		require.Len(t, qc.Messages, 5, "a queue whose name starts the same is untouched")
		require.Len(t, qc.Leases, 5)
		requireQueues(t, s, "ab")
	})

	t.Run("QueueItemsIsBounded", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		var b storage.Batch
		for _, id := range []string{"1", "3", "5"} {
			b.PutMessage("q", id, &storagev1.MessageRecord{})
			b.PutLease("q", id, &storagev1.LeaseRecord{})
		}
		b.PutLease("q", "0", &storagev1.LeaseRecord{})
		b.PutMessage("qq", "0", &storagev1.MessageRecord{}) // a name that starts the same
		require.NoError(t, s.Write(&b))
		for _, tc := range []struct {
			leases bool
			after  string
			limit  int
			want   []string
		}{
			{false, "", 1, []string{"1"}},
			{false, "", 100, []string{"1", "3", "5"}},
			{false, "1", 1, []string{"3"}},
			{false, "2", 100, []string{"3", "5"}},
			{false, "5", 100, []string{}},
			{true, "", 2, []string{"0", "1"}},
			{true, "1", 100, []string{"3", "5"}},
		} {
			got, err := s.QueueItems("q", tc.leases, tc.after, tc.limit)
			require.NoError(t, err)
			require.Equal(t, tc.want, got, "%+v", tc)
		}
		got, err := s.QueueItems("none", false, "", 10)
		require.NoError(t, err)
		require.Empty(t, got)
		_, err = s.QueueItems("q", false, "", 0)
		require.ErrorContains(t, err, "limit 0")
	})

	t.Run("LastMessage", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		var b storage.Batch
		for _, id := range []string{"1", "3", "5"} {
			b.PutMessage("q", id, &storagev1.MessageRecord{})
		}
		b.PutLease("q", "9", &storagev1.LeaseRecord{})      // a lease is no message
		b.PutMessage("qq", "7", &storagev1.MessageRecord{}) // a name that starts the same
		b.PutMessage("r", "8", &storagev1.MessageRecord{})
		require.NoError(t, s.Write(&b))
		for queue, want := range map[string]string{"q": "5", "qq": "7", "none": "", "p": ""} {
			got, err := s.LastMessage(queue)
			require.NoError(t, err)
			require.Equal(t, want, got, queue)
		}
		var del storage.Batch
		del.DeleteMessage("q", "5")
		require.NoError(t, s.Write(&del))
		got, err := s.LastMessage("q")
		require.NoError(t, err)
		require.Equal(t, "3", got, "a deleted message is not the last")
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

	t.Run("ConfigEntries", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		var b storage.Batch
		b.PutConfig("b.limit", "2")
		b.PutConfig("a.limit", "1")
		b.PutConfig("gone", "x")
		b.PutQueue(&storagev1.QueueRecord{Name: "c"}) // another kind of key
		require.NoError(t, s.Write(&b))
		var del storage.Batch
		del.DeleteConfig("gone")
		del.PutConfig("a.limit", "10")
		require.NoError(t, s.Write(&del))
		got, err := s.ConfigEntries()
		require.NoError(t, err)
		require.Equal(t, []storage.ConfigEntry{{Key: "a.limit", Value: "10"}, {Key: "b.limit", Value: "2"}}, got)
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

// Reap finishes the deletion of queue in Reaper steps of limit items and
// returns how many steps it took. It fails the test if a step writes more
// than limit items or the deletion does not end.
func Reap(t *testing.T, s storage.Store, queue string, limit int) (steps int) {
	t.Helper()
	r := storage.NewReaper(queue)
	for {
		b, last, err := r.Next(s, limit)
		require.NoError(t, err)
		require.LessOrEqual(t, b.Units(), limit, "a step is bounded")
		require.NoError(t, s.Write(b))
		steps++
		if last {
			return steps
		}
		require.Less(t, steps, 1_000_000, "the deletion never ends")
	}
}

func requireQueues(t *testing.T, s storage.Store, want ...string) {
	t.Helper()
	qs, err := s.Queues()
	require.NoError(t, err)
	var names []string
	for _, q := range qs {
		names = append(names, q.GetName())
	}
	require.Equal(t, want, names)
}

// WriteSample writes three queues ("b", "a" and "ab", whose name starts
// with another's), three messages each and one lease, for RequireSample.
func WriteSample(t *testing.T, s storage.Store) {
	t.Helper()
	var b storage.Batch
	for _, q := range []string{"b", "a", "ab"} {
		b.PutQueue(&storagev1.QueueRecord{Name: q, VisibilityTimeoutMs: 1000})
		for i := range 3 {
			b.PutMessage(q, fmt.Sprintf("id-%d", i), &storagev1.MessageRecord{Payload: []byte(q), AttemptCount: uint32(i)})
		}
	}
	b.PutLease("a", "id-1", &storagev1.LeaseRecord{ExpiresAtUnixMs: 42})
	require.NoError(t, s.Write(&b))
}

// RequireSample fails unless s holds exactly what WriteSample wrote: queues
// in name order, messages in id order, and no queue seeing another's keys.
func RequireSample(t *testing.T, s storage.Store) {
	t.Helper()
	qs, err := s.Queues()
	require.NoError(t, err)
	var names []string
	for _, q := range qs {
		names = append(names, q.GetName())
	}
	require.Equal(t, []string{"a", "ab", "b"}, names, "queues in name order")
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

// DeferThenWrite defers a lease put and then writes its delete, and checks
// that both are done and the delete, submitted later, won. It returns the
// store's Stats before and after, for implementations that also promise the
// two share a commit.
func DeferThenWrite(t *testing.T, s storage.Store) (before, after storage.Stats) {
	t.Helper()
	before = s.Stats()
	var put, del storage.Batch
	put.PutLease("q", "n", &storagev1.LeaseRecord{ExpiresAtUnixMs: 8})
	del.DeleteLease("q", "n")
	deferredDone := make(chan error, 1)
	s.Defer(&put, func(err error) { deferredDone <- err })
	require.NoError(t, s.Write(&del))
	require.NoError(t, <-deferredDone)
	after = s.Stats()
	qc, err := s.LoadQueue("q")
	require.NoError(t, err)
	require.NotContains(t, qc.Leases, "n", "the later delete wins")
	return before, after
}
