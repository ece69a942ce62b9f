package server_test

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// TestLateSettleOfExpiredLeaseIsRefused is the hardening issue's first bug:
// consumer A's lease expires, B gets the message; A's late Ack or Nack must
// not touch B's lease.
func TestLateSettleOfExpiredLeaseIsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.createQueue(t, "q", &filav1.QueueConfig{VisibilityTimeoutMs: 100})
	id := b.enqueue(t, "q", nil, []byte("x"))
	a, closeA := b.lease(t, "q")
	fromA := recvN(t, a, 1)[0]
	closeA()                               // A walks away; its lease expires
	b.setVisibilityTimeout(t, "q", 60_000) // and B's outlasts the test
	bStream, _ := b.lease(t, "q")
	fromB := recvN(t, bStream, 1)[0]
	require.Equal(t, id, fromB.GetId())
	require.EqualValues(t, 1, fromB.GetMetadata().GetAttemptCount())
	require.NotEqual(t, fromA.GetLeaseId(), fromB.GetLeaseId())

	_, err := b.svc.Ack(ctxT(t), &filav1.AckRequest{Queue: "q", MessageId: id, LeaseId: fromA.GetLeaseId()})
	requireCode(t, err, codes.FailedPrecondition)
	require.ErrorContains(t, err, "lease expired")
	_, err = b.svc.Nack(ctxT(t), &filav1.NackRequest{Queue: "q", MessageId: id, LeaseId: fromA.GetLeaseId()})
	requireCode(t, err, codes.FailedPrecondition)
	_, err = b.svc.Extend(ctxT(t), &filav1.ExtendRequest{Queue: "q", MessageId: id, LeaseId: fromA.GetLeaseId()})
	requireCode(t, err, codes.FailedPrecondition)
	_, err = b.svc.Extend(ctxT(t), &filav1.ExtendRequest{Queue: "q", MessageId: id})
	requireCode(t, err, codes.InvalidArgument)
	require.ErrorContains(t, err, "lease_id: must not be empty")
	st := b.stats(t, "q")
	require.EqualValues(t, 1, st.GetInFlight(), "B still holds it")
	require.Zero(t, st.GetDepth(), "nothing went back to ready")

	ext, err := b.svc.Extend(ctxT(t), &filav1.ExtendRequest{Queue: "q", MessageId: id, LeaseId: fromB.GetLeaseId(), VisibilityTimeoutMs: 60_000})
	require.NoError(t, err)
	require.True(t, ext.GetLeaseExpiresAt().AsTime().After(fromB.GetTimestamps().GetLeaseExpiresAt().AsTime()))
	_, err = b.svc.Ack(ctxT(t), &filav1.AckRequest{Queue: "q", MessageId: id, LeaseId: fromB.GetLeaseId()})
	require.NoError(t, err, "B's ack is B's")
	b.requireEmpty(t, "q")
}

// TestRacingAckAndNackOneWins: with lease ids, an Ack and a Nack of the same
// delivery sent at once never both succeed (17 of 1,000 did without them).
func TestRacingAckAndNackOneWins(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.createQueue(t, "race", nil)
	const n = 200
	for range n {
		b.enqueue(t, "race", nil, nil)
	}
	stream, err := b.svc.Consume(ctxT(t), &filav1.ConsumeRequest{Queue: "race", MaxInFlight: n})
	require.NoError(t, err)
	msgs := recvN(t, stream, n)
	var wg sync.WaitGroup
	wins := make([]int, n)
	nacked := map[string]bool{}
	var mu sync.Mutex
	for i, m := range msgs {
		for _, nack := range []bool{false, true} {
			wg.Go(func() {
				var err error
				if nack {
					_, err = b.svc.Nack(bgCtx(), &filav1.NackRequest{Queue: "race", MessageId: m.GetId(), LeaseId: m.GetLeaseId()})
				} else {
					_, err = b.svc.Ack(bgCtx(), &filav1.AckRequest{Queue: "race", MessageId: m.GetId(), LeaseId: m.GetLeaseId()})
				}
				if err == nil {
					mu.Lock()
					wins[i]++
					if nack {
						nacked[m.GetId()] = true
					}
					mu.Unlock()
				} else if c := status.Code(err); c != codes.FailedPrecondition && c != codes.NotFound {
					t.Errorf("unexpected status %v", err)
				}
			})
		}
	}
	wg.Wait()
	for i, w := range wins {
		require.Equal(t, 1, w, "message %d: exactly one of Ack and Nack succeeds", i)
	}
	// Each message whose Nack won comes back once, under a new lease; the
	// acked ones never do.
	nackWins := len(nacked)
	for _, m := range recvN(t, stream, nackWins) {
		require.True(t, nacked[m.GetId()], "redelivered %s, which was acked", m.GetId())
		require.EqualValues(t, 1, m.GetMetadata().GetAttemptCount())
		delete(nacked, m.GetId())
	}
	require.Empty(t, nacked)
	st := b.stats(t, "race")
	require.Zero(t, st.GetDepth())
	require.EqualValues(t, nackWins, st.GetInFlight(), "only the redelivered ones are held")
}
