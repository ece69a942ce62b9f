package storage_test

import (
	"testing"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/stretchr/testify/require"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
)

// A replica applies the batches of many owners at once, with its log's
// record after them; Submit would refuse such a mix.
func TestApplyCommittedTakesManyOwnersAndTheLogsRecord(t *testing.T) {
	s, err := storage.Open(storage.Options{Dir: t.TempDir()})
	require.NoError(t, err)
	defer s.Close()
	var a, b, meta, gone storage.Batch
	for i := range 3000 { // more than one step of a DeletePrefix
		gone.PutMessage("c", string(rune('a'+i%26))+string(rune('0'+i/26%10))+string(rune('A'+i/260)), &storagev1.MessageRecord{})
	}
	require.NoError(t, s.Write(&gone))
	a.PutMessage("a", "1", &storagev1.MessageRecord{Payload: []byte("x")})
	b.PutMessage("b.dlq", "2", &storagev1.MessageRecord{Payload: []byte("y")})
	meta.PutConfig("k", "v")
	var del storage.Batch
	del.DeleteQueueItems("c")
	record := storage.RawPut{Key: []byte("a\x00applied"), Value: []byte("7")}
	require.NoError(t, s.ApplyCommitted([]*storage.Batch{&a, &b, &meta, &del}, []storage.RawPut{record}))

	for q, n := range map[string]int{"a": 1, "b.dlq": 1, "c": 0} {
		qc, err := s.LoadQueue(q)
		require.NoError(t, err)
		require.Len(t, qc.Messages, n, q)
	}
	cfg, err := s.ConfigEntries()
	require.NoError(t, err)
	require.Equal(t, []storage.ConfigEntry{{Key: "k", Value: "v"}}, cfg)
	require.NoError(t, s.DB().View(func(txn *badger.Txn) error {
		item, err := txn.Get(record.Key)
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			require.Equal(t, record.Value, v)
			return nil
		})
	}))

	mixed := a
	mixed.PutConfig("k2", "v")
	require.ErrorIs(t, s.Write(&mixed), storage.ErrMixedOwners, "Submit still refuses a mix")
	require.NoError(t, s.Close())
	require.ErrorIs(t, s.ApplyCommitted([]*storage.Batch{&a}, nil), storage.ErrClosed)
}
