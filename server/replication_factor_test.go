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
	tr := startTrio(t, trioOptions{
		cfg:  func(_ int, c *config.Config) { c.Cluster.ReplicationFactor, c.Cluster.LeaderBalance = 2, false },
		opts: func(int) server.Options { return server.Options{LeaderRefresh: time.Hour} },
	})
	ctx := clusterCtx(t)
	svcs := make([]filav1.FilaServiceClient, len(tr.addrs))
	admins := make([]filav1.FilaAdminClient, len(tr.addrs))
	for i, addr := range tr.addrs {
		conn := dialAddr(t, addr)
		svcs[i], admins[i] = filav1.NewFilaServiceClient(conn), filav1.NewFilaAdminClient(conn)
	}
	const queue = "guessed"
	_, err := admins[0].CreateQueue(ctx, &filav1.CreateQueueRequest{Name: queue})
	require.NoError(t, err)
	g := cluster.GroupOf(storage.Owner{Family: queue}, 4)
	replicas := cluster.ReplicasOf(g, []uint64{1, 2, 3}, 2)
	first, second := replicas[0], replicas[1]
	other := 6 - first - second // the node holding no replica
	st, err := admins[other-1].GetClusterStatus(ctx, &filav1.GetClusterStatusRequest{})
	require.NoError(t, err)
	require.Empty(t, st.GetGroups()[g].GetVoterIds(), "node %d holds partition %d", other, g)

	_, err = admins[first-1].TransferLeader(ctx, &filav1.TransferLeaderRequest{GroupId: g, NodeId: second})
	require.NoError(t, err, "partition %d's leadership to node %d", g, second)
	eventuallyTrue(t, func() (bool, string) { // the new leader serves the queue itself
		before := tr.srvs[second-1].Forwarded().Load()
		_, err := svcs[second-1].Enqueue(ctx, &filav1.EnqueueRequest{Queue: queue, Payload: []byte("at the leader")})
		return err == nil && tr.srvs[second-1].Forwarded().Load() == before, fmt.Sprintf("enqueue at node %d: %v", second, err)
	})

	srv := tr.srvs[other-1]
	before := srv.Forwarded().Load()
	_, err = svcs[other-1].Enqueue(ctx, &filav1.EnqueueRequest{Queue: queue, Payload: []byte("one")})
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
	st, err = admins[other-1].GetClusterStatus(ctx, &filav1.GetClusterStatusRequest{})
	require.NoError(t, err)
	require.Equal(t, second, st.GetGroups()[g].GetLeaderNodeId())
	require.Empty(t, st.GetGroups()[g].GetVoterIds())
}
