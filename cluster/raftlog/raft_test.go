package raftlog_test

import (
	"encoding/binary"
	"fmt"
	"io"
	"log"
	"math"
	"slices"
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
	mute  map[uint64]bool // nodes whose messages are dropped (they still hear)
}

func (r *router) send(e envelope) {
	r.mu.Lock()
	ch := r.inbox[e.m.GetTo()]
	muted := r.mute[e.m.GetFrom()]
	r.mu.Unlock()
	if ch == nil || muted {
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

func (r *router) setMute(id uint64, muted bool) {
	r.mu.Lock()
	r.mute[id] = muted
	r.mu.Unlock()
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
			n.step(e)
		case p := <-n.props:
			_ = n.groups[p.group].rn.Propose(p.data) // dropped without a leader; the test proposes again
		}
		// Take whatever else is waiting into the same Ready, as a driver
		// batches: one Write and one sync for all of it.
		for more := true; more; {
			select {
			case e := <-inbox:
				n.step(e)
			case p := <-n.props:
				_ = n.groups[p.group].rn.Propose(p.data)
			default:
				more = false
			}
		}
		if err := n.ready(); err != nil {
			n.mu.Lock()
			n.err = err
			n.mu.Unlock()
			return
		}
	}
}

func (n *raftNode) step(e envelope) {
	if r := n.groups[e.group]; r != nil {
		_ = r.rn.Step(e.m) // a message for a stale term is refused; raft carries on
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
	c := &testCluster{t: t, net: &router{inbox: map[uint64]chan envelope{}, mute: map[uint64]bool{}}, nodes: map[uint64]*raftNode{}, groups: groups}
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

// leaderOf is a node that believes it leads group, else any node; never one
// in skip.
func (c *testCluster) leaderOf(group uint64, skip ...uint64) *raftNode {
	var any *raftNode
	for id, n := range c.nodes {
		if slices.Contains(skip, id) {
			continue
		}
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

// propose gets every payload applied on every running node but those in
// skip, proposing again to the current leader the ones the leader has not
// applied after a while (at-least-once, as a client retries: duplicates are
// allowed).
func (c *testCluster) propose(payloads map[uint64][]string, skip ...uint64) {
	c.t.Helper()
	var last time.Time
	c.waitFor("payloads applied on every node", func() bool {
		all := true
		for g, ps := range payloads {
			for id, n := range c.nodes {
				if slices.Contains(skip, id) {
					continue
				}
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
			l := c.leaderOf(g, skip...)
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

// TestDivergentLeaderIsTruncated makes a leader append entries nobody else
// gets (its messages are dropped), lets the others elect a leader and commit
// theirs at those indices, and checks that the old leader's conflicting
// suffix is gone: from its log and its state machine, after it catches up
// and again after a restart from a crash image. A store that kept or
// resurrected the suffix would apply an entry that was never committed.
func TestDivergentLeaderIsTruncated(t *testing.T) {
	const group, k = 1, 40
	c := newTestCluster(t, 1)
	c.propose(c.payloads("first", 10))

	var old *raftNode
	c.waitFor("a leader", func() bool {
		old = c.leaderOf(group)
		old.mu.Lock()
		defer old.mu.Unlock()
		return old.leader[group]
	})
	r := old.groups[group]
	from, err := r.log.LastIndex()
	require.NoError(t, err)
	c.net.setMute(old.id, true)
	lost := map[string]bool{}
	for i := range k {
		p := fmt.Sprintf("never committed/%d", i)
		lost[p] = true
		old.props <- proposal{group: group, data: []byte(p)}
	}
	// The old leader appends them (in one or a few loops: its driver takes
	// all waiting proposals into one Ready) before it can notice it lost its
	// quorum, which takes an election timeout (1 s) without answers.
	c.waitFor("the muted leader's own entries", func() bool {
		last, err := r.log.LastIndex()
		return err == nil && last >= from+k
	})
	// Far fewer entries than k, then and later: the old leader's suffix
	// past them must be truncated, since nothing overwrites it.
	c.propose(c.payloads("after the split", 5), old.id) // it hears them, but commits nothing while muted
	c.net.setMute(old.id, false)
	c.propose(c.payloads("healed", 5))

	requireNone := func(what string) {
		t.Helper()
		for id, n := range c.nodes {
			for _, d := range n.stateSequence(t, group, math.MaxUint64) {
				require.False(t, lost[d], "%s: node %d applied %q", what, id, d)
			}
			last, err := n.groups[group].log.LastIndex()
			require.NoError(t, err)
			es, err := n.groups[group].log.Entries(1, last+1, math.MaxUint64)
			require.NoError(t, err)
			for _, e := range es {
				require.False(t, lost[string(e.GetData())], "%s: node %d's log holds %q at %d", what, id, e.GetData(), e.GetIndex())
			}
		}
	}
	for _, n := range c.nodes {
		n.halt()
	}
	requireNone("after catching up")
	// The old leader comes back from a crash image, the others cleanly.
	for id, n := range c.nodes {
		dir := n.dir
		if id == old.id {
			dir = crashImage(t, n.dir)
		}
		require.NoError(t, n.db.Close())
		c.nodes[id] = startNode(t, id, dir, c.net, 1, false)
	}
	c.propose(c.payloads("restarted", 5))
	for _, n := range c.nodes {
		n.halt()
	}
	requireNone("after a crash and restart")
}
