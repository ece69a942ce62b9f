package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/fila-dev/filad/actors"
	"github.com/fila-dev/filad/storage"
)

// Placement tells the broker where each queue family is served, from the
// driver's view of the partitions: here when this node leads the family's
// partition and has passed its term's barrier, else the leader it knows
// (Node "0" when it knows none: never the zero Location, which is here).
type Placement struct {
	driver   *Driver
	families *Families
	// nodes name the leader's client address for the hint a refusal
	// carries.
	nodes *Nodes
}

var (
	_ actors.Partitioner   = (*Placement)(nil)
	_ actors.Placement     = (*Placement)(nil)
	_ actors.MetaSyncer    = (*Placement)(nil)
	_ actors.MetaForwarder = (*Placement)(nil)
)

// NewPlacement answers for r's groups.
func NewPlacement(r *Replica) *Placement {
	return &Placement{driver: r.Driver, families: r.Families, nodes: r.Nodes}
}

// Where implements actors.Placement.
func (p *Placement) Where(family string) actors.Location {
	st, _ := p.driver.Status(p.families.Group(storage.Owner{Family: family}))
	if st.Leading {
		return actors.Location{}
	}
	return actors.Location{Node: strconv.FormatUint(st.Leader, 10), LeaderAddr: p.nodes.ClientAddr(st.Leader), Term: st.Term}
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
// driver's error in the chain.
func notLeader(err error, nodes *Nodes) error {
	var nl *NotLeaderError
	if !errors.As(err, &nl) {
		return err
	}
	return fmt.Errorf("%w (%v)", &actors.NotLeaderError{LeaderAddr: nodes.ClientAddr(nl.Leader), LeaderNode: nl.Leader}, err)
}

// Queue is who leads the partition of queue (a queue's or its DLQ's
// name) as this node knows it (0: no leader known) and how many voters
// the partition has (its replication count): what GetStats and
// ListQueues report.
func (p *Placement) Queue(queue string) (leader uint64, voters int) {
	st, _ := p.driver.Status(p.families.Group(storage.FamilyOf(queue)))
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
