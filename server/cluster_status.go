package server

import (
	"context"

	"github.com/fila-dev/filad/cluster"
	"github.com/fila-dev/filad/gateway"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// clusterStatus is the gateway's view of a cluster node: the placement's
// answers, and the members and groups for GetClusterStatus.
type clusterStatus struct {
	*cluster.Placement
	replica    *cluster.Replica
	self       uint64
	nodes      *cluster.Nodes
	driver     *cluster.Driver
	partitions int
}

var _ gateway.ClusterView = clusterStatus{}

// Status implements gateway.ClusterView: every group as the driver last
// saw it, and each member with the groups this node sees it lead.
func (c clusterStatus) Status() *filav1.GetClusterStatusResponse {
	resp := &filav1.GetClusterStatusResponse{Enabled: true, NodeId: c.self}
	led, voter, learner := map[uint64]uint32{}, map[uint64]uint32{}, map[uint64]uint32{}
	for g := uint64(0); g <= uint64(c.partitions); g++ {
		st, _ := c.driver.Status(g)
		resp.Groups = append(resp.Groups, &filav1.ClusterGroupStatus{GroupId: g, LeaderNodeId: st.Leader, Term: st.Term,
			CommitIndex: st.Commit, AppliedIndex: st.Applied, Voters: uint32(st.Voters),
			VoterIds: st.Conf.GetVoters(), LearnerIds: st.Conf.GetLearners()})
		if st.Leader != 0 {
			led[st.Leader]++
		}
		for _, id := range st.Conf.GetVoters() {
			voter[id]++
		}
		for _, id := range st.Conf.GetLearners() {
			learner[id]++
		}
	}
	for _, n := range c.nodes.All() {
		resp.Nodes = append(resp.Nodes, &filav1.ClusterNodeStatus{NodeId: n.ID, ClientAddr: n.ClientAddr,
			InternalAddr: n.InternalAddr, GroupsLed: led[n.ID], Removed: n.Removed, VoterIn: voter[n.ID], LearnerIn: learner[n.ID]})
	}
	return resp
}

// AddNode implements gateway.ClusterView.
func (c clusterStatus) AddNode(ctx context.Context, id uint64, internalAddr string) error {
	return c.replica.AddNode(ctx, id, internalAddr)
}

// RemoveNode implements gateway.ClusterView.
func (c clusterStatus) RemoveNode(ctx context.Context, id uint64) error {
	return c.replica.RemoveNode(ctx, id)
}
