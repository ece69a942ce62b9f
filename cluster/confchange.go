package cluster

import (
	"context"
	"errors"
	"fmt"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/fila-dev/filad/storage"
)

// ErrConfPending: the group has a membership change under way (one this
// node proposed that has not applied, or a joint configuration raft has
// not left yet); raft takes one at a time.
var ErrConfPending = errors.New("cluster: a membership change of the group is under way")

// onLoop runs f on the driver's goroutine and returns once it ran, or
// with ctx's error or storage.ErrClosed (then f may not run).
func (d *Driver) onLoop(ctx context.Context, f func()) error {
	ran := make(chan struct{})
	select {
	case d.calls <- func() { f(); close(ran) }:
	case <-ctx.Done():
		return ctx.Err()
	case <-d.done:
		return storage.ErrClosed
	}
	select {
	case <-ran:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-d.done:
		return storage.ErrClosed
	}
}

// ChangeConf proposes the membership change cc to group, which this node
// must lead (past its term's barrier): a *NotLeaderError otherwise, and
// ErrConfPending while another change is under way. It returns once raft
// took the proposal, not once it applied: Status's Conf shows that. raft
// applies cc with joint consensus when it changes more than one voter
// (ConfChangeV2's automatic transition, left by itself), simply
// otherwise; nothing here changes a membership by hand.
func (d *Driver) ChangeConf(ctx context.Context, group uint64, cc *pb.ConfChangeV2) error {
	var err error
	if lerr := d.onLoop(ctx, func() { err = d.changeConf(group, cc) }); lerr != nil {
		return lerr
	}
	return err
}

func (d *Driver) changeConf(group uint64, cc *pb.ConfChangeV2) error {
	g := d.groups[group]
	switch {
	case g == nil:
		return fmt.Errorf("cluster: node %d is no member of group %d", d.opts.NodeID, group)
	case g.leading == 0:
		return &NotLeaderError{Group: group, Leader: g.rn.BasicStatus().Lead}
	case g.confTicks > 0 || len(g.conf.GetVotersOutgoing()) > 0:
		return ErrConfPending
	}
	if err := g.rn.ProposeConfChange(cc); err != nil {
		return fmt.Errorf("cluster: group %d: %w", group, err)
	}
	g.confTicks = 3 * d.opts.ElectionTicks
	return nil
}

// Replication is how far each member of a group has the log, as its
// leader tracks it.
type Replication struct {
	// Last is the leader's last durable index.
	Last uint64
	// Match is each member's highest index known to match the leader's
	// log; Live those the leader heard from within an election timeout;
	// Replicating those of them the leader streams to (not probing, nor
	// sending a snapshot).
	Match       map[uint64]uint64
	Live        map[uint64]bool
	Replicating map[uint64]bool
}

// Replication reads group's progress from its leader's raft (Progress,
// learners included): a *NotLeaderError when this node does not lead it.
func (d *Driver) Replication(ctx context.Context, group uint64) (Replication, error) {
	_, peers, err := d.Progress(ctx, group)
	if err != nil {
		return Replication{}, err
	}
	r := Replication{Match: map[uint64]uint64{}, Live: map[uint64]bool{}, Replicating: map[uint64]bool{}}
	for _, p := range peers {
		r.Match[p.Node] = p.Match
		r.Live[p.Node] = p.Active
		r.Replicating[p.Node] = p.Replicating && p.Active
		if p.Node == d.opts.NodeID {
			r.Last = p.Match
		}
	}
	return r, nil
}

// confPending reports whether group has a membership change of this
// node's under way (ChangeConf would answer ErrConfPending).
func (d *Driver) confPending(ctx context.Context, group uint64) (bool, error) {
	var pending bool
	err := d.onLoop(ctx, func() {
		if g := d.groups[group]; g != nil {
			pending = g.confTicks > 0 || len(g.conf.GetVotersOutgoing()) > 0
		}
	})
	return pending, err
}
