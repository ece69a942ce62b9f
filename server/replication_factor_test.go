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

	"github.com/fila-dev/filad/cluster"
	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/gateway"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/server"
	"github.com/fila-dev/filad/storage"
)

// TestANonHolderFindsTheLeaderThroughAMember: at replication factor 2 on
// three nodes, a node that holds no replica of a queue's partition
// forwards a call to the member it guesses, the one rendezvous ranks
// first. That member is made a follower first, so it refuses, naming the
// leader; the call is made there once, and succeeds (two forwards). The
// guess then names the leader: calls forward once, a stream opened there
// is refused naming the leader's address, and its status names it. The periodic
// refresh is off (an hour), so the forwards alone find the leader.
func TestANonHolderFindsTheLeaderThroughAMember(t *testing.T) {
	q := startGuessedQueue(t, "guessed")
	tr, svcs, admins, g, queue := q.tr, q.svcs, q.admins, q.g, q.queue
	first, second, other := q.first, q.second, q.other
	ctx := clusterCtx(t)

	srv := tr.srvs[other-1]
	before := srv.Forwarded().Load()
	_, err := svcs[other-1].Enqueue(ctx, &filav1.EnqueueRequest{Queue: queue, Payload: []byte("one")})
	require.NoError(t, err, "enqueue through node %d, which holds no replica", other)
	require.Equal(t, before+2, srv.Forwarded().Load(), "forwarded to the guess (node %d), then to the leader it named (node %d)", first, second)
	// The broker points its directory at the new guess (PlacementChanged):
	// from then on a call forwards once.
	eventuallyTrue(t, func() (bool, string) {
		before := srv.Forwarded().Load()
		_, err := svcs[other-1].Enqueue(ctx, &filav1.EnqueueRequest{Queue: queue, Payload: []byte("more")})
		require.NoError(t, err)
		n := srv.Forwarded().Load() - before
		return n == 1, fmt.Sprintf("an enqueue through node %d forwarded %d times", other, n)
	})

	eventuallyTrue(t, func() (bool, string) {
		var trailer metadata.MD
		stream, err := svcs[other-1].Consume(ctx, &filav1.ConsumeRequest{Queue: queue}, grpc.Trailer(&trailer))
		if err == nil {
			_, err = stream.Recv()
		}
		hint := trailer.Get(gateway.LeaderHintMetadata)
		return status.Code(err) == codes.Unavailable && slices.Equal(hint, []string{tr.addrs[second-1]}),
			fmt.Sprintf("consume through node %d: %v, hint %v (the leader is at %s)", other, err, hint, tr.addrs[second-1])
	})
	// Its status names the leader it learnt, and no members.
	st, err := admins[other-1].GetClusterStatus(ctx, &filav1.GetClusterStatusRequest{})
	require.NoError(t, err)
	require.Equal(t, second, st.GetGroups()[g].GetLeaderNodeId())
	require.Empty(t, st.GetGroups()[g].GetVoterIds())
}

// guessedQueue is a trio at replication factor 2, its refresh of learnt
// leaders off (an hour), and a queue whose partition's leadership was
// moved to the replica ranked second: the node holding no replica
// (other) guesses the first, a follower.
type guessedQueue struct {
	tr                   *trio
	svcs                 []filav1.FilaServiceClient
	admins               []filav1.FilaAdminClient
	queue                string
	g                    uint64
	first, second, other uint64
}

func startGuessedQueue(t *testing.T, queue string) guessedQueue {
	t.Helper()
	tr := startTrio(t, trioOptions{
		cfg:  func(_ int, c *config.Config) { c.Cluster.ReplicationFactor, c.Cluster.LeaderBalance = 2, false },
		opts: func(int) server.Options { return server.Options{LeaderRefresh: time.Hour} },
	})
	ctx := clusterCtx(t)
	q := guessedQueue{tr: tr, queue: queue, svcs: make([]filav1.FilaServiceClient, len(tr.addrs)), admins: make([]filav1.FilaAdminClient, len(tr.addrs))}
	for i, addr := range tr.addrs {
		conn := dialAddr(t, addr)
		q.svcs[i], q.admins[i] = filav1.NewFilaServiceClient(conn), filav1.NewFilaAdminClient(conn)
	}
	_, err := q.admins[0].CreateQueue(ctx, &filav1.CreateQueueRequest{Name: queue})
	require.NoError(t, err)
	q.g = cluster.GroupOf(storage.Owner{Family: queue}, 4)
	replicas := cluster.ReplicasOf(q.g, []uint64{1, 2, 3}, 2)
	q.first, q.second = replicas[0], replicas[1]
	q.other = 6 - q.first - q.second // the node holding no replica
	st, err := q.admins[q.other-1].GetClusterStatus(ctx, &filav1.GetClusterStatusRequest{})
	require.NoError(t, err)
	require.Empty(t, st.GetGroups()[q.g].GetVoterIds(), "node %d holds partition %d", q.other, q.g)

	_, err = q.admins[q.first-1].TransferLeader(ctx, &filav1.TransferLeaderRequest{GroupId: q.g, NodeId: q.second})
	require.NoError(t, err, "partition %d's leadership to node %d", q.g, q.second)
	eventuallyTrue(t, func() (bool, string) { // the new leader serves the queue itself
		before := tr.srvs[q.second-1].Forwarded().Load()
		_, err := q.svcs[q.second-1].Enqueue(ctx, &filav1.EnqueueRequest{Queue: queue, Payload: []byte("at the leader")})
		return err == nil && tr.srvs[q.second-1].Forwarded().Load() == before, fmt.Sprintf("enqueue at node %d: %v", q.second, err)
	})
	return q
}

// A batch through a node that holds no replica goes to its guess, a
// follower, which refuses the item (UNAVAILABLE: a batch's item names no
// leader). That counts as a miss: the guess moves on to the next replica,
// the leader, and a later batch is served. The refresh is off, so the
// batch's own answer alone corrects the guess; without it every batch
// through that node would be refused.
func TestABatchRefusedAtAGuessMovesTheGuessOn(t *testing.T) {
	q := startGuessedQueue(t, "batched")
	ctx := clusterCtx(t)
	batch := func() *filav1.Status {
		resp, err := q.svcs[q.other-1].EnqueueBatch(ctx, &filav1.EnqueueBatchRequest{Messages: []*filav1.EnqueueRequest{{Queue: q.queue, Payload: []byte("one")}}})
		require.NoError(t, err)
		require.Len(t, resp.GetResults(), 1)
		return resp.GetResults()[0].GetError()
	}
	first := batch()
	require.Equal(t, int32(codes.Unavailable), first.GetCode(), "the guess, node %d, is a follower: %v", q.first, first)
	eventuallyTrue(t, func() (bool, string) {
		st := batch()
		return st.GetCode() == 0, fmt.Sprintf("a batch through node %d: %v", q.other, st)
	})
	st, err := q.admins[q.other-1].GetClusterStatus(ctx, &filav1.GetClusterStatusRequest{})
	require.NoError(t, err)
	require.Equal(t, q.second, st.GetGroups()[q.g].GetLeaderNodeId(), "node %d learnt the leader", q.other)
}
