package server_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/gateway"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/telemetry"
	"github.com/fila-dev/filad/telemetry/telemetrytest"
)

// TestEnqueueBatchItemsFailAlone: one batch for two queues, with an item
// for each row of SPEC §4 a message can break. Each bad item gets its own
// status; the rest are stored, in order, and counted exactly.
func TestEnqueueBatchItemsFailAlone(t *testing.T) {
	t.Parallel()
	b, h := harnessed(t, setupOpts{cfg: func(c *config.Config) { c.Server.MaxMessageBytes = 1024 }})
	b.createQueue(t, "a", nil)
	b.createQueue(t, "b", nil)
	item := func(queue, payload string, headers map[string]string) *filav1.EnqueueRequest {
		return &filav1.EnqueueRequest{Queue: queue, Payload: []byte(payload), Headers: headers}
	}
	batch := []*filav1.EnqueueRequest{
		item("a", "a1", nil),
		item("nope", "x", nil), // unknown queue
		item("b", "b1", nil),
		item("a", strings.Repeat("x", 1025), nil),                 // payload over the limit
		item("a b", "x", nil),                                     // bad name
		item("b", "x", map[string]string{"fila-weight": "heavy"}), // bad weight
		item("a", "a2", nil),
		item("b", "b2", map[string]string{strings.Repeat("k", 300): ""}), // header key too long
	}
	want := []codes.Code{codes.OK, codes.NotFound, codes.OK, codes.InvalidArgument, codes.InvalidArgument, codes.InvalidArgument, codes.OK, codes.InvalidArgument}
	resp, err := b.svc.EnqueueBatch(ctxT(t), &filav1.EnqueueBatchRequest{Messages: batch})
	require.NoError(t, err)
	require.Len(t, resp.GetResults(), len(batch))
	for i, r := range resp.GetResults() {
		if want[i] == codes.OK {
			require.NotEmpty(t, r.GetMessageId(), "item %d: %v", i, r.GetError())
			continue
		}
		require.EqualValues(t, want[i], r.GetError().GetCode(), "item %d: %s", i, r.GetError().GetMessage())
		require.NotEmpty(t, r.GetError().GetMessage())
	}
	require.Contains(t, resp.GetResults()[3].GetError().GetMessage(), "server.max_message_bytes")

	// Exactly the good ones are stored, in batch order within each queue.
	for queue, payloads := range map[string][]string{"a": {"a1", "a2"}, "b": {"b1"}} {
		require.EqualValues(t, len(payloads), b.stats(t, queue).GetDepth(), queue)
		stream, _ := b.lease(t, queue)
		for i, m := range recvN(t, stream, len(payloads)) {
			require.Equal(t, payloads[i], string(m.GetPayload()))
		}
		h.AssertCounter(t, telemetry.MetricEnqueued, qattr(queue), int64(len(payloads)))
	}
}

func TestBatchOverALimitIsRefusedWhole(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{cfg: func(c *config.Config) { c.Server.MaxBatchItems = 3; c.Server.MaxBatchBytes = 100 }})
	b.createQueue(t, "q", nil)
	var four []*filav1.EnqueueRequest
	for range 4 {
		four = append(four, &filav1.EnqueueRequest{Queue: "q"})
	}
	_, err := b.svc.EnqueueBatch(ctxT(t), &filav1.EnqueueBatchRequest{Messages: four})
	requireCode(t, err, codes.InvalidArgument)
	require.ErrorContains(t, err, "4 items is over the limit of 3 (server.max_batch_items)")
	_, err = b.svc.EnqueueBatch(ctxT(t), &filav1.EnqueueBatchRequest{Messages: []*filav1.EnqueueRequest{
		{Queue: "q", Payload: make([]byte, 60)}, {Queue: "q", Payload: make([]byte, 60)},
	}})
	requireCode(t, err, codes.InvalidArgument)
	require.ErrorContains(t, err, "server.max_batch_bytes")
	var acks []*filav1.AckRequest
	for range 4 {
		acks = append(acks, &filav1.AckRequest{Queue: "q", MessageId: "01936f0e-7b4c-7d2a-9c3e-2f1a0b9c8d7e"})
	}
	_, err = b.svc.AckBatch(ctxT(t), &filav1.AckBatchRequest{Acks: acks})
	requireCode(t, err, codes.InvalidArgument)
	b.requireEmpty(t, "q")
}

// TestSettleBatches: acks and nacks in batches, each with its own status:
// a good one, a stale lease, an unknown id, a malformed id.
func TestSettleBatches(t *testing.T) {
	t.Parallel()
	b, h := harnessed(t, setupOpts{})
	b.createQueue(t, "s", nil)
	for i := range 6 {
		b.enqueue(t, "s", nil, []byte(fmt.Sprint(i)))
	}
	stream, err := b.svc.Consume(ctxT(t), &filav1.ConsumeRequest{Queue: "s", MaxInFlight: 6, MaxBatch: 6})
	require.NoError(t, err)
	var msgs []*filav1.Message
	for len(msgs) < 6 {
		resp, err := stream.Recv()
		require.NoError(t, err)
		require.Nil(t, resp.GetMessage(), "frames use messages")
		msgs = append(msgs, resp.GetMessages()...)
	}
	ack := func(m *filav1.Message) *filav1.AckRequest {
		return &filav1.AckRequest{Queue: "s", MessageId: m.GetId(), LeaseId: m.GetLeaseId()}
	}
	stale := ack(msgs[3])
	stale.LeaseId = "0000000000000000-1"
	resp, err := b.svc.AckBatch(ctxT(t), &filav1.AckBatchRequest{Acks: []*filav1.AckRequest{
		ack(msgs[0]), ack(msgs[1]), stale,
		{Queue: "s", MessageId: "01936f0e-7b4c-7d2a-9c3e-2f1a0b9c8d7e"},
		{Queue: "s", MessageId: "not-an-id"},
	}})
	require.NoError(t, err)
	var codesGot []codes.Code
	for _, r := range resp.GetResults() {
		codesGot = append(codesGot, codes.Code(r.GetCode()))
	}
	require.Equal(t, []codes.Code{codes.OK, codes.OK, codes.FailedPrecondition, codes.NotFound, codes.InvalidArgument}, codesGot)
	nresp, err := b.svc.NackBatch(ctxT(t), &filav1.NackBatchRequest{Nacks: []*filav1.NackRequest{
		{Queue: "s", MessageId: msgs[2].GetId(), LeaseId: msgs[2].GetLeaseId(), Error: "later"},
		{Queue: "s", MessageId: msgs[0].GetId(), LeaseId: msgs[0].GetLeaseId()}, // already acked
	}})
	require.NoError(t, err)
	require.EqualValues(t, codes.OK, nresp.GetResults()[0].GetCode())
	require.EqualValues(t, codes.NotFound, nresp.GetResults()[1].GetCode())
	st := b.stats(t, "s")
	require.EqualValues(t, 3, st.GetInFlight()+st.GetDepth()-1, "two acked, one nacked back")
	h.AssertCounter(t, telemetry.MetricAcked, qattr("s"), 2)
	h.AssertCounter(t, telemetry.MetricNacked, qattr("s"), 1)
}

// TestFairnessWithFrames: DRR shares are per message, not per frame.
func TestFairnessWithFrames(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.createQueue(t, "fair", nil)
	weights := map[string]int{"a": 1, "b": 2, "c": 3}
	var batch []*filav1.EnqueueRequest
	for key, w := range weights {
		for range 600 {
			batch = append(batch, &filav1.EnqueueRequest{Queue: "fair", Headers: map[string]string{"fila-fairness-key": key, "fila-weight": fmt.Sprint(w)}})
		}
	}
	for len(batch) > 0 {
		n := min(len(batch), 900)
		resp, err := b.svc.EnqueueBatch(ctxT(t), &filav1.EnqueueBatchRequest{Messages: batch[:n]})
		require.NoError(t, err)
		for _, r := range resp.GetResults() {
			require.NotEmpty(t, r.GetMessageId(), r.GetError().GetMessage())
		}
		batch = batch[n:]
	}
	stream, err := b.svc.Consume(ctxT(t), &filav1.ConsumeRequest{Queue: "fair", MaxInFlight: 1800, MaxBatch: 64})
	require.NoError(t, err)
	got := map[string]int{}
	frames, n := 0, 0
	for n < 600 {
		r, err := stream.Recv()
		require.NoError(t, err)
		frames++
		for _, m := range r.GetMessages() {
			if n < 600 {
				got[m.GetMetadata().GetFairnessKey()]++
			}
			n++
		}
	}
	t.Logf("600 messages in %d frames: %v", frames, got)
	require.Less(t, frames, 600, "frames carry more than one message")
	for key, w := range weights {
		share := float64(got[key]) / 600
		require.InDelta(t, float64(w)/6, share, 0.01, "key %s", key)
	}
}

// TestBatchTracing: a batch's server span counts its messages and links to
// each message's own trace; a message carrying a traceparent gets its
// enqueue span in its own trace, the others in the batch call's.
func TestBatchTracing(t *testing.T) {
	t.Parallel()
	b, h := harnessed(t, setupOpts{})
	b.createQueue(t, "tr", nil)
	const own = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	resp, err := b.svc.EnqueueBatch(ctxT(t), &filav1.EnqueueBatchRequest{Messages: []*filav1.EnqueueRequest{
		{Queue: "tr", Headers: map[string]string{"traceparent": own}},
		{Queue: "tr"},
	}})
	require.NoError(t, err)
	require.Len(t, resp.GetResults(), 2)
	server := h.FindSpan(t, "fila.v1.FilaService/EnqueueBatch", nil)
	require.True(t, telemetrytest.HasAttr(server, attribute.Int("messaging.batch.message_count", 2)))
	require.Len(t, server.Links(), 1)
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", server.Links()[0].SpanContext.TraceID().String())
	var traces []string
	for _, s := range h.Spans(telemetry.SpanEnqueue) {
		traces = append(traces, s.SpanContext().TraceID().String())
	}
	require.ElementsMatch(t, []string{"4bf92f3577b34da6a3ce929d0e0e4736", server.SpanContext().TraceID().String()}, traces)
}

// TestEnqueueBatchStopAtRefusal: with the fila-batch-stop-at-refusal
// metadata (fila enqueue --lines), the items after the first refused one are
// ABORTED and not stored, whether the gateway or the queue refused it;
// without it they are stored (TestEnqueueBatchItemsFailAlone).
func TestEnqueueBatchStopAtRefusal(t *testing.T) {
	t.Parallel()
	b, _ := harnessed(t, setupOpts{cfg: func(c *config.Config) { c.Server.MaxMessageBytes = 1024 }})
	item := func(queue, payload string, headers map[string]string) *filav1.EnqueueRequest {
		return &filav1.EnqueueRequest{Queue: queue, Payload: []byte(payload), Headers: headers}
	}
	tests := []struct {
		queue string
		batch []*filav1.EnqueueRequest
		want  []codes.Code
	}{
		// The gateway refuses the payload.
		{"gw", []*filav1.EnqueueRequest{item("gw", "1", nil), item("gw", strings.Repeat("x", 1025), nil), item("gw", "3", nil), item("gw", "4", nil)},
			[]codes.Code{codes.OK, codes.InvalidArgument, codes.Aborted, codes.Aborted}},
		// The queue actor refuses the weight.
		{"actor", []*filav1.EnqueueRequest{item("actor", "1", nil), item("actor", "2", nil), item("actor", "x", map[string]string{"fila-weight": "heavy"}), item("actor", "4", nil)},
			[]codes.Code{codes.OK, codes.OK, codes.InvalidArgument, codes.Aborted}},
	}
	for _, tt := range tests {
		b.createQueue(t, tt.queue, nil)
		ctx := metadata.AppendToOutgoingContext(ctxT(t), gateway.StopAtRefusalMetadata, "true")
		resp, err := b.svc.EnqueueBatch(ctx, &filav1.EnqueueBatchRequest{Messages: tt.batch})
		require.NoError(t, err)
		stored := 0
		for i, r := range resp.GetResults() {
			require.EqualValues(t, tt.want[i], r.GetError().GetCode(), "%s item %d: %s", tt.queue, i, r.GetError().GetMessage())
			if tt.want[i] == codes.OK {
				stored++
			}
			if tt.want[i] == codes.Aborted {
				require.Contains(t, r.GetError().GetMessage(), "not stored: an earlier message of this batch was refused")
			}
		}
		require.EqualValues(t, stored, b.stats(t, tt.queue).GetDepth(), tt.queue)
	}
}
