package server_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/client"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// A client that knows only a follower produces (proxied, or redirected to
// the leader it learns) and consumes (redirected to the leader); when the
// leader stops, the same Consume call finds the new leader and goes on
// delivering, and what was acknowledged before is still there.
func TestAClientOfOneFollowerConsumesAcrossAFailover(t *testing.T) {
	tr := startTrio(t, trioOptions{})
	ctx := clusterCtx(t)
	createQueue(t, tr, "orders")
	// The node that serves an enqueue on its internal port leads the queue.
	leader := untilServed(t, tr, -1, func(conn *grpc.ClientConn, md *metadata.MD) error {
		_, err := filav1.NewFilaServiceClient(conn).Enqueue(ctx, &filav1.EnqueueRequest{Queue: "orders", Payload: []byte("m0")}, grpc.Trailer(md))
		if status.Code(err) == codes.NotFound {
			return status.Error(codes.Unavailable, "not applied here yet")
		}
		return err
	})
	follower := (leader + 1) % len(tr.addrs)
	c, err := client.Dial(tr.addrs[follower], client.Options{})
	require.NoError(t, err)
	defer c.Close()

	var mu sync.Mutex
	seen := map[string]bool{}
	arrived := make(chan struct{}, 16)
	consumeCtx, stopConsuming := context.WithCancel(ctx)
	consumed := make(chan error, 1)
	go func() {
		consumed <- c.Consume(consumeCtx, "orders", client.ConsumeOptions{}, func(_ context.Context, m *filav1.Message) error {
			mu.Lock()
			seen[string(m.GetPayload())] = true
			mu.Unlock()
			arrived <- struct{}{}
			return nil
		})
	}()
	awaitSeen := func(payload string) {
		t.Helper()
		deadline := time.After(waitFor)
		for {
			mu.Lock()
			ok := seen[payload]
			mu.Unlock()
			if ok {
				return
			}
			select {
			case <-arrived:
			case err := <-consumed:
				t.Fatalf("Consume ended before %s arrived: %v", payload, err)
			case <-deadline:
				t.Fatalf("%s never arrived", payload)
			}
		}
	}
	// enqueue retries what a failover refuses; a retry may duplicate,
	// which the set of payloads absorbs.
	enqueue := func(payload string) {
		t.Helper()
		deadline := time.Now().Add(waitFor)
		for {
			_, err := c.Enqueue(ctx, "orders", nil, []byte(payload))
			if err == nil {
				return
			}
			require.Contains(t, []codes.Code{codes.Unavailable, codes.DeadlineExceeded}, status.Code(err), "%v", err)
			require.True(t, time.Now().Before(deadline), "no enqueue of %s succeeded: %v", payload, err)
			time.Sleep(50 * time.Millisecond) // between attempts; the outcome is the broker's answer
		}
	}
	awaitSeen("m0")
	enqueue("before")
	awaitSeen("before")

	require.NoError(t, tr.srvs[leader].Shutdown(context.Background()))
	tr.srvs[leader] = nil
	for i := range 3 {
		enqueue(fmt.Sprint("after", i))
	}
	for i := range 3 {
		awaitSeen(fmt.Sprint("after", i))
	}
	stopConsuming()
	require.NoError(t, <-consumed, "Consume went on across the failover and ended with its context")
}
