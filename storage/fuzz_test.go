package storage

import (
	"bytes"
	"regexp"
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
