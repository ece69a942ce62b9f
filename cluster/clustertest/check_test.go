package clustertest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Builders of synthetic histories: times are small integers, each id's
// broker message id is "m-<id>".
func enq(id string, out Outcome, call, ret int64) Op {
	return fix(Op{Kind: Enqueue, ID: id, Outcome: out, Call: call, Return: ret})
}

func dlv(id, token string, call, ret int64) Op {
	return Op{Kind: Deliver, ID: id, Token: token, MessageID: "m-" + id, Outcome: OK, Call: call, Return: ret}
}

func drained(id, token string, call, ret int64) Op {
	op := dlv(id, token, call, ret)
	op.Drain = true
	return op
}

func ack(id, token string, out Outcome, call, ret int64) Op {
	return fix(Op{Kind: Ack, ID: id, Token: token, MessageID: "m-" + id, Outcome: out, Call: call, Return: ret})
}

func end(at int64) Op { return Op{Kind: DrainEnd, Outcome: OK, Call: at, Return: at} }

// fix does what History.Add does to an unknown op.
func fix(op Op) Op {
	if op.Outcome == Unknown {
		op.Return = Open
	}
	return op
}

// TestCheckerAcceptsCorrectHistories feeds histories a correct
// at-least-once broker can produce, duplicates and unknown outcomes
// included; any flag would be a false alarm in a real run.
func TestCheckerAcceptsCorrectHistories(t *testing.T) {
	for _, tc := range []struct {
		name string
		ops  []Op
	}{
		{"enqueue, deliver, ack", []Op{enq("a", OK, 0, 1), dlv("a", "t1", 2, 3), ack("a", "t1", OK, 4, 5), end(10)}},
		{"still ready at the drain", []Op{enq("a", OK, 0, 1), drained("a", "t1", 2, 3), end(10)}},
		{"redelivered after its lease expired, then acked", []Op{
			enq("a", OK, 0, 1), dlv("a", "t1", 2, 3), dlv("a", "t2", 4, 5), ack("a", "t2", OK, 6, 7), end(10)}},
		{"an expired lease's ack is refused, the next lease's taken", []Op{
			enq("a", OK, 0, 1), dlv("a", "t1", 2, 3), dlv("a", "t2", 4, 5), ack("a", "t1", Failed, 6, 7), ack("a", "t2", OK, 8, 9), end(10)}},
		{"abandoned, then found by the drain", []Op{
			enq("a", OK, 0, 1), dlv("a", "t1", 2, 3), drained("a", "t2", 5, 6), end(10)}},
		{"a lease lost in a crash: its ack fails, the drain finds it", []Op{
			enq("a", OK, 0, 1), dlv("a", "t1", 2, 3), ack("a", "t1", Failed, 4, 5), drained("a", "t2", 6, 7), end(10)}},
		{"an unknown enqueue that did not happen", []Op{enq("a", Unknown, 0, 0), end(10)}},
		{"an unknown enqueue that happened", []Op{enq("a", Unknown, 0, 0), drained("a", "t1", 3, 4), end(10)}},
		{"an unknown enqueue delivered and acked", []Op{enq("a", Unknown, 0, 0), dlv("a", "t1", 2, 3), ack("a", "t1", OK, 4, 5), end(10)}},
		{"a failed enqueue, never delivered", []Op{enq("a", Failed, 0, 1), end(10)}},
		{"an unknown ack that took effect", []Op{enq("a", OK, 0, 1), dlv("a", "t1", 2, 3), ack("a", "t1", Unknown, 4, 0), end(10)}},
		{"an unknown ack that did not: redelivered", []Op{
			enq("a", OK, 0, 1), dlv("a", "t1", 2, 3), ack("a", "t1", Unknown, 4, 0), dlv("a", "t2", 6, 7), ack("a", "t2", OK, 8, 9), end(10)}},
		{"an unknown ack that did not: at the drain", []Op{
			enq("a", OK, 0, 1), dlv("a", "t1", 2, 3), ack("a", "t1", Unknown, 4, 0), drained("a", "t2", 6, 7), end(10)}},
		{"delivered while its enqueue was still unanswered", []Op{enq("a", OK, 0, 5), dlv("a", "t1", 2, 3), ack("a", "t1", OK, 4, 6), end(10)}},
		{"leased before the ack, read from the stream's buffer after it", []Op{
			enq("a", OK, 0, 1), dlv("a", "t0", 2, 20), dlv("a", "t1", 5, 6), ack("a", "t1", OK, 7, 8), end(30)}},
		{"many ids interleaved", []Op{
			enq("a", OK, 0, 2), enq("b", Unknown, 1, 0), enq("c", OK, 1, 3), dlv("c", "c1", 3, 4), dlv("a", "a1", 3, 5),
			ack("a", "a1", OK, 6, 7), dlv("c", "c2", 6, 8), ack("c", "c1", Failed, 8, 9), drained("c", "c3", 11, 12), end(20)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Check(tc.ops)
			require.True(t, r.OK(), "%s", r)
		})
	}
}

// TestCheckerFlagsEachBugClass feeds histories of broken brokers; each must
// be flagged as the class it is, naming the id, and nothing else flagged.
func TestCheckerFlagsEachBugClass(t *testing.T) {
	type want struct{ lost, resurrected, phantoms, forked, notLinearizable []string }
	a := []string{"a"}
	for _, tc := range []struct {
		name string
		ops  []Op
		want want
	}{
		{"lost: an acknowledged enqueue never seen again", []Op{enq("a", OK, 0, 1), end(10)}, want{lost: a, notLinearizable: a}},
		{"lost: delivered, never acked, gone at the drain", []Op{
			enq("a", OK, 0, 1), dlv("a", "t1", 2, 3), end(10)}, want{lost: a, notLinearizable: a}},
		{"lost: an unknown enqueue delivered, then gone", []Op{
			enq("a", Unknown, 0, 0), dlv("a", "t1", 2, 3), ack("a", "t1", Failed, 4, 5), end(10)}, want{lost: a, notLinearizable: a}},
		{"resurrected: delivered by a lease taken after the ack returned", []Op{
			enq("a", OK, 0, 1), dlv("a", "t1", 2, 3), ack("a", "t1", OK, 4, 5), dlv("a", "t2", 6, 7), end(10)},
			want{resurrected: a, notLinearizable: a}},
		{"resurrected: found by the drain after an ok ack", []Op{
			enq("a", OK, 0, 1), dlv("a", "t1", 2, 3), ack("a", "t1", OK, 4, 5), drained("a", "t2", 6, 7), end(10)},
			want{resurrected: a, notLinearizable: a}},
		{"phantom: delivered and acked, never sent", []Op{dlv("a", "t1", 2, 3), ack("a", "t1", OK, 4, 5), end(10)}, want{phantoms: a, notLinearizable: a}},
		{"phantom: delivered although its enqueue failed", []Op{
			enq("a", Failed, 0, 1), dlv("a", "t1", 2, 3), ack("a", "t1", OK, 4, 5), end(10)}, want{phantoms: a, notLinearizable: a}},
		{"forked: one enqueue, two broker messages", []Op{
			enq("a", OK, 0, 1), dlv("a", "t1", 2, 3), ack("a", "t1", OK, 4, 5),
			func() Op { d := dlv("a", "t2", 2, 4); d.MessageID = "m-other"; return d }(), end(10)},
			want{forked: a}},
		{"not linearizable: delivered before it was enqueued", []Op{
			enq("a", OK, 5, 6), dlv("a", "t1", 2, 3), ack("a", "t1", OK, 7, 8), end(10)}, want{notLinearizable: a}},
		{"not linearizable: a superseded lease's ack taken", []Op{
			enq("a", OK, 0, 1), dlv("a", "t1", 2, 3), dlv("a", "t2", 4, 5), ack("a", "t1", OK, 6, 7), ack("a", "t2", OK, 8, 9), end(10)},
			want{notLinearizable: a}},
		{"not linearizable: the same lease delivered twice", []Op{
			enq("a", OK, 0, 1), dlv("a", "t1", 2, 3), dlv("a", "t1", 4, 5), ack("a", "t1", OK, 6, 7), end(10)},
			want{notLinearizable: a}},
		{"only the broken id is named", []Op{
			enq("a", OK, 0, 1), enq("b", OK, 0, 1), dlv("b", "t1", 2, 3), ack("b", "t1", OK, 4, 5), end(10)},
			want{lost: a, notLinearizable: a}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Check(tc.ops)
			require.False(t, r.OK(), "%s", r)
			got := want{r.Lost, r.Resurrected, r.Phantoms, r.Forked, r.NotLinearizable}
			require.Equal(t, tc.want, got, "%s", r)
		})
	}
}

// TestCheckerFailsWithoutADrain: without the final state nothing can be
// said of lost messages, so the report must not pass.
func TestCheckerFailsWithoutADrain(t *testing.T) {
	r := Check([]Op{enq("a", OK, 0, 1)})
	require.False(t, r.Drained)
	require.False(t, r.OK())
}

// TestCheckerCountsDuplicates: redeliveries are reported, not failed.
func TestCheckerCountsDuplicates(t *testing.T) {
	r := Check([]Op{
		enq("a", OK, 0, 1), dlv("a", "t1", 2, 3), dlv("a", "t2", 4, 5), dlv("a", "t3", 6, 7), ack("a", "t3", OK, 8, 9),
		enq("b", OK, 0, 1), dlv("b", "u1", 2, 3), ack("b", "u1", OK, 4, 5), end(10),
	})
	require.True(t, r.OK(), "%s", r)
	require.Equal(t, 1, r.Duplicates)
	require.Equal(t, 2, r.Redeliveries)
	require.Equal(t, 4, r.Deliveries)
}

func TestOutcomeOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Outcome
	}{
		{nil, OK},
		{status.Error(codes.FailedPrecondition, "lease expired"), Failed},
		{status.Error(codes.NotFound, "no such queue"), Failed},
		{status.Error(codes.InvalidArgument, "payload too large"), Failed},
		{status.Error(codes.ResourceExhausted, "disk full"), Failed},
		{status.Error(codes.Unavailable, "connection refused"), Unknown},
		{status.Error(codes.DeadlineExceeded, "deadline"), Unknown},
		{status.Error(codes.Internal, "storage"), Unknown},
		{status.Error(codes.Aborted, "outcome unknown"), Unknown},
		{context.DeadlineExceeded, Unknown},
		{errors.New("transport: broken pipe"), Unknown},
	} {
		require.Equal(t, tc.want, OutcomeOf(tc.err), "%v", tc.err)
	}
}

// TestScheduleReplaysFromItsSeed: the printed seed must give the same
// faults again.
func TestScheduleReplaysFromItsSeed(t *testing.T) {
	a, b := Schedule(42, 3, 4, 2), Schedule(42, 3, 4, 2)
	require.Equal(t, a, b)
	require.NotEqual(t, a, Schedule(43, 3, 4, 2))
	kinds := map[FaultKind]int{}
	for _, f := range a {
		kinds[f.Kind]++
		require.Less(t, f.Node, 3)
	}
	require.Equal(t, map[FaultKind]int{Kill9: 4, Pause: 2}, kinds)
}

func TestDeliverCall(t *testing.T) {
	require.Equal(t, int64(100), DeliverCall(timeAt(50), 100, 200), "never before the stream opened")
	require.Equal(t, int64(150), DeliverCall(timeAt(150), 100, 200), "the broker's leased_at")
	require.Equal(t, int64(200), DeliverCall(timeAt(300), 100, 200), "never after it was received")
}

func timeAt(ns int64) time.Time { return time.Unix(0, ns) }

// TestVisualize: a failing id's view is written, an HTML page naming it.
func TestVisualize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.html")
	ops := []Op{enq("a", OK, 0, 1), enq("b", OK, 0, 1), dlv("b", "t1", 2, 3), ack("b", "t1", OK, 4, 5), end(10)}
	require.Equal(t, []string{"a"}, Check(ops).NotLinearizable)
	require.NoError(t, Visualize(ops, []string{"a"}, path))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Contains(t, string(b), "<html")
	require.Contains(t, string(b), "drain holds nothing")
}
