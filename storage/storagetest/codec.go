package storagetest

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
)

// runCodec: a batch that went through Marshal and UnmarshalBatch applies
// to the same state as the batch itself.
func runCodec(t *testing.T, open func(t *testing.T) storage.Store) {
	t.Run("DecodedBatchesApplyTheSame", func(t *testing.T) {
		t.Parallel()
		direct, decoded := open(t), open(t)
		for i, b := range SampleBatches() {
			data, err := b.Marshal()
			require.NoError(t, err)
			got, err := storage.UnmarshalBatch(data)
			require.NoError(t, err, "batch %d", i)
			require.Equal(t, b.Owner(), got.Owner(), "batch %d", i)
			require.Equal(t, b.Units(), got.Units(), "batch %d", i)
			require.Equal(t, b.Len(), got.Len(), "batch %d", i)
			require.Equal(t, b.Background(), got.Background(), "batch %d", i)
			require.NoError(t, direct.Write(b), "batch %d", i)
			require.NoError(t, decoded.Write(got), "batch %d", i)
			require.Equal(t, Dump(t, direct, sampleQueues...), Dump(t, decoded, sampleQueues...), "after batch %d", i)
		}
		require.NotEmpty(t, Dump(t, direct, sampleQueues...), "the samples leave something to compare")
	})
}

// sampleQueues are the queues SampleBatches writes: names that start with
// another's ("a.b", "ab"), and a DLQ.
var sampleQueues = []string{"a", "a.b", "a.dlq", "ab"}

// SampleBatches returns batches of every op kind, each of one owner, to
// apply in order: definitions and config, messages with leases, moves
// between a queue and its DLQ, a DeleteQueueItems with a put after it,
// deletes, a retire and a forget. Tests of the codec (and its fuzz seeds)
// use them.
func SampleBatches() []*storage.Batch {
	var out []*storage.Batch
	batch := func(build func(b *storage.Batch)) {
		b := &storage.Batch{}
		build(b)
		out = append(out, b)
	}
	msg := func(i int) *storagev1.MessageRecord {
		return &storagev1.MessageRecord{Payload: fmt.Appendf(nil, "p%d", i), Headers: map[string]string{"h": "v", "i": fmt.Sprint(i)}, AttemptCount: uint32(i)}
	}
	batch(func(b *storage.Batch) {
		for _, q := range sampleQueues {
			b.PutQueue(&storagev1.QueueRecord{Name: q, VisibilityTimeoutMs: 1000})
		}
		b.PutConfig("k", "v")
		b.PutConfig("empty", "")
		b.SetSchemaVersion(1) // a migration's mark rides with its changes
	})
	for _, q := range sampleQueues {
		batch(func(b *storage.Batch) {
			for i := range 4 {
				b.PutMessage(q, fmt.Sprintf("m%d", i), msg(i))
				b.PutLease(q, fmt.Sprintf("m%d", i), &storagev1.LeaseRecord{ExpiresAtUnixMs: int64(i), LeaseId: "t"})
			}
		})
	}
	batch(func(b *storage.Batch) {
		b.MoveMessage("a", "a.dlq", "m1", msg(9))
		b.MoveMessage("a.dlq", "a", "m2", msg(8))
		b.DeleteMessage("a", "m3")
		b.DeleteLease("a", "m3")
	})
	batch(func(b *storage.Batch) {
		b.PutLease("a.b", "m9", &storagev1.LeaseRecord{})
		b.DeleteQueueItems("a.b")
		b.PutMessage("a.b", "late", msg(7)) // after the delete: it stays
	})
	batch(func(b *storage.Batch) {
		b.DeleteConfig("k")
		b.DeleteQueue("ab")
		b.RetireQueues("a", "a.dlq")
	})
	batch(func(b *storage.Batch) { b.ForgetQueue("a.dlq") })
	batch(func(*storage.Batch) {}) // empty
	return out
}

// Dump returns everything s holds for the named queues and its meta
// state, encoded so that two dumps compare with require.Equal.
func Dump(t *testing.T, s storage.Store, queues ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	enc := func(m proto.Message) string {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		require.NoError(t, err)
		return string(b)
	}
	qs, err := s.Queues()
	require.NoError(t, err)
	for _, q := range qs {
		out["q/"+q.GetName()] = enc(q)
	}
	cfg, err := s.ConfigEntries()
	require.NoError(t, err)
	for _, e := range cfg {
		out["c/"+e.Key] = e.Value
	}
	if v, err := s.SchemaVersion(); assert.NoError(t, err) && v != 0 {
		out["v"] = fmt.Sprint(v)
	}
	deleted, err := s.DeletedQueues()
	require.NoError(t, err)
	for _, d := range deleted {
		out["d/"+d] = ""
	}
	for _, q := range queues {
		qc, err := s.LoadQueue(q)
		require.NoError(t, err)
		for _, m := range qc.Messages {
			out["m/"+q+"/"+m.ID] = enc(m.Record)
		}
		for id, l := range qc.Leases {
			out["l/"+q+"/"+id] = enc(l)
		}
	}
	return out
}
