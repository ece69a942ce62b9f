package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"go.etcd.io/raft/v3/tracker"

	"github.com/fila-dev/filad/storage"
)

// ErrNotVoter: the node a leader transfer names is not a voter of the
// group (not a member, or a learner): it cannot lead it.
var ErrNotVoter = errors.New("cluster: not a voter of the group")

// TransferLeader moves group's leadership from this node, its leader, to
// node to, a voter of the group (raft's leader transfer: the leader
// brings to's log up to its own, then tells it to campaign at once), and
// returns once this node sees to lead (nil; at once when to is this node
// and it leads). Else it says why not: a *NotLeaderError when this node
// does not lead the group (nothing was done), ErrNotVoter, or ctx's error
// when to had not taken over by then (raft abandons a transfer that did
// not complete within an election timeout; this node then leads on, and
// a later call may try again). While a transfer is under way the leader
// drops proposals (ProposeAsync answers a NotLeaderError naming to).
func (d *Driver) TransferLeader(ctx context.Context, group, to uint64) error {
	if err := d.startTransfer(ctx, group, to); !errors.Is(err, errTransferring) {
		return err
	}
	return d.awaitLeader(ctx, group, to)
}

// startTransfer asks group's raft to hand its leadership to to, and
// returns at once: errTransferring when it asked, nil when to is this
// node and it leads, else why not (as TransferLeader). The membership
// controller uses it alone, and reads the outcome in its next round.
func (d *Driver) startTransfer(ctx context.Context, group, to uint64) error {
	var err error
	if lerr := d.onGroup(ctx, group, func(g *raftGroup) {
		st := g.rn.BasicStatus()
		switch {
		case g.leading == 0:
			err = &NotLeaderError{Group: group, Leader: st.Lead}
		case to == d.opts.NodeID:
		case !slices.Contains(g.conf.GetVoters(), to):
			err = fmt.Errorf("%w: node %d, group %d (voters %v)", ErrNotVoter, to, group, g.conf.GetVoters())
		default:
			g.rn.TransferLeader(to)
			err = errTransferring
		}
	}); lerr != nil {
		return lerr
	}
	return err
}

// errTransferring: the loop started the transfer; the caller waits.
var errTransferring = errors.New("cluster: transfer under way")

// awaitLeader returns once Status names to as group's leader, or with
// ctx's error.
func (d *Driver) awaitLeader(ctx context.Context, group, to uint64) error {
	for {
		d.mu.Lock()
		moved, lead := d.moved, d.status[group].Leader
		d.mu.Unlock()
		if lead == to {
			return nil
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return fmt.Errorf("cluster: group %d: node %d has not taken over (leader now %d): %w", group, to, lead, ctx.Err())
		case <-d.done:
			return storage.ErrClosed
		}
	}
}

// PeerProgress is what a group's leader knows of one member's log.
type PeerProgress struct {
	Node uint64
	// Match is the highest index known to be in the voter's log.
	Match uint64
	// Active: the leader heard from the voter within the last election
	// timeout. Replicating: the leader streams entries to it (not probing
	// where its log ends, nor sending a snapshot).
	Active, Replicating bool
	// Learner: the member receives the log but does not vote (yet).
	Learner bool
}

// Progress is, on group's leader, its commit index and the progress of
// each member of the group (voters and learners), this node included, in node order; a
// *NotLeaderError on any other node.
func (d *Driver) Progress(ctx context.Context, group uint64) (commit uint64, peers []PeerProgress, err error) {
	type answer struct {
		commit uint64
		peers  []PeerProgress
		err    error
	}
	ch := make(chan answer, 1)
	if err := d.onGroup(ctx, group, func(g *raftGroup) {
		if g.leading == 0 {
			ch <- answer{err: &NotLeaderError{Group: group, Leader: g.rn.BasicStatus().Lead}}
			return
		}
		st := g.rn.Status()
		var a answer
		for id, pr := range st.Progress {
			a.peers = append(a.peers, PeerProgress{Node: id, Match: pr.Match, Active: id == d.opts.NodeID || pr.RecentActive || d.heardLately(id),
				Replicating: pr.State == tracker.StateReplicate, Learner: pr.IsLearner})
		}
		slices.SortFunc(a.peers, func(x, y PeerProgress) int { return cmp.Compare(x.Node, y.Node) })
		a.commit = st.GetCommit()
		ch <- a
	}); err != nil {
		return 0, nil, err
	}
	select {
	case a := <-ch:
		return a.commit, a.peers, a.err
	case <-d.done:
		return 0, nil, storage.ErrClosed
	}
}

// onGroup runs f on the loop (onLoop) with group, which must be this
// node's: else it says so, and f does not run. f must not block.
func (d *Driver) onGroup(ctx context.Context, group uint64, f func(*raftGroup)) error {
	member := true
	if err := d.onLoop(ctx, func() {
		g, ok := d.groups[group]
		if member = ok; ok {
			f(g)
		}
	}); err != nil {
		return err
	}
	if !member {
		return fmt.Errorf("cluster: node %d is no member of group %d", d.opts.NodeID, group)
	}
	return nil
}

// raftGroup is group, named where a parameter called group shadows it.
type raftGroup = group
