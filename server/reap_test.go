package server_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/storage"
)

// familyKeys counts what store holds of queue: its messages, its leases
// (up to 1 each, enough to tell none from some) and whether it is marked
// deleted.
func familyKeys(t *testing.T, s storage.Store, queue string) (msgs, leases int, marked bool) {
	t.Helper()
	m, err := s.QueueItems(queue, false, "", 1)
	require.NoError(t, err)
	l, err := s.QueueItems(queue, true, "", 1)
	require.NoError(t, err)
	deleted, err := s.DeletedQueues()
	require.NoError(t, err)
	return len(m), len(l), slices.Contains(deleted, queue)
}

// doomedQueue creates queues until one's partition is led by another node
// than the meta leader, and returns it with the meta leader's and its
// leader's index. It skips the test when the meta leader leads them all.
func doomedQueue(t *testing.T, tr *trio) (queue string, meta, leader int) {
	t.Helper()
	for i := range 8 {
		q := fmt.Sprint("doomed", i)
		meta = createQueue(t, tr, q)
		if leader = leaderOf(t, tr, q); leader != meta {
			return q, meta, leader
		}
	}
	t.Skip("the meta leader leads every partition tried (elections on a busy machine)")
	return "", 0, 0
}

// deleteAtMeta deletes queue through the meta leader itself (a forwarded
// call is not forwarded again).
func deleteAtMeta(t *testing.T, tr *trio, meta int, queue string) error {
	conn := dialAddr(t, tr.internal[meta], grpc.WithUnaryInterceptor(asForwarded))
	_, err := filav1.NewFilaAdminClient(conn).DeleteQueue(ctxT(t), &filav1.DeleteQueueRequest{Queue: queue})
	return err
}

// requireReaped waits until no running node's store holds a message, a
// lease or a live deletion mark of queue or its DLQ.
func requireReaped(t *testing.T, tr *trio, queue string, delErr func() error) {
	t.Helper()
	for i, s := range tr.srvs {
		if s == nil {
			continue
		}
		eventuallyTrue(t, func() (bool, string) {
			msgs, leases, marked := familyKeys(t, s.StoreForTest(), queue)
			dlqMsgs, dlqLeases, dlqMarked := familyKeys(t, s.StoreForTest(), queue+".dlq")
			return msgs+leases+dlqMsgs+dlqLeases == 0 && !marked && !dlqMarked,
				fmt.Sprintf("node %d still holds %d+ messages, %d+ leases of %s, marked deleted: %v (delete answered %v)", i+1, msgs, leases, queue, marked, delErr())
		})
	}
}

// A queue deleted through a node that does not lead its partition (the
// meta leader, which carries out the delete) is reaped all the same: its
// partition's leader deletes the messages and leases, on every replica,
// and the marks go; the name, created again, is empty, and placed where
// it was.
func TestADeleteThroughANodeThatDoesNotLeadThePartitionReapsEverywhere(t *testing.T) {
	tr := startTrio(t, trioOptions{})
	ctx := clusterCtx(t)
	queue, meta, leader := doomedQueue(t, tr)
	svc := filav1.NewFilaServiceClient(dialAddr(t, tr.addrs[leader]))
	for i := range 20 {
		_, err := svc.Enqueue(ctx, &filav1.EnqueueRequest{Queue: queue, Payload: []byte(fmt.Sprint("m", i))})
		require.NoError(t, err)
	}
	// One message leased, so that a lease record is stored too.
	stream, err := svc.Consume(ctx, &filav1.ConsumeRequest{Queue: queue})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		for _, s := range tr.srvs {
			if msgs, leases, _ := familyKeys(t, s.StoreForTest(), queue); msgs == 0 || leases == 0 {
				return false
			}
		}
		return true
	}, waitFor, 10*time.Millisecond, "every replica holds the queue's messages and a lease")
	placed := partitionsOf(t, tr.srvs[leader].StoreForTest())[queue]
	require.NotZero(t, placed, "CreateQueue records the partition")

	delErr := deleteAtMeta(t, tr, meta, queue)
	requireReaped(t, tr, queue, func() error { return delErr })
	require.NoError(t, delErr)

	createQueue(t, tr, queue)
	require.Eventually(t, func() bool {
		for _, s := range tr.srvs {
			if partitionsOf(t, s.StoreForTest())[queue] != placed {
				return false
			}
		}
		return true
	}, waitFor, 10*time.Millisecond, "every node records the name created again on its partition")
	untilServed(t, tr, -1, func(conn *grpc.ClientConn, md *metadata.MD) error {
		st, err := filav1.NewFilaAdminClient(conn).GetStats(ctx, &filav1.GetStatsRequest{Queue: queue}, grpc.Trailer(md))
		if status.Code(err) == codes.NotFound {
			return status.Error(codes.Unavailable, "not applied here yet")
		}
		if err == nil && st.GetDepth() != 0 {
			return fmt.Errorf("the queue created again holds %d messages", st.GetDepth())
		}
		return err
	})
}

// The partition's leader stops while it reaps (stopped once its replica
// shows the first step applied, if the poll catches the reap under way):
// the next leader reaps what is left, on every node still running, and
// the delete answers.
func TestAReapCutByALeaderChangeIsFinishedByTheNext(t *testing.T) {
	tr := startTrio(t, trioOptions{})
	ctx := clusterCtx(t)
	queue, meta, leader := doomedQueue(t, tr)
	svc := filav1.NewFilaServiceClient(dialAddr(t, tr.addrs[leader]))
	const n = 3000 // three steps of the reap
	for i := 0; i < n; i += 500 {
		batch := &filav1.EnqueueBatchRequest{}
		for j := range 500 {
			batch.Messages = append(batch.Messages, &filav1.EnqueueRequest{Queue: queue, Payload: []byte(fmt.Sprint("m", i+j))})
		}
		_, err := svc.EnqueueBatch(ctx, batch)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		ids, err := tr.srvs[leader].StoreForTest().QueueItems(queue, false, "", n)
		return err == nil && len(ids) == n
	}, waitFor, 10*time.Millisecond, "the leader holds every message")

	done := make(chan error, 1)
	go func() { done <- deleteAtMeta(t, tr, meta, queue) }()
	under := false
	for deadline := time.Now().Add(waitFor); time.Now().Before(deadline); {
		ids, err := tr.srvs[leader].StoreForTest().QueueItems(queue, false, "", n)
		require.NoError(t, err)
		if len(ids) < n {
			under = len(ids) > 0
			break
		}
		time.Sleep(time.Millisecond) // polls the replica for the first step
	}
	require.NoError(t, tr.srvs[leader].Shutdown(context.Background()))
	tr.srvs[leader] = nil
	t.Logf("the leader stopped with the reap under way: %v", under)

	var delErr error
	got := false
	answer := func() error { // the delete's answer so far, for the message
		if !got {
			select {
			case delErr = <-done:
				got = true
			default:
			}
		}
		return delErr
	}
	requireReaped(t, tr, queue, answer)
	if !got {
		delErr = <-done
	}
	require.NoError(t, delErr, "the delete answers once the next leader has reaped")
}
