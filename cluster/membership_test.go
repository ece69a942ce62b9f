package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	pb "go.etcd.io/raft/v3/raftpb"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry/telemetrytest"
)

// confs are the memberships of every group as their leaders applied them.
func (c *replicaNet) confs() map[uint64]*pb.ConfState {
	out := map[uint64]*pb.ConfState{}
	c.mu.Lock()
	defer c.mu.Unlock()
	for g := uint64(0); g <= testPartitions; g++ {
		for _, r := range c.nodes {
			if st, _ := r.Driver.Status(g); st.Leading {
				out[g] = st.Conf
			}
		}
	}
	return out
}

// everyGroup runs the controllers until each group's leader applied a
// membership that holds ok.
func (c *replicaNet) everyGroup(what string, ok func(g uint64, cs *pb.ConfState) bool) {
	c.t.Helper()
	telemetrytest.Await(c.t, patience, func() (bool, string) {
		c.settle(1)
		confs := c.confs()
		for g := uint64(0); g <= testPartitions; g++ {
			if confs[g] == nil || !ok(g, confs[g]) {
				return false, fmt.Sprintf("not every group %s: %v", what, confs)
			}
		}
		return true, ""
	})
}

// settle runs every live node's controller for rounds rounds, each
// round waiting until the changes it proposed applied: the controllers
// run only here, so that what a test sees after is what they decided.
func (c *replicaNet) settle(rounds int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	for range rounds {
		c.mu.Lock()
		nodes := maps.Clone(c.nodes)
		c.mu.Unlock()
		for id, r := range nodes {
			newMembership(r, id, testPartitions, slog.New(slog.NewTextHandler(io.Discard, nil))).Reconcile(ctx)
		}
		telemetrytest.Await(c.t, patience, func() (bool, string) {
			for _, r := range nodes {
				for g := uint64(0); g <= testPartitions; g++ {
					if p, err := r.Driver.confPending(ctx, g); p || err != nil {
						return false, fmt.Sprintf("group %d's change never applied (%v)", g, err)
					}
				}
			}
			return true, ""
		})
	}
}

// A node recorded in the table is added to the groups as a learner
// first: while it is down it stays one (it has caught up with nothing),
// and the groups commit with their old quorum. Started empty (no
// bootstrap), it catches up and is promoted to voter everywhere. A node
// then removed leaves every group, leaders included, and the rest
// serve.
func TestMembershipAddsALearnerThenAVoterAndRemoves(t *testing.T) {
	c := newReplicaNet(t, 3)
	for g := uint64(0); g <= testPartitions; g++ {
		c.leaderOf(g)
	}
	var b storage.Batch
	b.PutMessage("orders", "m1", &storagev1.MessageRecord{Payload: []byte("before")})
	c.write(&b)

	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	metaLeader := func() *Replica { return c.leaderOf(MetaGroup) }
	c.addNode(4)
	// One group at a time per leader: a leader adds the learner to its
	// next group only once the last one caught up, which a node that is
	// down never does.
	c.settle(5)
	learner := 0
	for _, cs := range c.confs() {
		if slices.Contains(cs.GetLearners(), 4) {
			learner++
		}
	}
	if learner == 0 {
		t.Fatalf("no group has node 4 as a learner: %v", c.confs())
	}
	b = storage.Batch{}
	b.PutMessage("orders", "m2", &storagev1.MessageRecord{Payload: []byte("with a learner down")})
	c.write(&b)
	for _, cs := range c.confs() {
		if slices.Contains(cs.GetVoters(), 4) {
			t.Fatalf("a learner that caught up with nothing was promoted: %v", cs)
		}
	}

	c.openWith(4, nil)
	c.everyGroup("has node 4 as a voter", func(_ uint64, cs *pb.ConfState) bool {
		return slices.Contains(cs.GetVoters(), 4) && len(cs.GetLearners()) == 0 && len(cs.GetVoters()) == 4
	})
	telemetrytest.Await(t, patience, func() (bool, string) {
		got, err := c.node(4).Local.LoadQueue("orders")
		return err == nil && len(got.Messages) == 2, fmt.Sprintf("node 4 holds %+v (%v)", got, err)
	})

	leaderOfMeta := metaLeader().Driver.opts.NodeID
	gone := leaderOfMeta // removing the meta leader: it hands the group over first
	telemetrytest.Await(t, patience, func() (bool, string) {
		err := metaLeader().RemoveNode(ctx, gone)
		return err == nil, fmt.Sprintf("RemoveNode: %v", err)
	})
	c.everyGroup(fmt.Sprintf("let node %d go", gone), func(_ uint64, cs *pb.ConfState) bool {
		return !slices.Contains(cs.GetVoters(), gone) && !slices.Contains(cs.GetLearners(), gone) && len(cs.GetVoters()) == 3
	})
	for g := uint64(0); g <= testPartitions; g++ {
		if st, _ := c.node(gone).Driver.Status(g); st.Leading {
			t.Fatalf("the removed node still leads group %d", g)
		}
	}
	c.close(gone)
	b = storage.Batch{}
	b.PutMessage("orders", "m3", &storagev1.MessageRecord{Payload: []byte("after")})
	c.write(&b)
	if err := metaLeader().AddNode(ctx, gone, c.addrs[gone]); err == nil {
		t.Fatal("a removed id was added again")
	}
}

// At replication factor 3, a node dies and a fourth joins: the ranking
// over the four (which ignores liveness) keeps the dead node in every
// partition and drops a live one. The fourth becomes a voter where it
// ranks, and the live one stays beside it while the dead one is wanted:
// taking it out would leave two live copies. Once the dead node is
// removed, every partition holds the three live nodes.
func TestALiveReplicaStaysWhileAWantedOneIsDown(t *testing.T) {
	c := newReplicaNet(t, 3, func(o *ReplicaOptions) { o.ReplicationFactor = 3 })
	const dead = 1
	displaced := 0
	for g := uint64(1); g <= testPartitions; g++ {
		want := ReplicasOf(g, []uint64{1, 2, 3, 4}, 3)
		if slices.Contains(want, dead) && slices.Contains(want, 4) {
			displaced++ // a live node ranks out
		}
	}
	require.NotZero(t, displaced, "no partition would displace a live node: the test shows nothing")
	for g := uint64(0); g <= testPartitions; g++ {
		c.leaderOf(g)
	}
	c.close(dead)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	// A leader tells a dead follower only once it has not heard from it
	// for an election timeout (raft's recent activity).
	telemetrytest.Await(t, patience, func() (bool, string) {
		for g := uint64(0); g <= testPartitions; g++ {
			r, err := c.leaderOf(g).Driver.Replication(ctx, g)
			if err != nil || r.Replicating[dead] {
				return false, fmt.Sprintf("group %d's leader still streams to node %d (%v)", g, dead, err)
			}
		}
		return true, ""
	})
	c.addNode(4)
	c.openWith(4, nil)
	c.everyGroup("has node 4 where it ranks and keeps nodes 2 and 3", func(g uint64, cs *pb.ConfState) bool {
		ranks := g == MetaGroup || slices.Contains(ReplicasOf(g, []uint64{1, 2, 3, 4}, 3), 4)
		return slices.Contains(cs.GetVoters(), 4) == ranks && len(cs.GetLearners()) == 0 &&
			slices.Contains(cs.GetVoters(), 2) && slices.Contains(cs.GetVoters(), 3)
	})

	telemetrytest.Await(t, patience, func() (bool, string) {
		err := c.leaderOf(MetaGroup).RemoveNode(ctx, dead)
		return err == nil, fmt.Sprintf("RemoveNode: %v", err)
	})
	c.everyGroup("holds the three live nodes", func(_ uint64, cs *pb.ConfState) bool {
		return slices.Equal(slices.Sorted(slices.Values(cs.GetVoters())), []uint64{2, 3, 4}) && len(cs.GetLearners()) == 0
	})
}

// Members that registered different replication factors pause every
// membership change (each ranking would undo the other's), and say so;
// once the odd one registers the cluster's factor again, the changes
// resume: here, a node added meanwhile becomes a voter.
func TestMembersThatDisagreeOnTheirSettingsChangeNoMembership(t *testing.T) {
	var odd atomic.Bool
	c := newReplicaNet(t, 3, func(o *ReplicaOptions) {
		o.ReplicationFactor = 3
		if o.NodeID == 3 && odd.Load() {
			o.ReplicationFactor = 2
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	register := func(id uint64) {
		t.Helper()
		require.NoError(t, c.node(id).Register(ctx, NodeInfo{ID: id, InternalAddr: c.addrs[id], ClientAddr: fmt.Sprintf("127.0.0.1:%d", 5554+id)}, 50*time.Millisecond))
	}
	for _, id := range c.peers {
		register(id)
	}
	for _, id := range c.peers {
		require.NoError(t, c.node(id).Disagreement(), "node %d", id)
	}

	restart3 := func(wrong bool) {
		t.Helper()
		c.close(3)
		odd.Store(wrong)
		c.open(3)
		register(3)
	}
	restart3(true)
	telemetrytest.Await(t, patience, func() (bool, string) {
		err := c.node(1).Disagreement()
		return err != nil && strings.Contains(err.Error(), "node 3 registered cluster.replication_factor = 2, this node has 3"), fmt.Sprintf("node 1: %v", err)
	})
	require.ErrorContains(t, c.node(3).Disagreement(), "registered cluster.replication_factor = 3, this node has 2")

	c.addNode(4)
	c.openWith(4, nil)
	c.settle(5)
	for g, cs := range c.confs() {
		require.False(t, slices.Contains(cs.GetVoters(), 4) || slices.Contains(cs.GetLearners(), 4), "group %d changed its membership while the members disagree: %v", g, cs)
	}

	restart3(false)
	c.everyGroup("has node 4 where it ranks", func(g uint64, cs *pb.ConfState) bool {
		ranks := g == MetaGroup || slices.Contains(ReplicasOf(g, []uint64{1, 2, 3, 4}, 3), 4)
		return slices.Contains(cs.GetVoters(), 4) == ranks && len(cs.GetLearners()) == 0
	})
}

// A registration committed after its node's removal (sent before the
// node learnt of it) leaves the record removed on every replica.
func TestARemovedNodeIsNotRevivedByALateRegistration(t *testing.T) {
	c := newReplicaNet(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	telemetrytest.Await(t, patience, func() (bool, string) {
		err := c.leaderOf(MetaGroup).RemoveNode(ctx, 3)
		return err == nil, fmt.Sprintf("RemoveNode: %v", err)
	})
	late, err := registration(NodeInfo{ID: 3, InternalAddr: c.addrs[3], ClientAddr: "127.0.0.1:5557"})
	if err != nil {
		t.Fatal(err)
	}
	telemetrytest.Await(t, patience, func() (bool, string) {
		err := c.leaderOf(MetaGroup).Driver.Propose(ctx, MetaGroup, late)
		return err == nil, fmt.Sprintf("the late registration: %v", err)
	})
	// Then an entry after it, so that every replica has applied past it.
	var b storage.Batch
	b.PutNode(&storagev1.NodeRecord{Id: 1, InternalAddr: c.addrs[1], ClientAddr: "127.0.0.1:5555"})
	c.write(&b)
	telemetrytest.Await(t, patience, func() (bool, string) {
		for _, id := range c.peers {
			got, _ := c.node(id).Nodes.Get(1)
			if got.ClientAddr != "127.0.0.1:5555" {
				return false, fmt.Sprintf("node %d has not applied the last entry", id)
			}
			if n3, _ := c.node(id).Nodes.Get(3); !n3.Removed {
				return false, fmt.Sprintf("node %d sees node 3 revived: %+v", id, n3)
			}
		}
		return true, ""
	})
}

// At replication factor 3, a fourth node is added while it is down: where
// it ranks, a live voter is to make room for it, but only once it votes.
// While it is a learner that has caught up with nothing, every group
// keeps its three voters (taking one out would leave two, and a quorum of
// two, until the learner caught up). Once it is up, each group holds the
// three the ranking wants.
func TestAVoterLeavesOnlyOnceItsReplacementVotes(t *testing.T) {
	c := newReplicaNet(t, 3, func(o *ReplicaOptions) { o.ReplicationFactor = 3 })
	all := []uint64{1, 2, 3, 4}
	displaced := false
	for g := uint64(1); g <= testPartitions; g++ {
		displaced = displaced || slices.Contains(ReplicasOf(g, all, 3), 4)
	}
	require.True(t, displaced, "node 4 ranks in no partition: the test shows nothing")
	for g := uint64(0); g <= testPartitions; g++ {
		c.leaderOf(g)
	}
	c.addNode(4)
	c.settle(5)
	learner := 0
	for g, cs := range c.confs() {
		if slices.Contains(cs.GetLearners(), 4) {
			learner++
		}
		require.Len(t, cs.GetVoters(), 3, "group %d lost a voter while node 4 was a learner: %v", g, cs)
	}
	require.NotZero(t, learner, "no group took node 4 as a learner: %v", c.confs())

	c.openWith(4, nil)
	c.everyGroup("holds the three the ranking wants", func(g uint64, cs *pb.ConfState) bool {
		want := ReplicasOf(g, all, 3)
		slices.Sort(want)
		return slices.Equal(slices.Sorted(slices.Values(cs.GetVoters())), want) && len(cs.GetLearners()) == 0
	})
}

// addNode serves node id's snapshots and records it (its address
// c.addrs[id]) in the meta group through its leader, retrying until a
// leader takes it.
func (c *replicaNet) addNode(id uint64) {
	c.t.Helper()
	c.serveSnapshots(id)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	telemetrytest.Await(c.t, patience, func() (bool, string) {
		err := c.leaderOf(MetaGroup).AddNode(ctx, id, c.addrs[id])
		return err == nil, fmt.Sprintf("AddNode: %v", err)
	})
}
