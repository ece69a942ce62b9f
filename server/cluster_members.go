package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/actors"
	"github.com/fila-dev/filad/cluster"
	"github.com/fila-dev/filad/config"
	clusterv1 "github.com/fila-dev/filad/protos/fila/cluster/v1"
	"github.com/fila-dev/filad/telemetry"
)

// syncPeers makes the transport and the members' certificate check follow
// the node table: every member is a peer at its internal address, and a
// removed one too while a group (as applied here) still holds it, so that
// it can hand over what it leads; then it is dropped. Nodes.Watch calls
// it on the driver's goroutine, and the membership controller after each
// round; it does not block.
func (n *clusterNode) syncPeers() {
	// Called from the driver (after a node-table reload), a join and the
	// membership rounds: one at a time, so that a round that read the
	// table before a removal cannot write the removed peer back after.
	n.syncMu.Lock()
	defer n.syncMu.Unlock()
	addrs := map[uint64]string{}
	for _, m := range n.guard.nodes.All() {
		switch {
		case m.Removed && !n.heldByAGroup(m.ID):
			n.transport.RemovePeer(m.ID)
			continue
		case m.ID != n.self.ID && m.InternalAddr != "":
			_ = n.transport.SetPeer(m.ID, m.InternalAddr) // an error: the transport closed
		}
		addrs[m.ID] = m.InternalAddr
	}
	if n.tls != nil {
		n.tls.setMembers(addrs)
	}
}

// heldByAGroup reports whether a group's membership, as applied here,
// still holds node id.
func (n *clusterNode) heldByAGroup(id uint64) bool {
	d := n.driver.Load()
	if d == nil {
		return true // still opening: the groups are not read yet
	}
	for g := uint64(0); g <= uint64(n.partitions); g++ {
		if st, _ := d.Status(g); st.Holds(id) {
			return true
		}
	}
	return false
}

// leaving keeps the messages of msgs, from a removed node, for the groups
// that still hold it (it is leaving them: a leader hands over first); the
// others are dropped, so that a removed node that comes back believing it
// is a member disrupts no group.
func leaving(d *cluster.Driver, from uint64, msgs []*clusterv1.GroupMessage) []*clusterv1.GroupMessage {
	var kept []*clusterv1.GroupMessage
	for _, m := range msgs {
		if st, _ := d.Status(m.GetGroup()); st.Holds(from) {
			kept = append(kept, m)
		}
	}
	return kept
}

// member reports whether this node's replica belongs to the cluster
// already: its meta group has a membership (a bootstrap, or a leader that
// added it), so a restart needs no Join.
func (n *clusterNode) member() bool {
	st, _ := n.replica.Driver.Status(cluster.MetaGroup)
	return len(st.Conf.GetVoters()) > 0 || len(st.Conf.GetLearners()) > 0
}

// joinRefused is a member's refusal of this node's join, as the error
// filad stops with: the member's reason, without gRPC's wrapping or a
// second "cluster:".
func joinRefused(addr string, err error) error {
	st := status.Convert(err)
	return fmt.Errorf("cluster: joining through %s refused (%s): %s", addr, st.Code(), strings.TrimPrefix(st.Message(), "cluster: "))
}

// join asks the members at cluster.join to record this node in the meta
// group (Membership/Join), following a member's answer to the meta
// leader, until one recorded it; a node that is a member already asks
// nobody. It gives up on a refusal that asking again cannot change (a
// removed id, another address, a certificate that may not speak for this
// node), with ctx, or after as long as awaitReady waits.
func (n *clusterNode) join(ctx context.Context, cc config.Cluster, dial func(string) (*grpc.ClientConn, error), log *slog.Logger) error {
	if n.member() {
		return nil
	}
	addrs := cc.JoinAddrs()
	wait := cc.ElectionTimeout() / 2
	bound := time.Now().Add(100 * cc.ElectionTimeout())
	var next string // the meta leader a member named
	var last error
	for i := 0; ; i++ {
		addr := addrs[i%len(addrs)]
		if next != "" {
			addr, next = next, ""
		}
		resp, err := askJoin(ctx, dial, addr, &clusterv1.JoinRequest{NodeId: n.self.ID, InternalAddr: n.self.InternalAddr,
			Partitions: uint32(cc.Partitions), ReplicationFactor: uint32(cc.ReplicationFactor)}, 10*wait)
		switch code := status.Code(err); {
		case err == nil && resp.GetJoined():
			var members []cluster.NodeInfo
			for _, m := range resp.GetMembers() {
				members = append(members, cluster.NodeInfo{ID: m.GetId(), InternalAddr: m.GetInternalAddr()})
			}
			n.guard.nodes.Add(members)
			log.Info("cluster: joined: recorded in the meta group; the groups' leaders add this node as a learner, then a voter",
				slog.Uint64("node_id", n.self.ID), slog.String("via", addr), slog.Int("members", len(members)))
			return nil
		case err == nil:
			next = resp.GetLeaderInternalAddr()
			last = fmt.Errorf("%s does not lead the meta group", addr)
		case code == codes.FailedPrecondition || code == codes.PermissionDenied || code == codes.InvalidArgument:
			return joinRefused(addr, err)
		default:
			last = err
		}
		if time.Now().After(bound) {
			return fmt.Errorf("cluster: not joined through %v: %w", addrs, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

func askJoin(ctx context.Context, dial func(string) (*grpc.ClientConn, error), addr string, req *clusterv1.JoinRequest, timeout time.Duration) (*clusterv1.JoinResponse, error) {
	conn, err := dial(addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return clusterv1.NewMembershipClient(conn).Join(ctx, req)
}

// joinServer serves fila.cluster.v1.Membership on the internal port.
type joinServer struct {
	clusterv1.UnimplementedMembershipServer
	n *clusterNode
}

var _ clusterv1.MembershipServer = joinServer{}

// Leaders implements clusterv1.MembershipServer: for a member only (with
// [server.tls], its certificate checked as a forwarded call's), the
// leader this node knows of each group asked.
func (j joinServer) Leaders(ctx context.Context, req *clusterv1.LeadersRequest) (*clusterv1.LeadersResponse, error) {
	if err := j.n.guard.check(ctx, req.GetNodeId(), telemetry.PeerCallLeaders); err != nil {
		return nil, err
	}
	if _, ok := j.n.guard.nodes.Get(req.GetNodeId()); !ok {
		return nil, status.Errorf(codes.PermissionDenied, "node %d is no member of this cluster", req.GetNodeId())
	}
	if len(req.GetGroups()) > j.n.partitions+1 {
		return nil, status.Errorf(codes.InvalidArgument, "groups: %d is over the %d groups of this cluster", len(req.GetGroups()), j.n.partitions+1)
	}
	return &clusterv1.LeadersResponse{Leaders: j.n.replica.Leaders(req.GetGroups()), GroupsLed: uint32(j.n.replica.GroupsLed())}, nil
}

// Join implements clusterv1.MembershipServer: the meta leader records the
// caller (Replica.AddNode); another member names the leader. With
// [server.tls] the caller's certificate must name the host of the
// internal address it joins with (and its id, if it names ids), as a
// member's must.
func (j joinServer) Join(ctx context.Context, req *clusterv1.JoinRequest) (*clusterv1.JoinResponse, error) {
	id, addr := req.GetNodeId(), req.GetInternalAddr()
	if id == 0 {
		return nil, status.Error(codes.InvalidArgument, "node_id: must be > 0")
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "internal_addr: must be host:port (%v)", err)
	}
	err := j.n.guard.checkWith(ctx, id, telemetry.PeerCallJoin, func(cert *x509.Certificate, id uint64) error {
		return verifyNode(cert, id, addr)
	})
	if err != nil {
		return nil, err
	}
	// A member with other settings would pause every membership change
	// (Replica.Disagreement): better refused here, where the joining node
	// fails to start and says why.
	if err := j.n.replica.SettingsDiffer(fmt.Sprintf("node %d joins with", id), int(req.GetPartitions()), int(req.GetReplicationFactor())); err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	nodes := j.n.guard.nodes
	err = j.n.replica.AddNode(ctx, id, addr)
	var nl *actors.NotLeaderError
	switch {
	case errors.As(err, &nl):
		leader, _ := nodes.Get(nl.LeaderNode)
		return &clusterv1.JoinResponse{LeaderInternalAddr: leader.InternalAddr}, nil
	case errors.Is(err, actors.ErrFailedPrecondition):
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "node %d not recorded: %v", id, err)
	}
	resp := &clusterv1.JoinResponse{Joined: true}
	for _, m := range nodes.Active() {
		resp.Members = append(resp.Members, &clusterv1.JoinMember{Id: m.ID, InternalAddr: m.InternalAddr})
	}
	return resp, nil
}
