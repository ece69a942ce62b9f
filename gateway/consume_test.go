package gateway_test

import (
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fila-dev/filad/actors"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/storage/storagetest"
)

// here is a cluster's placement that serves every queue on this node.
type here struct{}

func (here) Where(string) actors.Location { return actors.Location{} }

// A consumer whose frame's lease write ends with its outcome unknown (a
// partition leader that lost its term while proposing it) is not ended
// with the store's error, which a client sees as INTERNAL: the queue
// reloads, and the stream subscribes again and delivers the message.
func TestALeaseWriteOfUnknownOutcomeSubscribesAgain(t *testing.T) {
	t.Parallel()
	var armed atomic.Bool
	store := storagetest.Unknown(storage.NewMemory(), func(b *storage.Batch) bool {
		return b.Len() > 0 && armed.CompareAndSwap(true, false)
	}, false)
	conn := startGateway(t, store, here{})
	svc, admin := filav1.NewFilaServiceClient(conn), filav1.NewFilaAdminClient(conn)
	_, err := admin.CreateQueue(t.Context(), &filav1.CreateQueueRequest{Name: "q"})
	require.NoError(t, err)
	sent, err := svc.Enqueue(t.Context(), &filav1.EnqueueRequest{Queue: "q", Payload: []byte("once")})
	require.NoError(t, err)

	armed.Store(true) // the next write is the first delivery's lease
	stream, err := svc.Consume(t.Context(), &filav1.ConsumeRequest{Queue: "q"})
	require.NoError(t, err)
	got, err := stream.Recv()
	require.NoError(t, err, "the stream outlives a lease write of unknown outcome")
	require.False(t, armed.Load(), "the lease write was answered outcome unknown")
	require.Equal(t, sent.GetMessageId(), got.GetMessage().GetId())
	require.Equal(t, []byte("once"), got.GetMessage().GetPayload())
}
