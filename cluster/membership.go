package cluster

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
)

// PromoteSlack is how many entries a learner may lag its leader's log and
// still be promoted to a voter: "caught up" under a steady write load,
// where the last few entries are always in flight.
const PromoteSlack = 100

// Membership keeps each group's raft membership what the meta group's
// node table says (Replicas): it adds a member missing from a group as a
// learner, promotes a learner to voter once it has caught up, and takes a
// removed member out, a leader being removed handing its leadership over
// first. Every node runs one, and it acts only on the groups this node
// leads (the leader proposes a group's membership changes, and it alone
// knows how far each member has the log); a leadership change moves the
// work to the new leader, which reads the same table. On one node the
// additions go one group at a time: no learner is added while another
// group led here has a learner still catching up, so that a new node
// fetches one snapshot per leader at a time, not one per group.
type Membership struct {
	// after, if set, runs after each round (the node forgets the peers
	// no group holds any more).
	after    func()
	driver   *Driver
	replicas func(group uint64) []uint64
	// agree is Replica.Disagreement: a round changes nothing while the
	// members disagree on the settings the ranking depends on.
	agree func() error
	// disagreed is the last disagreement logged, so that it is logged once
	// a change, not every round.
	disagreed  string
	self       uint64
	partitions int
	every      time.Duration
	log        *slog.Logger
	stop       context.CancelFunc
	done       chan struct{}
}

// StartMembership runs r's controller every interval until Stop, and
// after (if set) after each round.
func StartMembership(r *Replica, self uint64, partitions int, interval time.Duration, after func(), log *slog.Logger) *Membership {
	m := newMembership(r, self, partitions, log)
	m.after = after
	ctx, cancel := context.WithCancel(context.Background())
	m.every, m.stop, m.done = interval, cancel, make(chan struct{})
	go m.run(ctx)
	return m
}

// newMembership is a controller that runs only when Reconcile is called
// (Stop is a no-op).
func newMembership(r *Replica, self uint64, partitions int, log *slog.Logger) *Membership {
	done := make(chan struct{})
	close(done)
	return &Membership{driver: r.Driver, replicas: r.Replicas, agree: r.Disagreement, self: self, partitions: partitions, log: log, stop: func() {}, done: done}
}

// Stop ends the controller and waits for it.
func (m *Membership) Stop() {
	m.stop()
	<-m.done
}

func (m *Membership) run(ctx context.Context) {
	defer close(m.done)
	t := time.NewTicker(m.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.driver.Done():
			return
		case <-t.C:
			m.Reconcile(ctx)
			if m.after != nil {
				m.after()
			}
		}
	}
}

// Replicas is which nodes should hold group (Replica.Replicas).
func (m *Membership) Replicas(group uint64) []uint64 { return m.replicas(group) }

// Reconcile makes one step towards the wanted membership in each group
// this node leads, at most one change per group: a proposal raft takes
// (the next round sees it applied), never a wait for it.
//
// While a member registered another partition count or replication
// factor than this node's, it changes nothing and logs the difference
// (once each time it changes): two rankings would undo each other.
func (m *Membership) Reconcile(ctx context.Context) {
	if err := m.agree(); err != nil {
		if err.Error() != m.disagreed {
			m.log.Error("cluster: membership changes paused: the members' settings differ", slog.Any("error", err))
		}
		m.disagreed = err.Error()
		return
	}
	if m.disagreed != "" {
		m.log.Info("cluster: membership changes resumed: the members' settings agree")
		m.disagreed = ""
	}
	catching := false // a group led here has a wanted learner still catching up
	type work struct {
		group uint64
		conf  *pb.ConfState
		want  []uint64
	}
	var todo []work
	for g := uint64(0); g <= uint64(m.partitions); g++ {
		st, _ := m.driver.Status(g)
		if !st.Leading || st.Conf == nil {
			continue
		}
		w := work{group: g, conf: st.Conf, want: m.Replicas(g)}
		if slices.ContainsFunc(w.conf.GetLearners(), func(id uint64) bool { return slices.Contains(w.want, id) }) {
			catching = true
		}
		todo = append(todo, w)
	}
	for _, w := range todo {
		if len(w.conf.GetVotersOutgoing()) > 0 {
			continue // joint: raft leaves it by itself
		}
		added, err := m.step(ctx, w.group, w.conf, w.want, !catching)
		if added {
			catching = true
		}
		if err != nil && !errors.Is(err, ErrConfPending) && ctx.Err() == nil {
			m.log.Warn("cluster: membership change not made", slog.Uint64("group", w.group), slog.Any("error", err))
		}
	}
}

// step makes group's one change, if any: add a wanted member as a learner
// (only when mayAdd; added says it did), promote a caught-up learner, or
// take out a member no longer wanted.
func (m *Membership) step(ctx context.Context, group uint64, conf *pb.ConfState, want []uint64, mayAdd bool) (added bool, err error) {
	voters, learners := conf.GetVoters(), conf.GetLearners()
	if len(voters) == 0 {
		return false, nil // a joining node's empty group: it leads nothing yet
	}
	for _, id := range want {
		if !slices.Contains(voters, id) && !slices.Contains(learners, id) {
			if !mayAdd {
				return false, nil
			}
			m.log.Info("cluster: adding a node to a group as a learner", slog.Uint64("group", group), slog.Uint64("node_id", id))
			err := m.driver.ChangeConf(ctx, group, confChange(pb.ConfChangeType_ConfChangeAddLearnerNode, id))
			return err == nil, err
		}
	}
	var rep *Replication
	replication := func() (*Replication, error) {
		if rep == nil {
			r, err := m.driver.Replication(ctx, group)
			if err != nil {
				return nil, err
			}
			rep = &r
		}
		return rep, nil
	}
	for _, id := range learners {
		if !slices.Contains(want, id) {
			continue
		}
		r, err := replication()
		if err != nil {
			return false, err
		}
		if r.Replicating[id] && r.Match[id]+PromoteSlack >= r.Last {
			m.log.Info("cluster: promoting a caught-up learner to voter", slog.Uint64("group", group), slog.Uint64("node_id", id),
				slog.Uint64("match", r.Match[id]), slog.Uint64("last", r.Last))
			return false, m.driver.ChangeConf(ctx, group, confChange(pb.ConfChangeType_ConfChangeAddNode, id))
		}
	}
	for _, id := range append(slices.Clone(voters), learners...) {
		if slices.Contains(want, id) {
			continue
		}
		if id != m.self && slices.Contains(voters, id) && len(voters) == 1 {
			return false, nil // the last voter: nothing could commit the change
		}
		// Add first, remove second: a voter leaves only once every wanted
		// member votes. Taking out the one a learner is to replace before
		// that learner is promoted shrinks the quorum's choice, and if a
		// wanted voter then dies (or is dead already and still counts as
		// replicating, as it does for an election timeout) the group is
		// left without a quorum until it returns.
		if slices.Contains(voters, id) && slices.ContainsFunc(want, func(w uint64) bool { return !slices.Contains(voters, w) }) {
			continue
		}
		r, err := replication()
		if err != nil {
			return false, err
		}
		// A live member leaves only once every wanted voter replicates. The
		// ranking ignores liveness: while a wanted member is down (dead and
		// not yet removed), the live one it displaced is the copy standing
		// in for it, and taking that out would leave the group a replica
		// short. Once the dead one is removed it is no longer wanted, and the
		// live one usually is again. Live, not replicating, decides whether
		// id stands in: a live member probing or taking a snapshot is still
		// a copy.
		if (id == m.self || r.Live[id]) && slices.ContainsFunc(voters, func(v uint64) bool {
			return v != m.self && slices.Contains(want, v) && !r.Replicating[v]
		}) {
			continue
		}
		if id != m.self {
			m.log.Info("cluster: removing a node from a group", slog.Uint64("group", group), slog.Uint64("node_id", id),
				slog.Any("voters", voters), slog.Any("want", want), slog.Any("live", r.Live), slog.Any("replicating", r.Replicating))
			return false, m.driver.ChangeConf(ctx, group, confChange(pb.ConfChangeType_ConfChangeRemoveNode, id))
		}
		// This leader is to go: hand the group to the wanted voter furthest
		// along, which then removes this node.
		var to uint64
		for _, v := range voters {
			if slices.Contains(want, v) && r.Replicating[v] && (to == 0 || r.Match[v] > r.Match[to]) {
				to = v
			}
		}
		if to != 0 {
			m.log.Info("cluster: handing over a group's leadership before leaving it", slog.Uint64("group", group), slog.Uint64("to", to))
			// Asked, not awaited: the next round sees who leads.
			if err := m.driver.startTransfer(ctx, group, to); !errors.Is(err, errTransferring) {
				return false, err
			}
			return false, nil
		}
	}
	return false, nil
}

func confChange(t pb.ConfChangeType, id uint64) *pb.ConfChangeV2 {
	return &pb.ConfChangeV2{Changes: []*pb.ConfChangeSingle{{Type: t.Enum(), NodeId: new(id)}}}
}
