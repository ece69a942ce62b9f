package cluster

import (
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/fila-dev/filad/cluster/raftlog"
	clusterv1 "github.com/fila-dev/filad/protos/fila/cluster/v1"
	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry"
)

// MetaGroup is the raft group of queue definitions, deletion marks and the
// runtime config; partitions are groups 1..Partitions.
const MetaGroup = 0

// GroupOf is the group a batch of owner is proposed to: the meta group,
// or the family's partition. Placement by a hash of the family is the
// first step; the cluster issue records each queue's partition at
// CreateQueue instead (least loaded first), which this gives way to.
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
	// Observer: as DriverOptions.
	Observer Observer
	// Tracer, if set, records a fila.raft.commit span for each batch whose
	// Trace carries a span (the queue actor's commit span), as its child.
	Tracer trace.Tracer
	Logger *slog.Logger
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
	Nodes  *Nodes
	logger *slog.Logger
}

// OpenReplica opens the node's store and log and starts its driver.
func OpenReplica(opts ReplicaOptions) (*Replica, error) {
	// No fsync per commit: the driver syncs the log once a loop, and that
	// sync covers the applied state written before it (cluster.md 2.5).
	local, err := storage.Open(storage.Options{Dir: opts.Dir, SyncWrites: false, Logger: opts.Logger})
	if err != nil {
		return nil, err
	}
	if opts.Nodes == nil {
		opts.Nodes = NewNodes(nil)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := opts.Nodes.reload(local); err != nil {
		_ = local.Close()
		return nil, err
	}
	r := &Replica{Local: local, Log: raftlog.New(local.DB()), Nodes: opts.Nodes, logger: opts.Logger}
	groups := make([]uint64, 0, opts.Partitions+1)
	for g := uint64(0); g <= uint64(opts.Partitions); g++ {
		groups = append(groups, g)
	}
	r.Driver, err = NewDriver(DriverOptions{
		NodeID: opts.NodeID, Groups: groups, Peers: opts.Peers,
		Tick: opts.Tick, ElectionTicks: opts.ElectionTicks, HeartbeatTicks: opts.HeartbeatTicks,
		Log:     raftLogStore{r.Log, local.DB()},
		Machine: batchMachine{local: local, log: r.Log, nodes: opts.Nodes, metaApplied: opts.MetaApplied},
		Send:    opts.Send, Leading: opts.Leading, LeaderChanged: opts.LeaderChanged, Observer: opts.Observer, Logger: opts.Logger,
	})
	if err != nil {
		_ = local.Close()
		return nil, err
	}
	r.Store = &ReplicatedStore{local: local, driver: r.Driver, partitions: opts.Partitions, nodes: opts.Nodes, tracer: opts.Tracer}
	return r, nil
}

// Close stops the driver and closes the store.
func (r *Replica) Close() error {
	r.Driver.Stop()
	return r.Local.Close()
}

// raftLogStore is the driver's LogStore over raftlog: one Write for all
// groups of a loop, then one sync of the DB.
type raftLogStore struct {
	s  *raftlog.Store
	db *badger.DB
}

func (l raftLogStore) Storage(group uint64) (raft.Storage, error) { return l.s.Log(group) }

func (l raftLogStore) Persist(updates []LogUpdate) error {
	w := l.s.NewWrite()
	mustSync := false
	for _, u := range updates {
		mustSync = mustSync || u.MustSync
		if u.Snapshot != nil {
			// Nothing compacts the log yet, so no leader sends one.
			return fmt.Errorf("cluster: group %d: snapshot at %d: snapshots are not supported yet", u.Group, u.Snapshot.GetMetadata().GetIndex())
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
	if !mustSync {
		// Only commit indexes moved: about half a leader's loops under
		// load. The next sync covers them (docs/decisions.md).
		return nil
	}
	return l.db.Sync()
}

// batchMachine applies committed entries, each an encoded storage.Batch,
// to the local store, with the group's applied record after them.
type batchMachine struct {
	local       *storage.Badger
	log         *raftlog.Store
	nodes       *Nodes
	metaApplied func()
}

func (m batchMachine) Apply(group uint64, entries []Entry, applied *pb.SnapshotMetadata) error {
	batches := make([]*storage.Batch, 0, len(entries))
	for _, e := range entries {
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
	if group == MetaGroup && len(batches) > 0 {
		if err := m.nodes.reload(m.local); err != nil {
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
	local      *storage.Badger
	driver     *Driver
	partitions int
	nodes      *Nodes
	tracer     trace.Tracer // nil: no spans
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
	group := GroupOf(b.Owner(), s.partitions)
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
		done(notLeader(err, s.nodes))
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

// QueueItems implements storage.Store.
func (s *ReplicatedStore) QueueItems(queue string, leases bool, after string, limit int) ([]string, error) {
	return s.local.QueueItems(queue, leases, after, limit)
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
