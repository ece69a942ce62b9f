package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/actors"
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
	// tick and electionTicks are the raft timing: what bounds a transfer.
	tick          time.Duration
	electionTicks int
}

var _ gateway.ClusterView = clusterStatus{}

// Status implements gateway.ClusterView: every group as the driver last
// saw it, and each member with the groups this node sees it lead. A
// partition this node holds no replica of (a replication factor below the
// node count) shows the leader it learnt, no term, and no members: it has
// no raft view of them (ask a replica).
func (c clusterStatus) Status() *filav1.GetClusterStatusResponse {
	resp := &filav1.GetClusterStatusResponse{Enabled: true, NodeId: c.self}
	led, voter, learner := map[uint64]uint32{}, map[uint64]uint32{}, map[uint64]uint32{}
	for g := uint64(0); g <= uint64(c.partitions); g++ {
		st, _ := c.driver.Status(g)
		if !st.Holds(c.self) && g != cluster.MetaGroup {
			// A stale view (a group this node was taken out of) or none.
			st = cluster.GroupStatus{Leader: c.LearntLeader(g)}
		}
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

// Leader transfer (issue 25).

// transferWait bounds a TransferLeader whose caller set no deadline: 5
// election timeouts (raft gives a transfer one, the election that follows
// takes a little more).
func (c clusterStatus) transferWait() time.Duration {
	return 5 * time.Duration(c.electionTicks) * c.tick
}

// TransferLeader implements gateway.ClusterView: the group's leadership to
// node, on this node if it leads the group, else refused with the
// leader's hint (an actors.NotLeaderError) for the proxy to forward.
func (c clusterStatus) TransferLeader(ctx context.Context, group, node uint64) (uint64, error) {
	if group > uint64(c.partitions) {
		return 0, status.Errorf(codes.InvalidArgument, "group_id: %d is no group (0 is the meta group, 1..%d the partitions)", group, c.partitions)
	}
	if _, ok := c.nodes.Get(node); !ok {
		return 0, status.Errorf(codes.InvalidArgument, "node_id: %d is not a member of the cluster", node)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.transferWait())
		defer cancel()
	}
	err := c.driver.TransferLeader(ctx, group, node)
	var nl *cluster.NotLeaderError
	switch {
	case err == nil:
		st, _ := c.driver.Status(group)
		return st.Term, nil
	case errors.As(err, &nl):
		return 0, &actors.NotLeaderError{Queue: groupName(group), LeaderAddr: c.nodes.ClientAddr(nl.Leader), LeaderNode: nl.Leader}
	case errors.Is(err, cluster.ErrNotVoter):
		return 0, status.Errorf(codes.FailedPrecondition, "node_id: node %d is not a voter of group %d: %v", node, group, err)
	case errors.Is(err, context.DeadlineExceeded):
		return 0, status.Errorf(codes.DeadlineExceeded, "%v (is node %d up and caught up?)", err, node)
	case errors.Is(err, context.Canceled):
		return 0, status.Error(codes.Canceled, err.Error())
	default:
		return 0, status.Error(codes.Unavailable, err.Error())
	}
}

// groupName names a group in a refusal.
func groupName(group uint64) string {
	if group == cluster.MetaGroup {
		return "group 0 (meta)"
	}
	return fmt.Sprintf("group %d", group)
}
