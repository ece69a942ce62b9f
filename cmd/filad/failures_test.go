package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// TestKill9KeepsDelaysAndDeadLetters kills filad while messages are delayed
// (a retry backoff, and fila-delay-ms) and on their way to the DLQ (nacked
// there, and leased on their last attempt), and checks after the restart:
// every message is in exactly one of the two queues, each is delivered once,
// none before its delay, and the leased ones reach the DLQ when they expire.
func TestKill9KeepsDelaysAndDeadLetters(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dataDir := t.TempDir()
	p := startFilad(t, dataDir)
	c := connect(t, p.addr)
	const backoff = 300 * time.Millisecond
	_, err := c.admin.CreateQueue(ctx, &filav1.CreateQueueRequest{Name: "crash", Config: &filav1.QueueConfig{
		VisibilityTimeoutMs: 1000, MaxAttempts: 2,
		RetryBackoff: &filav1.RetryBackoff{InitialMs: uint64(backoff / time.Millisecond), Multiplier: 1},
	}})
	require.NoError(t, err)
	ids := enqueueN(t, ctx, c, 20)

	stream, err := c.svc.Consume(ctx, &filav1.ConsumeRequest{Queue: "crash"})
	require.NoError(t, err)
	recv := func() *filav1.Message {
		t.Helper()
		resp, err := stream.Recv()
		require.NoError(t, err)
		return resp.GetMessage()
	}
	nack := func(m *filav1.Message) {
		t.Helper()
		_, err := c.svc.Nack(ctx, &filav1.NackRequest{Queue: "crash", MessageId: m.GetId(), LeaseId: m.GetLeaseId(), Error: "bad"})
		require.NoError(t, err)
	}
	// First attempt of all 20 fails: each waits out the backoff.
	for range 20 {
		nack(recv())
	}
	// Second attempt: ten are nacked (dead-lettered), ten stay leased.
	toDLQ, leased := map[string]bool{}, map[string]bool{}
	for i := range 20 {
		m := recv()
		require.EqualValues(t, 1, m.GetMetadata().GetAttemptCount())
		if i < 10 {
			nack(m)
			toDLQ[m.GetId()] = true
		} else {
			leased[m.GetId()] = true
		}
	}
	// Ten more wait out a fila-delay-ms of 2 s, which spans the restart.
	sent := time.Now()
	delayed := map[string]bool{}
	for range 10 {
		resp, err := c.svc.Enqueue(ctx, &filav1.EnqueueRequest{Queue: "crash", Headers: map[string]string{"fila-delay-ms": "2000"}})
		require.NoError(t, err)
		delayed[resp.GetMessageId()] = true
	}
	st, err := c.admin.GetStats(ctx, &filav1.GetStatsRequest{Queue: "crash"})
	require.NoError(t, err)
	require.EqualValues(t, 10, st.GetDelayed())
	p.kill9(t)

	p = startFilad(t, dataDir)
	c = connect(t, p.addr)
	st, err = c.admin.GetStats(ctx, &filav1.GetStatsRequest{Queue: "crash"})
	require.NoError(t, err)
	require.EqualValues(t, 10, st.GetDelayed(), "delays recovered")
	require.EqualValues(t, 10, st.GetInFlight(), "last-attempt leases recovered")

	// The source queue delivers only the delayed ten, not before their time.
	src, err := c.svc.Consume(ctx, &filav1.ConsumeRequest{Queue: "crash"})
	require.NoError(t, err)
	for range 10 {
		resp, err := src.Recv()
		require.NoError(t, err)
		m := resp.GetMessage()
		require.True(t, delayed[m.GetId()], "only delayed messages come back to the source: %s", m.GetId())
		require.GreaterOrEqual(t, time.Since(sent), 2*time.Second, "not before its fila-delay-ms")
		delete(delayed, m.GetId())
		_, err = c.svc.Ack(ctx, &filav1.AckRequest{Queue: "crash", MessageId: m.GetId(), LeaseId: m.GetLeaseId()})
		require.NoError(t, err)
	}
	// The DLQ gets the nacked ten at once and the leased ten as they expire.
	dlq, err := c.svc.Consume(ctx, &filav1.ConsumeRequest{Queue: "crash.dlq"})
	require.NoError(t, err)
	for range 20 {
		resp, err := dlq.Recv()
		require.NoError(t, err)
		m := resp.GetMessage()
		id, reason := m.GetId(), m.GetHeaders()["fila-dlq-reason"]
		switch {
		case toDLQ[id]:
			require.Equal(t, "nack", reason)
			delete(toDLQ, id)
		case leased[id]:
			require.Equal(t, "expired", reason)
			delete(leased, id)
		default:
			t.Fatalf("unexpected or repeated DLQ message %s", id)
		}
		_, err = c.svc.Ack(ctx, &filav1.AckRequest{Queue: "crash.dlq", MessageId: id, LeaseId: m.GetLeaseId()})
		require.NoError(t, err)
	}
	require.Len(t, ids, 20)
	for _, q := range []string{"crash", "crash.dlq"} {
		st, err := c.admin.GetStats(ctx, &filav1.GetStatsRequest{Queue: q})
		require.NoError(t, err)
		require.Zero(t, st.GetDepth()+st.GetInFlight()+st.GetDelayed(), "%s drained: nothing duplicated into both queues", q)
	}
}
