package storagetest

import (
	"testing"

	"github.com/stretchr/testify/require"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
)

// runDeletes: a deleted queue's contents go, and no other queue's.
func runDeletes(t *testing.T, open func(t *testing.T) storage.Store) {
	t.Run("RetireThenReapLeavesOthers", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		fill(t, s, 5, true, "a", "a.dlq", "ab")
		var orphan storage.Batch
		orphan.PutLease("a", "orphan", &storagev1.LeaseRecord{}) // a lease whose message is gone
		require.NoError(t, s.Write(&orphan))

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

	t.Run("ForgetMarkEndsOnlyItsDeletion", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		var retire storage.Batch
		retire.RetireQueuesOn(7, "a", "a.dlq")
		require.NoError(t, s.Write(&retire))
		first := marks(t, s)
		require.Len(t, first, 2)
		require.Equal(t, uint32(7), first[0].Partition, "the mark records the partition")
		require.NotEqual(t, first[0].Value, first[1].Value, "each mark has a token of its own")

		// The reap's last step ends the deletion, and the mark stays as the
		// name's placement, reaped.
		require.NoError(t, s.Write(forgetBatch(t, first[0])))
		requireDeleted(t, s, "a.dlq")
		reaped := marks(t, s)[0]
		require.True(t, reaped.Reaped)
		require.Equal(t, uint32(7), reaped.Partition, "a reaped mark keeps the partition")

		// A queue of the name created again, deleted again: the first
		// deletion's ForgetMark, repeated late (through the codec, as a
		// replica applies it), changes nothing.
		var again storage.Batch
		again.PutQueue(&storagev1.QueueRecord{Name: "a"})
		require.NoError(t, s.Write(&again))
		require.NoError(t, s.Write(forgetBatch(t, first[0])))
		requireQueues(t, s, "a") // the definition created again stays
		var retireAgain storage.Batch
		retireAgain.RetireQueues("a")
		require.NoError(t, s.Write(&retireAgain))
		require.NoError(t, s.Write(forgetBatch(t, first[0])))
		requireDeleted(t, s, "a", "a.dlq") // a late ForgetMark leaves the later deletion's mark
		second := marks(t, s)[0]
		require.False(t, second.Reaped)
		require.Zero(t, second.Partition)
		require.NoError(t, s.Write(forgetBatch(t, second)))
		require.NoError(t, s.Write(forgetBatch(t, first[1])))
		requireDeleted(t, s)
		require.Len(t, marks(t, s), 2, "both stay, reaped")
	})

	t.Run("DeleteQueueItemsLeavesOthers", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name string
			n    int
		}{
			{"few", 5},
			{"more than a step", 3000}, // a step of badger's is 1000 keys
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				s := open(t)
				fill(t, s, tc.n, true, "a", "a.b", "a.dlq", "ab")
				var orphan storage.Batch
				orphan.PutLease("a", "orphan", &storagev1.LeaseRecord{})
				require.NoError(t, s.Write(&orphan))

				for range 2 { // idempotent: the second finds nothing to do
					var b storage.Batch
					b.DeleteQueueItems("a")
					require.Equal(t, 1, b.Units(), "a unit of its own")
					require.True(t, b.Background(), "bulk work gives way to other writes")
					require.Equal(t, storage.FamilyOf("a"), b.Owner())
					require.NoError(t, s.Write(&b))
					qc, err := s.LoadQueue("a")
					require.NoError(t, err)
					require.Empty(t, qc.Messages)
					require.Empty(t, qc.Leases, "its leases go too, an orphan's as well")
				}
				for _, q := range []string{"a.b", "a.dlq", "ab"} { // names "a" starts
					qc, err := s.LoadQueue(q)
					require.NoError(t, err)
					require.Len(t, qc.Messages, tc.n, q)
					require.Len(t, qc.Leases, tc.n, q)
				}
				requireQueues(t, s, "a", "a.b", "a.dlq", "ab") // definitions are not items
			})
		}
	})
}

func marks(t *testing.T, s storage.Store) []storage.DeletionMark {
	t.Helper()
	m, err := s.DeletionMarks()
	require.NoError(t, err)
	return m
}

// requireDeleted: the names DeletedQueues lists are want.
func requireDeleted(t *testing.T, s storage.Store, want ...string) {
	t.Helper()
	deleted, err := s.DeletedQueues()
	require.NoError(t, err)
	require.Equal(t, append([]string{}, want...), deleted)
}

// forgetBatch is ForgetMark(mark) as a replica decodes it from its log.
func forgetBatch(t *testing.T, mark storage.DeletionMark) *storage.Batch {
	t.Helper()
	var b storage.Batch
	b.ForgetMark(mark)
	data, err := b.Marshal()
	require.NoError(t, err)
	decoded, err := storage.UnmarshalBatch(data)
	require.NoError(t, err)
	return decoded
}
