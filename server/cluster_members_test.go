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
