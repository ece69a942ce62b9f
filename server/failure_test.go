package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/server"
)

func TestQueueActorPanicRestartsFromStorage(t *testing.T) {
	t.Parallel()
	logs := &logCapture{}
	fs := openFaultStore(t)
	b := setup(t, setupOpts{opts: server.Options{Logger: slog.New(logs), Store: fs}})
	b.createQueue(t, "a", nil)
	b.createQueue(t, "b", nil)

	aStream, _ := b.lease(t, "a")
	bStream, _ := b.lease(t, "b")
	ids := []string{b.enqueue(t, "a", nil, []byte("1")), b.enqueue(t, "a", nil, []byte("2"))}
	require.ElementsMatch(t, ids, msgIDs(recvN(t, aStream, 2)))
	b.enqueue(t, "b", nil, []byte("b1"))
	recvN(t, bStream, 1)

	fs.panicNext.Store(true)
	crashQueue(t, b, "a")
	eventually(t, func() bool { return logs.count(slog.LevelWarn, "restarting it from storage") == 1 }, "supervisor restarts the actor")

	// The restarted actor reloaded both leases from storage...
	st := b.stats(t, "a")
	require.EqualValues(t, 2, st.GetInFlight())
	require.Zero(t, st.GetDepth())
	_, err := b.svc.Ack(ctxT(t), &filav1.AckRequest{Queue: "a", MessageId: ids[0]})
	require.NoError(t, err, "a lease from before the restart can be acked")
	// ...and serves again: the open stream subscribed again by itself.
	id3 := b.enqueue(t, "a", nil, []byte("3"))
	require.Equal(t, id3, recvN(t, aStream, 1)[0].GetId())

	// The other queue never noticed: same stream, still delivering.
	idB := b.enqueue(t, "b", nil, []byte("b2"))
	require.Equal(t, idB, recvN(t, bStream, 1)[0].GetId())
}

func msgIDs(ms []*filav1.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.GetId()
	}
	return out
}

func TestSlowConsumerDoesNotSlowFastConsumer(t *testing.T) {
	t.Parallel()
	const held, total = 8, 600
	b := setup(t, setupOpts{})
	b.createQueue(t, "q", nil)
	// The slow consumer opens its stream first and never reads.
	slowCtx, cancelSlow := context.WithCancel(ctxT(t))
	defer cancelSlow()
	_, err := b.svc.Consume(slowCtx, &filav1.ConsumeRequest{Queue: "q", MaxInFlight: held})
	require.NoError(t, err)
	eventually(t, func() bool { return b.stats(t, "q").GetActiveConsumers() == 1 }, "slow consumer subscribed")
	fast, _ := b.lease(t, "q")
	eventually(t, func() bool { return b.stats(t, "q").GetActiveConsumers() == 2 }, "fast consumer subscribed")

	payload := make([]byte, 1024)
	for range total {
		b.enqueue(t, "q", nil, payload)
	}
	// The slow stream holds exactly its max_in_flight; everything else
	// reaches the fast consumer, which never waits on the slow one.
	for range total - held {
		m := recvN(t, fast, 1)[0]
		_, err := b.svc.Ack(ctxT(t), &filav1.AckRequest{Queue: "q", MessageId: m.GetId()})
		require.NoError(t, err)
	}
	st := b.stats(t, "q")
	require.Zero(t, st.GetDepth())
	require.EqualValues(t, held, st.GetInFlight())
}

func TestTraceparentReachesConsumer(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.createQueue(t, "tq", nil)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	ctx := metadata.AppendToOutgoingContext(ctxT(t), "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	_, err := b.svc.Enqueue(ctx, &filav1.EnqueueRequest{Queue: "tq", Payload: []byte("x")})
	require.NoError(t, err)
	// A producer that set its own traceparent keeps it.
	own := "00-11111111111111111111111111111111-2222222222222222-01"
	b.enqueue(t, "tq", map[string]string{"traceparent": own}, nil)

	stream, _ := b.lease(t, "tq")
	ms := recvN(t, stream, 2)
	// The gRPC metadata's context crossed the gateway and the actor envelope
	// into the stored message.
	require.Contains(t, ms[0].GetHeaders()["traceparent"], traceID)
	require.Equal(t, own, ms[1].GetHeaders()["traceparent"])
}

func TestDeleteQueueEndsStreamsAndRemovesMessages(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.createQueue(t, "gone", nil)
	stream, _ := b.lease(t, "gone")
	b.enqueue(t, "gone", nil, nil)
	recvN(t, stream, 1)
	b.enqueue(t, "gone", nil, nil)
	eventually(t, func() bool { return b.stats(t, "gone").GetInFlight() == 2 }, "both leased")

	_, err := b.admin.DeleteQueue(ctxT(t), &filav1.DeleteQueueRequest{Queue: "gone"})
	require.NoError(t, err)
	for {
		_, err = stream.Recv()
		if err != nil {
			break
		}
	}
	requireCode(t, err, codes.NotFound)
	require.ErrorContains(t, err, `queue not found: "gone" was deleted`, "the consumer is told why")
	_, err = b.svc.Enqueue(ctxT(t), &filav1.EnqueueRequest{Queue: "gone"})
	requireCode(t, err, codes.NotFound)
	require.ErrorContains(t, err, `queue not found: "gone"`)

	// A queue of the same name starts empty.
	b.createQueue(t, "gone", nil)
	b.requireEmpty(t, "gone")
}

func TestShutdownEndsStreamsWithUnavailable(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.createQueue(t, "s", nil)
	stream, _ := b.lease(t, "s")
	eventually(t, func() bool { return b.stats(t, "s").GetActiveConsumers() == 1 }, "consumer subscribed")

	done := make(chan error, 1)
	go func() { done <- b.srv.Shutdown(context.Background()) }()
	_, err := stream.Recv()
	requireCode(t, err, codes.Unavailable)
	require.NoError(t, <-done)
	_, err = b.svc.Enqueue(ctxT(t), &filav1.EnqueueRequest{Queue: "s"})
	requireCode(t, err, codes.Unavailable)
}

// TestRequestsRacingDeleteAreAnswered: requests that reach a queue actor as
// its queue is deleted get NOT_FOUND at once (they used to wait the whole
// request timeout, 30 s, for a reply the stopped actor dropped).
func TestRequestsRacingDeleteAreAnswered(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	for round := range 5 {
		name := fmt.Sprintf("racing-%d", round)
		b.createQueue(t, name, nil)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 32 {
			wg.Go(func() {
				<-start
				for range 20 {
					// A deadline far below the request timeout: a dropped reply fails the test.
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					_, err := b.svc.Enqueue(ctx, &filav1.EnqueueRequest{Queue: name, Payload: []byte("x")})
					cancel()
					if c := status.Code(err); c != codes.OK && c != codes.NotFound {
						t.Errorf("enqueue racing delete: %v", err)
					}
				}
			})
		}
		close(start)
		_, err := b.admin.DeleteQueue(ctxT(t), &filav1.DeleteQueueRequest{Queue: name})
		require.NoError(t, err)
		wg.Wait()
	}
}
