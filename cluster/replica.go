package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"

	"github.com/fila-dev/filad/cluster/raftlog"
	"github.com/fila-dev/filad/cluster/transport"
	clusterv1 "github.com/fila-dev/filad/protos/fila/cluster/v1"
	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry"
)

// MetaGroup is the raft group of queue definitions, deletion marks and the
// runtime config; partitions are groups 1..Partitions.
const MetaGroup = 0

// GroupOf is the meta group for the meta owner, else the partition a hash
// of the family's name gives: where a family is placed that no record or
// mark places (Families.Group), and where CreateQueue's search for the
// least loaded partition starts.
func GroupOf(owner storage.Owner, partitions int) uint64 {
	if owner.Meta || partitions <= 0 {
		return MetaGroup
	}
	h := fnv.New32a()
	h.Write([]byte(owner.Family))
	return 1 + uint64(h.Sum32()%uint32(partitions))
}

// ReplicaOptions configures a Replica.
type ReplicaOptions struct {
	// Dir is the node's badger directory: the applied state and the log.
	Dir string
	// NodeID, Peers, timing: as DriverOptions.
	NodeID                        uint64
	Peers                         []uint64
	Tick                          time.Duration
	ElectionTicks, HeartbeatTicks int
	// Partitions is the number of partition groups (besides the meta group).
	Partitions int
	// ReplicationFactor is how many nodes hold each partition (ReplicasOf);
	// 0 or at least the node count: every node. A fresh partition starts
	// on the Peers ReplicasOf ranks for it; this node starts the others
	// empty, as a joining node does, until a leader adds it.
	ReplicationFactor int
	// Send hands raft messages to the transport.
	Send func(to uint64, msgs []*clusterv1.GroupMessage)
	// Leading: as DriverOptions.
	Leading func(group, term uint64)
	// LeaderChanged: as DriverOptions.
	LeaderChanged func(group uint64)
	// MetaApplied, if set, is told after entries of the meta group were
	// applied here (the node's broker reconciles with them), on the
	// driver's goroutine: it must not block.
	MetaApplied func()
	// Nodes are the members; the meta group's node table is applied to
	// it. A refusal names the leader's client address from it.
	Nodes *Nodes
	// Observer: as DriverOptions. If it is a SnapshotObserver too, it is
	// told of the snapshots this node sends and installs.
	Observer Observer
	// Tracer, if set, records a fila.raft.commit span for each batch whose
	// Trace carries a span (the queue actor's commit span), as its child.
	Tracer trace.Tracer
	// Dial opens a connection to a member's internal address (as Nodes
	// knows it: the meta group's node table), where a follower fetches a
	// snapshot from its leader (fila.cluster.v1.Snapshots). Without it a
	// node can still compact and serve snapshots, but not install one.
	Dial func(addr string) (*grpc.ClientConn, error)
	// SnapshotEntries is how many durably applied entries beyond LogTail a
	// group's log holds before it is compacted. DefaultSnapshotEntries
	// when 0.
	SnapshotEntries int
	// LogTail is how many applied entries a compaction keeps, so that a
	// follower a little behind catches up from the log, not a snapshot.
	// SnapshotEntries/2 when 0.
	LogTail int
	// SnapshotRate bounds the bytes per second this node sends in
	// snapshots. DefaultSnapshotRate when 0.
	SnapshotRate int
	Logger       *slog.Logger
}

// Replica is one node's copy of the replicated state: its badger store,
// which holds the applied state the actors read and the raft log beside
// it, and the driver that applies the one from the other. Store is the
// storage.Store the node's actors write through.
type Replica struct {
	Local  *storage.Badger
	Log    *raftlog.Store
	Driver *Driver
	Store  *ReplicatedStore
	// Nodes is ReplicaOptions.Nodes, kept up to date with the meta group.
	Nodes *Nodes
	// Families places each queue family on its partition, kept up to date
	// with the meta group.
	Families *Families
	rf       int
	dial     func(addr string) (*grpc.ClientConn, error)
	logger   *slog.Logger

	snaps     *snapshots
	compactor *compactor
	counters  snapshotCounters

	connMu sync.Mutex
	conns  map[string]*grpc.ClientConn // by internal address
}

// OpenReplica opens the node's store and log and starts its driver.
func OpenReplica(opts ReplicaOptions) (*Replica, error) {
	// No fsync per commit: the driver's persister syncs the log once per
	// write of everything queued, and that sync covers the applied state
	// written before it (cluster.md 2.5).
	// Two compactors, not badger's four: an idle cluster node's CPU is
	// mostly threads woken by tickers (decisions.md, "Idle cost").
	local, err := storage.Open(storage.Options{Dir: opts.Dir, SyncWrites: false, Logger: opts.Logger, Compactors: 2})
	if err != nil {
		return nil, err
	}
	if opts.Nodes == nil {
		opts.Nodes = NewNodes(nil)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	families := newFamilies(opts.Partitions)
	if err := reloadMeta(local, opts.Nodes, families); err != nil {
		_ = local.Close()
		return nil, err
	}
	opts.SnapshotEntries = cmp.Or(opts.SnapshotEntries, DefaultSnapshotEntries)
	opts.LogTail = cmp.Or(opts.LogTail, opts.SnapshotEntries/2)
	opts.SnapshotRate = cmp.Or(opts.SnapshotRate, DefaultSnapshotRate)
	r := &Replica{Local: local, Log: raftlog.New(local.DB()), Nodes: opts.Nodes, Families: families, rf: opts.ReplicationFactor, dial: opts.Dial, logger: opts.Logger, conns: map[string]*grpc.ClientConn{}}
	r.snaps = &snapshots{
		node: opts.NodeID, db: local.DB(), log: r.Log, groupOf: families.Group,
		metaInstalled: func() error {
			if err := reloadMeta(local, opts.Nodes, families); err != nil {
				return err
			}
			if opts.MetaApplied != nil {
				opts.MetaApplied() // the broker reads the definitions the snapshot brought
			}
			return nil
		},
		limiter: rate.NewLimiter(rate.Limit(opts.SnapshotRate), max(opts.SnapshotRate, snapshotChunkBytes)),
		logger:  opts.Logger, counters: &r.counters, held: map[uint64]*heldSnapshot{},
		client:   func(node uint64) (clusterv1.SnapshotsClient, error) { return r.snapshotClient(opts, node) },
		observer: snapshotObserverOf(opts.Observer),
	}
	groups := make([]uint64, 0, opts.Partitions+1)
	var held []uint64
	for g := uint64(0); g <= uint64(opts.Partitions); g++ {
		groups = append(groups, g)
		m, ok, err := r.Log.SnapshotMarker(g)
		if err != nil {
			_ = local.Close()
			return nil, err
		}
		if ok {
			// See docs/decisions.md, "Snapshot install": the state is part
			// old, part snapshot; the log replays over it idempotently, and
			// the leader sends a snapshot again.
			opts.Logger.Warn("a raft snapshot install was cut short by a stop; the group waits for another snapshot before this node may lead it",
				slog.Uint64("group", g), slog.Uint64("index", m.GetIndex()))
			held = append(held, g)
		}
	}
	r.compactor = newCompactor(r.Log, opts.SnapshotEntries, opts.LogTail, &r.counters, opts.Logger)
	r.Driver, err = NewDriver(DriverOptions{
		NodeID: opts.NodeID, Groups: groups, Peers: opts.Peers,
		GroupPeers: func(g uint64) []uint64 { return ReplicasOf(g, opts.Peers, opts.ReplicationFactor) },
		Tick:       opts.Tick, ElectionTicks: opts.ElectionTicks, HeartbeatTicks: opts.HeartbeatTicks,
		Log:     raftLogStore{r.Log, local.DB(), r.snaps, r.compactor},
		Machine: batchMachine{logger: opts.Logger, local: local, log: r.Log, nodes: opts.Nodes, families: families, metaApplied: opts.MetaApplied, compactor: r.compactor},
		Send:    opts.Send, Leading: opts.Leading, LeaderChanged: opts.LeaderChanged, Observer: opts.Observer, Logger: opts.Logger,
		InstallSnapshot: r.snaps.install, Held: held,
	})
	if err != nil {
		r.compactor.stop()
		_ = local.Close()
		return nil, err
	}
	r.compactor.setFloor(func(g uint64) uint64 {
		st, _ := r.Driver.Status(g)
		return st.SnapshotFloor
	})
	r.Store = &ReplicatedStore{local: local, driver: r.Driver, families: families, nodes: opts.Nodes, tracer: opts.Tracer}
	r.snaps.syncMeta = func(ctx context.Context) error { return syncMeta(ctx, r.Driver) }
	return r, nil
}

// Replicas is which nodes should hold group today: ReplicasOf over the
// members the node table holds, removed ones not counted. It is the one
// place that decides it (the membership controller makes each group's
// configuration so; Placement routes by it where this node holds none).
func (r *Replica) Replicas(group uint64) []uint64 {
	active := r.Nodes.Active()
	ids := make([]uint64, len(active))
	for i, n := range active {
		ids[i] = n.ID
	}
	return ReplicasOf(group, ids, r.rf)
}

// Close stops the driver and closes the store.
func (r *Replica) Close() error {
	r.Driver.Stop()
	r.compactor.stop()
	r.snaps.close()
	r.connMu.Lock()
	for id, c := range r.conns {
		_ = c.Close()
		delete(r.conns, id)
	}
	r.connMu.Unlock()
	return r.Local.Close()
}

// RegisterSnapshots serves this node's snapshots (fila.cluster.v1.Snapshots)
// on g, the internal gRPC server, to followers that fetch them.
func (r *Replica) RegisterSnapshots(g *grpc.Server) { clusterv1.RegisterSnapshotsServer(g, r.snaps) }

// SnapshotStats are this node's compaction and snapshot counts so far.
func (r *Replica) SnapshotStats() SnapshotStats { return r.counters.stats() }

func (r *Replica) snapshotClient(opts ReplicaOptions, node uint64) (clusterv1.SnapshotsClient, error) {
	c, err := r.peerConn(opts.Dial, node)
	if err != nil {
		return nil, err
	}
	return snapshotsClient{clusterv1.NewSnapshotsClient(c)}, nil
}

// peerConn is the connection to node's internal port, dialed with dial
// on first use and kept until Close.
func (r *Replica) peerConn(dial func(string) (*grpc.ClientConn, error), node uint64) (*grpc.ClientConn, error) {
	r.connMu.Lock()
	defer r.connMu.Unlock()
	info, ok := r.Nodes.Get(node)
	if !ok || info.InternalAddr == "" || dial == nil {
		return nil, fmt.Errorf("%w: node %d", errNoPeerClient, node)
	}
	addr := info.InternalAddr
	if c := r.conns[addr]; c != nil {
		return c, nil
	}
	c, err := dial(addr)
	if err != nil {
		return nil, err
	}
	r.conns[addr] = c
	return c, nil
}

// Leaders answers fila.cluster.v1.Membership/Leaders: the leader this node
// knows of each group, 0 for a group it holds no replica of or whose
// leader it does not know.
func (r *Replica) Leaders(groups []uint64) []*clusterv1.GroupLeader {
	out := make([]*clusterv1.GroupLeader, len(groups))
	for i, g := range groups {
		out[i] = &clusterv1.GroupLeader{Group: g}
		if st, _ := r.Driver.Status(g); st.Holds(r.Driver.opts.NodeID) {
			out[i].NodeId, out[i].Term = st.Leader, st.Term
		}
	}
	return out
}

// LeadCount is how many groups node leads, as it answers
// Membership/Leaders (false when it did not answer within timeout): the
// balancer's BalanceOptions.LeadCount.
func (r *Replica) LeadCount(ctx context.Context, node uint64, timeout time.Duration) (int, bool) {
	resp, err := r.askLeaders(ctx, node, nil, timeout)
	if err != nil {
		return 0, false
	}
	return int(resp.GetGroupsLed()), true
}

// askLeaders is node's answer to Membership/Leaders for groups, the call
// bounded by timeout.
func (r *Replica) askLeaders(ctx context.Context, node uint64, groups []uint64, timeout time.Duration) (*clusterv1.LeadersResponse, error) {
	conn, err := r.peerConn(r.dial, node)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return clusterv1.NewMembershipClient(conn).Leaders(ctx, &clusterv1.LeadersRequest{NodeId: r.Driver.opts.NodeID, Groups: groups})
}

// GroupsLed is how many groups (the meta group and the partitions) this
// node leads.
func (r *Replica) GroupsLed() int {
	n := 0
	for g := uint64(0); g <= uint64(r.Families.partitions); g++ {
		if st, _ := r.Driver.Status(g); st.Leading {
			n++
		}
	}
	return n
}

// snapshotsClient receives chunks as large as the transport's messages.
type snapshotsClient struct{ clusterv1.SnapshotsClient }

func (c snapshotsClient) Fetch(ctx context.Context, in *clusterv1.FetchSnapshot, opts ...grpc.CallOption) (grpc.ServerStreamingClient[clusterv1.SnapshotChunk], error) {
	return c.SnapshotsClient.Fetch(ctx, in, append(opts, grpc.MaxCallRecvMsgSize(transport.MaxMessageBytes))...)
}

// raftLogStore is the driver's LogStore over raftlog: one Write for all
// groups of a loop, then one sync of the DB.
type raftLogStore struct {
	s         *raftlog.Store
	db        *badger.DB
	snaps     *snapshots
	compactor *compactor
}

func (l raftLogStore) Storage(group uint64) (raft.Storage, error) {
	lg, err := l.s.Log(group)
	if err != nil {
		return nil, err
	}
	return snapStorage{Log: lg, group: group, snaps: l.snaps}, nil
}

func (l raftLogStore) Persist(updates []LogUpdate) error {
	w := l.s.NewWrite()
	mustSync := false
	for _, u := range updates {
		mustSync = mustSync || u.MustSync
		if u.Snapshot != nil {
			// The driver had InstallSnapshot write its data already.
			w.ApplySnapshot(u.Group, u.Snapshot.GetMetadata())
		}
		w.Append(u.Group, u.Entries)
		w.SetHardState(u.Group, u.HardState)
	}
	if w.Empty() {
		return nil
	}
	if err := w.Commit(); err != nil {
		return err
	}
	for _, u := range updates {
		if u.Snapshot != nil {
			l.compactor.applied(u.Group, u.Snapshot.GetMetadata().GetIndex())
			mustSync = true // raft's MustSync does not count a snapshot
		}
	}
	if !mustSync {
		// Only commit indexes moved: about half a leader's loops under
		// load. The next sync covers them (docs/decisions.md).
		return nil
	}
	// Every apply committed before this sync begins is durable once it
	// returns: what compaction may discard below (raftlog.Store.Compact).
	covered := l.compactor.beforeSync()
	if err := l.db.Sync(); err != nil {
		return err
	}
	l.compactor.synced(covered)
	return nil
}

// reloadMeta brings nodes and families to the meta group's state in local.
func reloadMeta(local *storage.Badger, nodes *Nodes, families *Families) error {
	if err := nodes.reload(local); err != nil {
		return err
	}
	return families.reload(local)
}

// batchMachine applies committed entries, each an encoded storage.Batch,
// to the local store, with the group's applied record after them.
type batchMachine struct {
	logger      *slog.Logger
	local       *storage.Badger
	log         *raftlog.Store
	nodes       *Nodes
	families    *Families
	metaApplied func()
	compactor   *compactor
}

func (m batchMachine) Apply(group uint64, entries []Entry, applied *pb.SnapshotMetadata) error {
	batches := make([]*storage.Batch, 0, len(entries))
	var removedHere map[uint64]bool // marked removed by entries of this call
	for _, e := range entries {
		if group == MetaGroup {
			if id, ok := revives(e.Data, func(id uint64) bool { return removedHere[id] || m.nodes.Removed(id) }); ok {
				m.logger.Warn("cluster: a removed node's record left as it is: a removed id is never a member again", slog.Uint64("node_id", id), slog.Uint64("index", e.Index))
				continue
			}
			if rec, err := nodeRecordOf(e.Data); err == nil && rec.GetRemoved() {
				if removedHere == nil {
					removedHere = map[uint64]bool{}
				}
				removedHere[rec.GetId()] = true
			}
		}
		b, err := storage.UnmarshalBatch(e.Data)
		if err != nil {
			// A replica cannot skip an entry the others applied: stop.
			return fmt.Errorf("entry %d: %w", e.Index, err)
		}
		if meta := b.Owner().Meta; meta != (group == MetaGroup) {
			// A leader proposes a batch to its owner's group only.
			return fmt.Errorf("entry %d: a batch of owner %+v in group %d", e.Index, b.Owner(), group)
		}
		batches = append(batches, b)
	}
	k, v, err := raftlog.AppliedRecord(group, applied)
	if err != nil {
		return err
	}
	if err := m.local.ApplyCommitted(batches, []storage.RawPut{{Key: k, Value: v}}); err != nil {
		return err
	}
	m.compactor.applied(group, applied.GetIndex())
	if group == MetaGroup && len(batches) > 0 {
		// Before anything applied later is routed: a family created is
		// placed before its queue's actor can write.
		if err := reloadMeta(m.local, m.nodes, m.families); err != nil {
			return err
		}
		if m.metaApplied != nil {
			m.metaApplied()
		}
	}
	return nil
}

func (m batchMachine) Applied(group uint64) (uint64, error) {
	a, err := m.log.Applied(group)
	return a.GetIndex(), err
}

// ReplicatedStore is the storage.Store of a cluster node: Submit proposes
// a batch to its owner's group and completes once this node has applied
// it, and the reads are of the node's applied state. Only the leader of a
// batch's group can write it (an actors.NotLeaderError naming the leader's
// client address otherwise, with the driver's *NotLeaderError in its chain); an entry whose
// fate its leader lost completes with storage.ErrOutcomeUnknown.
type ReplicatedStore struct {
	local    *storage.Badger
	driver   *Driver
	families *Families
	nodes    *Nodes
	tracer   trace.Tracer // nil: no spans
	// batches counts the batches applied here; closed refuses writes.
	batches atomic.Uint64
	closed  atomic.Bool
}

var _ storage.Store = (*ReplicatedStore)(nil)

// Submit implements storage.Store: batches are proposed in the order
// submitted, and a group applies them in that order.
func (s *ReplicatedStore) Submit(b *storage.Batch, done func(error)) {
	if s.closed.Load() {
		done(storage.ErrClosed)
		return
	}
	if err := b.CheckOwner(); err != nil {
		done(err)
		return
	}
	if b.Len() == 0 {
		s.batches.Add(1)
		done(nil)
		return
	}
	data, err := b.Marshal()
	if err != nil {
		done(err)
		return
	}
	owner := b.Owner()
	group := s.families.Group(owner)
	span := s.commitSpan(b, group)
	s.driver.ProposeAsync(group, data, func(err error) {
		if err == nil {
			s.batches.Add(1)
		}
		if span != nil {
			if err != nil {
				span.SetStatus(codes.Error, "raft commit failed")
				span.SetAttributes(attribute.String("error.type", raftErrorType(err)))
			}
			span.End()
		}
		done(notLeader(err, s.nodes, owner.Family))
	})
}

// commitSpan starts the fila.raft.commit span of b, a child of the span
// b's Trace carries; nil when there is none (no tracer, or no sampled
// parent: a root span per batch would only be noise).
func (s *ReplicatedStore) commitSpan(b *storage.Batch, group uint64) trace.Span {
	if s.tracer == nil || b.Trace() == nil || !trace.SpanContextFromContext(b.Trace()).IsSampled() {
		return nil
	}
	_, span := s.tracer.Start(b.Trace(), telemetry.SpanRaftCommit, trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(attribute.Int64(telemetry.AttrRaftGroup, int64(group)), attribute.Int("fila.raft.batch.ops", b.Len())))
	return span
}

// raftErrorType names a failed commit's kind, low in cardinality.
func raftErrorType(err error) string {
	switch {
	case errors.Is(err, ErrNotLeader):
		return "not_leader"
	case errors.Is(err, storage.ErrOutcomeUnknown):
		return "outcome_unknown"
	case errors.Is(err, storage.ErrClosed):
		return "closed"
	}
	return "other"
}

// Defer implements storage.Store: a proposal rides with the others of the
// driver's loop anyway.
func (s *ReplicatedStore) Defer(b *storage.Batch, done func(error)) { s.Submit(b, done) }

// Write implements storage.Store.
func (s *ReplicatedStore) Write(b *storage.Batch) error {
	ch := make(chan error, 1)
	s.Submit(b, func(err error) { ch <- err })
	return <-ch
}

// Queues implements storage.Store.
func (s *ReplicatedStore) Queues() ([]*storagev1.QueueRecord, error) { return s.local.Queues() }

// ConfigEntries implements storage.Store.
func (s *ReplicatedStore) ConfigEntries() ([]storage.ConfigEntry, error) {
	return s.local.ConfigEntries()
}

// LoadQueue implements storage.Store.
func (s *ReplicatedStore) LoadQueue(queue string) (*storage.QueueContents, error) {
	return s.local.LoadQueue(queue)
}

// DeletedQueues implements storage.Store.
func (s *ReplicatedStore) DeletedQueues() ([]string, error) { return s.local.DeletedQueues() }

// DeletionMarks implements storage.Store.
func (s *ReplicatedStore) DeletionMarks() ([]storage.DeletionMark, error) {
	return s.local.DeletionMarks()
}

// QueueItems implements storage.Store.
func (s *ReplicatedStore) QueueItems(queue string, leases bool, after string, limit int) ([]string, error) {
	return s.local.QueueItems(queue, leases, after, limit)
}

// LoadIndex implements storage.Store.
func (s *ReplicatedStore) LoadIndex(queue string, each storage.IndexFunc) (*storage.QueueIndex, error) {
	return s.local.LoadIndex(queue, each)
}

// ReadMessages implements storage.Store.
func (s *ReplicatedStore) ReadMessages(queue string, ids []string) ([]*storagev1.MessageRecord, error) {
	return s.local.ReadMessages(queue, ids)
}

// LastMessage implements storage.Store.
func (s *ReplicatedStore) LastMessage(queue string) (string, error) {
	return s.local.LastMessage(queue)
}

// SchemaVersion implements storage.Store.
func (s *ReplicatedStore) SchemaVersion() (uint64, error) { return s.local.SchemaVersion() }

// Stats implements storage.Store: the batches applied through this store,
// and the local store's commits (which are the applies of all groups).
func (s *ReplicatedStore) Stats() storage.Stats {
	return storage.Stats{Batches: s.batches.Load(), Commits: s.local.Stats().Commits}
}

// Close implements storage.Store: it refuses writes from now on. The
// replica, not its store, closes the local store and the driver.
func (s *ReplicatedStore) Close() error {
	s.closed.Store(true)
	return nil
}
