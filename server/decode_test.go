package server_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protowire"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// wire builds a request's bytes by hand: Go's own marshalling refuses
// invalid UTF-8, a hostile or broken client's does not.
func wire(fields ...func([]byte) []byte) []byte {
	var b []byte
	for _, f := range fields {
		b = f(b)
	}
	return b
}

func str(num protowire.Number, v string) func([]byte) []byte {
	return func(b []byte) []byte {
		b = protowire.AppendTag(b, num, protowire.BytesType)
		return protowire.AppendString(b, v)
	}
}

func header(k, v string) func([]byte) []byte {
	entry := wire(str(1, k), str(2, v))
	return func(b []byte) []byte {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		return protowire.AppendBytes(b, entry)
	}
}

func TestInvalidUTF8IsInvalidArgumentNamingTheField(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.createQueue(t, "q", nil)
	const bad = "\xff\xfe"
	tests := []struct {
		name, method, field string
		req                 []byte
	}{
		{"queue name", "/fila.v1.FilaService/Enqueue", "queue", wire(str(1, "q"+bad))},
		{"header value", "/fila.v1.FilaService/Enqueue", "headers", wire(str(1, "q"), header("k", bad))},
		{"header key", "/fila.v1.FilaService/Enqueue", "headers", wire(str(1, "q"), header(bad, "v"))},
		{"message id", "/fila.v1.FilaService/Ack", "message_id", wire(str(1, "q"), str(2, bad))},
		{"nack error", "/fila.v1.FilaService/Nack", "error", wire(str(1, "q"), str(2, "01936f0e-7b4c-7d2a-9c3e-2f1a0b9c8d7e"), str(3, bad))},
		{"create name", "/fila.v1.FilaAdmin/CreateQueue", "name", wire(str(1, bad))},
	}
	for _, tt := range tests {
		var resp []byte
		err := b.conn.Invoke(ctxT(t), tt.method, &tt.req, &resp, grpc.ForceCodecV2(rawCodec{}))
		requireCode(t, err, codes.InvalidArgument)
		require.ErrorContains(t, err, tt.field+": not valid UTF-8", tt.name)
		require.NotContains(t, err.Error(), bad, "%s: the bad bytes are not echoed", tt.name)
	}
	// Lease opens with a bad queue name: the stream ends with the same status.
	req := wire(str(1, bad))
	s, err := b.conn.NewStream(ctxT(t), &grpc.StreamDesc{ServerStreams: true}, "/fila.v1.FilaService/Consume", grpc.ForceCodecV2(rawCodec{}))
	require.NoError(t, err)
	require.NoError(t, s.SendMsg(&req))
	require.NoError(t, s.CloseSend())
	var resp []byte
	err = s.RecvMsg(&resp)
	requireCode(t, err, codes.InvalidArgument)
	require.ErrorContains(t, err, "queue: not valid UTF-8")

	b.requireEmpty(t, "q")
	list, err := b.admin.ListQueues(context.Background(), &filav1.ListQueuesRequest{})
	require.NoError(t, err)
	require.Len(t, list.GetQueues(), 2, "nothing was created: q and q.dlq")
}

// TestBigPayloadNamesTheLimit: a payload well over max_message_bytes is
// refused by filad's own check, naming the setting, not by grpc's receive
// limit.
func TestBigPayloadNamesTheLimit(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.createQueue(t, "q", nil)
	_, err := b.svc.Enqueue(ctxT(t), &filav1.EnqueueRequest{Queue: "q", Payload: make([]byte, 5<<20)},
		grpc.MaxCallSendMsgSize(64<<20))
	requireCode(t, err, codes.InvalidArgument)
	require.ErrorContains(t, err, "over the limit of 1048576 (server.max_message_bytes)")
	b.requireEmpty(t, "q")
}
