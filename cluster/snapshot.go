package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/fila-dev/filad/cluster/raftlog"
	clusterv1 "github.com/fila-dev/filad/protos/fila/cluster/v1"
	"github.com/fila-dev/filad/storage"
)

// Snapshot and compaction defaults of ReplicaOptions.
const (
	// DefaultSnapshotEntries: the log is compacted once it holds this many
	// durably applied entries beyond the tail it keeps.
	DefaultSnapshotEntries = 10_000
	// DefaultSnapshotRate bounds the bytes per second a node sends in
	// snapshots, all followers together.
	DefaultSnapshotRate = 64 << 20
	// snapshotChunkBytes bounds one chunk of a transfer.
	snapshotChunkBytes = 1 << 20
	// snapshotIdle is how long a snapshot nobody fetched is kept.
	snapshotIdle = 5 * time.Minute
	// snapshotReuse is how long a group's newest snapshot answers raft
	// even if the applied index has moved on: raft asks again at every
	// probe of a follower behind (each heartbeat), and a new read each
	// time would pile up reads and make the one in flight stale.
	snapshotReuse = 10 * time.Second
	// fetchAttempts bounds the resumptions of one transfer before the
	// install gives up (raft sends another snapshot).
	fetchAttempts = 10
)

// SnapshotStats are a node's counts of compaction and snapshot transfer
// since it opened, for telemetry. Byte counts are of keys and values.
type SnapshotStats struct {
	// Compactions counts log compactions; CompactedEntries the entries
	// they discarded.
	Compactions, CompactedEntries uint64
	// Made counts snapshots made for followers (a point-in-time read of a
	// group's keys, held until fetched).
	Made uint64
	// SentBytes counts what Fetch streams sent; Sends and SendFailures the
	// streams that ended with the last chunk and those that broke;
	// SendTime their total duration.
	SentBytes, Sends, SendFailures uint64
	SendTime                       time.Duration
	// ReceivedBytes counts what installs received; Installs and
	// InstallFailures the installs that completed and those that gave up;
	// Resumes the transfers resumed after a broken stream; InstallTime
	// the total duration of the completed ones.
	ReceivedBytes, Installs, InstallFailures, Resumes uint64
	InstallTime                                       time.Duration
}

// SnapshotObserver is told of each snapshot transfer that completed, on
// the goroutine that made it; it must not block. A ReplicaOptions.Observer
// that implements it is (telemetry.ClusterMetrics records
// fila.raft.snapshot.bytes and .duration).
type SnapshotObserver interface {
	// SentSnapshot: a Fetch stream this node served ended with the last
	// chunk; bytes (of keys and values) and took are that stream's, so a
	// transfer resumed after a break counts only what its last stream
	// sent.
	SentSnapshot(bytes uint64, took time.Duration)
	// InstalledSnapshot: this node received and installed a snapshot;
	// bytes are all it received for it, took from the start of the
	// install to its sync.
	InstalledSnapshot(bytes uint64, took time.Duration)
}

// snapshotObserverOf is o as a SnapshotObserver, nil when it is none.
func snapshotObserverOf(o Observer) SnapshotObserver {
	so, _ := o.(SnapshotObserver)
	return so
}

type snapshotCounters struct {
	compactions, compacted, made                 atomic.Uint64
	sent, sends, sendFailures, sendNanos         atomic.Uint64
	received, installs, installFailures, resumes atomic.Uint64
	installNanos                                 atomic.Uint64
}

func (c *snapshotCounters) stats() SnapshotStats {
	return SnapshotStats{
		Compactions: c.compactions.Load(), CompactedEntries: c.compacted.Load(), Made: c.made.Load(),
		SentBytes: c.sent.Load(), Sends: c.sends.Load(), SendFailures: c.sendFailures.Load(),
		SendTime:      time.Duration(c.sendNanos.Load()),
		ReceivedBytes: c.received.Load(), Installs: c.installs.Load(), InstallFailures: c.installFailures.Load(),
		Resumes: c.resumes.Load(), InstallTime: time.Duration(c.installNanos.Load()),
	}
}

// groupPrefixes are the state machine's key prefixes of a group, in key
// order: the meta group's, or every partition's (a partition's keys are
// those of its families among them).
func groupPrefixes(group uint64) [][]byte {
	return storage.OwnerPrefixes(group == MetaGroup)
}

// scanGroup calls fn with each of group's state keys after after (all
// when empty), in key order, until fn answers false. k and v are valid
// only during the call.
func scanGroup(txn *badger.Txn, group uint64, groupOf func(storage.Owner) uint64, after []byte, fn func(k, v []byte) (bool, error)) error {
	it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false})
	defer it.Close()
	for _, p := range groupPrefixes(group) {
		if len(after) > 0 && bytes.Compare(after, p) > 0 && !bytes.HasPrefix(after, p) {
			continue // after is past this prefix
		}
		start := p
		if bytes.HasPrefix(after, p) {
			start = after
		}
		for it.Seek(start); it.ValidForPrefix(p); it.Next() {
			item := it.Item()
			k := item.Key()
			if len(after) > 0 && bytes.Compare(k, after) <= 0 {
				continue
			}
			o, ok := storage.KeyOwner(k)
			if !ok || groupOf(o) != group {
				continue
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			more, err := fn(k, v)
			if err != nil || !more {
				return err
			}
		}
	}
	return nil
}

// snapshots is a node's side of snapshot transfer: the snapshots it made
// as a leader (each a badger read transaction, a point-in-time view of
// the group's keys and its applied record), served by Fetch, and the
// installs of those it receives as a follower.
type snapshots struct {
	clusterv1.UnimplementedSnapshotsServer
	node uint64
	db   *badger.DB
	log  *raftlog.Store
	// groupOf places a key's owner (Families.Group). A partition's keys
	// are selected, on both sides, only once this node has applied the
	// meta group as far as it was committed then (syncMeta): a family with
	// keys in a snapshot was created before it, so both sides know its
	// partition, which never changes (a name created again keeps it).
	groupOf  func(storage.Owner) uint64
	syncMeta func(ctx context.Context) error
	// metaInstalled reloads what is read from the meta group's state once
	// a snapshot of it is installed.
	metaInstalled func() error
	limiter       *rate.Limiter
	logger        *slog.Logger
	counters      *snapshotCounters
	client        func(node uint64) (clusterv1.SnapshotsClient, error)
	observer      SnapshotObserver // nil: none

	mu     sync.Mutex
	next   uint64
	held   map[uint64]*heldSnapshot // by id
	closed bool

	// breakAfter, when a test sets it > 0, makes the next Fetch stream
	// end with Unavailable after that many chunks, once.
	breakAfter atomic.Int32
	// chunkBytes, when a test sets it > 0, replaces snapshotChunkBytes.
	chunkBytes atomic.Int32
	// gate, when a test sets it, holds every Fetch until it is closed.
	gate atomic.Pointer[chan struct{}]
}

type heldSnapshot struct {
	group    uint64
	made     time.Time
	txn      *badger.Txn
	meta     *pb.SnapshotMetadata
	refs     int
	lastUsed time.Time
}

// make is raft.Storage.Snapshot of group on the leader: the applied
// record as of now, with a reference to a read of the group's keys at the
// same moment. It runs on the driver's goroutine, where no apply is under
// way, so the read sees the state the applied record says. A snapshot of
// the same applied index is reused.
func (s *snapshots) make(group uint64) (*pb.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, raft.ErrSnapshotTemporarilyUnavailable
	}
	now := time.Now()
	var reuse *heldSnapshot
	var reuseID uint64
	for id, h := range s.held {
		if h.refs == 0 && now.Sub(h.lastUsed) > snapshotIdle {
			h.txn.Discard()
			delete(s.held, id)
			continue
		}
		if h.group == group && (reuse == nil || id > reuseID) {
			reuse, reuseID = h, id
		}
	}
	txn := s.db.NewTransaction(false)
	meta, err := raftlog.AppliedIn(txn, group)
	if err != nil {
		txn.Discard()
		return nil, err
	}
	if reuse != nil && (reuse.meta.GetIndex() == meta.GetIndex() || now.Sub(reuse.made) < snapshotReuse) {
		txn.Discard()
		reuse.lastUsed = now
		return s.snapshotOf(reuseID, reuse)
	}
	s.next++
	h := &heldSnapshot{group: group, txn: txn, meta: meta, made: now, lastUsed: now}
	s.held[s.next] = h
	s.counters.made.Add(1)
	s.logger.Info("raft snapshot made for a follower behind the compacted log",
		slog.Uint64("group", group), slog.Uint64("snapshot", s.next), slog.Uint64("index", meta.GetIndex()))
	return s.snapshotOf(s.next, h)
}

func (s *snapshots) snapshotOf(id uint64, h *heldSnapshot) (*pb.Snapshot, error) {
	data, err := proto.Marshal(&clusterv1.SnapshotRef{Node: s.node, Id: id, Group: h.group})
	if err != nil {
		return nil, err
	}
	return &pb.Snapshot{Metadata: proto.CloneOf(h.meta), Data: data}, nil
}

func (s *snapshots) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for id, h := range s.held {
		if h.refs == 0 {
			h.txn.Discard()
			delete(s.held, id)
		}
	}
}

func (s *snapshots) acquire(group, id uint64) (*heldSnapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.held[id]
	if s.closed || h == nil || h.group != group {
		return nil, status.Errorf(codes.NotFound, "snapshot %d of group %d: not held here (node %d)", id, group, s.node)
	}
	h.refs++
	h.lastUsed = time.Now()
	return h, nil
}

func (s *snapshots) release(h *heldSnapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h.refs--
	h.lastUsed = time.Now()
	if s.closed && h.refs == 0 {
		h.txn.Discard()
		for id, x := range s.held {
			if x == h {
				delete(s.held, id)
			}
		}
	}
}

// Fetch implements clusterv1.SnapshotsServer.
func (s *snapshots) Fetch(req *clusterv1.FetchSnapshot, stream grpc.ServerStreamingServer[clusterv1.SnapshotChunk]) (err error) {
	h, err := s.acquire(req.GetGroup(), req.GetId())
	if err != nil {
		return err
	}
	defer s.release(h)
	if g := s.gate.Load(); g != nil {
		select {
		case <-*g:
		case <-stream.Context().Done():
			return status.FromContextError(stream.Context().Err()).Err()
		}
	}
	start := time.Now()
	var sent uint64
	defer func() {
		s.counters.sendNanos.Add(uint64(time.Since(start)))
		if err != nil {
			s.counters.sendFailures.Add(1)
		}
		s.logger.Info("raft snapshot stream ended", slog.Uint64("group", req.GetGroup()), slog.Uint64("snapshot", req.GetId()),
			slog.Bool("resumed", len(req.GetAfter()) > 0), slog.Uint64("bytes", sent), slog.Duration("took", time.Since(start)), slog.Any("error", err))
	}()
	ctx := stream.Context()
	chunkBytes := int(s.chunkBytes.Load())
	if chunkBytes <= 0 {
		chunkBytes = snapshotChunkBytes
	}
	breakAfter := int(s.breakAfter.Swap(0))
	chunk := &clusterv1.SnapshotChunk{}
	size, chunks := 0, 0
	flush := func(last bool) error {
		chunk.Last = last
		if err := s.limiter.WaitN(ctx, min(max(size, 1), s.limiter.Burst())); err != nil {
			return status.FromContextError(err).Err()
		}
		if breakAfter > 0 && chunks == breakAfter {
			return status.Error(codes.Unavailable, "snapshot stream broken by a test")
		}
		if err := stream.Send(chunk); err != nil {
			return err
		}
		chunks++
		sent += uint64(size)
		s.counters.sent.Add(uint64(size))
		chunk, size = &clusterv1.SnapshotChunk{}, 0
		return nil
	}
	if req.GetGroup() != MetaGroup && s.syncMeta != nil {
		if err := s.syncMeta(ctx); err != nil {
			return status.Errorf(codes.Unavailable, "snapshot of group %d: the meta group is not caught up here: %v", req.GetGroup(), err)
		}
	}
	err = scanGroup(h.txn, req.GetGroup(), s.groupOf, req.GetAfter(), func(k, v []byte) (bool, error) {
		chunk.Pairs = append(chunk.Pairs, &clusterv1.KeyValue{Key: bytes.Clone(k), Value: v})
		size += len(k) + len(v)
		if size >= chunkBytes {
			return true, flush(false)
		}
		return true, nil
	})
	if err == nil {
		err = flush(true)
	}
	if err == nil {
		s.counters.sends.Add(1)
		if s.observer != nil {
			s.observer.SentSnapshot(sent, time.Since(start))
		}
	}
	return err
}

// install writes the snapshot snap names into group's state: the rule
// that keeps a crash harmless is docs/decisions.md's "Snapshot install".
// First the snapshot marker (synced); then the chunks, each replacing the
// group's local keys in its key range (those of the snapshot put, the
// others deleted), so that the keys after the last one received are the
// old state's and a broken stream resumes from that key; then a sync. The
// driver then gives raft the snapshot, whose Persist resets the log, sets
// the applied record and clears the marker in one transaction. Keys of
// other groups, and the raft log's, are never touched.
func (s *snapshots) install(ctx context.Context, group uint64, snap *pb.Snapshot) (err error) {
	start := time.Now()
	ref := &clusterv1.SnapshotRef{}
	if err := proto.Unmarshal(snap.GetData(), ref); err != nil || ref.GetNode() == 0 || ref.GetGroup() != group {
		return fmt.Errorf("snapshot of group %d: its data is no reference to a snapshot of the group (%v)", group, err)
	}
	meta := snap.GetMetadata()
	log := s.logger.With(slog.Uint64("group", group), slog.Uint64("index", meta.GetIndex()),
		slog.Uint64("from", ref.GetNode()), slog.Uint64("snapshot", ref.GetId()))
	var received uint64
	defer func() {
		if err != nil {
			s.counters.installFailures.Add(1)
			log.Warn("raft snapshot install stopped", slog.Uint64("bytes", received), slog.Any("error", err))
			return
		}
		s.counters.installs.Add(1)
		s.counters.installNanos.Add(uint64(time.Since(start)))
		if s.observer != nil {
			s.observer.InstalledSnapshot(received, time.Since(start))
		}
		log.Info("raft snapshot received", slog.Uint64("bytes", received), slog.Duration("took", time.Since(start)))
	}()
	client, err := s.client(ref.GetNode())
	if err != nil {
		return err
	}
	if group != MetaGroup && s.syncMeta != nil {
		if err := s.syncMeta(ctx); err != nil {
			return fmt.Errorf("snapshot of group %d: the meta group is not caught up here: %w", group, err)
		}
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return raftlog.SetSnapshotMarker(txn, group, meta) }); err != nil {
		return err
	}
	if err := s.db.Sync(); err != nil {
		return err
	}
	log.Info("raft snapshot install started")
	var after []byte
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		done, err := s.fetch(ctx, client, group, ref.GetId(), &after, &received)
		if done {
			break
		}
		if status.Code(err) == codes.NotFound || ctx.Err() != nil || attempt >= fetchAttempts {
			return err
		}
		log.Info("raft snapshot stream broke; resuming", slog.Int("attempt", attempt), slog.Uint64("bytes", received), slog.Any("error", err))
		s.counters.resumes.Add(1)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
	if err := s.db.Sync(); err != nil {
		return err
	}
	if group == MetaGroup && s.metaInstalled != nil {
		return s.metaInstalled()
	}
	return nil
}

// fetch runs one Fetch stream, writing each chunk as it comes and moving
// *after past it; done once the last chunk is written.
func (s *snapshots) fetch(ctx context.Context, client clusterv1.SnapshotsClient, group, id uint64, after *[]byte, received *uint64) (done bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Fetch(ctx, &clusterv1.FetchSnapshot{Group: group, Id: id, After: *after})
	if err != nil {
		return false, err
	}
	for {
		chunk, err := stream.Recv()
		if err != nil {
			return false, err
		}
		if err := s.replaceRange(group, *after, chunk); err != nil {
			return false, err
		}
		for _, kv := range chunk.GetPairs() {
			*received += uint64(len(kv.GetKey()) + len(kv.GetValue()))
			s.counters.received.Add(uint64(len(kv.GetKey()) + len(kv.GetValue())))
		}
		if n := len(chunk.GetPairs()); n > 0 {
			*after = chunk.GetPairs()[n-1].GetKey()
		}
		if chunk.GetLast() {
			return true, nil
		}
	}
}

// replaceRange makes group's local keys in (after, the chunk's last key]
// (to the end of the group's keys for the last chunk) those of the chunk.
func (s *snapshots) replaceRange(group uint64, after []byte, chunk *clusterv1.SnapshotChunk) error {
	pairs := chunk.GetPairs()
	for i, kv := range pairs {
		// Any family's key in a partition's snapshot: the leader placed
		// it (and this node, with the meta group as far as then, alike).
		o, ok := storage.KeyOwner(kv.GetKey())
		if !ok || o.Meta != (group == MetaGroup) || (i == 0 && len(after) > 0 && bytes.Compare(kv.GetKey(), after) <= 0) ||
			(i > 0 && bytes.Compare(kv.GetKey(), pairs[i-1].GetKey()) <= 0) {
			return fmt.Errorf("snapshot of group %d: chunk key %d is not a key of the group in order", group, i)
		}
	}
	var end []byte
	if !chunk.GetLast() && len(pairs) > 0 {
		end = pairs[len(pairs)-1].GetKey()
	}
	in := make(map[string]bool, len(pairs))
	for _, kv := range pairs {
		in[string(kv.GetKey())] = true
	}
	var stale [][]byte
	err := s.db.View(func(txn *badger.Txn) error {
		return scanGroup(txn, group, s.groupOf, after, func(k, _ []byte) (bool, error) {
			if end != nil && bytes.Compare(k, end) > 0 {
				return false, nil
			}
			if !in[string(k)] {
				stale = append(stale, bytes.Clone(k))
			}
			return true, nil
		})
	})
	if err != nil {
		return err
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, k := range stale {
		if err := wb.Delete(k); err != nil {
			return err
		}
	}
	for _, kv := range pairs {
		v := kv.GetValue()
		if v == nil {
			v = []byte{}
		}
		if err := wb.Set(kv.GetKey(), v); err != nil {
			return err
		}
	}
	return wb.Flush()
}

// snapStorage is a group's raft log whose Snapshot is made by snapshots.
type snapStorage struct {
	*raftlog.Log
	group uint64
	snaps *snapshots
}

func (s snapStorage) Snapshot() (*pb.Snapshot, error) { return s.snaps.make(s.group) }

var errNoPeerClient = errors.New("cluster: no internal address known for the peer")
