package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/fila-dev/filad/actors"
	"github.com/fila-dev/filad/storage"
)

// Placement tells the broker where each queue family is served, from the
// driver's view of the partitions: here when this node leads the family's
// partition and has passed its term's barrier, else the leader it knows
// (Node "0" when it knows none: never the zero Location, which is here).
type Placement struct {
	driver     *Driver
	partitions int
	// nodes name the leader's client address for the hint a refusal
	// carries.
	nodes *Nodes
}

var (
	_ actors.Placement     = (*Placement)(nil)
	_ actors.MetaSyncer    = (*Placement)(nil)
	_ actors.MetaForwarder = (*Placement)(nil)
)

// NewPlacement answers for r's groups.
func NewPlacement(r *Replica) *Placement {
	return &Placement{driver: r.Driver, partitions: r.Store.partitions, nodes: r.Nodes}
}

// Where implements actors.Placement.
func (p *Placement) Where(family string) actors.Location {
	st, _ := p.driver.Status(GroupOf(storage.Owner{Family: family}, p.partitions))
	if st.Leading {
		return actors.Location{}
	}
	return actors.Location{Node: strconv.FormatUint(st.Leader, 10), LeaderAddr: p.nodes.ClientAddr(st.Leader), Term: st.Term}
}

// SyncMeta implements actors.MetaSyncer: it returns once this node has
// applied the meta group as far as it was committed when called.
func (p *Placement) SyncMeta(ctx context.Context) error {
	index, err := p.driver.ReadIndex(ctx, MetaGroup)
	if err != nil {
		return err
	}
	return p.driver.WaitApplied(ctx, MetaGroup, index)
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
	st, _ := p.driver.Status(GroupOf(storage.FamilyOf(queue), p.partitions))
	return st.Leader, st.Voters
}

// Members is the number of the cluster's members.
func (p *Placement) Members() int { return p.nodes.Count() }
