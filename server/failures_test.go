package server_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/fila-dev/filad/actors"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// TestPoisonMessageThroughTheAPI: with max_attempts 3 a message that keeps
// failing is delivered exactly three times, lands in the DLQ with its source
// headers, can be browsed there, and a redrive makes it deliverable again
// from attempt 0.
func TestPoisonMessageThroughTheAPI(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.createQueue(t, "orders", &filav1.QueueConfig{MaxAttempts: 3})
	id := b.enqueue(t, "orders", map[string]string{"tenant": "a"}, []byte("poison"))
	stream, cancel := b.lease(t, "orders")
	for attempt := range 3 {
		m := recvN(t, stream, 1)[0]
		require.Equal(t, id, m.GetId())
		require.EqualValues(t, attempt, m.GetMetadata().GetAttemptCount())
		_, err := b.svc.Nack(ctxT(t), &filav1.NackRequest{Queue: "orders", MessageId: id, LeaseId: m.GetLeaseId(), Error: "parse error at byte 7"})
		require.NoError(t, err)
	}
	cancel()
	b.requireEmpty(t, "orders")

	dlq := b.stats(t, "orders.dlq")
	require.EqualValues(t, 1, dlq.GetDepth())
	peek, err := b.admin.Peek(ctxT(t), &filav1.PeekRequest{Queue: "orders.dlq", IncludePayload: true})
	require.NoError(t, err)
	require.Len(t, peek.GetMessages(), 1)
	pm := peek.GetMessages()[0]
	require.Equal(t, id, pm.GetId())
	require.Equal(t, []byte("poison"), pm.GetPayload())
	require.EqualValues(t, 6, pm.GetPayloadSize())
	require.Equal(t, map[string]string{"tenant": "a", actors.HeaderDLQSource: "orders", actors.HeaderDLQAttempts: "3",
		actors.HeaderDLQReason: "nack", actors.HeaderDLQError: "parse error at byte 7"}, pm.GetHeaders())
	require.Equal(t, dlq.GetDepth(), b.stats(t, "orders.dlq").GetDepth(), "peek leases nothing")

	rd, err := b.admin.Redrive(ctxT(t), &filav1.RedriveRequest{DlqQueue: "orders.dlq"})
	require.NoError(t, err)
	require.EqualValues(t, 1, rd.GetRedriven())
	stream, _ = b.lease(t, "orders")
	m := recvN(t, stream, 1)[0]
	require.Equal(t, id, m.GetId())
	require.Zero(t, m.GetMetadata().GetAttemptCount())
	require.Equal(t, map[string]string{"tenant": "a"}, m.GetHeaders())
	_, err = b.svc.Ack(ctxT(t), &filav1.AckRequest{Queue: "orders", MessageId: id, LeaseId: m.GetLeaseId()})
	require.NoError(t, err)
	b.requireEmpty(t, "orders.dlq")
}

// TestBackoffDelaysRedeliveries checks each redelivery against the time its
// nack was answered: never earlier than its backoff; and that a message
// waiting out its backoff is delayed, not ready, and not delivered.
func TestBackoffDelaysRedeliveries(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.createQueue(t, "q", &filav1.QueueConfig{RetryBackoff: &filav1.RetryBackoff{InitialMs: 60, MaxMs: 150, Multiplier: 2}})
	id := b.enqueue(t, "q", nil, nil)
	stream, _ := b.lease(t, "q")
	want := []time.Duration{60, 120, 150, 150} // ms: initial × 2^(n−1), capped
	m := recvN(t, stream, 1)[0]
	for i, delay := range want {
		nacked := time.Now() // the broker cannot have had the nack earlier
		_, err := b.svc.Nack(ctxT(t), &filav1.NackRequest{Queue: "q", MessageId: id, LeaseId: m.GetLeaseId()})
		require.NoError(t, err)
		m = recvN(t, stream, 1)[0]
		require.GreaterOrEqual(t, time.Since(nacked), delay*time.Millisecond, "retry %d early", i+1)
		require.EqualValues(t, i+1, m.GetMetadata().GetAttemptCount())
	}

	// While it waits, a message is counted as delayed, not ready, and not
	// delivered to the consumer that is there to take it. Its delay is a
	// minute, so that no step of the test can outlast it.
	b.createQueue(t, "held", &filav1.QueueConfig{RetryBackoff: &filav1.RetryBackoff{InitialMs: 60_000, MaxMs: 60_000}})
	id = b.enqueue(t, "held", nil, nil)
	stream, _ = b.lease(t, "held")
	m = recvN(t, stream, 1)[0]
	_, err := b.svc.Nack(ctxT(t), &filav1.NackRequest{Queue: "held", MessageId: id, LeaseId: m.GetLeaseId()})
	require.NoError(t, err)
	st := b.stats(t, "held")
	require.EqualValues(t, 1, st.GetDelayed())
	require.Zero(t, st.GetDepth(), "a delayed message is not ready")
	require.Zero(t, st.GetInFlight(), "a delayed message is not delivered")
}

// TestUpdateQueueWithAMask changes only the named fields, and the next
// failure follows the new rule.
func TestUpdateQueueWithAMask(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.createQueue(t, "q", &filav1.QueueConfig{VisibilityTimeoutMs: 45_000, MaxDepth: 10})
	resp, err := b.admin.UpdateQueue(ctxT(t), &filav1.UpdateQueueRequest{
		Name:       "q",
		Config:     &filav1.QueueConfig{MaxAttempts: 1, MaxDepth: 99},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"max_attempts"}},
	})
	require.NoError(t, err)
	cfg := resp.GetConfig()
	require.EqualValues(t, 1, cfg.GetMaxAttempts())
	require.EqualValues(t, 10, cfg.GetMaxDepth(), "not in the mask: unchanged")
	require.EqualValues(t, 45_000, cfg.GetVisibilityTimeoutMs())
	require.True(t, cfg.GetDeadLetter())
	require.EqualValues(t, 1, b.stats(t, "q").GetConfig().GetMaxAttempts())

	id := b.enqueue(t, "q", nil, nil)
	stream, _ := b.lease(t, "q")
	m := recvN(t, stream, 1)[0]
	_, err = b.svc.Nack(ctxT(t), &filav1.NackRequest{Queue: "q", MessageId: id, LeaseId: m.GetLeaseId()})
	require.NoError(t, err)
	require.EqualValues(t, 1, b.stats(t, "q.dlq").GetDepth(), "max_attempts 1: dead-lettered on the first nack")

	// Turning dead-lettering off (an explicit false needs the mask).
	resp, err = b.admin.UpdateQueue(ctxT(t), &filav1.UpdateQueueRequest{
		Name: "q", Config: &filav1.QueueConfig{DeadLetter: new(bool)}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"dead_letter"}},
	})
	require.NoError(t, err)
	require.False(t, resp.GetConfig().GetDeadLetter())
}

func TestPurgeAndRuntimeConfigThroughTheAPI(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	b := setup(t, setupOpts{dataDir: dir})
	b.createQueue(t, "q", nil)
	for range 5 {
		b.enqueue(t, "q", nil, nil)
	}
	p, err := b.admin.PurgeQueue(ctxT(t), &filav1.PurgeQueueRequest{Queue: "q"})
	require.NoError(t, err)
	require.EqualValues(t, 5, p.GetPurged())
	b.requireEmpty(t, "q")

	for k, v := range map[string]string{"rate.a": "10", "rate.b": "20", "other": "x"} {
		_, err := b.admin.SetConfig(ctxT(t), &filav1.SetConfigRequest{Key: k, Value: v})
		require.NoError(t, err)
	}
	_, err = b.admin.SetConfig(ctxT(t), &filav1.SetConfigRequest{Key: "other", Value: ""})
	require.NoError(t, err)
	list, err := b.admin.ListConfig(ctxT(t), &filav1.ListConfigRequest{Prefix: "rate."})
	require.NoError(t, err)
	require.EqualValues(t, 2, list.GetTotalCount())
	require.Equal(t, "rate.a", list.GetEntries()[0].GetKey())
	got, err := b.admin.GetConfig(ctxT(t), &filav1.GetConfigRequest{Key: "rate.b"})
	require.NoError(t, err)
	require.Equal(t, "20", got.GetValue())
	got, err = b.admin.GetConfig(ctxT(t), &filav1.GetConfigRequest{Key: "other"})
	require.NoError(t, err)
	require.Empty(t, got.GetValue(), "deleted by the empty value")
	all, err := b.admin.ListConfig(ctxT(t), &filav1.ListConfigRequest{})
	require.NoError(t, err)
	require.EqualValues(t, 2, all.GetTotalCount(), "other is gone")
}
