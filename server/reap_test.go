package server_test

import (
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

// A queue deleted through a node that does not lead its partition (the
// meta leader, which carries out the delete) is reaped all the same: its
// partition's leader deletes the messages and leases, on every replica,
// and the marks go; the name, created again, is empty, and placed where
// it was.
func TestADeleteThroughANodeThatDoesNotLeadThePartitionReapsEverywhere(t *testing.T) {
	tr := startTrio(t, trioOptions{})
	ctx := ctxT(t)
	create := func(q string) int {
		return untilServed(t, tr, -1, func(conn *grpc.ClientConn, md *metadata.MD) error {
			_, err := filav1.NewFilaAdminClient(conn).CreateQueue(ctx, &filav1.CreateQueueRequest{Name: q}, grpc.Trailer(md))
			if status.Code(err) == codes.AlreadyExists {
				return nil // a retry of a create whose answer was lost
			}
			return err
		})
	}
	// A queue whose partition the meta leader does not lead.
	var queue string
	var meta, leader int
	for i := range 8 {
		q := fmt.Sprint("doomed", i)
		meta = create(q)
		if leader = leaderOf(t, tr, q); leader != meta {
			queue = q
			break
		}
	}
	if queue == "" {
		t.Skip("the meta leader leads every partition tried (elections on a busy machine)")
	}
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

	// The delete, served by the meta leader itself (a forwarded call is
	// not forwarded again).
	conn := dialAddr(t, tr.internal[meta], grpc.WithUnaryInterceptor(asForwarded))
	_, delErr := filav1.NewFilaAdminClient(conn).DeleteQueue(ctx, &filav1.DeleteQueueRequest{Queue: queue})

	deadline := time.Now().Add(waitFor)
	for i, s := range tr.srvs {
		for {
			msgs, leases, marked := familyKeys(t, s.StoreForTest(), queue)
			dlqMsgs, dlqLeases, dlqMarked := familyKeys(t, s.StoreForTest(), queue+".dlq")
			if msgs+leases+dlqMsgs+dlqLeases == 0 && !marked && !dlqMarked {
				break
			}
			require.True(t, time.Now().Before(deadline),
				"node %d still holds %d+ messages, %d+ leases of %s, marked deleted: %v (delete answered %v)", i+1, msgs, leases, queue, marked, delErr)
			time.Sleep(10 * time.Millisecond) // polls the replica; the outcome is what it holds
		}
	}
	require.NoError(t, delErr)

	create(queue)
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
