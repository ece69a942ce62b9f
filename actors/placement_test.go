package actors

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/fila-dev/filad/auth"
	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
)

// fakePlacement is a cluster's leader table as a test sets it: every
// family is served here unless set elsewhere.
type fakePlacement struct {
	mu     sync.Mutex
	remote map[string]Location
}

func (p *fakePlacement) Where(family string) Location {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.remote[family]
}

// set makes family served at loc (the zero Location: here).
func (p *fakePlacement) set(family string, loc Location) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.remote == nil {
		p.remote = map[string]Location{}
	}
	p.remote[family] = loc
}

func withPlacement(p Placement) func(*Options) {
	return func(o *Options) { o.Placement = p }
}

// elsewhere is another node's leadership, as a Placement reports it.
var elsewhere = Location{Node: "2", LeaderAddr: "127.0.0.1:5556", Term: 3}

// requireServed fails unless the Directory says the queue is served at
// loc: here with an actor, or elsewhere with none.
func (f *fixture) requireServed(name string, loc Location) {
	f.t.Helper()
	ref := f.sys.Directory().Lookup(name)
	require.NotNil(f.t, ref, "queue %s is in the Directory", name)
	require.Equal(f.t, loc, ref.Location, "queue %s", name)
	if loc.Local() {
		require.NotNil(f.t, ref.PID, "queue %s has its actor here", name)
	} else {
		require.Nil(f.t, ref.PID, "queue %s has no actor here", name)
	}
}

// requireEnded waits for c to end and returns why.
func requireEnded(t *testing.T, c *Consumer) error {
	t.Helper()
	select {
	case <-c.Done():
		return c.Err()
	case <-time.After(waitFor):
		t.Fatal("the consumer did not end")
		return nil
	}
}

// TestPlacementRunsOnlyLocalQueues: a queue family served elsewhere gets
// no actor here, only a Directory entry naming its leader, at create and
// at recovery alike; Start does not wait for it to load.
func TestPlacementRunsOnlyLocalQueues(t *testing.T) {
	t.Parallel()
	place := &fakePlacement{}
	place.set("far", elsewhere)
	store := &faultyStore{Store: storage.NewMemory()}
	f := startOn(t, store, withPlacement(place))
	f.create("near", time.Minute)
	f.create("far", time.Minute)
	check := func() {
		f.requireServed("near", Location{})
		f.requireServed("near.dlq", Location{})
		f.requireServed("far", elsewhere)
		f.requireServed("far.dlq", elsewhere)
		require.Equal(t, []string{"far", "far.dlq", "near", "near.dlq"}, f.sys.Directory().Names())
	}
	check()

	f.stop()
	f = startOn(t, store, withPlacement(place))
	check()
	readings := f.board.Snapshot()
	require.Contains(t, readings, "near", "the local queue loaded and reported")
	require.NotContains(t, readings, "far", "no actor of the remote queue reports")
}

// TestPlacementChangedMovesAFamily: a family that leaves ends its
// consumers with the not-leader error naming the new leader and keeps
// everything stored; when it comes back, its actor loads it all, the lease
// taken before the move included.
func TestPlacementChangedMovesAFamily(t *testing.T) {
	t.Parallel()
	place := &fakePlacement{}
	store := &faultyStore{Store: storage.NewMemory()}
	f := startOn(t, store, withPlacement(place))
	f.create("q", time.Minute)
	f.create("other", time.Minute)
	f.fill("q", 5)
	c := f.subscribe("q", 1)
	leased := f.recv(c)
	oldPID := f.sys.Directory().Lookup("q").PID
	unchanged := f.metaView()
	require.NoError(t, f.ask(nil, &PlacementChanged{}).(*AdminReply).Err)
	require.Same(t, unchanged.refs["q"], f.sys.Directory().Lookup("q"), "nothing moved, nothing re-published")

	place.set("q", elsewhere)
	require.NoError(t, f.ask(nil, &PlacementChanged{}).(*AdminReply).Err)
	var nl *NotLeaderError
	require.ErrorAs(t, requireEnded(t, c), &nl, "the consumer ends UNAVAILABLE")
	require.Equal(t, &NotLeaderError{Queue: "q", LeaderAddr: elsewhere.LeaderAddr, LeaderNode: 2}, nl, "naming the leader's node, for a proxy")
	f.requireServed("q", elsewhere)
	f.requireServed("q.dlq", elsewhere)
	f.requireServed("other", Location{})
	// A request already on its way to the stopped actor is told the same.
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	_, err := f.sys.Ask(ctx, oldPID, nil, &Enqueue{Payload: []byte("p")})
	require.ErrorIs(t, err, ErrNotLeader)
	contents, err := store.LoadQueue("q")
	require.NoError(t, err)
	require.Len(t, contents.Messages, 5, "nothing reaped")
	require.Len(t, contents.Leases, 1)
	// A new leader elsewhere: the Directory names it.
	third := Location{Node: "3", LeaderAddr: "127.0.0.1:5557", Term: 4}
	place.set("q", third)
	require.NoError(t, f.ask(nil, &PlacementChanged{}).(*AdminReply).Err)
	f.requireServed("q", third)
	f.requireServed("q.dlq", third)

	place.set("q", Location{})
	require.NoError(t, f.ask(nil, &PlacementChanged{}).(*AdminReply).Err)
	f.requireServed("q", Location{})
	f.requireServed("q.dlq", Location{})
	st := f.requireMatchesStore("q")
	require.EqualValues(t, 4, st.Depth)
	require.EqualValues(t, 1, st.InFlight, "the lease survived the move")
	require.NoError(t, f.settle("q", &Ack{ID: leased.ID, LeaseID: leased.LeaseID}), "and settles on the new actor")
	c = f.subscribe("q", 10)
	for range 4 {
		f.recv(c)
	}
}

// TestPlacementChangedBackBeforeTheOldActorStopped: a family that comes
// back while its old actor still waits for a write of its starts once
// that one has stopped (the name, and the write, are the old one's until
// then), and loads what the write stored. The write's caller is told its
// outcome is unknown (the write committed), not the old actor's
// not-leader error, whose hint would invite a retry that stores it twice.
func TestPlacementChangedBackBeforeTheOldActorStopped(t *testing.T) {
	t.Parallel()
	place := &fakePlacement{}
	unknown := &unknownStore{Store: storage.NewMemory()}
	f := startOn(t, &faultyStore{Store: unknown}, withPlacement(place))
	f.create("q", time.Minute)
	f.fill("q", 3)
	held, release := unknown.holdNext()
	enqueue := actor.NewFuture(f.sys.as, waitFor)
	f.sys.Send(f.sys.Directory().Lookup("q").PID, &actor.MessageEnvelope{Message: &Enqueue{Payload: []byte("p")}, Sender: enqueue.PID()})
	<-held

	place.set("q", elsewhere)
	away := f.sendToBroker(&PlacementChanged{})
	f.brokerRoundTrip() // the broker has asked Placement: the move away is underway
	f.requireServed("q", elsewhere)
	place.set("q", Location{})
	back := f.sendToBroker(&PlacementChanged{})
	f.brokerRoundTrip()
	f.requireServed("q", elsewhere) // the old actor has not stopped: it waits for its write

	release()
	res, err := enqueue.Result()
	require.NoError(t, err)
	require.ErrorIs(t, res.(*EnqueueReply).Err, ErrOutcomeUnknown)
	require.NotErrorIs(t, res.(*EnqueueReply).Err, ErrNotLeader, "a not-leader answer says nothing was done")
	require.NoError(t, replyErr(t, away))
	require.NoError(t, replyErr(t, back))
	f.requireServed("q", Location{})
	require.EqualValues(t, 4, f.requireMatchesStore("q").Depth)
}

// metaView is what a test can see of the broker's memory: the Directory's
// entries and the runtime config's version.
type metaView struct {
	refs    map[string]*QueueRef
	version uint64
}

func (f *fixture) metaView() metaView {
	v := metaView{refs: map[string]*QueueRef{}, version: f.sys.RuntimeConfig().Version()}
	for _, name := range f.sys.Directory().Names() {
		v.refs[name] = f.sys.Directory().Lookup(name)
	}
	return v
}

// requireMetaAppliedNoOp sends MetaApplied and fails unless it changed
// nothing: the same Directory entries (the very same refs), the same
// runtime config version, and no queue created, updated or deleted in the
// broker's log.
func (f *fixture) requireMetaAppliedNoOp(logs *logRecorder) {
	f.t.Helper()
	before := f.metaView()
	logs.take()
	require.NoError(f.t, f.ask(nil, &MetaApplied{}).(*AdminReply).Err)
	after := f.metaView()
	require.Empty(f.t, logs.take(), "the broker changed a queue")
	require.Equal(f.t, before.version, after.version, "runtime config republished")
	require.Len(f.t, after.refs, len(before.refs))
	for name, ref := range before.refs {
		require.Same(f.t, ref, after.refs[name], "queue %s re-published", name)
	}
}

// logRecorder keeps the messages of the records logged at INFO and above.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *logRecorder) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Message)
	return nil
}
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecorder) WithGroup(string) slog.Handler      { return r }

// take returns what was logged since the last take.
func (r *logRecorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	msgs := r.msgs
	r.msgs = nil
	return msgs
}

func withLogs(r *logRecorder) func(*Options) {
	return func(o *Options) { o.Logger = slog.New(r) }
}

// storedQueue is the queue's record as the store holds it.
func storedQueue(t *testing.T, store storage.Store, name string) *storagev1.QueueRecord {
	t.Helper()
	recs, err := store.Queues()
	require.NoError(t, err)
	i := slices.IndexFunc(recs, func(r *storagev1.QueueRecord) bool { return r.GetName() == name })
	require.GreaterOrEqual(t, i, 0, "queue %s is stored", name)
	return recs[i]
}

// TestMetaAppliedReconcilesWithTheStore: definitions and config written
// into the store behind the broker's back, as another node's broker's
// entries reach it through the log, show once MetaApplied is sent: a new
// queue runs, a changed config is in force, a deleted queue is retired
// (its contents left to the deleting node's reap), the runtime config is
// republished. Sent again, MetaApplied changes nothing.
func TestMetaAppliedReconcilesWithTheStore(t *testing.T) {
	t.Parallel()
	logs := &logRecorder{}
	f := startOn(t, &faultyStore{Store: storage.NewMemory()}, withLogs(logs))
	f.create("kept", time.Minute)
	f.create("gone", time.Minute)
	f.fill("gone", 2)
	goneConsumer := f.subscribe("gone", 1)
	version := f.sys.RuntimeConfig().Version()

	var b storage.Batch
	added := QueueConfig{Name: "added", VisibilityTimeout: time.Minute, FairnessKeyHeader: "key", CreatedAt: time.Now()}
	b.PutQueue(added.record())
	b.PutQueue(dlqConfig(f.sys.DefaultQueue(), added).record())
	kept := proto.Clone(storedQueue(t, f.store, "kept")).(*storagev1.QueueRecord)
	kept.MaxDepth = 1
	b.PutQueue(kept)
	b.RetireQueues("gone", "gone.dlq")
	b.PutConfig("k", "v")
	require.NoError(t, f.store.Write(&b))
	_, set := f.sys.RuntimeConfig().Get("k")
	require.False(t, set, "nothing shows before MetaApplied")

	require.NoError(t, f.ask(nil, &MetaApplied{}).(*AdminReply).Err)
	f.requireServed("added", Location{})
	f.requireServed("added.dlq", Location{})
	f.enqueue("added", nil)

	f.enqueue("kept", nil)
	r := f.ask("kept", &Enqueue{Payload: []byte("p")}).(*EnqueueReply)
	require.ErrorIs(t, r.Err, ErrOverloaded, "the new max_depth is in force")

	require.Nil(t, f.sys.Directory().Lookup("gone"))
	require.Nil(t, f.sys.Directory().Lookup("gone.dlq"))
	require.ErrorIs(t, requireEnded(t, goneConsumer), ErrQueueNotFound)
	deleted, err := f.store.DeletedQueues()
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"gone", "gone.dlq"}, deleted, "the marks are the deleting node's to reap")
	items, err := f.store.QueueItems("gone", false, "", 10)
	require.NoError(t, err)
	require.Len(t, items, 2, "not reaped here")

	v, _ := f.sys.RuntimeConfig().Get("k")
	require.Equal(t, "v", v)
	require.Greater(t, f.sys.RuntimeConfig().Version(), version)

	f.requireMetaAppliedNoOp(logs)
}

// TestMetaAppliedAfterOwnCommandsIsANoOp: on the node whose broker wrote
// the entries, memory matches the store already.
func TestMetaAppliedAfterOwnCommandsIsANoOp(t *testing.T) {
	t.Parallel()
	place := &fakePlacement{}
	place.set("far", elsewhere)
	logs := &logRecorder{}
	f := startOn(t, &faultyStore{Store: storage.NewMemory()}, withPlacement(place), withLogs(logs))
	f.create("a", time.Minute)
	f.create("far", time.Minute)
	f.create("b", time.Minute)
	depth := uint64(7)
	require.NoError(t, f.ask(nil, &UpdateQueue{Name: "a", Patch: QueuePatch{MaxDepth: &depth}}).(*UpdateQueueReply).Err)
	require.NoError(t, f.ask(nil, &DeleteQueue{Name: "b"}).(*AdminReply).Err)
	require.NoError(t, f.ask(nil, &SetConfig{Key: "k", Value: "v"}).(*AdminReply).Err)
	require.NoError(t, f.ask(nil, &CreateKey{Key: testKey("ops")}).(*AdminReply).Err)
	f.requireMetaAppliedNoOp(logs)
}

// TestMetaAppliedWaitsForTheCommandInFlight: the store holds a command's
// write before the broker has applied it; a MetaApplied meanwhile must not
// apply it a second time (a queue spawned twice), so it waits.
func TestMetaAppliedWaitsForTheCommandInFlight(t *testing.T) {
	t.Parallel()
	store := &heldStore{Store: storage.NewMemory(), release: make(chan struct{}), written: make(chan struct{})}
	f := startOn(t, &faultyStore{Store: store})
	store.hold.Store(true)
	create := f.sendToBroker(&CreateQueue{Config: QueueConfig{Name: "q", VisibilityTimeout: time.Minute, FairnessKeyHeader: "key"}})
	<-store.written // in the store, its completion held
	meta := f.sendToBroker(&MetaApplied{})
	f.brokerRoundTrip()
	require.Nil(t, f.sys.Directory().Lookup("q"), "the reload waits for the command")
	close(store.release)
	require.NoError(t, replyErr(t, create))
	require.NoError(t, replyErr(t, meta))
	f.requireServed("q", Location{})
	f.requireServed("q.dlq", Location{})
}

// heldStore applies the first batch submitted once hold is set, then
// holds its completion until release is closed.
type heldStore struct {
	storage.Store
	hold    atomic.Bool
	release chan struct{}
	written chan struct{}
}

func (s *heldStore) Submit(b *storage.Batch, done func(error)) {
	if !s.hold.CompareAndSwap(true, false) {
		s.Store.Submit(b, done)
		return
	}
	s.Store.Submit(b, func(err error) {
		close(s.written)
		go func() {
			<-s.release
			done(err)
		}()
	})
}

// notLeaderStore refuses every batch while refusing is set, as a
// replicated store on a node that does not lead the meta group does.
type notLeaderStore struct {
	storage.Store
	refusing atomic.Bool
}

// errMetaNotLeader is the refusal as the cluster's store words it.
var errMetaNotLeader = fmt.Errorf("cluster: group 0: %w", &NotLeaderError{LeaderAddr: "127.0.0.1:5557"})

func (s *notLeaderStore) Submit(b *storage.Batch, done func(error)) {
	if s.refusing.Load() {
		done(errMetaNotLeader)
		return
	}
	s.Store.Submit(b, done)
}

// TestBrokerCommandsRefusedByANonLeader: every command whose write the
// store refuses as not the meta group's leader answers that error as it
// is (UNAVAILABLE with the leader's address) and changes nothing, in
// memory or in the store.
func TestBrokerCommandsRefusedByANonLeader(t *testing.T) {
	t.Parallel()
	store := &notLeaderStore{Store: storage.NewMemory()}
	f := startOn(t, &faultyStore{Store: store})
	f.create("q", time.Minute)
	key := testKey("k1")
	require.NoError(t, f.ask(nil, &CreateKey{Key: key}).(*AdminReply).Err)
	require.NoError(t, f.ask(nil, &SetConfig{Key: "a", Value: "1"}).(*AdminReply).Err)
	before := f.metaView()
	recs, err := store.Queues()
	require.NoError(t, err)
	entries, err := store.ConfigEntries()
	require.NoError(t, err)

	store.refusing.Store(true)
	depth := uint64(3)
	for _, cmd := range []any{
		&CreateQueue{Config: QueueConfig{Name: "q2", VisibilityTimeout: time.Minute, FairnessKeyHeader: "key"}},
		&UpdateQueue{Name: "q", Patch: QueuePatch{MaxDepth: &depth}},
		&DeleteQueue{Name: "q"},
		&SetConfig{Key: "a", Value: "2"},
		&CreateKey{Key: testKey("k2")},
		&RevokeKey{Name: "k1"},
		&SetAcl{KeyID: key.KeyID(), Permissions: []auth.Permission{{Pattern: "*", Actions: []auth.Action{auth.Action("produce")}}}},
	} {
		err := replyErr(t, f.sendToBroker(cmd))
		require.Same(t, errMetaNotLeader, err, "%T answers the store's error unchanged", cmd)
	}
	after := f.metaView()
	require.Equal(t, before.version, after.version)
	require.Len(t, after.refs, len(before.refs))
	for name, ref := range before.refs {
		require.Same(t, ref, after.refs[name], "queue %s", name)
	}
	v, _ := f.sys.RuntimeConfig().Get("a")
	require.Equal(t, "1", v)
	recsAfter, err := store.Queues()
	require.NoError(t, err)
	require.Len(t, recsAfter, len(recs))
	for i := range recs {
		require.True(t, proto.Equal(recs[i], recsAfter[i]), "queue record %s", recs[i].GetName())
	}
	entriesAfter, err := store.ConfigEntries()
	require.NoError(t, err)
	require.Equal(t, entries, entriesAfter)

	// Nothing was left in flight: once the store accepts, commands run.
	store.refusing.Store(false)
	f.create("q2", time.Minute)
	f.requireServed("q2", Location{})
}

// TestBrokerCommandOutcomeUnknownReloads: a command whose write ends with
// an unknown outcome answers UNAVAILABLE, and the broker's memory is what
// the store holds, applied or not.
func TestBrokerCommandOutcomeUnknownReloads(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		cmd     any
		applied bool
		check   func(f *fixture)
	}{
		{"create applied", &CreateQueue{Config: QueueConfig{Name: "n", VisibilityTimeout: time.Minute, FairnessKeyHeader: "key"}}, true,
			func(f *fixture) { f.requireServed("n", Location{}); f.requireServed("n.dlq", Location{}) }},
		{"create not applied", &CreateQueue{Config: QueueConfig{Name: "n", VisibilityTimeout: time.Minute, FairnessKeyHeader: "key"}}, false,
			func(f *fixture) { require.Nil(f.t, f.sys.Directory().Lookup("n")) }},
		{"delete applied", &DeleteQueue{Name: "q"}, true,
			func(f *fixture) { require.Equal(f.t, []string(nil), f.sys.Directory().Names()) }},
		{"delete not applied", &DeleteQueue{Name: "q"}, false,
			func(f *fixture) { f.requireServed("q", Location{}); f.requireServed("q.dlq", Location{}) }},
		{"set config applied", &SetConfig{Key: "k", Value: "v"}, true,
			func(f *fixture) { v, _ := f.sys.RuntimeConfig().Get("k"); require.Equal(f.t, "v", v) }},
		{"set config not applied", &SetConfig{Key: "k", Value: "v"}, false,
			func(f *fixture) { _, set := f.sys.RuntimeConfig().Get("k"); require.False(f.t, set) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			logs := &logRecorder{}
			unknown := &unknownStore{Store: storage.NewMemory()}
			f := startOn(t, &faultyStore{Store: unknown}, withLogs(logs))
			f.create("q", time.Minute)
			unknown.arm(false, tc.applied)
			err := replyErr(t, f.sendToBroker(tc.cmd))
			require.ErrorIs(t, err, ErrOutcomeUnknown)
			require.ErrorIs(t, err, ErrShuttingDown, "UNAVAILABLE")
			tc.check(f)
			f.requireMetaAppliedNoOp(logs)
		})
	}
}

// heldDefers completes every Defer only once release is closed: a lease
// write that is slow to become durable.
type heldDefers struct {
	storage.Store
	release chan struct{}
}

func (s *heldDefers) Defer(b *storage.Batch, done func(error)) {
	s.Store.Defer(b, func(err error) {
		go func() {
			<-s.release
			done(err)
		}()
	})
}

// In a cluster a delivery carries its lease write, and is not to be sent
// before that is durable (a deposed leader must not deliver from stale
// state); on a single node it carries none.
func TestInAClusterADeliveryWaitsForItsLeaseWrite(t *testing.T) {
	t.Parallel()
	held := &heldDefers{Store: storage.NewMemory(), release: make(chan struct{})}
	f := startOn(t, &faultyStore{Store: held}, withPlacement(&fakePlacement{}))
	f.create("q", time.Minute)
	f.fill("q", 1)
	d := f.recv(f.subscribe("q", 1))
	require.NotNil(t, d.Written, "a cluster's delivery carries its lease write")
	select {
	case <-d.Written.done:
		t.Fatal("the lease write is done before the store completed it")
	default:
	}
	close(held.release)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	require.NoError(t, d.Written.Wait(ctx))

	single := newFixture(t)
	single.create("q", time.Minute)
	single.fill("q", 1)
	require.Nil(t, single.recv(single.subscribe("q", 1)).Written, "a single node's delivery waits for nothing")
}
