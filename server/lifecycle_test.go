package server_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

func TestFullLifecycle(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.createQueue(t, "orders", nil)

	const total, producers, consumers = 1000, 8, 3
	enqueued := make(chan string, total)
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := p; i < total; i += producers {
				enqueued <- b.enqueue(t, "orders", map[string]string{"fila-fairness-key": fmt.Sprint("tenant-", i%5)}, []byte(fmt.Sprint("payload-", i)))
			}
		})
	}
	wg.Wait()
	close(enqueued)
	want := map[string]bool{}
	for id := range enqueued {
		want[id] = true
	}
	require.Len(t, want, total, "message ids are unique")

	var mu sync.Mutex
	got := map[string]int{}
	acked := 0
	ctx, stopConsumers := context.WithCancel(ctxT(t))
	defer stopConsumers()
	for range consumers {
		stream, err := b.svc.Consume(ctx, &filav1.ConsumeRequest{Queue: "orders"})
		require.NoError(t, err)
		wg.Go(func() {
			for {
				resp, err := stream.Recv()
				if ctx.Err() != nil {
					return // every message acked: the test ended the streams
				}
				if !assertNoErr(t, err) {
					return
				}
				m := resp.GetMessage()
				_, err = b.svc.Ack(ctxT(t), &filav1.AckRequest{Queue: "orders", MessageId: m.GetId()})
				if !assertNoErr(t, err) {
					return
				}
				mu.Lock()
				got[m.GetId()]++
				if acked++; acked == total {
					stopConsumers()
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.Len(t, got, total, "every message delivered")
	for id, n := range got {
		require.True(t, want[id], "delivered id %s was enqueued", id)
		require.Equal(t, 1, n, "message %s delivered once", id)
	}
	b.requireEmpty(t, "orders")
	eventually(t, func() bool {
		q, err := b.admin.ListQueues(ctxT(t), &filav1.ListQueuesRequest{})
		// orders, then orders.dlq
		return err == nil && len(q.GetQueues()) == 2 && q.GetQueues()[0].GetDepth() == 0 && q.GetQueues()[0].GetInFlight() == 0
	}, "ListQueues shows the queue drained")
}

// assertNoErr reports err from a goroutine other than the test's.
func assertNoErr(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Errorf("unexpected error: %v", err)
		return false
	}
	return true
}

func TestVisibilityTimeoutRedelivers(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.createQueue(t, "vt", &filav1.QueueConfig{VisibilityTimeoutMs: 100})
	id := b.enqueue(t, "vt", nil, []byte("x"))
	stream, _ := b.lease(t, "vt")
	first := recvN(t, stream, 1)[0]
	require.Equal(t, id, first.GetId())
	require.Zero(t, first.GetMetadata().GetAttemptCount())
	b.setVisibilityTimeout(t, "vt", 60_000) // the next lease outlasts the test
	// Not acked: the lease expires and the same stream gets it again.
	again := recvN(t, stream, 1)[0]
	require.Equal(t, id, again.GetId())
	require.EqualValues(t, 1, again.GetMetadata().GetAttemptCount())
	// The expired lease can no longer be acked; the new one can.
	_, err := b.svc.Ack(ctxT(t), &filav1.AckRequest{Queue: "vt", MessageId: id})
	require.NoError(t, err)
	b.requireEmpty(t, "vt")
}

func TestNackRedelivers(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.createQueue(t, "nq", nil)
	id := b.enqueue(t, "nq", map[string]string{"k": "v"}, []byte("payload"))
	stream, _ := b.lease(t, "nq")
	m := recvN(t, stream, 1)[0]
	require.Equal(t, "payload", string(m.GetPayload()))
	require.Equal(t, "v", m.GetHeaders()["k"])
	require.Equal(t, "nq", m.GetMetadata().GetQueueId())
	require.Equal(t, "default", m.GetMetadata().GetFairnessKey())
	require.NotNil(t, m.GetTimestamps().GetEnqueuedAt())
	require.NotNil(t, m.GetTimestamps().GetLeasedAt())

	_, err := b.svc.Nack(ctxT(t), &filav1.NackRequest{Queue: "nq", MessageId: id, Error: "boom"})
	require.NoError(t, err)
	m = recvN(t, stream, 1)[0]
	require.Equal(t, id, m.GetId())
	require.EqualValues(t, 1, m.GetMetadata().GetAttemptCount())
	_, err = b.svc.Nack(ctxT(t), &filav1.NackRequest{Queue: "nq", MessageId: id})
	require.NoError(t, err)
	m = recvN(t, stream, 1)[0]
	require.EqualValues(t, 2, m.GetMetadata().GetAttemptCount())
}

func TestDRRWeightedShares(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.createQueue(t, "fair", nil)
	weights := map[string]int{"a": 1, "b": 2, "c": 3}
	const window = 3000 // divisible by perKey
	var wg sync.WaitGroup
	const perKey = 8
	for key, w := range weights {
		for range perKey {
			wg.Go(func() {
				for range window / perKey {
					_, err := b.svc.Enqueue(ctxT(t), &filav1.EnqueueRequest{Queue: "fair", Headers: map[string]string{
						"fila-fairness-key": key, "fila-weight": fmt.Sprint(w),
					}})
					assertNoErr(t, err)
				}
			})
		}
	}
	wg.Wait()
	st := b.stats(t, "fair")
	require.EqualValues(t, 3*window, st.GetDepth())
	require.EqualValues(t, 3, st.GetActiveFairnessKeys())

	// Room for the whole window unacked, so delivery order is DRR's alone.
	stream, err := b.svc.Consume(ctxT(t), &filav1.ConsumeRequest{Queue: "fair", MaxInFlight: window})
	require.NoError(t, err)
	counts := map[string]int{}
	for _, m := range recvN(t, stream, window) {
		counts[m.GetMetadata().GetFairnessKey()]++
	}
	for key, w := range weights {
		share := float64(counts[key]) / window
		want := float64(w) / 6
		require.InDelta(t, want, share, 0.02, "key %s: got %d of %d", key, counts[key], window)
	}
}

func TestDRRQuietKeyNotStarved(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.createQueue(t, "noisy", nil)
	const noisy = 2000
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range noisy / 8 {
				_, err := b.svc.Enqueue(ctxT(t), &filav1.EnqueueRequest{Queue: "noisy", Headers: map[string]string{"fila-fairness-key": "loud"}})
				assertNoErr(t, err)
			}
		})
	}
	wg.Wait()
	b.enqueue(t, "noisy", map[string]string{"fila-fairness-key": "quiet"}, nil)
	stream, _ := b.lease(t, "noisy")
	// One round of DRR is one message per key at weight 1.
	keys := map[string]bool{}
	for _, m := range recvN(t, stream, 2) {
		keys[m.GetMetadata().GetFairnessKey()] = true
	}
	require.True(t, keys["quiet"], "quiet key delivered within the first round, got %v", keys)
}
