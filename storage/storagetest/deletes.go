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
