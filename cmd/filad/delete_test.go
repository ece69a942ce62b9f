package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// TestKill9DuringDeleteQueueLeavesBothOrNeither (issue 19, row 7) kills
// filad at varied moments of a DeleteQueue of a queue holding 3,000
// messages (some leased) whose DLQ holds 3,000 dead letters, and checks
// after the restart: either both queues are there with every message, or
// neither is; and a queue created again under the name is empty, its DLQ
// too. Before the fix, a kill between the two queues' deletes left the DLQ
// with its 3,000 messages, and the new queue adopted them.
//
// The kill moments are fractions of how long an uninterrupted delete took
// in the first round; where they land only decides which of the two
// outcomes a round sees, never whether it passes. Odd rounds kill filad a
// second time at once after the restart, while recovery finishes the delete.
func TestKill9DuringDeleteQueueLeavesBothOrNeither(t *testing.T) {
	const perQueue = 3000
	var full time.Duration // an uninterrupted delete, measured in round 0
	outcomes := map[string]int{}
	for round, at := range []float64{-1, 0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.5} {
		// A deadline per round, not one over all 13: a busy machine slows
		// every round.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		t.Cleanup(cancel)
		dataDir := t.TempDir()
		p := startFilad(t, dataDir)
		c := connect(t, p.addr)
		fillDoomed(t, ctx, c, perQueue)

		deleted := make(chan error, 1)
		start := time.Now()
		go func() {
			_, err := c.admin.DeleteQueue(ctx, &filav1.DeleteQueueRequest{Queue: "doomed"})
			deleted <- err
		}()
		if at < 0 {
			require.NoError(t, <-deleted)
			full = time.Since(start)
			t.Logf("an uninterrupted delete of %d messages and %d dead letters took %v", perQueue, perQueue, full)
			requireDoomed(t, ctx, c, 0)
			requireRecreatedEmpty(t, ctx, c)
			p.kill9(t)
			continue
		}
		time.Sleep(time.Duration(at * float64(full))) // picks the moment of the kill; nothing waits on it
		p.kill9(t)
		<-deleted // the call fails or, if the delete won the race, succeeds

		p = startFilad(t, dataDir)
		c = connect(t, p.addr)
		if round%2 == 1 {
			p.kill9(t) // again, as recovery reaps
			p = startFilad(t, dataDir)
			c = connect(t, p.addr)
		}
		left := requireBothOrNeither(t, ctx, c, perQueue)
		outcomes[left]++
		if left == "both" {
			// The delete never happened: it still can, whole.
			_, err := c.admin.DeleteQueue(ctx, &filav1.DeleteQueueRequest{Queue: "doomed"})
			require.NoError(t, err)
			requireDoomed(t, ctx, c, 0)
		}
		requireRecreatedEmpty(t, ctx, c)
		p.kill9(t)
	}
	t.Logf("outcomes after the kills: %v", outcomes)
}

// fillDoomed creates queue "doomed", enqueues n messages to it and n to its
// DLQ (as dead letters would arrive), and leases 100 of the queue's, so
// that leases too are among what a delete removes.
func fillDoomed(t *testing.T, ctx context.Context, c client, n uint64) {
	t.Helper()
	_, err := c.admin.CreateQueue(ctx, &filav1.CreateQueueRequest{Name: "doomed", Config: &filav1.QueueConfig{VisibilityTimeoutMs: 600_000}})
	require.NoError(t, err)
	for _, q := range []string{"doomed", "doomed.dlq"} {
		for sent := uint64(0); sent < n; {
			batch := &filav1.EnqueueBatchRequest{}
			for i := sent; i < min(n, sent+500); i++ {
				batch.Messages = append(batch.Messages, &filav1.EnqueueRequest{Queue: q, Payload: fmt.Appendf(nil, "%s-%d", q, i)})
			}
			resp, err := c.svc.EnqueueBatch(ctx, batch)
			require.NoError(t, err)
			for _, r := range resp.GetResults() {
				require.NotEmpty(t, r.GetMessageId(), "enqueue to %s: %v", q, r.GetError())
			}
			sent += uint64(len(batch.Messages))
		}
	}
	streamCtx, stop := context.WithCancel(ctx)
	defer stop()
	stream, err := c.svc.Consume(streamCtx, &filav1.ConsumeRequest{Queue: "doomed", MaxInFlight: 100})
	require.NoError(t, err)
	for range 100 {
		_, err := stream.Recv()
		require.NoError(t, err)
	}
	requireDoomed(t, ctx, c, n)
}

// queueSizes lists the queues with all the messages each holds. The sizes
// come from GetStats, which the queue's actor answers after it has loaded
// (ListQueues' figures are the last readings, which may not be in yet).
func queueSizes(t *testing.T, ctx context.Context, c client) map[string]uint64 {
	t.Helper()
	resp, err := c.admin.ListQueues(ctx, &filav1.ListQueuesRequest{})
	require.NoError(t, err)
	sizes := map[string]uint64{}
	for _, q := range resp.GetQueues() {
		st, err := c.admin.GetStats(ctx, &filav1.GetStatsRequest{Queue: q.GetName()})
		require.NoError(t, err)
		sizes[q.GetName()] = st.GetDepth() + st.GetInFlight() + st.GetDelayed()
	}
	return sizes
}

// requireDoomed fails unless "doomed" and its DLQ hold n messages each, or,
// for n 0, unless neither exists.
func requireDoomed(t *testing.T, ctx context.Context, c client, n uint64) {
	t.Helper()
	want := map[string]uint64{}
	if n > 0 {
		want = map[string]uint64{"doomed": n, "doomed.dlq": n}
	}
	require.Equal(t, want, queueSizes(t, ctx, c))
}

// requireBothOrNeither says which of the two allowed states filad is in,
// and fails if it is in neither.
func requireBothOrNeither(t *testing.T, ctx context.Context, c client, n uint64) string {
	t.Helper()
	sizes := queueSizes(t, ctx, c)
	if len(sizes) == 0 {
		return "neither"
	}
	require.Equal(t, map[string]uint64{"doomed": n, "doomed.dlq": n}, sizes,
		"after the kill, both queues with every message, or neither queue")
	return "both"
}

// requireRecreatedEmpty creates "doomed" again and checks that it and its
// DLQ start empty. A create answered ALREADY_EXISTS "being deleted"
// (recovery is still reaping) is polled again.
func requireRecreatedEmpty(t *testing.T, ctx context.Context, c client) {
	t.Helper()
	for {
		_, err := c.admin.CreateQueue(ctx, &filav1.CreateQueueRequest{Name: "doomed"})
		if status.Code(err) == codes.AlreadyExists && ctx.Err() == nil {
			require.ErrorContains(t, err, "being deleted")
			time.Sleep(10 * time.Millisecond) // a poll: the client is told of no end
			continue
		}
		require.NoError(t, err)
		break
	}
	require.Equal(t, map[string]uint64{"doomed": 0, "doomed.dlq": 0}, queueSizes(t, ctx, c),
		"a queue created again under the name sees no old message, in its DLQ neither")
}
