package storage

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
)

// TestUnmarshalBatchRefusesMalformedInput: every way a record can be
// wrong is an ErrMalformedBatch error, never a batch.
func TestUnmarshalBatchRefusesMalformedInput(t *testing.T) {
	t.Parallel()
	put := func(key string) *storagev1.BatchOp {
		return &storagev1.BatchOp{Kind: storagev1.BatchOp_KIND_PUT, Key: []byte(key), Value: []byte("v")}
	}
	prefix := func(key string) *storagev1.BatchOp {
		return &storagev1.BatchOp{Kind: storagev1.BatchOp_KIND_DELETE_PREFIX, Key: []byte(key)}
	}
	msg := "m\x00a\x00id"
	for _, tc := range []struct {
		name string
		rec  *storagev1.BatchRecord
		want string
	}{
		{"unknown kind", &storagev1.BatchRecord{Family: "a", Ops: []*storagev1.BatchOp{{Kind: 7, Key: []byte(msg)}}, UnitStarts: []uint32{0}}, "unknown kind 7"},
		{"unspecified kind", &storagev1.BatchRecord{Family: "a", Ops: []*storagev1.BatchOp{{Key: []byte(msg)}}, UnitStarts: []uint32{0}}, "unknown kind 0"},
		{"no units", &storagev1.BatchRecord{Family: "a", Ops: []*storagev1.BatchOp{put(msg)}}, "first unit"},
		{"first unit not at 0", &storagev1.BatchRecord{Family: "a", Ops: []*storagev1.BatchOp{put(msg), put(msg)}, UnitStarts: []uint32{1}}, "first unit"},
		{"units out of order", &storagev1.BatchRecord{Family: "a", Ops: []*storagev1.BatchOp{put(msg), put(msg), put(msg)}, UnitStarts: []uint32{0, 2, 1}}, "not after unit 1"},
		{"a unit twice", &storagev1.BatchRecord{Family: "a", Ops: []*storagev1.BatchOp{put(msg), put(msg)}, UnitStarts: []uint32{0, 0}}, "not after unit 0"},
		{"unit out of range", &storagev1.BatchRecord{Family: "a", Ops: []*storagev1.BatchOp{put(msg)}, UnitStarts: []uint32{0, 1}}, "starts at op 1 of 1"},
		{"units without ops", &storagev1.BatchRecord{UnitStarts: []uint32{0}}, "starts at op 0 of 0"},
		{"a key of no kind", &storagev1.BatchRecord{Meta: true, Ops: []*storagev1.BatchOp{put("x\x00a")}, UnitStarts: []uint32{0}}, "key kind"},
		{"a key without separator", &storagev1.BatchRecord{Meta: true, Ops: []*storagev1.BatchOp{put("qa")}, UnitStarts: []uint32{0}}, "none of the layout's"},
		{"a message key without id", &storagev1.BatchRecord{Family: "a", Ops: []*storagev1.BatchOp{put("m\x00a\x00")}, UnitStarts: []uint32{0}}, "has no id"},
		{"a message key without queue", &storagev1.BatchRecord{Family: "a", Ops: []*storagev1.BatchOp{put("m\x00a")}, UnitStarts: []uint32{0}}, "without its queue"},
		{"a delete with a value", &storagev1.BatchRecord{Family: "a", Ops: []*storagev1.BatchOp{{Kind: storagev1.BatchOp_KIND_DELETE, Key: []byte(msg), Value: []byte("v")}}, UnitStarts: []uint32{0}}, "a delete has a value"},
		{"a prefix of every message", &storagev1.BatchRecord{Background: true, Family: "a", Ops: []*storagev1.BatchOp{prefix("m\x00")}, UnitStarts: []uint32{0}}, "without its queue"},
		{"a prefix of one item", &storagev1.BatchRecord{Background: true, Family: "a", Ops: []*storagev1.BatchOp{prefix(msg)}, UnitStarts: []uint32{0}}, "not of a queue's"},
		{"a prefix of meta keys", &storagev1.BatchRecord{Background: true, Meta: true, Ops: []*storagev1.BatchOp{prefix("q\x00")}, UnitStarts: []uint32{0}}, "not of a queue's"},
		{"a prefix in the foreground", &storagev1.BatchRecord{Family: "a", Ops: []*storagev1.BatchOp{prefix("m\x00a\x00")}, UnitStarts: []uint32{0}}, "not marked background"},
		{"a prefix sharing its unit", &storagev1.BatchRecord{Background: true, Family: "a", Ops: []*storagev1.BatchOp{put(msg), prefix("m\x00a\x00")}, UnitStarts: []uint32{0}}, "mixes DeletePrefix"},
		{"mixed owners", &storagev1.BatchRecord{Family: "a", Ops: []*storagev1.BatchOp{put(msg), put("m\x00b\x00id")}, UnitStarts: []uint32{0, 1}}, "mixes owners"},
		{"the wrong owner", &storagev1.BatchRecord{Family: "b", Ops: []*storagev1.BatchOp{put(msg)}, UnitStarts: []uint32{0}}, `owner queue family "b" recorded`},
		{"no owner", &storagev1.BatchRecord{Ops: []*storagev1.BatchOp{put(msg)}, UnitStarts: []uint32{0}}, "owner none recorded"},
		{"an owner without ops", &storagev1.BatchRecord{Meta: true}, "owner meta recorded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			data, err := proto.Marshal(tc.rec)
			require.NoError(t, err)
			b, err := UnmarshalBatch(data)
			require.ErrorIs(t, err, ErrMalformedBatch)
			require.ErrorContains(t, err, tc.want)
			require.Nil(t, b)
		})
	}
	_, err := UnmarshalBatch([]byte{0xff, 0xff})
	require.ErrorIs(t, err, ErrMalformedBatch, "bytes that are no record")
}

// TestOwnerIsTheFamilyOrMeta: the owner each op gives a batch.
func TestOwnerIsTheFamilyOrMeta(t *testing.T) {
	t.Parallel()
	rec := &storagev1.MessageRecord{}
	for _, tc := range []struct {
		name  string
		build func(b *Batch)
		want  Owner
	}{
		{"a queue", func(b *Batch) { b.PutMessage("orders", "1", rec) }, Owner{Family: "orders"}},
		{"its DLQ", func(b *Batch) { b.DeleteLease("orders.dlq", "1") }, Owner{Family: "orders"}},
		{"one .dlq only", func(b *Batch) { b.DeleteMessage("orders.dlq.dlq", "1") }, Owner{Family: "orders.dlq"}},
		{"a dead-lettering", func(b *Batch) { b.MoveMessage("orders", "orders.dlq", "1", rec) }, Owner{Family: "orders"}},
		{"a delete of items", func(b *Batch) { b.DeleteQueueItems("orders.dlq") }, Owner{Family: "orders"}},
		{"a definition", func(b *Batch) { b.PutQueue(&storagev1.QueueRecord{Name: "orders"}) }, MetaOwner},
		{"a removal", func(b *Batch) { b.DeleteQueue("orders") }, MetaOwner},
		{"marks", func(b *Batch) { b.RetireQueues("a", "b"); b.ForgetQueue("c") }, MetaOwner},
		{"config", func(b *Batch) { b.PutConfig("k", "v"); b.DeleteConfig("j") }, MetaOwner},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var b Batch
			tc.build(&b)
			require.NoError(t, b.CheckOwner())
			require.Equal(t, tc.want, b.Owner())
		})
	}
}
