// Package storagetest is the contract every storage.Store must meet, as one
// suite that runs against each implementation (river's riverdrivertest is
// the model): badger in a temp dir and the in-memory store alike, and each
// behind Late. It also holds stores for writers' tests that a single node
// never shows: Late (completions arrive later) and Unknown (outcome
// unknown).
package storagetest

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
)

// Run runs the contract against stores made by open; each test gets its own
// store, which open arranges to close when the test ends. It runs one
// group of subtests per area.
func Run(t *testing.T, open func(t *testing.T) storage.Store) {
	for _, area := range []struct {
		name string
		run  func(t *testing.T, open func(t *testing.T) storage.Store)
	}{
		{"Writes", runWrites},
		{"Reads", runReads},
		{"Deletes", runDeletes},
		{"Owners", runOwners},
		{"Codec", runCodec},
	} {
		t.Run(area.name, func(t *testing.T) { area.run(t, open) })
	}
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
	var defs storage.Batch
	for _, q := range []string{"b", "a", "ab"} {
		defs.PutQueue(&storagev1.QueueRecord{Name: q, VisibilityTimeoutMs: 1000})
	}
	require.NoError(t, s.Write(&defs))
	for _, q := range []string{"b", "a", "ab"} {
		var b storage.Batch // a batch per owner
		for i := range 3 {
			b.PutMessage(q, fmt.Sprintf("id-%d", i), &storagev1.MessageRecord{Payload: []byte(q), AttemptCount: uint32(i)})
		}
		if q == "a" {
			b.PutLease("a", "id-1", &storagev1.LeaseRecord{ExpiresAtUnixMs: 42})
		}
		require.NoError(t, s.Write(&b))
	}
}

// fill defines queues, in one batch, and writes n messages to each ("m0",
// "m1", ...), with a lease each when leases, in one batch per queue.
func fill(t *testing.T, s storage.Store, n int, leases bool, queues ...string) {
	t.Helper()
	var defs storage.Batch
	for _, q := range queues {
		defs.PutQueue(&storagev1.QueueRecord{Name: q})
	}
	require.NoError(t, s.Write(&defs))
	for _, q := range queues {
		var b storage.Batch
		for i := range n {
			id := fmt.Sprintf("m%d", i)
			b.PutMessage(q, id, &storagev1.MessageRecord{Payload: []byte(q + id)})
			if leases {
				b.PutLease(q, id, &storagev1.LeaseRecord{ExpiresAtUnixMs: int64(i)})
			}
		}
		require.NoError(t, s.Write(&b))
	}
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
