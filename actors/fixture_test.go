package actors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/scripting"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry"
)

// TestMain fails the package if a test leaves a goroutine behind. The one
// exception is protoactor's dead-letter log throttle, a goroutine that ends
// by itself one second after the last dead letter (requests to a deleted
// queue's actor make some); these tests finish sooner than that.
func TestMain(m *testing.M) {
	checkEachStep = recordViolation
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"))
}

// violations are the invariant failures queue actors reported since the
// last takeViolations: every queue actor of these tests checks its memory
// after each message it handles (checkInvariants), and each fixture fails
// its test if any was reported while it ran.
var violations struct {
	sync.Mutex
	found []string
}

func recordViolation(queue string, msg any, err error) {
	if err == nil {
		return
	}
	violations.Lock()
	defer violations.Unlock()
	if len(violations.found) < 10 {
		violations.found = append(violations.found, fmt.Sprintf("queue %s after %T: %v", queue, msg, err))
	}
}

func takeViolations() []string {
	violations.Lock()
	defer violations.Unlock()
	found := violations.found
	violations.found = nil
	return found
}

// waitFor bounds every wait in these tests; none should come near it.
const waitFor = 10 * time.Second

// fixture is an actor system on an in-memory store: the queue actors'
// rules, without gRPC or a disk.
type fixture struct {
	t     *testing.T
	sys   *System
	store *faultyStore
	board *telemetry.Board
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return startOn(t, &faultyStore{Store: storage.NewMemory()})
}

// testConfigLimits are config.Defaults' runtime config store limits.
var testConfigLimits = RuntimeConfigLimits{MaxKeys: 10_000, MaxBytes: 16 << 20, MaxAPIKeys: 1000}

// startOn starts a system on store, with options changed by each of with;
// the system stops when the test ends (or earlier, through f.stop), the
// store stays open for a restart.
func startOn(t *testing.T, store *faultyStore, with ...func(*Options)) *fixture {
	t.Helper()
	f := &fixture{t: t, store: store, board: &telemetry.Board{}}
	opts := Options{
		Store:          store,
		Quantum:        1,
		RequestTimeout: waitFor,
		DefaultQueue:   QueueConfig{VisibilityTimeout: time.Minute, FairnessKeyHeader: "key"},
		// No test here is about the script time budget (scripting's are);
		// a short one could stop a well-behaved script on a busy machine.
		Lua:         scripting.Limits{Timeout: 5 * time.Second, MemoryBytes: 1 << 20, BreakerThreshold: 3, BreakerCooldown: time.Minute},
		ConfigStore: testConfigLimits,
		Board:       f.board,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, w := range with {
		w(&opts)
	}
	sys, err := Start(opts)
	require.NoError(t, err)
	f.sys = sys
	t.Cleanup(func() {
		f.stop()
		for _, v := range takeViolations() {
			t.Errorf("invariant broken: %s", v)
		}
	})
	return f
}

func (f *fixture) stop() {
	if f.sys != nil {
		f.sys.Stop()
		f.sys = nil
	}
}

func (f *fixture) ask(pid any, msg any) any {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	var res any
	var err error
	switch p := pid.(type) {
	case string:
		ref := f.sys.Directory().Lookup(p)
		require.NotNil(f.t, ref, "queue %s", p)
		res, err = f.sys.Ask(ctx, ref.PID, nil, msg)
	default:
		res, err = f.sys.Ask(ctx, f.sys.Broker(), nil, msg)
	}
	require.NoError(f.t, err)
	return res
}

func (f *fixture) create(name string, vt time.Duration) {
	f.t.Helper()
	cfg := QueueConfig{Name: name, VisibilityTimeout: vt, FairnessKeyHeader: "key"}
	require.NoError(f.t, f.ask(nil, &CreateQueue{Config: cfg}).(*AdminReply).Err)
}

func (f *fixture) enqueue(queue string, headers map[string]string) string {
	f.t.Helper()
	r := f.ask(queue, &Enqueue{Headers: headers, Payload: []byte("p")}).(*EnqueueReply)
	require.NoError(f.t, r.Err)
	return r.ID
}

// fill enqueues n messages with no headers.
func (f *fixture) fill(queue string, n int) {
	f.t.Helper()
	for range n {
		f.enqueue(queue, nil)
	}
}

func (f *fixture) settle(queue string, msg any) error {
	f.t.Helper()
	return f.ask(queue, msg).(*SettleReply).Err
}

func (f *fixture) subscribe(queue string, size int) *Consumer {
	f.t.Helper()
	c := NewConsumer(size, 1)
	f.ask(queue, &Subscribe{Consumer: c})
	return c
}

// recv takes c's next delivery as a lease stream does: when that frees a
// full buffer, it tells the queue (ConsumerReady). It fails once waitFor
// passes.
func (f *fixture) recv(c *Consumer) *Delivery {
	f.t.Helper()
	d := recv(f.t, c)
	if len(c.Deliveries) == cap(c.Deliveries)-1 {
		f.sys.Send(f.sys.Directory().Lookup(d.Queue).PID, &ConsumerReady{})
	}
	return d
}

// awaitWrites returns once every batch submitted or deferred so far is
// durable: it writes an empty batch, and the store commits batches in
// order. It is how a test waits for a write nobody answers (lease
// bookkeeping, expiries) without guessing how long that takes.
func (f *fixture) awaitWrites() {
	f.t.Helper()
	require.NoError(f.t, f.store.Write(&storage.Batch{}))
}

// expireLeases moves the end of every lease stored for queue a minute into
// the past, as if filad had been down that long: for a stopped system, so
// that a test about leases that expired while filad was down does not race
// a short visibility timeout.
func expireLeases(t *testing.T, store storage.Store, queue string) {
	t.Helper()
	qc, err := store.LoadQueue(queue)
	require.NoError(t, err)
	require.NotEmpty(t, qc.Leases, "no lease of %s to expire", queue)
	var b storage.Batch
	for id, l := range qc.Leases {
		l.ExpiresAtUnixMs = time.Now().Add(-time.Minute).UnixMilli()
		b.PutLease(queue, id, l)
	}
	require.NoError(t, store.Write(&b))
}

func (f *fixture) stats(queue string) *QueueStats {
	f.t.Helper()
	return f.ask(queue, &GetStats{}).(*QueueStats)
}

// recv takes the next delivery, or fails once waitFor passes.
func recv(t *testing.T, c *Consumer) *Delivery {
	t.Helper()
	select {
	case d := <-c.Deliveries:
		return d
	case <-c.Done():
		t.Fatalf("consumer ended: %v", c.Err())
	case <-time.After(waitFor):
		t.Fatal("no delivery")
	}
	return nil
}

// requireNoDelivery checks nothing is buffered for c now. The queue actor
// has answered a request sent after the change under test, so whatever it
// was going to deliver by then is in the buffer already.
func requireNoDelivery(t *testing.T, c *Consumer) {
	t.Helper()
	require.Zero(t, len(c.Deliveries), "unexpected delivery")
}

// faultyStore wraps a Store; armed, its next Submit panics inside the queue
// actor (a storage bug), which is how these tests make a supervisor
// restart the actor.
type faultyStore struct {
	storage.Store
	panicNext atomic.Bool
	// failReads, set, fails every ReadMessages (a disk read error).
	failReads atomic.Bool
}

var errReadInjected = errors.New("read failed (injected by a test)")

func (s *faultyStore) ReadMessages(queue string, ids []string) ([]*storagev1.MessageRecord, error) {
	if s.failReads.Load() {
		return nil, errReadInjected
	}
	return s.Store.ReadMessages(queue, ids)
}

func (s *faultyStore) Submit(b *storage.Batch, done func(error)) {
	if s.panicNext.CompareAndSwap(true, false) {
		panic("storage bug injected by a test")
	}
	s.Store.Submit(b, done)
}

// unknownStore wraps a Store: each batch armed completes with
// storage.ErrOutcomeUnknown, written first or not, as a replicated store
// whose leader lost its term before the entry was known committed leaves
// it. Unarmed batches pass through.
type unknownStore struct {
	storage.Store
	mu sync.Mutex
	// fates are the next batches' (Submit's, or Defer's): true, applied.
	fates, deferred []bool
	// hold, when set, keeps the next Submit from being written until it
	// is closed; held is closed once that batch is submitted.
	hold, held chan struct{}
}

// holdNext keeps the next Submit from being written (and completed) until
// release is called: a completion that arrives late.
func (s *unknownStore) holdNext() (held <-chan struct{}, release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold, s.held = make(chan struct{}), make(chan struct{})
	hold := s.hold
	return s.held, func() { close(hold) }
}

// arm makes the next Submit (deferred: Defer) complete with an unknown
// outcome, having applied its batch or not.
func (s *unknownStore) arm(deferred, applied bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if deferred {
		s.deferred = append(s.deferred, applied)
	} else {
		s.fates = append(s.fates, applied)
	}
}

func (s *unknownStore) Submit(b *storage.Batch, done func(error)) {
	s.mu.Lock()
	hold, held := s.hold, s.held
	s.hold = nil
	s.mu.Unlock()
	if hold != nil {
		close(held)
		go func() {
			<-hold
			s.Store.Submit(b, done)
		}()
		return
	}
	s.write(s.Store.Submit, &s.fates, b, done)
}

func (s *unknownStore) Defer(b *storage.Batch, done func(error)) {
	s.write(s.Store.Defer, &s.deferred, b, done)
}

func (s *unknownStore) write(write func(*storage.Batch, func(error)), fates *[]bool, b *storage.Batch, done func(error)) {
	s.mu.Lock()
	armed, applied := len(*fates) > 0, false
	if armed {
		applied, *fates = (*fates)[0], (*fates)[1:]
	}
	s.mu.Unlock()
	switch {
	case !armed:
		write(b, done)
	case !applied:
		done(storage.ErrOutcomeUnknown)
	default:
		write(b, func(err error) {
			if err == nil {
				err = storage.ErrOutcomeUnknown
			}
			done(err)
		})
	}
}

func newUnknownFixture(t *testing.T) (*fixture, *unknownStore) {
	t.Helper()
	unknown := &unknownStore{Store: storage.NewMemory()}
	return startOn(t, &faultyStore{Store: unknown}), unknown
}

// requireMatchesStore fails unless the queue's stats count what the store
// holds for it: every stored message ready, delayed or leased, and the
// leases the leased ones.
func (f *fixture) requireMatchesStore(queue string) *QueueStats {
	f.t.Helper()
	contents, err := f.store.LoadQueue(queue)
	require.NoError(f.t, err)
	st := f.stats(queue)
	require.EqualValues(f.t, len(contents.Messages), st.Depth+st.InFlight+st.Delayed, "messages: memory %+v, store %d", st, len(contents.Messages))
	require.EqualValues(f.t, len(contents.Leases), st.InFlight, "leases")
	return st
}

// awaitIndexed waits until queue's indexed mark is stored: the deferred
// write a queue's first load makes (indexQueue).
func (f *fixture) awaitIndexed(queue string) {
	f.t.Helper()
	require.Eventually(f.t, func() bool {
		contents, err := f.store.LoadIndex(queue, nil)
		return err == nil && contents.Indexed
	}, waitFor, time.Millisecond, "queue %s never marked indexed", queue)
}
