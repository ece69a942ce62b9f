package storage

import (
	"bytes"
	"errors"
	"math"
	"regexp"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
)

var validQueue = regexp.MustCompile(`^[A-Za-z0-9._-]{1,255}$`)

// FuzzItemKey: for every valid queue name, a key round-trips and no two
// queues' prefixes overlap.
func FuzzItemKey(f *testing.F) {
	f.Add("a", "ab", "01936f0e-7b4c-7d2a-9c3e-2f1a0b9c8d7e")
	f.Add("orders", "orders.v2", "x")
	f.Fuzz(func(t *testing.T, q1, q2, id string) {
		if !validQueue.MatchString(q1) || !validQueue.MatchString(q2) {
			t.Skip()
		}
		k := itemKey(prefixMessage, q1, id)
		if got := splitItemKey(k, q1); got != id {
			t.Fatalf("round trip: %q → %q", id, got)
		}
		if q1 != q2 && bytes.HasPrefix(k, queueItemsPrefix(prefixMessage, q2)) {
			t.Fatalf("key of %q falls under the prefix of %q", q1, q2)
		}
	})
}

// FuzzRecordCodec: decoding arbitrary bytes never panics, and whatever
// decodes re-encodes to an equal record.
func FuzzRecordCodec(f *testing.F) {
	seed, _ := proto.Marshal(&storagev1.MessageRecord{Headers: map[string]string{"k": "v"}, Payload: []byte("p"), FairnessKey: "f", Weight: 2, AttemptCount: 1})
	f.Add(seed)
	f.Add([]byte{0x0a, 0x05})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, m := range []proto.Message{&storagev1.MessageRecord{}, &storagev1.LeaseRecord{}, &storagev1.QueueRecord{}} {
			if proto.Unmarshal(b, m) != nil {
				continue
			}
			again, err := proto.Marshal(m)
			if err != nil {
				t.Fatalf("re-marshal %T: %v", m, err)
			}
			m2 := m.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(again, m2); err != nil || !proto.Equal(m, m2) {
				t.Fatalf("%T does not round-trip: %v", m, err)
			}
		}
	})
}

// FuzzBatchCodec: decoding arbitrary bytes never panics; whatever decodes
// is a batch of one owner that re-encodes to the same batch and that a
// store applies.
func FuzzBatchCodec(f *testing.F) {
	var moves, meta, items, empty Batch
	moves.PutMessage("a", "1", &storagev1.MessageRecord{Payload: []byte("p"), Headers: map[string]string{"k": "v"}})
	moves.PutLease("a", "1", &storagev1.LeaseRecord{LeaseId: "t"})
	moves.MoveMessage("a", "a.dlq", "1", &storagev1.MessageRecord{AttemptCount: 3})
	meta.PutQueue(&storagev1.QueueRecord{Name: "a"})
	meta.PutConfig("k", "")
	meta.RetireQueues("b", "b.dlq")
	items.DeleteQueueItems("a.b")
	items.DeleteMessage("a.b", "2")
	for _, b := range []*Batch{&moves, &meta, &items, &empty} {
		data, err := b.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte{0x22, 0x02, 0x08, 0x07}) // an op of an unknown kind
	f.Add([]byte{0x2a, 0x01, 0x05})       // a unit start out of range
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := UnmarshalBatch(data)
		if err != nil {
			if !errors.Is(err, ErrMalformedBatch) {
				t.Fatalf("error not ErrMalformedBatch: %v", err)
			}
			return
		}
		again, err := b.Marshal()
		if err != nil {
			t.Fatalf("a decoded batch does not encode: %v", err)
		}
		b2, err := UnmarshalBatch(again)
		if err != nil {
			t.Fatalf("a re-encoded batch does not decode: %v", err)
		}
		if !slices.EqualFunc(b.ops, b2.ops, func(x, y op) bool {
			return bytes.Equal(x.key, y.key) && bytes.Equal(x.value, y.value) && (x.value == nil) == (y.value == nil) && x.prefix == y.prefix
		}) || !slices.Equal(b.units, b2.units) || b.owner != b2.owner || b.background != b2.background {
			t.Fatal("a decoded batch does not round-trip")
		}
		if err := NewMemory().Write(b); err != nil {
			t.Fatalf("a decoded batch does not apply: %v", err)
		}
	})
}

// FuzzIndexCodec: the index record's own codec (decodeIndex, appendIndex)
// agrees with proto's on arbitrary bytes: it decodes what proto decodes,
// to the same fields, refuses what proto refuses, and encodes what it
// decoded to proto's bytes.
func FuzzIndexCodec(f *testing.F) {
	for _, x := range []*storagev1.MessageIndexRecord{
		{},
		{FairnessKey: "tenant-1", Weight: 3, AttemptCount: 2, EnqueuedAtUnixNs: 1764650000123456789, ReadyAtUnixMs: -1, ThrottleKeys: []string{"a", "b"}, PayloadBytes: 1024},
	} {
		seed, _ := proto.Marshal(x)
		f.Add(seed)
	}
	f.Add([]byte{0x0a, 0x02, 0xff, 0xfe}) // a key that is not UTF-8
	f.Add([]byte{0x08, 0x01, 0x10})       // cut short
	f.Fuzz(func(t *testing.T, b []byte) {
		want := &storagev1.MessageIndexRecord{}
		wantErr := proto.Unmarshal(b, want)
		got, err := decodeIndex(b, interner{})
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("decodeIndex error %v, proto's %v", err, wantErr)
		}
		if err != nil {
			return
		}
		want.ProtoReflect().SetUnknown(nil)
		want.PayloadBytes = min(want.PayloadBytes, math.MaxUint32)
		if rec := got.Record(); !proto.Equal(rec, want) {
			t.Fatalf("decodeIndex: %v, proto: %v", rec, want)
		}
		again, err := proto.MarshalOptions{Deterministic: true}.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		if enc := appendIndex(nil, got); !bytes.Equal(enc, again) {
			t.Fatalf("appendIndex: %x, proto: %x", enc, again)
		}
	})
}
