package cluster

import (
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
	// clientAddrs are the members' client addresses, by node id, for the
	// hint a refusal carries.
	clientAddrs map[uint64]string
}

var _ actors.Placement = (*Placement)(nil)

// NewPlacement answers for r's groups; clientAddrs may lack a member.
func NewPlacement(r *Replica, clientAddrs map[uint64]string) *Placement {
	return &Placement{driver: r.Driver, partitions: r.Store.partitions, clientAddrs: clientAddrs}
}

// Where implements actors.Placement.
func (p *Placement) Where(family string) actors.Location {
	st, _ := p.driver.Status(GroupOf(storage.Owner{Family: family}, p.partitions))
	if st.Leading {
		return actors.Location{}
	}
	return actors.Location{Node: strconv.FormatUint(st.Leader, 10), LeaderAddr: p.clientAddrs[st.Leader], Term: st.Term}
}

// notLeader turns the driver's refusal into the actors' (what the gateway
// answers UNAVAILABLE with the leader's client address), keeping the
// driver's error in the chain.
func notLeader(err error, clientAddrs map[uint64]string) error {
	var nl *NotLeaderError
	if !errors.As(err, &nl) {
		return err
	}
	return fmt.Errorf("%w (%v)", &actors.NotLeaderError{LeaderAddr: clientAddrs[nl.Leader]}, err)
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
func (p *Placement) Members() int { return len(p.clientAddrs) }
