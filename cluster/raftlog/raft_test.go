package raftlog_test

import (
	"encoding/binary"
	"fmt"
	"io"
	"log"
	"math"
	"sync"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/fila-dev/filad/cluster/raftlog"
)

// The in-process cluster's timing: elections after 10 ticks of 100 ms, as
// the cluster's test config has it, so a loaded 2-core machine does not
// elect spuriously; every wait is for a condition, within waitLimit.
const (
	tickEvery = 100 * time.Millisecond
	waitLimit = 90 * time.Second
)

// envelope is one raft message for one group: what a multi-group transport
// carries.
type envelope struct {
	group uint64
	m     *pb.Message
}

// router delivers messages between the nodes of one process. A full inbox
// drops the message, as a congested link would; raft retries.
type router struct {
	mu    sync.Mutex
	inbox map[uint64]chan envelope
}

func (r *router) send(e envelope) {
	r.mu.Lock()
	ch := r.inbox[e.m.GetTo()]
	r.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- e:
	default:
	}
}

func (r *router) attach(id uint64) chan envelope {
	ch := make(chan envelope, 4096)
	r.mu.Lock()
	r.inbox[id] = ch
	r.mu.Unlock()
	return ch
}

func (r *router) detach(id uint64) {
	r.mu.Lock()
	delete(r.inbox, id)
	r.mu.Unlock()
}

type proposal struct {
	group uint64
	data  []byte
}

type replica struct {
	rn      *raft.RawNode
	log     *raftlog.Log
	cs      *pb.ConfState
	applied uint64
}

// raftNode is one member: one badger DB holding every group's log and the
// state machine, and one goroutine driving every group's RawNode the way the
// node's driver will: one Write and one sync for all groups' Ready, then
// send, then one apply transaction with the applied records, then Advance.
type raftNode struct {
	id     uint64
	dir    string
	db     *badger.DB
	store  *raftlog.Store
	net    *router
	groups map[uint64]*replica
	props  chan proposal
	stop   chan struct{}
	done   chan struct{}

	mu     sync.Mutex // guards the fields below, read by the test
	leader map[uint64]bool
	seen   map[uint64]map[string]bool // payloads applied, by group
	err    error
}

// stateKey is the test state machine's key of a normal entry's payload:
// t 0x00 <group> <index>, beside the log's keys in the same DB.
func stateKey(group, index uint64) []byte {
	k := binary.BigEndian.AppendUint64([]byte{'t', 0}, group)
	return binary.BigEndian.AppendUint64(k, index)
}

func startNode(t *testing.T, id uint64, dir string, net *router, groups int, fresh bool) *raftNode {
	t.Helper()
	n := &raftNode{
		id: id, dir: dir, net: net, db: openDBWith(t, dir, 8<<20),
		groups: map[uint64]*replica{}, props: make(chan proposal, 1024),
		stop: make(chan struct{}), done: make(chan struct{}),
		leader: map[uint64]bool{}, seen: map[uint64]map[string]bool{},
	}
	n.store = raftlog.New(n.db)
	for g := uint64(1); g <= uint64(groups); g++ {
		l, err := n.store.Log(g)
		require.NoError(t, err)
		applied, err := n.store.Applied(g)
		require.NoError(t, err)
		rn, err := raft.NewRawNode(&raft.Config{
			ID: id, ElectionTick: 10, HeartbeatTick: 1, Storage: l, Applied: applied.GetIndex(),
			MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 256, CheckQuorum: true, PreVote: true,
			Logger: &raft.DefaultLogger{Logger: log.New(io.Discard, "", 0)},
		})
		require.NoError(t, err)
		if fresh {
			require.NoError(t, rn.Bootstrap([]raft.Peer{{ID: 1}, {ID: 2}, {ID: 3}}))
			if id == 1 {
				require.NoError(t, rn.Campaign()) // a first leader without waiting for a timeout
			}
		}
		n.groups[g] = &replica{rn: rn, log: l, cs: applied.GetConfState(), applied: applied.GetIndex()}
		n.seen[g] = n.readSeen(t, g)
	}
	go n.run(net.attach(id))
	return n
}

// readSeen is every payload the state machine holds for group.
func (n *raftNode) readSeen(t *testing.T, group uint64) map[string]bool {
	seen := map[string]bool{}
	for _, d := range n.stateSequence(t, group, math.MaxUint64) {
		seen[d] = true
	}
	return seen
}

// stateSequence is group's applied payloads in log order, up to index upTo.
func (n *raftNode) stateSequence(t *testing.T, group, upTo uint64) []string {
	t.Helper()
	var out []string
	require.NoError(t, n.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: stateKey(group, 0)[:10], PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid() && binary.BigEndian.Uint64(it.Item().Key()[10:]) <= upTo; it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out = append(out, string(v))
		}
		return nil
	}))
	return out
}

func (n *raftNode) run(inbox chan envelope) {
	defer close(n.done)
	tk := time.NewTicker(tickEvery)
	defer tk.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-tk.C:
			for _, r := range n.groups {
				r.rn.Tick()
			}
		case e := <-inbox:
			if r := n.groups[e.group]; r != nil {
				_ = r.rn.Step(e.m) // a message for a stale term is refused; raft carries on
			}
		case p := <-n.props:
			_ = n.groups[p.group].rn.Propose(p.data) // dropped without a leader; the test proposes again
		}
		if err := n.ready(); err != nil {
			n.mu.Lock()
			n.err = err
			n.mu.Unlock()
			return
		}
	}
}

type groupReady struct {
	group uint64
	r     *replica
	rd    raft.Ready
}

// ready persists, sends, applies and advances every group that has a Ready.
func (n *raftNode) ready() error {
	var rds []groupReady
	w := n.store.NewWrite()
	for g, r := range n.groups {
		if !r.rn.HasReady() {
			continue
		}
		rd := r.rn.Ready()
		if !raft.IsEmptySnap(rd.Snapshot) {
			return fmt.Errorf("group %d: a snapshot, though no log is compacted", g)
		}
		w.Append(g, rd.Entries)
		w.SetHardState(g, rd.HardState)
		rds = append(rds, groupReady{group: g, r: r, rd: rd})
	}
	if len(rds) == 0 {
		return nil
	}
	if !w.Empty() {
		if err := w.Commit(); err != nil {
			return err
		}
		if err := n.db.Sync(); err != nil {
			return err
		}
	}
	for _, gr := range rds {
		for _, m := range gr.rd.Messages {
			n.net.send(envelope{group: gr.group, m: m})
		}
	}
	var applied []proposal
	err := n.db.Update(func(txn *badger.Txn) error {
		for _, gr := range rds {
			ents := gr.rd.CommittedEntries
			if len(ents) == 0 {
				continue
			}
			for _, e := range ents {
				switch e.GetType() {
				case pb.EntryType_EntryNormal:
					if len(e.GetData()) > 0 {
						if err := txn.Set(stateKey(gr.group, e.GetIndex()), e.GetData()); err != nil {
							return err
						}
						applied = append(applied, proposal{group: gr.group, data: e.GetData()})
					}
				case pb.EntryType_EntryConfChange:
					cc := &pb.ConfChange{}
					if err := proto.Unmarshal(e.GetData(), cc); err != nil {
						return err
					}
					gr.r.cs = gr.r.rn.ApplyConfChange(cc)
				default:
					return fmt.Errorf("group %d: entry type %v", gr.group, e.GetType())
				}
			}
			last := ents[len(ents)-1]
			gr.r.applied = last.GetIndex()
			if err := raftlog.SetApplied(txn, gr.group, &pb.SnapshotMetadata{Index: new(last.GetIndex()), Term: new(last.GetTerm()), ConfState: gr.r.cs}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range applied {
		n.seen[p.group][string(p.data)] = true
	}
	for _, gr := range rds {
		gr.r.rn.Advance(gr.rd)
		n.leader[gr.group] = gr.r.rn.BasicStatus().RaftState == raft.StateLeader
	}
	return nil
}

// halt stops the node's goroutine and takes it off the network; its DB
// stays open.
func (n *raftNode) halt() {
	n.net.detach(n.id)
	close(n.stop)
	<-n.done
}

type testCluster struct {
	t      *testing.T
	net    *router
	nodes  map[uint64]*raftNode
	groups int
}

func newTestCluster(t *testing.T, groups int) *testCluster {
	c := &testCluster{t: t, net: &router{inbox: map[uint64]chan envelope{}}, nodes: map[uint64]*raftNode{}, groups: groups}
	for id := uint64(1); id <= 3; id++ {
		c.nodes[id] = startNode(t, id, t.TempDir(), c.net, groups, true)
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			select {
			case <-n.done:
			default:
				n.halt()
			}
			_ = n.db.Close()
		}
	})
	return c
}

// leaderOf is a node that believes it leads group, else any node.
func (c *testCluster) leaderOf(group uint64) *raftNode {
	var any *raftNode
	for _, n := range c.nodes {
		n.mu.Lock()
		l := n.leader[group]
		n.mu.Unlock()
		if l {
			return n
		}
		any = n
	}
	return any
}

// waitFor polls cond until it holds, failing after waitLimit or on a node's
// error.
func (c *testCluster) waitFor(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		for id, n := range c.nodes {
			n.mu.Lock()
			err := n.err
			n.mu.Unlock()
			require.NoError(c.t, err, "node %d", id)
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: not within %v", what, waitLimit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// propose gets every payload applied on every running node, proposing again
// to the current leader the ones the leader has not applied after a while
// (at-least-once, as a client retries: duplicates are allowed).
func (c *testCluster) propose(payloads map[uint64][]string) {
	c.t.Helper()
	var last time.Time
	c.waitFor("payloads applied on every node", func() bool {
		all := true
		for g, ps := range payloads {
			for _, n := range c.nodes {
				n.mu.Lock()
				for _, p := range ps {
					all = all && n.seen[g][p]
				}
				n.mu.Unlock()
			}
		}
		if all || time.Since(last) < 2*time.Second {
			return all
		}
		last = time.Now()
		for g, ps := range payloads {
			l := c.leaderOf(g)
			l.mu.Lock()
			var missing []string
			for _, p := range ps {
				if !l.seen[g][p] {
					missing = append(missing, p)
				}
			}
			l.mu.Unlock()
			for _, p := range missing {
				select {
				case l.props <- proposal{group: g, data: []byte(p)}:
				case <-l.done:
				}
			}
		}
		return false
	})
}

func (c *testCluster) payloads(phase string, n int) map[uint64][]string {
	out := map[uint64][]string{}
	for g := uint64(1); g <= uint64(c.groups); g++ {
		for i := range n {
			out[g] = append(out[g], fmt.Sprintf("%s/g%d/%d", phase, g, i))
		}
	}
	return out
}

// restart stops node id and starts it again from its badger dir: closed
// cleanly, or (crash) from an image of the dir taken without closing the DB,
// as a kill -9 leaves it. Proposals made while it is down go first, so the
// restarted node has entries to catch up on. It checks that the node
// recovered the log and HardState it had.
func (c *testCluster) restart(id uint64, crash bool, whileDown map[uint64][]string) {
	c.t.Helper()
	n := c.nodes[id]
	n.halt()
	type state struct {
		last uint64
		hs   *pb.HardState
	}
	had := map[uint64]state{}
	for g, r := range n.groups {
		last, err := r.log.LastIndex()
		require.NoError(c.t, err)
		had[g] = state{last: last, hs: r.log.HardState()}
	}
	dir := n.dir
	if crash {
		dir = crashImage(c.t, n.dir)
	}
	require.NoError(c.t, n.db.Close())
	delete(c.nodes, id)
	c.propose(whileDown)

	c.nodes[id] = startNode(c.t, id, dir, c.net, c.groups, false)
	for g, r := range c.nodes[id].groups {
		last, err := r.log.LastIndex()
		require.NoError(c.t, err)
		require.Equal(c.t, had[g].last, last, "group %d: last index after restart", g)
		require.True(c.t, proto.Equal(had[g].hs, r.log.HardState()), "group %d: hard state after restart", g)
	}
}

// TestThreeNodesOverTheStore runs three nodes with three groups each over
// the badger store, proposes entries, restarts one node cleanly and another
// from a crash image (each while the other two go on), and checks that every
// payload was applied on all three, that the three state machines hold the
// same sequence, and that the three logs agree on every committed entry.
func TestThreeNodesOverTheStore(t *testing.T) {
	const groups, perPhase = 3, 40
	c := newTestCluster(t, groups)
	c.propose(c.payloads("first", perPhase))
	c.restart(1, false, c.payloads("node 1 down", perPhase))
	c.propose(c.payloads("node 1 back", perPhase))
	c.restart(2, true, c.payloads("node 2 down", perPhase))
	c.propose(c.payloads("node 2 back", perPhase))

	for _, n := range c.nodes {
		n.halt()
	}

	// The nodes stopped where they were, perhaps a heartbeat apart: compare
	// what all of them have committed and applied.
	for g := uint64(1); g <= groups; g++ {
		commit, applied := uint64(math.MaxUint64), uint64(math.MaxUint64)
		for _, n := range c.nodes {
			commit = min(commit, n.groups[g].log.HardState().GetCommit())
			applied = min(applied, n.groups[g].applied)
		}
		t.Logf("group %d: %d entries committed on all three, %d applied", g, commit, applied)
		committed, err := c.nodes[1].groups[g].log.Entries(1, commit+1, math.MaxUint64)
		require.NoError(t, err)
		seq := c.nodes[1].stateSequence(t, g, applied)
		require.GreaterOrEqual(t, len(seq), 5*perPhase, "group %d", g)
		for _, id := range []uint64{2, 3} {
			n := c.nodes[id]
			got, err := n.groups[g].log.Entries(1, commit+1, math.MaxUint64)
			require.NoError(t, err)
			requireSameEntries(t, committed, got, "group %d: node %d's committed entries against node 1's", g, id)
			require.Equal(t, seq, n.stateSequence(t, g, applied), "group %d: node %d's state machine against node 1's", g, id)
		}
	}
}
