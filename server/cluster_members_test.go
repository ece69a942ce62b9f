package server_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/gateway"
	clusterv1 "github.com/fila-dev/filad/protos/fila/cluster/v1"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/server"
)

// RemoveNode through any member (a follower of the meta group forwards it
// to the leader) marks the node removed everywhere; from then on each
// node refuses its forwarded calls, without TLS too, and a Join under its
// id; AddNode refuses the id. Bad input names the field.
func TestARemovedNodeIsRefusedOnTheInternalPort(t *testing.T) {
	tr := startTrio(t, trioOptions{})
	ctx := clusterCtx(t)
	admin := filav1.NewFilaAdminClient(dialAddr(t, tr.addrs[1]))

	_, err := admin.RemoveNode(ctx, &filav1.RemoveNodeRequest{})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), "node_id")
	_, err = admin.AddNode(ctx, &filav1.AddNodeRequest{NodeId: 7, InternalAddr: "nohost"})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), "internal_addr")
	_, err = admin.RemoveNode(ctx, &filav1.RemoveNodeRequest{NodeId: 9})
	require.Equal(t, codes.NotFound, status.Code(err), "%v", err)

	forward := func(node int, claimed uint64) error {
		ctx := metadata.AppendToOutgoingContext(ctx, gateway.ForwardedMetadata, fmt.Sprint(claimed))
		_, err := filav1.NewFilaAdminClient(dialAddr(t, tr.internal[node])).ListQueues(ctx, &filav1.ListQueuesRequest{})
		return err
	}
	require.NoError(t, forward(0, 3), "the control: node 3's forwarded call is taken before its removal")

	_, err = admin.RemoveNode(ctx, &filav1.RemoveNodeRequest{NodeId: 3})
	require.NoError(t, err)
	eventuallyTrue(t, func() (bool, string) {
		st, err := admin.GetClusterStatus(ctx, &filav1.GetClusterStatusRequest{})
		return err == nil && st.GetNodes()[2].GetRemoved(), fmt.Sprintf("node 2 sees %v (%v)", st.GetNodes(), err)
	})

	// Each node refuses once it applied the mark.
	for node := range 2 {
		eventuallyTrue(t, func() (bool, string) {
			err := forward(node, 3)
			return status.Code(err) == codes.PermissionDenied && strings.Contains(status.Convert(err).Message(), "removed from the cluster"),
				fmt.Sprintf("node %d takes node 3's forwarded call: %v", node+1, err)
		})
	}
	_, err = clusterv1.NewMembershipClient(dialAddr(t, tr.internal[0])).Join(ctx, &clusterv1.JoinRequest{NodeId: 3, InternalAddr: tr.internal[2]})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	_, err = admin.AddNode(ctx, &filav1.AddNodeRequest{NodeId: 3, InternalAddr: tr.internal[2]})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), "never a member again")
}

// A node that joins with another replication factor or partition count
// than the member it asks is refused FAILED_PRECONDITION naming the
// setting and both values, and is not recorded: it would pause every
// membership change (Replica.Disagreement).
func TestAJoinWithOtherSettingsIsRefused(t *testing.T) {
	tr := startTrio(t, trioOptions{})
	ctx := clusterCtx(t)
	admin := filav1.NewFilaAdminClient(dialAddr(t, tr.addrs[0]))
	rows := []struct {
		name string
		req  *clusterv1.JoinRequest
		want string
	}{
		{"replication factor", &clusterv1.JoinRequest{ReplicationFactor: 2}, "node 4 joins with cluster.replication_factor = 2, this node has 3"},
		{"partitions", &clusterv1.JoinRequest{Partitions: 7, ReplicationFactor: 3}, "node 4 joins with cluster.partitions = 7, this node has 4"},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			row.req.NodeId, row.req.InternalAddr = 4, "127.0.0.1:1"
			for i, addr := range tr.internal { // the meta leader and the others alike
				_, err := clusterv1.NewMembershipClient(dialAddr(t, addr)).Join(ctx, row.req)
				require.Equal(t, codes.FailedPrecondition, status.Code(err), "node %d: %v", i+1, err)
				require.Contains(t, status.Convert(err).Message(), row.want)
			}
		})
	}
	st, err := admin.GetClusterStatus(ctx, &filav1.GetClusterStatusRequest{})
	require.NoError(t, err)
	require.Len(t, st.GetNodes(), 3, "a refused join recorded nothing: %v", st.GetNodes())
}

func TestAJoinRefusalSaysClusterOnce(t *testing.T) {
	err := server.JoinRefused("127.0.0.1:7001", status.Error(codes.FailedPrecondition, "cluster: node 4 joins with cluster.partitions = 7, this node has 4"))
	require.EqualError(t, err, "cluster: joining through 127.0.0.1:7001 refused (FailedPrecondition): node 4 joins with cluster.partitions = 7, this node has 4")
}
