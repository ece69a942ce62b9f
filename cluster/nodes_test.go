package cluster

import (
	"encoding/binary"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
)

// A peer may forward only its own registration: the entry Register
// proposes, and nothing another node could not tell from it.
func TestAdmitForwardedTakesOnlyTheSendersRegistration(t *testing.T) {
	entry := func(id uint64, data []byte) *pb.Entry {
		return &pb.Entry{Type: pb.EntryType_EntryNormal.Enum(), Data: append(binary.BigEndian.AppendUint64(nil, id), data...)}
	}
	reg := func(node uint64) []byte {
		b, err := registration(NodeInfo{ID: node, InternalAddr: "127.0.0.1:7555", ClientAddr: "127.0.0.1:5555"})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	batch := func(fill func(*storage.Batch)) []byte {
		var b storage.Batch
		fill(&b)
		data, err := b.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	mark := storage.DeletionMark{Queue: "q", Value: []byte{1}, Partition: 2}
	cc, err := proto.Marshal(&pb.ConfChange{Type: pb.ConfChangeType_ConfChangeRemoveNode.Enum(), NodeId: new(uint64(1))})
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		entries []*pb.Entry
		ok      bool
	}{
		"its own registration":    {[]*pb.Entry{entry(0, reg(2))}, true},
		"twice":                   {[]*pb.Entry{entry(0, reg(2)), entry(0, reg(2))}, true},
		"no entry":                {nil, true},
		"another node's":          {[]*pb.Entry{entry(0, reg(3))}, false},
		"its own, then another's": {[]*pb.Entry{entry(0, reg(2)), entry(0, reg(3))}, false},
		"two records in a batch": {[]*pb.Entry{entry(0, batch(func(b *storage.Batch) {
			b.PutNode(&storagev1.NodeRecord{Id: 2})
			b.PutNode(&storagev1.NodeRecord{Id: 3})
		}))}, false},
		"a config write":  {[]*pb.Entry{entry(0, batch(func(b *storage.Batch) { b.PutConfig("k", "v") }))}, false},
		"a queue's batch": {[]*pb.Entry{entry(0, batch(func(b *storage.Batch) { b.DeleteMessage("q", "1") }))}, false},
		"a proposal id":   {[]*pb.Entry{entry(7, reg(2))}, false},
		"an empty entry":  {[]*pb.Entry{{Type: pb.EntryType_EntryNormal.Enum()}}, false},
		"garbage":         {[]*pb.Entry{entry(0, []byte{0xff, 0xff})}, false},
		"a conf change":   {[]*pb.Entry{{Type: pb.EntryType_EntryConfChange.Enum(), Data: cc}}, false},
		// A partition leader's end of a reap (reap_cluster.go), and only that.
		"a reap's ForgetMark":             {[]*pb.Entry{entry(0, batch(func(b *storage.Batch) { b.ForgetMark(mark) }))}, true},
		"a ForgetMark with a proposal id": {[]*pb.Entry{entry(7, batch(func(b *storage.Batch) { b.ForgetMark(mark) }))}, false},
		"a ForgetMark and more": {[]*pb.Entry{entry(0, batch(func(b *storage.Batch) {
			b.ForgetMark(mark)
			b.DeleteQueue("q")
		}))}, false},
		"a mark put":        {[]*pb.Entry{entry(0, batch(func(b *storage.Batch) { b.RetireQueues("q") }))}, false},
		"a queue forgotten": {[]*pb.Entry{entry(0, batch(func(b *storage.Batch) { b.ForgetQueue("q") }))}, false},
	} {
		msg, err := proto.Marshal(&pb.Message{Type: pb.MessageType_MsgProp.Enum(), From: new(uint64(2)), To: new(uint64(1)), Entries: tc.entries})
		if err != nil {
			t.Fatal(err)
		}
		if err := AdmitForwarded(2, msg); (err == nil) != tc.ok {
			t.Errorf("%s: %v, want admitted=%v", name, err, tc.ok)
		}
	}
	if AdmitForwarded(2, []byte{0xff}) == nil {
		t.Error("a message that does not decode was admitted")
	}
}
