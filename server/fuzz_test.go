package server_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// rawCodec sends the fuzzer's bytes as they are, as a broken or hostile
// client would, and keeps the reply's bytes.
type rawCodec struct{}

var _ encoding.CodecV2 = rawCodec{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*(v.(*[]byte)))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*(v.(*[]byte)) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

var unaryMethods = []string{
	"/fila.v1.FilaService/Enqueue", "/fila.v1.FilaService/Ack", "/fila.v1.FilaService/Nack", "/fila.v1.FilaService/Extend",
	"/fila.v1.FilaService/EnqueueBatch", "/fila.v1.FilaService/AckBatch", "/fila.v1.FilaService/NackBatch",
	"/fila.v1.FilaAdmin/CreateQueue", "/fila.v1.FilaAdmin/DeleteQueue", "/fila.v1.FilaAdmin/GetStats",
	"/fila.v1.FilaAdmin/ListQueues", "/fila.v1.FilaAdmin/UpdateQueue", "/fila.v1.FilaAdmin/CreateApiKey",
	"/fila.v1.FilaAdmin/SetAcl", "/fila.v1.FilaAdmin/GetAcl", "/fila.v1.FilaAdmin/RevokeApiKey",
}

// FuzzHandlers feeds random bytes as the request of every RPC. A bad request
// gets a status; the broker never crashes and keeps serving.
func FuzzHandlers(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x01, 'q'})                       // queue (or name): "q"
	f.Add([]byte{0x0a, 0x01, 'q', 0x1a, 0x02, 'h', 'i'}) // queue "q", payload "hi"
	f.Add([]byte{0x0a, 0x01, 'q', 0x12, 0x03, 'a', 'b', 'c'})
	f.Add([]byte{0xff, 0xff, 0xff, 0x0f})
	// With Fila's numbering (issue 20): filad's own fields from 16 up.
	f.Add([]byte{0x0a, 0x01, 'q', 0x80, 0x01, 0x02, 0x88, 0x01, 0x05})                               // Consume "q", max_in_flight 2, max_batch 5
	f.Add([]byte{0x0a, 0x02, 'q', '2', 0x12, 0x03, 0x18, 0x88, 0x27})                                // CreateQueue "q2", visibility_timeout_ms 5000
	f.Add([]byte{0x0a, 0x01, 'q', 0x12, 0x01, 'm', 0x82, 0x01, 0x01, 'l'})                           // Ack "q" "m", lease_id "l"
	f.Add([]byte{0x0a, 0x01, 'k', 0x12, 0x0b, 0x0a, 0x05, 'a', 'd', 'm', 'i', 'n', 0x12, 0x01, '*'}) // SetAcl "k" admin on *
	b := setup(f, setupOpts{})
	b.createQueue(f, "q", nil)
	f.Fuzz(func(t *testing.T, req []byte) {
		for _, m := range unaryMethods {
			var resp []byte
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = b.conn.Invoke(ctx, m, &req, &resp, grpc.ForceCodecV2(rawCodec{}))
			cancel()
		}
		// Consume: open the stream with the raw request, take one answer.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		s, err := b.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/fila.v1.FilaService/Consume", grpc.ForceCodecV2(rawCodec{}))
		if err == nil && s.SendMsg(&req) == nil && s.CloseSend() == nil {
			var resp []byte
			_ = s.RecvMsg(&resp)
		}
		cancel()
		// Still serving.
		if _, err := b.admin.ListQueues(context.Background(), &filav1.ListQueuesRequest{}); err != nil {
			t.Fatalf("broker stopped serving: %v", err)
		}
	})
}
