package main

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// TestBacklogBiggerThanTheCacheSurvivesKill9 (issue 26): a backlog of
// 3,000 messages of 1 KiB, three times the 1 MiB message cache, part of
// it retried once (whose new attempt count lives in its index record
// alone), is killed with SIGKILL and comes back. Every message is then
// delivered exactly once, per fairness key in enqueue order, with its own
// payload and headers, which the queue reads from disk for what the cache
// does not hold. (The deliveries in the first stream's buffer at the kill
// come back too, once their leases run out: attempt 1, at their key's
// back.)
func TestBacklogBiggerThanTheCacheSurvivesKill9(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dataDir := t.TempDir()
	cache := "FILA_STORAGE__MESSAGE_CACHE_MIB=1"
	p := startFilad(t, dataDir, cache)
	c := connect(t, p.addr)
	_, err := c.admin.CreateQueue(ctx, &filav1.CreateQueueRequest{Name: "backlog", Config: &filav1.QueueConfig{FairnessKeyHeader: "tenant", VisibilityTimeoutMs: 5000}})
	require.NoError(t, err)
	const n, keys, batch = 3000, 3, 100
	payload := func(seq int) []byte { return bytes.Repeat([]byte(fmt.Sprintf("%07d|", seq)), 128) } // 1 KiB
	for start := 0; start < n; start += batch {
		req := &filav1.EnqueueBatchRequest{}
		for seq := start; seq < start+batch; seq++ {
			req.Messages = append(req.Messages, &filav1.EnqueueRequest{Queue: "backlog", Payload: payload(seq),
				Headers: map[string]string{"tenant": "t" + strconv.Itoa(seq%keys), "seq": strconv.Itoa(seq)}})
		}
		resp, err := c.svc.EnqueueBatch(ctx, req)
		require.NoError(t, err)
		for _, r := range resp.GetResults() {
			require.NotEmpty(t, r.GetMessageId(), "enqueue: %v", r.GetError())
		}
	}
	// The first delivered ones are nacked: they go to their key's back
	// with attempt 1, which only their index records say.
	stream, err := c.svc.Consume(ctx, &filav1.ConsumeRequest{Queue: "backlog"})
	require.NoError(t, err)
	nacked := map[string]bool{}
	for range 30 {
		resp, err := stream.Recv()
		require.NoError(t, err)
		m := resp.GetMessage()
		_, err = c.svc.Nack(ctx, &filav1.NackRequest{Queue: "backlog", MessageId: m.GetId(), LeaseId: m.GetLeaseId(), Error: "again"})
		require.NoError(t, err)
		nacked[m.GetHeaders()["seq"]] = true
	}
	p.kill9(t)

	p = startFilad(t, dataDir, cache)
	c = connect(t, p.addr)
	// The leases left by the kill keep their short expiry and come back;
	// the drain's own get a minute, which no slow ack here outlasts.
	_, err = c.admin.UpdateQueue(ctx, &filav1.UpdateQueueRequest{Name: "backlog", Config: &filav1.QueueConfig{VisibilityTimeoutMs: 60_000}})
	require.NoError(t, err)
	stream, err = c.svc.Consume(ctx, &filav1.ConsumeRequest{Queue: "backlog"})
	require.NoError(t, err)
	seen := map[int]bool{}
	last := map[string]int{} // per key: the last first-attempt seq
	for len(seen) < n {
		resp, err := stream.Recv()
		require.NoError(t, err)
		m := resp.GetMessage()
		seq, err := strconv.Atoi(m.GetHeaders()["seq"])
		require.NoError(t, err, "headers %v", m.GetHeaders())
		require.False(t, seen[seq], "message %d delivered twice", seq)
		seen[seq] = true
		require.Equal(t, payload(seq), m.GetPayload(), "message %d: its own payload", seq)
		key := m.GetHeaders()["tenant"]
		require.Equal(t, "t"+strconv.Itoa(seq%keys), key)
		require.Equal(t, key, m.GetMetadata().GetFairnessKey())
		switch attempt := m.GetMetadata().GetAttemptCount(); {
		case nacked[m.GetHeaders()["seq"]]:
			require.EqualValues(t, 1, attempt, "message %d: its nack survived", seq)
		case attempt > 0:
			// Leased in the stream's buffer at the kill: its lease ran
			// out since, and it went to its key's back.
			require.EqualValues(t, 1, attempt, "message %d", seq)
		default:
			prev, ok := last[key]
			require.True(t, !ok || seq > prev, "key %s: %d after %d, not in enqueue order", key, seq, prev)
			last[key] = seq
		}
		_, err = c.svc.Ack(ctx, &filav1.AckRequest{Queue: "backlog", MessageId: m.GetId(), LeaseId: m.GetLeaseId()})
		require.NoError(t, err)
	}
	st, err := c.admin.GetStats(ctx, &filav1.GetStatsRequest{Queue: "backlog"})
	require.NoError(t, err)
	require.Zero(t, st.GetDepth()+st.GetInFlight()+st.GetDelayed(), "drained")
}
