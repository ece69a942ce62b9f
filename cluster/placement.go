package cluster

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/fila-dev/filad/actors"
	"github.com/fila-dev/filad/storage"
)

// Placement tells the broker where each queue family is served, from the
// driver's view of the partitions: here when this node leads the family's
// partition and has passed its term's barrier, else the leader it knows
// (Node "0" when it knows none: never the zero Location, which is here).
//
// A node that holds no replica of a partition (a replication factor below
// the node count) has no raft view of its leader. It names a guess: the
// leader a forward last found (Led), else the replica Replicas ranks
// first; the proxy tries the guess, and once more at the leader a
// follower there names (gateway.Leaders). A guess that did not answer
// (Missed) moves on to the next replica.
//
// A node taken out of a partition while it was cut off never learns it:
// the leader stops sending to it once the change applied. Its replica
// holds on, knowing no leader, and would name none for ever. So for a
// partition held here whose raft view names no leader, the refresher
// asks the other members, and a leader one of them names stands in for
// raft's view until raft names one again (see raftView).
type Placement struct {
	replica  *Replica
	driver   *Driver
	families *Families
	// nodes name the leader's client address for the hint a refusal
	// carries.
	nodes *Nodes
	// guess[g] is the node this node names for partition g while it holds
	// no replica of it, or holds one that knows no leader; 0 for none yet.
	guess []atomic.Uint64
	// changed, if set, is told when a guess changed (the broker points
	// its Directory at it: actors.PlacementChanged). It must not block.
	changed func()
	// missed wakes the refresher early: a guess did not answer.
	missed chan struct{}
}

// DefaultLeaderRefresh is how often a node asks who leads the partitions
// it holds no replica of (and that hold a queue): a consumer's stream
// opened there is refused naming that leader, which no forward corrects.
const DefaultLeaderRefresh = 2 * time.Second

var (
	_ actors.Partitioner   = (*Placement)(nil)
	_ actors.Placement     = (*Placement)(nil)
	_ actors.MetaSyncer    = (*Placement)(nil)
	_ actors.MetaForwarder = (*Placement)(nil)
)

// NewPlacement answers for r's groups; changed, if set, is told when a
// guess of a leader changed (see Placement).
func NewPlacement(r *Replica, changed func()) *Placement {
	return &Placement{replica: r, driver: r.Driver, families: r.Families, nodes: r.Nodes,
		guess: make([]atomic.Uint64, r.Families.partitions+1), changed: changed, missed: make(chan struct{}, 1)}
}

// StartRefresh asks every interval (DefaultLeaderRefresh when 0), and at
// once after a guess missed, a replica of each partition this node holds
// none of who leads it (Membership/Leaders), and keeps the answers as
// the guesses. stop ends it and waits.
func (p *Placement) StartRefresh(interval time.Duration) (stop func()) {
	interval = cmp.Or(interval, DefaultLeaderRefresh)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			p.refresh(ctx, interval)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-p.missed:
			}
		}
	})
	return func() { cancel(); wg.Wait() }
}

// refresh asks each node guessed for a partition held elsewhere who leads
// the partitions it was guessed for, all at once, each call bounded by
// timeout; a node that does not answer, or knows no leader, gives way to
// the next replica. A partition held here whose raft view names no
// leader is asked of every other member: the first leader named is kept,
// none is kept when no one names one (an election under way, which raft
// will tell).
func (p *Placement) refresh(ctx context.Context, timeout time.Duration) {
	self := p.driver.opts.NodeID
	load := p.families.t.Load().load
	ask := map[uint64][]uint64{}    // node → the groups it is asked about
	leaderless := map[uint64]bool{} // groups held here that know no leader
	for g := uint64(1); g < uint64(len(p.guess)); g++ {
		if g > uint64(len(load)) || load[g-1] == 0 {
			continue // no queue there: no one asks where it is
		}
		st, _ := p.driver.Status(g)
		switch {
		case !st.Holds(self):
			if n := p.guessed(g); n != 0 {
				ask[n] = append(ask[n], g)
			}
		case st.Leader != 0:
			p.guess[g].Store(0) // raft's view answers (raftView)
		default:
			leaderless[g] = true
			for _, n := range p.nodes.Active() {
				if n.ID != self {
					ask[n.ID] = append(ask[n.ID], g)
				}
			}
		}
	}
	var mu sync.Mutex
	named := map[uint64]uint64{} // leaderless group → a leader some member named
	var wg sync.WaitGroup
	var changed atomic.Bool
	for node, groups := range ask {
		wg.Go(func() {
			answers := p.askLeaders(ctx, node, groups, timeout)
			for i, g := range groups {
				next := answers[i]
				if leaderless[g] {
					if next != 0 && next != self {
						mu.Lock()
						named[g] = next
						mu.Unlock()
					}
					continue
				}
				if next == 0 {
					next = p.after(g, node)
				}
				if p.guess[g].Swap(next) != next {
					changed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	for g := range leaderless {
		if p.guess[g].Swap(named[g]) != named[g] {
			changed.Store(true)
		}
	}
	if changed.Load() && p.changed != nil {
		p.changed()
	}
}

// askLeaders is node's answer to Membership/Leaders for groups, in their
// order; all 0 when it did not answer.
func (p *Placement) askLeaders(ctx context.Context, node uint64, groups []uint64, timeout time.Duration) []uint64 {
	out := make([]uint64, len(groups))
	resp, err := p.replica.askLeaders(ctx, node, groups, timeout)
	if err != nil {
		return out
	}
	for i, l := range resp.GetLeaders() {
		if i < len(out) && l.GetGroup() == groups[i] {
			out[i] = l.GetNodeId()
		}
	}
	return out
}

// Where implements actors.Placement.
func (p *Placement) Where(family string) actors.Location {
	g := p.families.Group(storage.Owner{Family: family})
	st, _ := p.driver.Status(g)
	if st.Leading {
		return actors.Location{}
	}
	leader := st.Leader
	if !p.raftView(g, st) {
		leader, st.Term = p.guessed(g), 0
	}
	return actors.Location{Node: strconv.FormatUint(leader, 10), LeaderAddr: p.nodes.ClientAddr(leader), Term: st.Term}
}

// raftView reports whether raft's view of group g (st, its status here)
// answers who leads it: this node holds a replica, and that replica names
// a leader or no member named one instead (see Placement).
func (p *Placement) raftView(g uint64, st GroupStatus) bool {
	if !st.Holds(p.driver.opts.NodeID) {
		return false
	}
	return st.Leader != 0 || g >= uint64(len(p.guess)) || p.guess[g].Load() == 0
}

// guessed is the leader this node names for group, which it holds no
// replica of (or one that knows no leader): the last found, else the
// first of its replicas (0 when it knows none).
func (p *Placement) guessed(g uint64) uint64 {
	if g >= uint64(len(p.guess)) {
		return 0
	}
	if n := p.guess[g].Load(); n != 0 {
		return n
	}
	return p.after(g, 0)
}

// LearntLeader is the leader of group g that this node last learnt (from
// a forward or the refresher), for a partition it holds no replica of; 0
// when it learnt none.
func (p *Placement) LearntLeader(g uint64) uint64 {
	if g == MetaGroup || g >= uint64(len(p.guess)) {
		return 0
	}
	return p.guess[g].Load()
}

// Led implements gateway.Leaders.
func (p *Placement) Led(queue string, node uint64) {
	p.setGuess(queue, func(uint64) uint64 { return node })
}

// Missed implements gateway.Leaders: the next guess is the replica after
// node (after), and the refresher asks it at once.
func (p *Placement) Missed(queue string, node uint64) {
	p.setGuess(queue, func(g uint64) uint64 { return p.after(g, node) })
	select {
	case p.missed <- struct{}{}:
	default: // a refresh is due already
	}
}

// after is the replica of g after node in Replicas' order, this node left
// out (the first after the last, and the first when node is none of them).
func (p *Placement) after(g, node uint64) uint64 {
	others := slices.DeleteFunc(p.replica.Replicas(g), func(id uint64) bool { return id == p.driver.opts.NodeID })
	if len(others) == 0 {
		return 0
	}
	i := slices.Index(others, node) // -1: the first
	return others[(i+1)%len(others)]
}

// setGuess sets queue's partition's guess to next(g), when this node
// holds no replica of it, and tells changed if it changed.
func (p *Placement) setGuess(queue string, next func(g uint64) uint64) {
	g := p.families.Group(storage.FamilyOf(queue))
	if g == MetaGroup || g >= uint64(len(p.guess)) {
		return
	}
	if st, _ := p.driver.Status(g); p.raftView(g, st) {
		return // raft says who leads
	}
	n := next(g)
	if old := p.guess[g].Swap(n); old != n && p.changed != nil {
		p.changed()
	}
}

// SyncMeta implements actors.MetaSyncer: it returns once this node has
// applied the meta group as far as it was committed when called.
func (p *Placement) SyncMeta(ctx context.Context) error { return syncMeta(ctx, p.driver) }

func syncMeta(ctx context.Context, d *Driver) error {
	index, err := d.ReadIndex(ctx, MetaGroup)
	if err != nil {
		return err
	}
	return d.WaitApplied(ctx, MetaGroup, index)
}

// Partition implements actors.Partitioner (Families.Choose).
func (p *Placement) Partition(family string) uint32 { return p.families.Choose(family) }

// Routed implements actors.Partitioner.
func (p *Placement) Routed(family string) uint32 {
	return uint32(p.families.Group(storage.Owner{Family: family}))
}

// ForwardMeta implements actors.MetaForwarder: b goes to the meta group's
// leader through this node's raft (Driver.ProposeForwarded).
func (p *Placement) ForwardMeta(b *storage.Batch) error {
	if !b.Owner().Meta {
		return fmt.Errorf("cluster: a batch of %s forwarded to the meta group", b.Owner())
	}
	data, err := b.Marshal()
	if err != nil {
		return err
	}
	return p.driver.ProposeForwarded(MetaGroup, data)
}

// admitForget reports whether e is what ForwardMeta sends for a reap: a
// ForgetMark alone (storage.IsForgetMark), with no proposal id. It can
// only end the deletion whose mark, token included, it names, as that
// family's partition leader does once it has reaped (AdmitForwarded).
func admitForget(e *pb.Entry) bool {
	data := e.GetData()
	if e.GetType() != pb.EntryType_EntryNormal || len(data) < 8 || binary.BigEndian.Uint64(data) != 0 {
		return false
	}
	b, err := storage.UnmarshalBatch(data[8:])
	return err == nil && storage.IsForgetMark(b)
}

// notLeader turns the driver's refusal into the actors' (what the gateway
// answers UNAVAILABLE with the leader's client address), keeping the
// driver's error in the chain. family names the queue family whose write
// was refused, "" for the meta group's.
func notLeader(err error, nodes *Nodes, family string) error {
	var nl *NotLeaderError
	if !errors.As(err, &nl) {
		return err
	}
	return fmt.Errorf("%w (%v)", &actors.NotLeaderError{Queue: family, LeaderAddr: nodes.ClientAddr(nl.Leader), LeaderNode: nl.Leader}, err)
}

// Queue is who leads the partition of queue (a queue's or its DLQ's
// name) as this node knows it (0: no leader known) and how many voters
// the partition has (its replication count): what GetStats and
// ListQueues report.
func (p *Placement) Queue(queue string) (leader uint64, voters int) {
	g := p.families.Group(storage.FamilyOf(queue))
	st, _ := p.driver.Status(g)
	if !st.Holds(p.driver.opts.NodeID) {
		// No raft view here: what was learnt, and the count its replicas
		// should be.
		return p.LearntLeader(g), len(p.replica.Replicas(g))
	}
	if !p.raftView(g, st) {
		return p.LearntLeader(g), st.Voters
	}
	return st.Leader, st.Voters
}

// Members is the number of the cluster's members.
func (p *Placement) Members() int { return p.nodes.Count() }

// Families is where each queue family's messages are: the partition its
// queue record says (CreateQueue recorded it), or its deletion mark (the
// reap runs after the record is gone; a reaped mark keeps the name's
// place), else the partition GroupOf's hash gives: a record written before
// placement was recorded, or messages under a name that has neither.
// Every node keeps it from the meta group it applied (reloaded after each
// meta entry and snapshot, before anything applied later is routed), so
// that all route alike; reads are lock-free.
type Families struct {
	partitions int
	t          atomic.Pointer[familyTable]
}

type familyTable struct {
	// group holds the families placed by a record or a mark.
	group map[string]uint64
	// load[g-1] is how many families partition g holds: a live queue's,
	// or a deletion's under way.
	load []int
}

func newFamilies(partitions int) *Families {
	f := &Families{partitions: partitions}
	f.t.Store(&familyTable{group: map[string]uint64{}, load: make([]int, max(partitions, 0))})
	return f
}

// Group is the group a batch of o goes to: the meta group for the meta
// owner, else its family's partition.
func (f *Families) Group(o storage.Owner) uint64 {
	if o.Meta || f.partitions <= 0 {
		return MetaGroup
	}
	if g, ok := f.t.Load().group[o.Family]; ok {
		return g
	}
	return GroupOf(o, f.partitions)
}

// Choose is the partition for a queue of family created now: where the
// family is placed already (by a record or a mark), else the least loaded
// partition, ties broken by a hash of the name (leastLoaded).
func (f *Families) Choose(family string) uint32 {
	if f.partitions <= 0 {
		return 0
	}
	t := f.t.Load()
	if g, ok := t.group[family]; ok {
		return uint32(g)
	}
	return uint32(leastLoaded(t.load, GroupOf(storage.Owner{Family: family}, f.partitions)))
}

// leastLoaded is the partition (1..len(load)) with the fewest families,
// load[g-1] being partition g's; of several, the first from start on,
// wrapping: with every partition equal, start, the hash's choice.
func leastLoaded(load []int, start uint64) uint64 {
	best := start
	for i := range uint64(len(load)) {
		g := (start-1+i)%uint64(len(load)) + 1
		if load[g-1] < load[best-1] {
			best = g
		}
	}
	return best
}

// reload rebuilds the table from the records and marks local holds.
func (f *Families) reload(local *storage.Badger) error {
	recs, err := local.Queues()
	if err != nil {
		return err
	}
	marks, err := local.DeletionMarks()
	if err != nil {
		return err
	}
	t := &familyTable{group: make(map[string]uint64, len(recs)+len(marks)), load: make([]int, max(f.partitions, 0))}
	live := map[string]bool{}
	place := func(queue string, partition uint32, holds bool) {
		fam := storage.FamilyOf(queue)
		if _, ok := t.group[fam.Family]; !ok {
			g := uint64(partition)
			if g < 1 || g > uint64(f.partitions) {
				g = GroupOf(fam, f.partitions) // unrecorded: the hash
			}
			t.group[fam.Family] = g
		}
		live[fam.Family] = live[fam.Family] || holds
	}
	// A family's live queue places it first: its marks, reaped or not,
	// can only be of the same partition (a name is created again where its
	// reaped mark says), or older than a placement by the hash.
	for _, rec := range recs {
		place(rec.GetName(), rec.GetPartition(), true)
	}
	for _, m := range marks {
		if !m.Reaped {
			place(m.Queue, m.Partition, true)
		}
	}
	for _, m := range marks {
		if m.Reaped {
			place(m.Queue, m.Partition, false)
		}
	}
	for fam, holds := range live {
		if holds && f.partitions > 0 {
			t.load[t.group[fam]-1]++
		}
	}
	f.t.Store(t)
	return nil
}
