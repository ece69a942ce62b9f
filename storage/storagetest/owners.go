package storagetest

import (
	"testing"

	"github.com/stretchr/testify/require"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
)

// runOwners: a batch of one owner applies; a batch that mixes owners is
// refused whole, however it is submitted.
func runOwners(t *testing.T, open func(t *testing.T) storage.Store) {
	msg := &storagev1.MessageRecord{Payload: []byte("p")}
	t.Run("MixedBatchesChangeNothing", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name  string
			build func(b *storage.Batch)
		}{
			{"two families", func(b *storage.Batch) { b.PutMessage("a", "1", msg); b.PutMessage("b", "1", msg) }},
			{"a queue's definition and its message", func(b *storage.Batch) {
				b.PutQueue(&storagev1.QueueRecord{Name: "a"})
				b.PutMessage("a", "1", msg)
			}},
			{"config and a lease", func(b *storage.Batch) { b.PutConfig("k", "v"); b.DeleteLease("a", "1") }},
			{"a move across families", func(b *storage.Batch) { b.MoveMessage("a", "b", "1", msg) }},
			{"a queue's DLQ is not a prefix's", func(b *storage.Batch) { b.PutMessage("a", "1", msg); b.PutMessage("ab.dlq", "1", msg) }},
			{"a delete of items and a mark", func(b *storage.Batch) { b.DeleteQueueItems("a"); b.ForgetQueue("a") }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				s := open(t)
				for _, submit := range submitters(s) {
					var b storage.Batch
					tc.build(&b)
					require.ErrorIs(t, b.CheckOwner(), storage.ErrMixedOwners)
					require.ErrorIs(t, submit(&b), storage.ErrMixedOwners)
				}
				requireEmpty(t, s, "a", "b", "ab.dlq")
			})
		}
	})

	t.Run("AFamilyIsAQueueAndItsDLQ", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		var b storage.Batch
		require.Equal(t, storage.Owner{}, b.Owner(), "an empty batch has no owner")
		b.PutMessage("a", "1", msg)
		b.PutLease("a", "1", &storagev1.LeaseRecord{})
		b.MoveMessage("a", "a.dlq", "1", msg)
		b.MoveMessage("a.dlq", "a", "2", msg)
		b.PutMessage("a.dlq", "3", msg)
		require.NoError(t, b.CheckOwner())
		require.Equal(t, storage.Owner{Family: "a"}, b.Owner())
		require.NoError(t, s.Write(&b))
		var meta storage.Batch
		meta.PutQueue(&storagev1.QueueRecord{Name: "a"})
		meta.PutConfig("k", "v")
		meta.RetireQueues("b", "b.dlq")
		require.Equal(t, storage.MetaOwner, meta.Owner())
		require.NoError(t, s.Write(&meta))
	})
}

// submitters returns s's three ways to write a batch, each waiting for
// its completion.
func submitters(s storage.Store) []func(*storage.Batch) error {
	wait := func(via func(*storage.Batch, func(error))) func(*storage.Batch) error {
		return func(b *storage.Batch) error {
			done := make(chan error, 1)
			via(b, func(err error) { done <- err })
			return <-done
		}
	}
	return []func(*storage.Batch) error{s.Write, wait(s.Submit), wait(s.Defer)}
}

// requireEmpty fails unless s holds no queue definition, config entry,
// deletion mark, or message or lease of the named queues.
func requireEmpty(t *testing.T, s storage.Store, queues ...string) {
	t.Helper()
	requireQueues(t, s)
	cfg, err := s.ConfigEntries()
	require.NoError(t, err)
	require.Empty(t, cfg)
	deleted, err := s.DeletedQueues()
	require.NoError(t, err)
	require.Empty(t, deleted)
	for _, q := range queues {
		qc, err := s.LoadQueue(q)
		require.NoError(t, err)
		require.Empty(t, qc.Messages, q)
		require.Empty(t, qc.Leases, q)
	}
}
