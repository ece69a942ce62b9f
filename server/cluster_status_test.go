package server_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/config"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// Each node of a three-node cluster reports itself, the members with the
// client addresses they registered, and every group, with the groups
// each member leads adding up to the groups that have a leader.
func TestClusterStatusOfEachNode(t *testing.T) {
	tr := startTrio(t, trioOptions{})
	ctx := clusterCtx(t)
	for i, addr := range tr.addrs {
		admin := filav1.NewFilaAdminClient(dialAddr(t, addr))
		var resp *filav1.GetClusterStatusResponse
		// Registration is in the background: poll until every member's
		// client address is applied here.
		eventuallyTrue(t, func() (bool, string) {
			var err error
			resp, err = admin.GetClusterStatus(ctx, &filav1.GetClusterStatusRequest{})
			require.NoError(t, err)
			registered := 0
			for _, n := range resp.GetNodes() {
				if n.GetClientAddr() != "" {
					registered++
				}
			}
			return registered == len(tr.addrs), fmt.Sprintf("node %d sees %d of %d registered", i+1, registered, len(tr.addrs))
		})
		require.True(t, resp.GetEnabled())
		require.EqualValues(t, i+1, resp.GetNodeId())
		require.Len(t, resp.GetNodes(), 3)
		led := uint32(0)
		for j, n := range resp.GetNodes() {
			require.EqualValues(t, j+1, n.GetNodeId(), "members in id order")
			require.Equal(t, tr.addrs[j], n.GetClientAddr())
			require.Equal(t, tr.internal[j], n.GetInternalAddr())
			led += n.GetGroupsLed()
		}
		withLeader := uint32(0)
		for g, grp := range resp.GetGroups() {
			require.EqualValues(t, g, grp.GetGroupId(), "groups in id order, the meta group first")
			require.GreaterOrEqual(t, grp.GetCommitIndex(), grp.GetAppliedIndex())
			if grp.GetLeaderNodeId() != 0 {
				withLeader++
				require.EqualValues(t, 3, grp.GetVoters())
			}
		}
		require.Greater(t, withLeader, uint32(0))
		require.Equal(t, withLeader, led, "the groups led add up")
	}
}

// Leader transfer (issue 25).

// TransferLeader asked of a node that leads neither side reaches the
// group's leader (proxied) and answers once the target leads; what it
// refuses it names.
func TestTransferLeaderThroughAnyNode(t *testing.T) {
	tr := startTrio(t, trioOptions{cfg: func(_ int, c *config.Config) { c.Cluster.LeaderBalance = false }})
	ctx := clusterCtx(t)
	admins := make([]filav1.FilaAdminClient, len(tr.addrs))
	for i, addr := range tr.addrs {
		admins[i] = filav1.NewFilaAdminClient(dialAddr(t, addr))
	}
	const group = 1
	var leader uint64
	eventuallyTrue(t, func() (bool, string) {
		resp, err := admins[0].GetClusterStatus(ctx, &filav1.GetClusterStatusRequest{})
		require.NoError(t, err)
		leader = resp.GetGroups()[group].GetLeaderNodeId()
		registered := 0
		for _, n := range resp.GetNodes() {
			if n.GetClientAddr() != "" {
				registered++
			}
		}
		return leader != 0 && registered == 3, fmt.Sprintf("group %d leader %d, %d registered", group, leader, registered)
	})
	target := leader%3 + 1
	asked := target%3 + 1 // neither the leader nor the target
	resp, err := admins[asked-1].TransferLeader(ctx, &filav1.TransferLeaderRequest{GroupId: group, NodeId: target})
	require.NoError(t, err, "transfer group %d from node %d to %d, asked of node %d", group, leader, target, asked)
	require.Positive(t, resp.GetTerm())
	st, err := admins[leader-1].GetClusterStatus(ctx, &filav1.GetClusterStatusRequest{})
	require.NoError(t, err)
	require.Equal(t, target, st.GetGroups()[group].GetLeaderNodeId(), "the old leader sees the target lead")
	require.Equal(t, resp.GetTerm(), st.GetGroups()[group].GetTerm())

	_, err = admins[0].TransferLeader(ctx, &filav1.TransferLeaderRequest{GroupId: group, NodeId: 9})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "node_id: 9 is not a member")
	_, err = admins[0].TransferLeader(ctx, &filav1.TransferLeaderRequest{GroupId: 999, NodeId: 1})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "group_id: 999 is no group")
	_, err = admins[0].TransferLeader(ctx, &filav1.TransferLeaderRequest{GroupId: group})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
}
