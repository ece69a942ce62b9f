package server_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

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
