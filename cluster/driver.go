// Package cluster replicates filad's state over etcd-io/raft: a meta
// group and a fixed number of partition groups, all of a node's groups
// driven by one goroutine (Driver), their log in the node's badger
// (cluster/raftlog), their messages over cluster/transport.
//
// The design, and why, is docs/architecture.md's "Where the cluster plugs
// in" and docs/decisions.md's issue-24 sections.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/fila-dev/filad/protos/fila/cluster/v1"
	"github.com/fila-dev/filad/storage"
)

// LogStore is where the driver keeps its groups' raft logs. Persist must
// make every update of one call that says MustSync durable before it
// returns (one transaction and one sync for all groups, and for every
// loop's appends that queued while the previous Persist ran: the node's
// group commit); the others (a commit index that moved, nothing else) it
// may leave to a later sync. Persist runs on a goroutine of the driver's
// own, one call at a time, while the driver's loop goes on reading the
// logs through Storage: a log must answer its reads while it is written.
type LogStore interface {
	// Storage is group's log as raft reads it.
	Storage(group uint64) (raft.Storage, error)
	// Persist durably saves updates, in their order, all or none.
	Persist(updates []LogUpdate) error
}

// LogUpdate is what one Ready asks to persist for one group.
type LogUpdate struct {
	Group     uint64
	Entries   []*pb.Entry
	HardState *pb.HardState // nil when unchanged
	Snapshot  *pb.Snapshot  // nil when none
	// MustSync: entries, a vote, a term, or a message that waits for this
	// update (a vote or an append's acknowledgement to a peer), which must
	// be on disk before that message goes out or raft learns it is stable.
	// A commit index alone need not be: raft learns it again from the
	// leader.
	MustSync bool
}

// Entry is a committed entry as the state machine sees it.
type Entry struct {
	Index, Term uint64
	// Data is what Propose was given.
	Data []byte
}

// StateMachine applies committed entries. The driver calls it on its own
// goroutine, in log order per group; it must be deterministic and must
// not block on anything the driver does.
type StateMachine interface {
	// Apply applies entries (those that carry data of one or more of raft's
	// applies of the group; there may be none), and records applied (the last committed entry's index and
	// term, and the group's membership then) with or after them, never
	// before: a replay from the applied index must not skip an entry.
	Apply(group uint64, entries []Entry, applied *pb.SnapshotMetadata) error
	// Applied is group's applied index as Apply last recorded it: raft
	// resumes applying after it when the node starts.
	Applied(group uint64) (uint64, error)
}

// DriverOptions configures a Driver.
type DriverOptions struct {
	// NodeID is this node's raft id (> 0).
	NodeID uint64
	// Groups are the groups this node is a member of.
	Groups []uint64
	// Peers are the voters a fresh group starts with (this node included);
	// ignored for a group whose log already holds state.
	Peers []uint64
	// GroupPeers, if set, are a fresh group's voters instead of Peers (a
	// replication factor below the node count). A group whose voters do
	// not include this node starts empty: a leader adds it later, if ever.
	GroupPeers func(group uint64) []uint64
	// Tick is one raft tick; ElectionTicks and HeartbeatTicks count them.
	Tick                          time.Duration
	ElectionTicks, HeartbeatTicks int
	Log                           LogStore
	Machine                       StateMachine
	// Send hands messages to the transport; it must not block.
	Send func(to uint64, msgs []*clusterv1.GroupMessage)
	// Leading is told when this node becomes a group's leader and has
	// applied everything committed before its term (the barrier: raft's
	// empty entry of the term is applied), and when it stops leading
	// (term 0). On the driver's goroutine: it must not block.
	Leading func(group, term uint64)
	// LeaderChanged, if set, is told when the leader this node knows of a
	// group changes (another node won, or none is known), after Status
	// says so: where a node that does not lead sends its callers. On the
	// driver's goroutine: it must not block.
	LeaderChanged func(group uint64)
	// Observer, if set, is told the driver's figures as they happen (see
	// Observer); nil costs nothing.
	Observer Observer
	// InstallSnapshot, if set, writes the state a raft snapshot message
	// names into the state machine before raft is given the message: the
	// snapshot's Data is a reference (the state travels out of band), and
	// the copy may take long. The driver runs it on a goroutine of its own
	// and meanwhile takes no Ready of that group (nothing of its old log
	// is applied over the copy); other groups carry on. nil error: the
	// group's state is the snapshot's, and raft then resets its log. An
	// error drops the message (the leader sends another). ctx ends when
	// the driver stops. When nil, raft gets the message as it came (a
	// snapshot whose Data is the state, for a LogStore that stores it).
	InstallSnapshot func(ctx context.Context, group uint64, snap *pb.Snapshot) error
	// Held are groups whose state was left partly installed by a crash
	// during InstallSnapshot: the driver never lets this node lead them
	// (Leading is not told) until a snapshot has installed.
	Held   []uint64
	Logger *slog.Logger
}

// Observer receives the driver's figures for telemetry. Its methods run
// on the driver's goroutine, once per event named, and must be cheap and
// never block: record into an instrument and return.
type Observer interface {
	// Persisted: one log write (one Persist and its sync: the appends of
	// every loop that queued behind the previous one) made entries
	// durable, summed over the groups; only called with entries > 0.
	Persisted(entries int)
	// Committed: a proposal of this node's was applied here, took after
	// ProposeAsync queued it (the commit on the leader, as a client's
	// write waits for it).
	Committed(group uint64, took time.Duration)
	// LeaderChanged: this node learnt that group has a new leader (a
	// leader it did not know before: an election won, here or elsewhere).
	// Not called when the leader becomes unknown.
	LeaderChanged(group, leader uint64)
}

// DefaultTick and friends are the raft timing filad runs with: an
// election after 1 s without a leader, a heartbeat every tick. A loaded
// 2-core machine can stall a process for hundreds of milliseconds; 1 s
// keeps that from electing spuriously. The tick is 200 ms, not etcd's
// 100, because an idle node's cost is its ticks: 3 nodes with 1,000
// queues idled at 2.6-3.9 % of a core each with 100 ms and 2.0-2.7 % with
// 200 ms, and failovers took as long (docs/decisions.md, "Idle cost: a
// 200 ms tick").
const (
	DefaultTick           = 200 * time.Millisecond
	DefaultElectionTicks  = 5
	DefaultHeartbeatTicks = 1
)

// ErrNotLeader: the group's leader is another node (or none is known).
var ErrNotLeader = errors.New("cluster: not the group's leader")

// NotLeaderError is ErrNotLeader naming the leader this node knows of.
type NotLeaderError struct {
	Group, Leader uint64 // Leader 0: none known
}

func (e *NotLeaderError) Error() string {
	if e.Leader == 0 {
		return fmt.Sprintf("cluster: group %d has no leader now", e.Group)
	}
	return fmt.Sprintf("cluster: group %d is led by node %d", e.Group, e.Leader)
}

// Is makes errors.Is(err, ErrNotLeader) hold.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// maxSizePerMsg bounds the entries of one append message, and
// maxInflightBytes those sent to a follower and not yet acknowledged. The
// leader reads and encodes what it sends on its loop: a follower far
// behind (one that just installed a snapshot of a big backlog) is sent
// this much at a time, and the loop goes on ticking and hearing its peers
// between. 8 MiB in flight is 800 MB/s at a 10 ms round trip.
const (
	maxSizePerMsg    = 1 << 20
	maxInflightBytes = 8 << 20
)

// Driver runs a node's raft groups on one goroutine: one ticker for all,
// and per loop every group's Ready: its log writes queued for the
// persister, its messages to peers sent, its committed entries applied
// (on the loop, while the persister syncs).
// The persister is a second goroutine that writes all queued log writes
// in one Persist (one sync), then lets out the messages that waited for
// them (raft's asynchronous storage writes: docs/decisions.md, "Log
// writes off the loop"). It is safe for concurrent use.
type Driver struct {
	opts   DriverOptions
	log    *slog.Logger
	groups map[uint64]*group
	// budget bounds one stretch of the loop's work (loopBudget): a tick,
	// at most a tenth of an election timeout.
	budget time.Duration
	// ticks counts the loop's ticks; heard is the tick of the last
	// message stepped from each peer, in any group: the liveness of the
	// members (heardLately). raft's RecentActive cannot serve: CheckQuorum
	// clears it for everyone every election timeout, so a live member
	// reads as silent until its next heartbeat answer, and a membership
	// rule that read it then took a live copy for a dead one. Any group,
	// because a follower installing one group's snapshot says nothing in
	// that group but goes on answering in the others.
	ticks uint64
	heard map[uint64]uint64

	// appends are the log writes the loop queued for the persister, in
	// order; appendSignal (capacity 1) says there are some. persisted
	// carries each Persist's outcome back to the loop.
	appendMu     sync.Mutex
	appends      []appendJob
	appendSignal chan struct{}
	persisted    chan persistResult
	persister    sync.WaitGroup

	inbox chan inbound
	props chan *proposal
	// calls run on the loop (onLoop): what must read or change a group's
	// raft state, as membership changes do.
	calls       chan func()
	unreachable chan uint64
	stop, done  chan struct{}
	// installed carries the outcome of an InstallSnapshot goroutine back
	// to the loop; installs are those goroutines, stopped by cancel.
	installed chan installResult
	installs  sync.WaitGroup
	cancel    context.CancelFunc
	ctx       context.Context

	mu     sync.Mutex
	status map[uint64]GroupStatus
	// moved is closed, and replaced, whenever a group's leader as Status
	// says changes: what a caller waiting for a leader waits on.
	moved chan struct{}
	// next is the last proposal or read id handed out: a 64-bit counter
	// from a random start, so that it repeats only after 2^64 ids, and
	// another incarnation's (or node's) ids overlap this one's only by a
	// chance of about ids/2^64. A proposal also matches its entry only in
	// the term it was proposed in (see proposal.term), which no other
	// incarnation leads.
	next uint64
	// sending is held (read) while a proposal is being queued; the loop
	// takes it whole to close the queue, so that no proposal is queued
	// after the loop drained it.
	sending  sync.RWMutex
	closed   bool
	stopOnce sync.Once
}

type group struct {
	id uint64
	rn *raft.RawNode
	// conf is the group's membership as last applied.
	conf *pb.ConfState
	// leading is the term this node leads in and has passed the barrier
	// of; 0 when not leading.
	leading uint64
	// waiting are this node's proposals not yet applied, by id.
	waiting map[uint64]*proposal
	// reads are this node's ReadIndex requests not yet answered, by id.
	reads map[uint64]*proposal
	// installing: an InstallSnapshot of this group is under way; the
	// group's Ready waits for it.
	installing bool
	// held: the state is partly a snapshot's after a crash; this node
	// must not lead until a snapshot installs.
	held bool
	// st is the group's log as raft reads it.
	st raft.Storage
	// snapSent are the peers a MsgSnap went to in the last Ready; raft is
	// told after Advance that it went (the data follows out of band).
	snapSent []uint64
	// snapPending is, on the leader, the index of the last snapshot sent
	// to each follower not caught up since: its log must keep what
	// follows the snapshot, then what follows the follower's match, until
	// it is (GroupStatus.SnapshotFloor). raft's own pending snapshot ends
	// as soon as the message goes (ReportSnapshot), since the data goes
	// out of band.
	snapPending map[uint64]uint64
	// confTicks > 0: a membership change this node proposed has not
	// applied yet; raft takes one at a time (it would turn a second into
	// an empty entry), so ChangeConf refuses until it applies, leadership
	// is lost, or this many ticks passed (it was lost on the way).
	confTicks int
}

// appendJob is one group's MsgStorageAppend: what to write, and the
// messages to let out once it is durable.
type appendJob struct {
	group    uint64
	msg      *pb.Message
	mustSync bool
}

// persistResult is one Persist of jobs, in their order.
type persistResult struct {
	jobs    []appendJob
	entries int
	err     error
}

// applyJob is one MsgStorageApply of a group: the entries for the state
// machine, and what the loop does once they are applied.
type applyJob struct {
	group   uint64
	entries []Entry
	applied *pb.SnapshotMetadata
	// mine are the proposal ids of the entries, in order, and their
	// terms.
	mine      []uint64
	mineTerms []uint64
	// barrier is the term whose empty entry this job applies while this
	// node led in that term; 0 when none.
	barrier uint64
	resp    []*pb.Message
}

type installResult struct {
	group uint64
	msg   *pb.Message
	err   error
}

type inbound struct {
	group uint64
	msg   *pb.Message
}

type proposal struct {
	group uint64
	id    uint64
	// term is the term it was appended in, as this node's leader: its
	// entry has that term, and an entry of another term with the same id
	// is not its.
	term uint64
	data []byte // with the id in front
	// done is told the outcome once, on the driver's goroutine (or the
	// caller's, for a refusal before proposing).
	done func(error)
	// forward: see ProposeForwarded.
	forward bool
	// read makes it a ReadIndex request, not a proposal: readDone is told
	// the index (see ReadIndex); ticksLeft bounds the wait.
	read      bool
	readDone  func(index uint64, err error)
	ticksLeft int
	// start is when it was queued, for Observer.Committed.
	start time.Time
}

// GroupStatus is what a group looks like from this node.
type GroupStatus struct {
	Leader, Term uint64
	// Commit is the group's commit index as this node knows it.
	Commit uint64
	// Leading is true once this node leads and passed its term's barrier.
	Leading bool
	Applied uint64
	// Voters is the number of voters of the group's membership as last
	// applied here (its replication count); 0 before the first apply.
	Voters int
	// Conf is the group's membership as last applied here (nil before
	// the first): voters, learners, and the outgoing voters of a joint
	// configuration. Read only.
	Conf *pb.ConfState
	// SnapshotFloor is, on the leader, the highest index the log may be
	// compacted to while a follower catches up from a snapshot: the
	// snapshot's index while it is on its way, then the follower's match,
	// until the follower is within PromoteSlack of the commit index. A
	// follower installing a big snapshot under writes is far behind once
	// it installed, and a compaction then would send it another. 0 when
	// none.
	SnapshotFloor uint64
}

// NewDriver starts a driver; Stop it.
func NewDriver(opts DriverOptions) (*Driver, error) {
	if opts.NodeID == 0 || opts.Log == nil || opts.Machine == nil || opts.Send == nil {
		return nil, errors.New("cluster: NodeID, Log, Machine and Send are required")
	}
	if opts.Tick <= 0 {
		opts.Tick = DefaultTick
	}
	if opts.ElectionTicks <= 0 {
		opts.ElectionTicks = DefaultElectionTicks
	}
	if opts.HeartbeatTicks <= 0 {
		opts.HeartbeatTicks = DefaultHeartbeatTicks
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Leading == nil {
		opts.Leading = func(uint64, uint64) {}
	}
	var p [8]byte
	if _, err := rand.Read(p[:]); err != nil {
		return nil, err
	}
	d := &Driver{
		opts: opts, log: opts.Logger, groups: map[uint64]*group{}, heard: map[uint64]uint64{}, next: binary.BigEndian.Uint64(p[:]),
		budget: min(opts.Tick, time.Duration(opts.ElectionTicks)*opts.Tick/10),
		inbox:  make(chan inbound, 1<<14), props: make(chan *proposal, 1<<12), unreachable: make(chan uint64, 64), calls: make(chan func(), 16),
		stop: make(chan struct{}), done: make(chan struct{}), status: map[uint64]GroupStatus{},
		moved:        make(chan struct{}),
		installed:    make(chan installResult, 1),
		appendSignal: make(chan struct{}, 1), persisted: make(chan persistResult, 1),
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	for _, gid := range opts.Groups {
		ids := opts.Peers
		if opts.GroupPeers != nil {
			ids = opts.GroupPeers(gid)
		}
		var peers []raft.Peer
		if slices.Contains(ids, opts.NodeID) {
			for _, id := range ids {
				peers = append(peers, raft.Peer{ID: id})
			}
		}
		st, err := opts.Log.Storage(gid)
		if err != nil {
			return nil, fmt.Errorf("cluster: group %d: %w", gid, err)
		}
		applied, err := opts.Machine.Applied(gid)
		if err != nil {
			return nil, fmt.Errorf("cluster: group %d: %w", gid, err)
		}
		if err := commitApplied(opts.Log, gid, st, applied); err != nil {
			return nil, fmt.Errorf("cluster: group %d: %w", gid, err)
		}
		rn, err := raft.NewRawNode(&raft.Config{
			ID: opts.NodeID, ElectionTick: opts.ElectionTicks, HeartbeatTick: opts.HeartbeatTicks,
			Storage: st, Applied: applied,
			MaxSizePerMsg: maxSizePerMsg, MaxInflightMsgs: 256, MaxInflightBytes: maxInflightBytes,
			// No limit on what a leader holds uncommitted: one that drops a
			// large proposal and takes a smaller one queued after it breaks
			// the order its store promises. The actors' mailboxes and the
			// proposal queue bound it instead.
			MaxUncommittedEntriesSize: 0,
			CheckQuorum:               true, PreVote: true,
			// A leader that applies its own removal steps down. raft's
			// default keeps it leading a group it is no member of, and
			// its heartbeats keep the members left from ever electing one
			// of their own (the voter a leader removes can win the next
			// term before it applies that removal).
			StepDownOnRemoval: true,
			// Log writes go to the persister and messages that wait for
			// them ride on its answer: the loop takes proposals and
			// applies while a sync runs, and the next sync carries all
			// that queued meanwhile.
			AsyncStorageWrites: true,
			Logger:             raftLogger{opts.Logger.With(slog.Uint64("group", gid))},
		})
		if err != nil {
			return nil, fmt.Errorf("cluster: group %d: %w", gid, err)
		}
		hs, cs, err := st.InitialState()
		if err != nil {
			return nil, fmt.Errorf("cluster: group %d: %w", gid, err)
		}
		bootstrapped := false
		if raft.IsEmptyHardState(hs) && len(peers) > 0 {
			if err := rn.Bootstrap(peers); err != nil {
				return nil, fmt.Errorf("cluster: bootstrap group %d: %w", gid, err)
			}
			bootstrapped = true
		}
		if v := cs.GetVoters(); !bootstrapped && len(v) == 1 && v[0] == opts.NodeID {
			// The only voter: no one else can win, so waiting an election
			// timeout (1-2 s) before serving after a restart buys nothing.
			// (A group just bootstrapped cannot campaign before it applies
			// its membership: it elects after the timeout, once.)
			if err := rn.Campaign(); err != nil {
				return nil, fmt.Errorf("cluster: campaign in group %d: %w", gid, err)
			}
		}
		d.groups[gid] = &group{id: gid, rn: rn, st: st, conf: cs, waiting: map[uint64]*proposal{}, reads: map[uint64]*proposal{}, snapPending: map[uint64]uint64{}, held: slices.Contains(opts.Held, gid)}
		// What a restart applied before the crash counts: raft delivers
		// only what comes after it, maybe nothing.
		d.status[gid] = GroupStatus{Applied: applied, Commit: hs.GetCommit(), Conf: cs, Voters: len(cs.GetVoters())}
	}
	go d.run()
	return d, nil
}

// commitApplied raises group's stored commit index to applied when a
// stop left it below: the loop applies entries while the HardState that
// commits them may still wait in the persister's queue (a commit index
// alone is written with the next write), so the applied record can reach
// the disk first, and raft refuses to start with applied
// beyond its commit index. The raise is sound: nothing applies before
// it commits, nor before it is durable in this node's log, so every
// entry up to applied is in the log and committed.
func commitApplied(log LogStore, group uint64, st raft.Storage, applied uint64) error {
	hs, _, err := st.InitialState()
	if err != nil || applied <= hs.GetCommit() || raft.IsEmptyHardState(hs) {
		return err
	}
	raised := &pb.HardState{Term: new(hs.GetTerm()), Vote: new(hs.GetVote()), Commit: new(applied)}
	return log.Persist([]LogUpdate{{Group: group, HardState: raised, MustSync: true}})
}

// Step hands a message from the transport to its group. It never blocks:
// when the driver is behind, the message is dropped, as a congested link
// would drop it, and raft resends.
func (d *Driver) Step(msgs []*clusterv1.GroupMessage) {
	for _, gm := range msgs {
		m := &pb.Message{}
		if err := proto.Unmarshal(gm.GetMessage(), m); err != nil {
			d.log.Warn("raft message dropped: it does not decode", slog.Uint64("group", gm.GetGroup()), slog.Any("error", err))
			continue
		}
		select {
		case d.inbox <- inbound{group: gm.GetGroup(), msg: m}:
		default:
		}
	}
}

// Unreachable tells the groups that sending to peer failed.
func (d *Driver) Unreachable(peer uint64) {
	select {
	case d.unreachable <- peer:
	default:
	}
}

// ProposeAsync appends data to group's log, in the order of the calls,
// and calls done once this node has applied it (nil), or with why not:
// a *NotLeaderError when this node does not lead the group (nothing was
// proposed; done runs before ProposeAsync returns), and
// storage.ErrOutcomeUnknown when it stopped leading after proposing (the
// entry may still commit under the next leader). done must not block. It
// waits only while the driver's proposal queue is full.
func (d *Driver) ProposeAsync(group uint64, data []byte, done func(error)) {
	st, ok := d.Status(group)
	switch {
	case !ok:
		done(fmt.Errorf("cluster: node %d is no member of group %d", d.opts.NodeID, group))
		return
	case !st.Leading:
		done(&NotLeaderError{Group: group, Leader: st.Leader})
		return
	}
	id := d.nextID()
	p := &proposal{group: group, id: id, data: binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(data)), id), done: done, start: time.Now()}
	p.data = append(p.data, data...)
	d.sending.RLock()
	defer d.sending.RUnlock()
	if d.closed {
		done(storage.ErrClosed)
		return
	}
	select {
	case d.props <- p:
	case <-d.stop:
		done(storage.ErrClosed)
	}
}

// nextID is a proposal or read id, never 0 (ProposeForwarded's, which
// no one waits for).
func (d *Driver) nextID() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.next++
	if d.next == 0 {
		d.next++
	}
	return d.next
}

// ProposeForwarded hands data to raft here whether or not this node
// leads group: a follower's raft forwards it to the leader it knows. No
// one tells whether it committed, so data must be idempotent and the
// caller watches for its effect, proposing again if it does not come. It
// answers an error when raft dropped it here (no leader known, a transfer
// under way) or the driver stopped.
func (d *Driver) ProposeForwarded(group uint64, data []byte) error {
	if _, ok := d.Status(group); !ok {
		return fmt.Errorf("cluster: node %d is no member of group %d", d.opts.NodeID, group)
	}
	ch := make(chan error, 1)
	// id 0: no node waits for it (ids of ProposeAsync start at 1).
	p := &proposal{group: group, data: binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(data)), 0), done: func(err error) { ch <- err }, forward: true}
	p.data = append(p.data, data...)
	d.sending.RLock()
	if d.closed {
		d.sending.RUnlock()
		return storage.ErrClosed
	}
	select {
	case d.props <- p:
	case <-d.stop:
		d.sending.RUnlock()
		return storage.ErrClosed
	}
	d.sending.RUnlock()
	select {
	case err := <-ch:
		return err
	case <-d.done:
		return storage.ErrClosed
	}
}

// ReadIndex returns an index of group such that, once this node has
// applied it (WaitApplied), it has applied every entry committed before
// the call: raft's ReadIndex, which the leader confirms with a quorum. It
// answers an error when the request went unanswered for three election
// timeouts (no leader; raft drops such a request), or with ctx.
func (d *Driver) ReadIndex(ctx context.Context, group uint64) (uint64, error) {
	if _, ok := d.Status(group); !ok {
		return 0, fmt.Errorf("cluster: node %d is no member of group %d", d.opts.NodeID, group)
	}
	type answer struct {
		index uint64
		err   error
	}
	ch := make(chan answer, 1)
	id := d.nextID()
	p := &proposal{group: group, id: id, read: true, readDone: func(i uint64, err error) { ch <- answer{i, err} }}
	d.sending.RLock()
	if d.closed {
		d.sending.RUnlock()
		return 0, storage.ErrClosed
	}
	select {
	case d.props <- p:
	case <-d.stop:
		d.sending.RUnlock()
		return 0, storage.ErrClosed
	case <-ctx.Done():
		d.sending.RUnlock()
		return 0, ctx.Err()
	}
	d.sending.RUnlock()
	select {
	case a := <-ch:
		return a.index, a.err
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-d.done:
		return 0, storage.ErrClosed
	}
}

// WaitApplied returns once this node has applied group up to index, or
// with ctx's error.
func (d *Driver) WaitApplied(ctx context.Context, group, index uint64) error {
	for {
		if st, _ := d.Status(group); st.Applied >= index {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-d.done:
			return storage.ErrClosed
		case <-time.After(2 * time.Millisecond): // applies land within a loop; a short poll is cheap
		}
	}
}

// expireReads answers the ReadIndex requests of g that waited too long
// (raft drops one when there is no leader, and never says).
func expireReads(g *group) {
	for id, r := range g.reads {
		if r.ticksLeft--; r.ticksLeft <= 0 {
			delete(g.reads, id)
			r.readDone(0, fmt.Errorf("cluster: group %d: read index unanswered (no leader?)", g.id))
		}
	}
}

// Propose is ProposeAsync waiting for the outcome; a ctx that ends after
// the proposal went out makes it storage.ErrOutcomeUnknown.
func (d *Driver) Propose(ctx context.Context, group uint64, data []byte) error {
	ch := make(chan error, 1)
	d.ProposeAsync(group, data, func(err error) { ch <- err })
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", storage.ErrOutcomeUnknown, ctx.Err())
	case <-d.done:
		select {
		case err := <-ch:
			return err
		default:
			return storage.ErrOutcomeUnknown
		}
	}
}

// Status is group's state as this node last saw it.
func (d *Driver) Status(group uint64) (GroupStatus, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st, ok := d.status[group]
	if !ok {
		_, ok = d.groups[group]
	}
	return st, ok
}

// Holds reports whether the group's membership as last applied here
// holds node: a voter, a learner, or an outgoing voter.
func (s GroupStatus) Holds(node uint64) bool {
	cs := s.Conf
	return slices.Contains(cs.GetVoters(), node) || slices.Contains(cs.GetLearners(), node) || slices.Contains(cs.GetVotersOutgoing(), node)
}

// Stop ends the driver; proposals waiting end with ErrOutcomeUnknown.
func (d *Driver) Stop() {
	d.stopOnce.Do(func() { close(d.stop) })
	<-d.done
}

// Done is closed once the driver has ended: stopped, or failed to write
// its log (then it logged why, and leads nothing any more).
func (d *Driver) Done() <-chan struct{} { return d.done }

func (d *Driver) run() {
	defer close(d.done)
	defer d.installs.Wait()  // they write the DB, which the caller closes after Stop
	defer d.persister.Wait() // so does it
	defer d.cancel()
	defer d.refuseQueued()
	defer d.failWaiting(storage.ErrOutcomeUnknown)
	defer d.abdicate()
	// However the loop ends, a proposer blocked on a full queue is let go
	// (it selects on stop), so refuseQueued can close the queue.
	defer d.stopOnce.Do(func() { close(d.stop) })
	d.persister.Add(1)
	go d.persist()
	t := time.NewTicker(d.opts.Tick)
	defer t.Stop()
	var stall stallWatch
	// again is closed while work was left when the last stretch's budget
	// ran out: a tick due is taken first (heartbeats must go out), the
	// select takes one more event if any waits, and otherwise comes
	// straight back to the work. (The inbox is drained with the work.)
	var again chan struct{}
	left := make(chan struct{})
	close(left)
	for {
		if again != nil {
			select {
			case <-t.C:
				d.tick(&stall)
			default:
			}
		}
		select {
		case <-d.stop:
			return
		case <-again:
		case <-t.C:
			d.tick(&stall)
		case f := <-d.calls:
			f()
		case in := <-d.inbox:
			d.step(in)
		case p := <-d.props:
			d.propose(p)
		case peer := <-d.unreachable:
			for _, g := range d.groups {
				g.rn.ReportUnreachable(peer)
			}
		case r := <-d.installed:
			d.finishInstall(r)
		case r := <-d.persisted:
			if r.err != nil {
				// The log could not be made durable: nothing that waited
				// for it goes out or is applied. A node that cannot write
				// its log must stop taking part; its peers carry on
				// without it.
				d.log.Error("raft log write failed; the node stops its raft groups", slog.Any("error", r.err))
				return
			}
			d.finishPersist(r)
		}
		// Whatever else arrived, messages and proposals both, goes into
		// this loop's Ready: above all the proposals that queued while
		// the persister synced, whose write then starts before this
		// loop applies what that sync committed, and runs beside it.
		//
		// One stretch of work runs for at most a tick, and a tenth of an
		// election timeout (d.budget, loopBudget): a
		// leader catching up a follower far behind, or a follower applying
		// a long backlog, must still tick, heartbeat and answer the other
		// groups' leaders in time, or every group it takes part in may
		// lose its leader.
		began := time.Now()
		spent := loopBudget(began, d.budget)
		d.drain(spent)
		// An apply's answer can leave more to do at once (raft releases
		// the next committed entries once it hears the last were applied),
		// so loop until no group has a Ready, or the budget is spent,
		// rather than wait for the next tick or message.
		again = nil
		rounds := 0
		for more := true; more; rounds++ {
			var err error
			if more, err = d.ready(); err != nil {
				// A replica cannot skip an entry the others applied.
				d.log.Error("raft apply failed; the node stops its raft groups", slog.Any("error", err))
				return
			}
			if more && spent() {
				again = left
				break
			}
		}
		stall.worked(time.Since(began), rounds)
	}
}

// stallWatch notices a raft loop that did not tick for half an election
// timeout: meanwhile no group it leads sent a heartbeat, and it may have
// lost their leaderships ("stepped down ... quorum is not active"). It
// logs the gap with the longest stretch of Ready work since the last
// tick, which tells a loop kept busy by its own work from one kept off
// the CPU (a long GC, a starved machine).
type stallWatch struct {
	last          time.Time
	longest       time.Duration
	longestRounds int
}

func (s *stallWatch) worked(took time.Duration, rounds int) {
	if took > s.longest {
		s.longest, s.longestRounds = took, rounds
	}
}

func (s *stallWatch) ticked(d *Driver, now time.Time) {
	if gap := now.Sub(s.last); !s.last.IsZero() && gap > time.Duration(d.opts.ElectionTicks)*d.opts.Tick/2 {
		d.log.Warn("raft loop held up: no tick for half an election timeout",
			slog.Duration("gap", gap), slog.Duration("longest_ready_work", s.longest), slog.Int("ready_rounds", s.longestRounds))
	}
	s.last, s.longest, s.longestRounds = now, 0, 0
}

// tick is one raft tick of every group.
func (d *Driver) tick(stall *stallWatch) {
	stall.ticked(d, time.Now())
	d.ticks++
	for _, g := range d.groups {
		g.rn.Tick()
		expireReads(g)
		if g.confTicks > 0 {
			g.confTicks--
		}
	}
}

// loopBudget is a stretch of the loop's work that began at began: spent
// once it has run for budget.
func loopBudget(began time.Time, budget time.Duration) (spent func() bool) {
	until := began.Add(budget)
	return func() bool { return time.Now().After(until) }
}

// drain steps what waits in the inbox and proposes what waits in the
// proposal queue, up to a bound each, and not once spent, so that a flood
// cannot hold off the Ready. (A step can be costly: a leader's answer
// from a follower it is catching up reads and queues the next entries.)
func (d *Driver) drain(spent func() bool) {
	drainChan(d.inbox, d.step, spent)
	drainChan(d.props, d.propose, spent)
}

// drainChan hands f what waits in ch, up to 4096, until spent.
func drainChan[T any](ch <-chan T, f func(T), spent func() bool) {
	for range 4096 {
		select {
		case v := <-ch:
			f(v)
		default:
			return
		}
		if spent() {
			return
		}
	}
}

func (d *Driver) step(in inbound) {
	g := d.groups[in.group]
	if g == nil {
		return
	}
	if in.msg.GetType() == pb.MessageType_MsgSnap && d.opts.InstallSnapshot != nil {
		d.startInstall(g, in.msg)
		return
	}
	d.heard[in.msg.GetFrom()] = d.ticks
	_ = g.rn.Step(in.msg) // a message of a stale term or a removed peer: raft ignores it
}

// heardLately reports whether the loop stepped a message from peer, in
// any group, within the last election timeout.
func (d *Driver) heardLately(peer uint64) bool {
	at, ok := d.heard[peer]
	return ok && d.ticks-at <= uint64(d.opts.ElectionTicks)
}

// startInstall copies the state a MsgSnap names on a goroutine; raft gets
// the message once the copy is done (finishInstall). A MsgSnap arriving
// while a copy is under way is dropped: the leader resends if the copy
// does not bring this node up to date.
func (d *Driver) startInstall(g *group, m *pb.Message) {
	if g.installing {
		return
	}
	meta := m.GetSnapshot().GetMetadata()
	if meta.GetIndex() <= g.rn.Status().Applied {
		_ = g.rn.Step(m) // stale: raft answers it without a copy
		return
	}
	if t, err := g.st.Term(meta.GetIndex()); err == nil && t == meta.GetTerm() {
		// The log has the snapshot's entry: raft only moves the commit
		// index on, and the entries apply from the log.
		_ = g.rn.Step(m)
		return
	}
	g.installing = true
	d.installs.Add(1)
	go func() {
		defer d.installs.Done()
		err := d.opts.InstallSnapshot(d.ctx, g.id, m.GetSnapshot())
		select {
		case d.installed <- installResult{group: g.id, msg: m, err: err}:
		case <-d.ctx.Done():
		}
	}()
}

func (d *Driver) finishInstall(r installResult) {
	g := d.groups[r.group]
	g.installing = false
	if r.err != nil {
		d.log.Warn("raft snapshot not installed; the leader will send another",
			slog.Uint64("group", r.group), slog.Uint64("index", r.msg.GetSnapshot().GetMetadata().GetIndex()), slog.Any("error", r.err))
		return
	}
	g.held = false
	_ = g.rn.Step(r.msg)
}

func (d *Driver) propose(p *proposal) {
	g := d.groups[p.group]
	if p.read {
		g.rn.ReadIndex(binary.BigEndian.AppendUint64(nil, p.id))
		p.ticksLeft = 3 * d.opts.ElectionTicks
		g.reads[p.id] = p
		return
	}
	if p.forward {
		p.done(g.rn.Propose(p.data))
		return
	}
	if g.leading == 0 {
		p.done(&NotLeaderError{Group: p.group, Leader: g.rn.BasicStatus().Lead})
		return
	}
	if err := g.rn.Propose(p.data); err != nil {
		// Dropped, not appended: a leadership transfer is under way (with
		// no bound on what a leader holds uncommitted, raft drops a
		// leader's proposal for nothing else). Nothing is written: a
		// refusal naming the node taking over, where a retry goes.
		p.done(&NotLeaderError{Group: p.group, Leader: g.rn.BasicStatus().LeadTransferee})
		return
	}
	p.term = g.rn.BasicStatus().GetTerm() // a leader appends with its own term
	g.waiting[p.id] = p
}

// ready does one loop's work for every group that has some: queue its
// log writes for the persister, send its messages, apply what committed.
// did is false when no group had any.
//
// With raft's asynchronous storage writes a Ready's messages are safe to
// send at once (a leader's appends go out while its own write is under
// way); those that must wait for this node's log write (votes, a
// follower's acknowledgement, the leader's own) are the responses of the
// MsgStorageAppend, let out by the persister after the sync. Committed
// entries come in a MsgStorageApply only once they are durable here; the
// loop applies them itself, while the persister syncs what it queued
// before (a goroutine of their own bought nothing measurable and cost
// each commit two more hand-offs; docs/decisions.md).
func (d *Driver) ready() (did bool, err error) {
	type apply struct {
		g   *group
		msg *pb.Message
	}
	var jobs []appendJob
	var applies []apply
	var readied []*group
	for _, g := range d.groups {
		if g.installing || !g.rn.HasReady() {
			continue
		}
		readied = append(readied, g)
		rd := g.rn.Ready()
		out := rd.Messages[:0:0]
		for _, m := range rd.Messages {
			switch m.GetTo() {
			case raft.LocalAppendThread:
				jobs = append(jobs, appendJob{group: g.id, msg: m, mustSync: appendMustSync(rd, m, d.opts.NodeID)})
			case raft.LocalApplyThread:
				applies = append(applies, apply{g, m})
			default:
				out = append(out, m)
			}
		}
		d.send(g, out)
		for _, to := range g.snapSent {
			// The snapshot's data goes out of band, fetched by the
			// follower: the message went, and raft may go on probing the
			// follower. (Should the fetch fail, the follower rejects the
			// probe, and raft sends a snapshot again.)
			g.rn.ReportSnapshot(to, raft.SnapshotFinish)
		}
		g.snapSent = g.snapSent[:0]
		for _, rs := range rd.ReadStates {
			if len(rs.RequestCtx) != 8 {
				continue
			}
			id := binary.BigEndian.Uint64(rs.RequestCtx)
			if r := g.reads[id]; r != nil {
				delete(g.reads, id)
				r.readDone(rs.Index, nil)
			}
		}
	}
	if len(readied) == 0 {
		return false, nil
	}
	if len(jobs) > 0 {
		d.appendMu.Lock()
		d.appends = append(d.appends, jobs...)
		d.appendMu.Unlock()
		select {
		case d.appendSignal <- struct{}{}:
		default: // already signalled: the persister takes these too
		}
	}
	for _, a := range applies {
		j, err := d.prepareApply(a.g, a.msg)
		if err != nil {
			return false, err
		}
		if j.applied != nil {
			if err := d.opts.Machine.Apply(j.group, j.entries, j.applied); err != nil {
				return false, fmt.Errorf("cluster: apply group %d: %w", j.group, err)
			}
		}
		d.finishApply(j)
	}
	for _, g := range readied {
		d.observe(g)
	}
	return true, nil
}

// appendMustSync says whether m, a MsgStorageAppend of rd, must be
// durable before its responses are let out: raft's MustSync (entries, a
// vote or a term), a snapshot, or any response to a peer (which acts on
// it as durable). What is left is a commit index, and this node's own
// bookkeeping of stability, which an earlier synced write already backs.
func appendMustSync(rd raft.Ready, m *pb.Message, self uint64) bool {
	if rd.MustSync || m.GetSnapshot() != nil {
		return true
	}
	for _, r := range m.GetResponses() {
		if r.GetTo() != self {
			return true
		}
	}
	return false
}

// persist is the persister: it takes every log write queued, writes them
// in one Persist, lets the messages that waited for them out to peers
// (this node's own go back to the loop with the outcome), and starts
// again. While it writes, the loop queues more: the next Persist carries
// them all. It ends with the driver, or after a write failed.
func (d *Driver) persist() {
	defer d.persister.Done()
	for {
		select {
		case <-d.stop:
			return
		case <-d.appendSignal:
		}
		d.appendMu.Lock()
		jobs := d.appends
		d.appends = nil
		d.appendMu.Unlock()
		if len(jobs) == 0 {
			continue
		}
		updates := make([]LogUpdate, 0, len(jobs))
		entries := 0
		for _, j := range jobs {
			m := j.msg
			u := LogUpdate{Group: j.group, Entries: m.GetEntries(), MustSync: j.mustSync}
			if m.Term != nil || m.Vote != nil || m.Commit != nil {
				// raft sets these three only when the HardState changed.
				u.HardState = &pb.HardState{Term: m.Term, Vote: m.Vote, Commit: m.Commit}
			}
			if sn := m.GetSnapshot(); sn != nil && !raft.IsEmptySnap(sn) {
				u.Snapshot = sn
			}
			entries += len(u.Entries)
			updates = append(updates, u)
		}
		err := d.opts.Log.Persist(updates)
		if err == nil {
			for _, j := range jobs {
				var remote []*pb.Message
				for _, r := range j.msg.GetResponses() {
					if r.GetTo() != d.opts.NodeID {
						remote = append(remote, r)
					}
				}
				d.sendTo(j.group, remote, nil)
			}
		}
		select {
		case d.persisted <- persistResult{jobs: jobs, entries: entries, err: err}:
		case <-d.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

// finishPersist hands raft, on the loop, what a Persist made durable:
// each job's responses addressed to this node, in order.
func (d *Driver) finishPersist(r persistResult) {
	for _, j := range r.jobs {
		g := d.groups[j.group]
		if s := j.msg.GetSnapshot(); s != nil && !raft.IsEmptySnap(s) {
			d.mu.Lock()
			st := d.status[g.id]
			st.Applied = max(st.Applied, s.GetMetadata().GetIndex())
			d.status[g.id] = st
			d.mu.Unlock()
			g.conf = s.GetMetadata().GetConfState()
		}
		d.stepLocal(g, j.msg.GetResponses())
	}
	if r.entries > 0 && d.opts.Observer != nil {
		d.opts.Observer.Persisted(r.entries)
	}
}

// stepLocal steps the responses of a storage message that are this
// node's own (the others went to peers).
func (d *Driver) stepLocal(g *group, msgs []*pb.Message) {
	for _, m := range msgs {
		if m.GetTo() == d.opts.NodeID {
			_ = g.rn.Step(m) // raft drops a stale one (a term since changed)
		}
	}
}

// send sends g's messages, grouped by peer, noting the snapshots sent.
func (d *Driver) send(g *group, msgs []*pb.Message) {
	d.sendTo(g.id, msgs, func(to, index uint64) {
		g.snapSent = append(g.snapSent, to)
		g.snapPending[to] = index
	})
}

// sendTo sends group's messages, grouped by peer; snap, if set, is told
// each peer a MsgSnap goes to, and the snapshot's index. Safe on any
// goroutine when snap is nil.
func (d *Driver) sendTo(group uint64, msgs []*pb.Message, snap func(to, index uint64)) {
	if len(msgs) == 0 {
		return
	}
	by := map[uint64][]*clusterv1.GroupMessage{}
	for _, m := range msgs {
		if m.GetType() == pb.MessageType_MsgSnap && snap != nil {
			snap(m.GetTo(), m.GetSnapshot().GetMetadata().GetIndex())
		}
		b, err := proto.Marshal(m)
		if err != nil {
			d.log.Error("raft message dropped: it does not encode", slog.Any("error", err))
			continue
		}
		by[m.GetTo()] = append(by[m.GetTo()], &clusterv1.GroupMessage{Group: group, Message: b})
	}
	for to, ms := range by {
		d.opts.Send(to, ms)
	}
}

// prepareApply reads m, a MsgStorageApply of g, on the loop: the
// entries the state machine gets, the proposals they answer, whether the
// term's barrier is among them; membership changes apply to raft here
// (they are committed; the state machine's applied record carries the
// membership after them).
func (d *Driver) prepareApply(g *group, m *pb.Message) (applyJob, error) {
	committed := m.GetEntries()
	j := applyJob{group: g.id, resp: m.GetResponses(), entries: make([]Entry, 0, len(committed))}
	for _, e := range committed {
		switch e.GetType() {
		case pb.EntryType_EntryNormal:
			data := e.GetData()
			if len(data) == 0 {
				// The empty entry a leader appends at the start of its
				// term: once it is applied, so is everything before it.
				if st := g.rn.BasicStatus(); st.RaftState == raft.StateLeader && e.GetTerm() == st.GetTerm() {
					j.barrier = e.GetTerm()
				}
				continue
			}
			if len(data) < 8 {
				return j, fmt.Errorf("cluster: group %d entry %d: %d bytes, no proposal id", g.id, e.GetIndex(), len(data))
			}
			j.entries = append(j.entries, Entry{Index: e.GetIndex(), Term: e.GetTerm(), Data: data[8:]})
			j.mine = append(j.mine, binary.BigEndian.Uint64(data))
			j.mineTerms = append(j.mineTerms, e.GetTerm())
		case pb.EntryType_EntryConfChange:
			cc := &pb.ConfChange{}
			if err := proto.Unmarshal(e.GetData(), cc); err != nil {
				return j, fmt.Errorf("cluster: group %d conf change %d: %w", g.id, e.GetIndex(), err)
			}
			g.conf = g.rn.ApplyConfChange(cc)
			g.confTicks = 0
		case pb.EntryType_EntryConfChangeV2:
			cc := &pb.ConfChangeV2{}
			if err := proto.Unmarshal(e.GetData(), cc); err != nil {
				return j, fmt.Errorf("cluster: group %d conf change %d: %w", g.id, e.GetIndex(), err)
			}
			g.conf = g.rn.ApplyConfChange(cc)
			g.confTicks = 0
		}
	}
	if len(committed) > 0 {
		last := committed[len(committed)-1]
		j.applied = &pb.SnapshotMetadata{Index: new(last.GetIndex()), Term: new(last.GetTerm()), ConfState: g.conf}
	}
	return j, nil
}

// finishApply is what follows an applied job: the proposals answered,
// the status, the barrier passed, and raft told.
func (d *Driver) finishApply(j applyJob) {
	g := d.groups[j.group]
	for i, id := range j.mine {
		if p := g.waiting[id]; p != nil && p.term == j.mineTerms[i] {
			delete(g.waiting, id)
			p.done(nil)
			if d.opts.Observer != nil {
				d.opts.Observer.Committed(g.id, time.Since(p.start))
			}
		}
	}
	if j.applied != nil {
		d.mu.Lock()
		s := d.status[g.id]
		s.Applied = j.applied.GetIndex()
		d.status[g.id] = s
		d.mu.Unlock()
	}
	d.stepLocal(g, j.resp)
	if j.barrier == 0 {
		return
	}
	if st := g.rn.BasicStatus(); st.RaftState != raft.StateLeader || st.GetTerm() != j.barrier {
		return // lost the term while the barrier applied
	}
	if g.held {
		d.log.Error("this node leads a group whose state a crash left partly installed from a snapshot; it serves none of it until a snapshot installs",
			slog.Uint64("group", g.id))
		return
	}
	g.leading = j.barrier
	// Status first: Leading's receiver reads it (the broker's
	// Placement) and must see this node lead.
	d.publish(g)
	d.opts.Leading(g.id, g.leading)
}

// publish copies g's raft status into what Status answers, and tells
// LeaderChanged when the leader it names changed.
func (d *Driver) publish(g *group) {
	st := g.rn.BasicStatus()
	d.mu.Lock()
	s := d.status[g.id]
	changed := s.Leader != st.Lead
	s.Leader, s.Term, s.Leading, s.Commit = st.Lead, st.GetTerm(), g.leading != 0, st.GetCommit()
	s.Voters = len(g.conf.GetVoters())
	s.Conf = g.conf
	s.SnapshotFloor = d.snapshotFloor(g)
	d.status[g.id] = s
	if changed {
		close(d.moved)
		d.moved = make(chan struct{})
	}
	d.mu.Unlock()
	if changed && st.Lead != 0 && d.opts.Observer != nil {
		d.opts.Observer.LeaderChanged(g.id, st.Lead)
	}
	if changed && d.opts.LeaderChanged != nil {
		d.opts.LeaderChanged(g.id)
	}
}

// snapshotFloor is GroupStatus.SnapshotFloor of g: over the followers of
// g.snapPending, the lowest of each one's snapshot index or match,
// whichever is higher; it first rids g.snapPending of those caught up or
// no members any more. A follower that died while catching up stays
// until it is removed; the compactor bounds what that holds back.
func (d *Driver) snapshotFloor(g *group) uint64 {
	if g.leading == 0 || len(g.snapPending) == 0 {
		clear(g.snapPending)
		return 0
	}
	commit := g.rn.BasicStatus().GetCommit()
	var floor uint64
	kept := 0
	g.rn.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
		index, ok := g.snapPending[id]
		switch {
		case !ok:
		case pr.Match+PromoteSlack >= commit:
			delete(g.snapPending, id)
		default:
			kept++
			if f := max(index, pr.Match); floor == 0 || f < floor {
				floor = f
			}
		}
	})
	if len(g.snapPending) > kept { // some are no members any more (raft tracks no progress of them)
		for id := range g.snapPending {
			if !slices.Contains(g.conf.GetVoters(), id) && !slices.Contains(g.conf.GetLearners(), id) && !slices.Contains(g.conf.GetVotersOutgoing(), id) {
				delete(g.snapPending, id)
			}
		}
	}
	return floor
}

// observe notes leader changes: a node that stopped leading tells Leading
// and fails its waiting proposals as unknown (they may still commit).
func (d *Driver) observe(g *group) {
	st := g.rn.BasicStatus()
	lost := g.leading != 0 && (st.RaftState != raft.StateLeader || st.GetTerm() != g.leading)
	if lost {
		// Rare, and what an operator reading a latency spike asks first: a
		// transfer's, a removal's or a failed quorum check's end of a term.
		d.log.Info("raft: this node no longer leads a group", slog.Uint64("group", g.id), slog.Uint64("term", g.leading),
			slog.String("state", st.RaftState.String()), slog.Uint64("new_term", st.GetTerm()), slog.Uint64("leader", st.Lead))
		g.leading = 0
		g.confTicks = 0
		for id, p := range g.waiting {
			delete(g.waiting, id)
			p.done(storage.ErrOutcomeUnknown)
		}
	}
	d.publish(g) // before Leading: its receiver must see this node no longer lead
	if lost {
		d.opts.Leading(g.id, 0)
	}
}

// abdicate is the driver's end: no group is led here any more, and
// Leading says so for those that were, so that nothing goes on serving
// from memory what this node can no longer write.
func (d *Driver) abdicate() {
	for _, g := range d.groups {
		was := g.leading
		g.leading = 0
		d.mu.Lock()
		d.status[g.id] = GroupStatus{Applied: d.status[g.id].Applied}
		d.mu.Unlock()
		if was != 0 {
			d.opts.Leading(g.id, 0)
		}
	}
}

// refuseQueued answers the proposals queued and never proposed.
func (d *Driver) refuseQueued() {
	d.sending.Lock()
	d.closed = true
	d.sending.Unlock()
	for {
		select {
		case p := <-d.props:
			p.fail(storage.ErrClosed)
		default:
			return
		}
	}
}

func (d *Driver) failWaiting(err error) {
	for _, g := range d.groups {
		for id, p := range g.waiting {
			delete(g.waiting, id)
			p.done(err)
		}
		for id, r := range g.reads {
			delete(g.reads, id)
			r.fail(err)
		}
	}
}

// fail tells p's caller err, whether p is a proposal or a read.
func (p *proposal) fail(err error) {
	if p.read {
		p.readDone(0, err)
		return
	}
	p.done(err)
}

// raftLogger sends etcd raft's log to slog: its Info is chatty (every
// vote), so it goes to DEBUG; warnings and errors stay what they are.
type raftLogger struct{ l *slog.Logger }

func (r raftLogger) Debug(v ...any)              { r.l.Debug(fmt.Sprint(v...)) }
func (r raftLogger) Debugf(f string, v ...any)   { r.l.Debug(fmt.Sprintf(f, v...)) }
func (r raftLogger) Info(v ...any)               { r.l.Debug(fmt.Sprint(v...)) }
func (r raftLogger) Infof(f string, v ...any)    { r.l.Debug(fmt.Sprintf(f, v...)) }
func (r raftLogger) Warning(v ...any)            { r.l.Warn(fmt.Sprint(v...)) }
func (r raftLogger) Warningf(f string, v ...any) { r.l.Warn(fmt.Sprintf(f, v...)) }
func (r raftLogger) Error(v ...any)              { r.l.Error(fmt.Sprint(v...)) }
func (r raftLogger) Errorf(f string, v ...any)   { r.l.Error(fmt.Sprintf(f, v...)) }
func (r raftLogger) Fatal(v ...any)              { r.l.Error(fmt.Sprint(v...)); panic(fmt.Sprint(v...)) }
func (r raftLogger) Fatalf(f string, v ...any)   { r.Fatal(fmt.Sprintf(f, v...)) }
func (r raftLogger) Panic(v ...any)              { panic(fmt.Sprint(v...)) }
func (r raftLogger) Panicf(f string, v ...any)   { panic(fmt.Sprintf(f, v...)) }
