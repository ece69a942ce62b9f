package actors

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry"
)

func TestQueueDeliversByWeightedFairness(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.create("q", time.Minute)
	weights := map[string]int{"a": 1, "b": 2, "c": 3}
	for key, w := range weights {
		for range 20 {
			f.enqueue("q", map[string]string{"key": key, WeightHeader: fmt.Sprint(w)})
		}
	}
	// One consumer that may hold all: the queue hands them out in DRR order.
	c := f.subscribe("q", 60)
	got := map[string]int{}
	for range 30 { // five full rounds of 1+2+3
		got[f.recv(c).Record.GetFairnessKey()]++
	}
	require.Equal(t, map[string]int{"a": 5, "b": 10, "c": 15}, got)
	st := f.stats("q")
	require.EqualValues(t, 60, st.Depth+st.InFlight)
	require.LessOrEqual(t, st.InFlight, int64(30+DeliveryBuffer), "leased as the stream takes them")
}

func TestQueueUnknownKeyHeaderGoesToDefaultKey(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.create("q", time.Minute)
	r := f.ask("q", &Enqueue{Headers: map[string]string{"other": "x"}}).(*EnqueueReply)
	require.NoError(t, r.Err)
	require.Equal(t, DefaultFairnessKey, r.FairnessKey)
	for _, bad := range []string{"0", "1001", "x", "-1"} {
		r := f.ask("q", &Enqueue{Headers: map[string]string{WeightHeader: bad}}).(*EnqueueReply)
		require.ErrorIs(t, r.Err, ErrInvalid, "weight %q", bad)
	}
	require.EqualValues(t, 1, f.stats("q").Depth, "refused messages change nothing")
}

func TestQueueCreditBoundsUnsettledMessages(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.create("q", time.Minute)
	f.fill("q", 5)
	c := f.subscribe("q", 2)
	first, second := f.recv(c), f.recv(c)
	st := f.stats("q")
	require.EqualValues(t, 2, st.InFlight)
	require.EqualValues(t, 3, st.Depth)
	requireNoDelivery(t, c)

	require.NoError(t, f.settle("q", &Ack{ID: first.ID}))
	third := f.recv(c)
	require.NotEqual(t, second.ID, third.ID)
	require.NoError(t, f.settle("q", &Nack{ID: second.ID, Error: "try later"}))
	// The nack returned the credit: the next ready message goes out, and
	// the nacked one waits at the back of its key's FIFO.
	fourth := f.recv(c)
	require.NotEqual(t, second.ID, fourth.ID)
	st = f.stats("q")
	require.EqualValues(t, 2, st.InFlight)
	require.EqualValues(t, 2, st.Depth)
	requireNoDelivery(t, c)
	require.NoError(t, f.settle("q", &Ack{ID: third.ID}))
	require.NoError(t, f.settle("q", &Ack{ID: fourth.ID}))
	fifth := f.recv(c)
	require.NoError(t, f.settle("q", &Ack{ID: fifth.ID}))
	again := f.recv(c)
	require.Equal(t, second.ID, again.ID)
	require.EqualValues(t, 1, again.Record.GetAttemptCount())
}

func TestQueueSettleRules(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.create("q", time.Minute)
	id := f.enqueue("q", nil)
	require.ErrorIs(t, f.settle("q", &Ack{ID: id}), ErrNotLeased, "ready, not leased")
	c := f.subscribe("q", 1)
	require.Equal(t, id, f.recv(c).ID)
	require.NoError(t, f.settle("q", &Ack{ID: id}))
	require.ErrorIs(t, f.settle("q", &Ack{ID: id}), ErrNotLeased, "a second ack")
	require.ErrorIs(t, f.settle("q", &Nack{ID: id}), ErrNotLeased, "a nack after the ack")
	qc, err := f.store.LoadQueue("q")
	require.NoError(t, err)
	require.Empty(t, qc.Messages, "the ack deleted it")
	require.Empty(t, qc.Leases)
}

func TestQueueExpiredLeaseReturnsWithAttempt(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.create("q", 50*time.Millisecond)
	id := f.enqueue("q", nil)
	c := f.subscribe("q", 1)
	d := f.recv(c)
	require.Zero(t, d.Record.GetAttemptCount())
	// Not settled: the lease expires, the credit returns, and the message
	// comes back with attempt_count 1.
	d = f.recv(c)
	require.Equal(t, id, d.ID)
	require.EqualValues(t, 1, d.Record.GetAttemptCount())
	require.GreaterOrEqual(t, time.Since(d.LeasedAt), time.Duration(0))
	qc, err := f.store.LoadQueue("q")
	require.NoError(t, err)
	// At least 1: on a slow machine this lease may have expired as well.
	require.GreaterOrEqual(t, qc.Messages[0].Record.GetAttemptCount(), uint32(1), "the attempt is durable")
	require.NoError(t, f.settle("q", &Ack{ID: id}))
}

func TestQueueRestartFromStorage(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.create("q", time.Hour)
	f.create("short", time.Hour)
	held := f.enqueue("q", map[string]string{"key": "k"})
	ready := f.enqueue("q", map[string]string{"key": "k"})
	c := f.subscribe("q", 1)
	require.Equal(t, held, f.recv(c).ID)
	expiring := f.enqueue("short", nil)
	cs := f.subscribe("short", 1)
	require.Equal(t, expiring, f.recv(cs).ID)
	f.stop() // the whole broker stops; the store keeps what was committed
	select {
	case <-c.Done():
		require.ErrorIs(t, c.Err(), ErrShuttingDown)
	case <-time.After(waitFor):
		t.Fatal("consumer not ended by the stop")
	}
	// While filad is down, "short"'s lease runs out (its end is moved into
	// the past, so that no lease can expire before the stop however slow
	// the machine).
	f.awaitWrites() // leases are written deferred
	expireLeases(t, f.store, "short")

	f = startOn(t, f.store)
	st := f.stats("q")
	require.EqualValues(t, 1, st.InFlight, "the unexpired lease is kept")
	require.EqualValues(t, 1, st.Depth)
	c = f.subscribe("q", 5)
	require.Equal(t, ready, f.recv(c).ID, "only the ready message is delivered")
	requireNoDelivery(t, c)
	require.NoError(t, f.settle("q", &Ack{ID: held}), "the recovered lease can be acked")

	// A lease that expired while filad was down is ready again, attempt 1.
	cs = f.subscribe("short", 1)
	d := f.recv(cs)
	require.Equal(t, expiring, d.ID)
	require.EqualValues(t, 1, d.Record.GetAttemptCount())
}

func TestQueueDeleteEndsConsumersAndPurges(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.create("q", time.Minute)
	f.create("other", time.Minute)
	f.enqueue("q", nil)
	f.enqueue("q", nil)
	kept := f.enqueue("other", nil)
	c := f.subscribe("q", 1)
	f.recv(c)
	pid := f.sys.Directory().Lookup("q").PID
	require.NoError(t, f.ask(nil, &DeleteQueue{Name: "q"}).(*AdminReply).Err)
	select {
	case <-c.Done():
	case <-time.After(waitFor):
		t.Fatal("consumer not ended")
	}
	require.ErrorIs(t, c.Err(), ErrQueueNotFound)
	require.ErrorContains(t, c.Err(), `"q" was deleted`)
	require.Nil(t, f.sys.Directory().Lookup("q"))
	_, err := f.sys.Ask(context.Background(), pid, nil, &GetStats{})
	require.ErrorIs(t, err, ErrQueueNotFound, "a request to the stopped actor")
	require.ErrorContains(t, err, `"q"`)
	qc, err := f.store.LoadQueue("q")
	require.NoError(t, err)
	require.Empty(t, qc.Messages)
	require.Empty(t, qc.Leases)
	require.ErrorIs(t, f.ask(nil, &DeleteQueue{Name: "q"}).(*AdminReply).Err, ErrQueueNotFound)
	other, err := f.store.LoadQueue("other")
	require.NoError(t, err)
	require.Equal(t, kept, other.Messages[0].ID, "other queues untouched")
	// The name can be used again, empty.
	f.create("q", time.Minute)
	require.Zero(t, f.stats("q").Depth)
}

func TestQueueSupervisorRestartKeepsStateConfigAndCounts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.create("q", time.Hour)
	f.create("bystander", time.Hour)
	f.enqueue("bystander", nil)
	a := f.enqueue("q", nil)
	f.enqueue("q", nil)
	c := f.subscribe("q", 1)
	require.Equal(t, a, f.recv(c).ID)

	// A live config change, then a crash: the restarted actor must come back
	// with the new visibility timeout, not the one it was spawned with.
	vt := 30 * time.Millisecond
	require.NoError(t, f.ask(nil, &UpdateQueue{Name: "q", Patch: QueuePatch{VisibilityTimeout: &vt}}).(*UpdateQueueReply).Err)
	recs, err := f.store.Queues()
	require.NoError(t, err)
	i := slices.IndexFunc(recs, func(r *storagev1.QueueRecord) bool { return r.GetName() == "q" })
	require.EqualValues(t, 30, recs[i].GetVisibilityTimeoutMs(), "the update is durable")
	require.NotZero(t, recs[i].GetCreatedAtUnixMs(), "creation time kept")

	f.store.panicNext.Store(true)
	ref := f.sys.Directory().Lookup("q")
	f.sys.Send(ref.PID, &Enqueue{}) // its Submit panics inside the actor
	select {
	case <-c.Done():
		require.True(t, IsRestart(c.Err()), "consumer told to subscribe again: %v", c.Err())
	case <-time.After(waitFor):
		t.Fatal("consumer not ended by the restart")
	}
	st := f.stats("q")
	require.EqualValues(t, 1, st.InFlight, "the lease survives the restart")
	require.EqualValues(t, 1, st.Depth)
	// The new (short) timeout applies to the next lease.
	c = f.subscribe("q", 2)
	next := f.recv(c)
	start := time.Now()
	again := f.recv(c)
	require.Equal(t, next.ID, again.ID, "expired after the updated timeout")
	require.Less(t, time.Since(start), waitFor/2)
	require.EqualValues(t, 1, f.stats("bystander").Depth, "other queues never notice")

	// Counts made before the crash survive it.
	require.Eventually(t, func() bool {
		r := f.board.Snapshot()["q"]
		return r.Counts[telemetry.Enqueued] == 2 && r.Counts[telemetry.Leased] >= 3
	}, waitFor, time.Millisecond, "counts after restart: %+v", f.board.Snapshot()["q"])
}

func TestQueueReadingsReachTheBoard(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.create("q", time.Minute)
	f.fill("q", 3)
	c := f.subscribe("q", 3)
	ids := []string{f.recv(c).ID, f.recv(c).ID, f.recv(c).ID}
	require.NoError(t, f.settle("q", &Ack{ID: ids[0]}))
	require.NoError(t, f.settle("q", &Nack{ID: ids[1]}))
	var want telemetry.QueueReading
	want.Counts[telemetry.Enqueued] = 3
	want.Counts[telemetry.Leased] = 4 // the nacked one went out again
	want.Counts[telemetry.Acked] = 1
	want.Counts[telemetry.Nacked] = 1
	want.Gauges[telemetry.Depth] = 0
	want.Gauges[telemetry.LeasesActive] = 2
	want.Gauges[telemetry.ConsumersActive] = 1
	want.Counts[telemetry.Redelivered] = 1
	want.Gauges[telemetry.Bytes] = 2          // the two leased messages' payloads
	want.Gauges[telemetry.ConsumerCredit] = 1 // 3 in flight allowed, 2 held
	// The scheduler's own figures depend on timing; compare the rest.
	checked := func(r telemetry.QueueReading) telemetry.QueueReading {
		r.Counts[telemetry.DRRRounds], r.Counts[telemetry.DRRKeysProcessed] = 0, 0
		r.Gauges[telemetry.OldestReady], r.Keys, r.Fair = 0, nil, nil
		return r
	}
	require.Eventually(t, func() bool { return reflect.DeepEqual(checked(f.board.Snapshot()["q"]), want) },
		waitFor, time.Millisecond, "reading %+v, want %+v", f.board.Snapshot()["q"], want)

	require.NoError(t, f.ask(nil, &DeleteQueue{Name: "q"}).(*AdminReply).Err)
	require.Eventually(t, func() bool { _, ok := f.board.Snapshot()["q"]; return !ok },
		waitFor, time.Millisecond, "a deleted queue leaves the board")
}

func TestStartRequiresConfiguredValues(t *testing.T) {
	t.Parallel()
	for _, o := range []Options{{}, {Store: &faultyStore{}}, {Store: &faultyStore{}, Quantum: 1}} {
		_, err := Start(o)
		require.ErrorContains(t, err, "actors: Options.") // and no actor system left behind (goleak)
	}
}

func TestExpiryHeapOrdersByTime(t *testing.T) {
	t.Parallel()
	var h expiryHeap
	base := time.Now()
	order := []int{5, 1, 9, 3, 3, 0, 7, 2, 8, 6, 4}
	for _, n := range order {
		h.push(expiry{at: base.Add(time.Duration(n) * time.Millisecond), id: fmt.Sprint(n)})
	}
	var got []string
	for h.len() > 0 {
		got = append(got, h.pop().id)
	}
	require.Equal(t, []string{"0", "1", "2", "3", "3", "4", "5", "6", "7", "8", "9"}, got)
}

func TestLeaseTokens(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.create("q", 40*time.Millisecond)
	id := f.enqueue("q", nil)
	a := f.subscribe("q", 1)
	first := f.recv(a)
	require.NotEmpty(t, first.LeaseID)
	// Leases from now on are long, so the one the test holds cannot expire
	// under it however slow the machine; the first still ends in 40 ms.
	hour := time.Hour
	require.NoError(t, f.ask(nil, &UpdateQueue{Name: "q", Patch: QueuePatch{VisibilityTimeout: &hour}}).(*UpdateQueueReply).Err)
	// A's lease expires; the message goes out again (to A's stream here,
	// standing for consumer B) under a new lease.
	var second *Delivery
	for second == nil {
		d := f.recv(a)
		require.Equal(t, id, d.ID)
		require.NotEqual(t, first.LeaseID, d.LeaseID, "a lease id is unique per delivery")
		if d.ExpiresAt.Sub(d.LeasedAt) == time.Hour {
			second = d
		}
	}

	// The late settles of the first lease change nothing.
	require.ErrorIs(t, f.settle("q", &Ack{ID: id, LeaseID: first.LeaseID}), ErrLeaseExpired)
	require.ErrorIs(t, f.settle("q", &Nack{ID: id, LeaseID: first.LeaseID}), ErrLeaseExpired)
	r := f.ask("q", &Extend{ID: id, LeaseID: first.LeaseID}).(*ExtendReply)
	require.ErrorIs(t, r.Err, ErrLeaseExpired)
	require.EqualValues(t, 1, f.stats("q").InFlight, "still held by the second lease")

	// The holder extends its lease well past the visibility timeout...
	r = f.ask("q", &Extend{ID: id, LeaseID: second.LeaseID, Timeout: time.Hour}).(*ExtendReply)
	require.NoError(t, r.Err)
	require.WithinDuration(t, time.Now().Add(time.Hour), r.ExpiresAt, time.Minute)
	qc, err := f.store.LoadQueue("q")
	require.NoError(t, err)
	require.Equal(t, second.LeaseID, qc.Leases[id].GetLeaseId())
	require.Equal(t, r.ExpiresAt.UnixMilli(), qc.Leases[id].GetExpiresAtUnixMs(), "the extension is durable")
	// ...so the message is not redelivered after its original timeout: a
	// restart (which reloads every lease) shows it still held, same token.
	f.stop()
	f = startOn(t, f.store)
	require.EqualValues(t, 1, f.stats("q").InFlight)
	require.ErrorIs(t, f.settle("q", &Ack{ID: id, LeaseID: first.LeaseID}), ErrLeaseExpired)
	require.NoError(t, f.settle("q", &Ack{ID: id, LeaseID: second.LeaseID}), "the token survives a restart")
	require.ErrorIs(t, f.settle("q", &Ack{ID: id, LeaseID: second.LeaseID}), ErrNotLeased, "acked: gone")
}

func TestSettleWithoutLeaseIDActsOnTheCurrentLease(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.create("q", time.Minute)
	id := f.enqueue("q", nil)
	c := f.subscribe("q", 1)
	f.recv(c)
	require.NoError(t, f.settle("q", &Nack{ID: id}), "no token: the old, unsafe semantics")
	require.NoError(t, f.settle("q", &Ack{ID: f.recv(c).ID}))
	r := f.ask("q", &Extend{ID: id}).(*ExtendReply)
	require.ErrorIs(t, r.Err, ErrInvalid, "extending needs the token")
}

func TestWeightIsSetByTheLatestMessageCarryingIt(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.create("q", time.Minute)
	weightOf := func(key string) int64 {
		for _, k := range f.stats("q").Keys {
			if k.Key == key {
				return k.Weight
			}
		}
		t.Fatalf("key %s not active", key)
		return 0
	}
	f.enqueue("q", map[string]string{"key": "k"})
	require.EqualValues(t, 1, weightOf("k"), "a new key without a weight")
	f.enqueue("q", map[string]string{"key": "k", WeightHeader: "3"})
	f.enqueue("q", map[string]string{"key": "k"})
	require.EqualValues(t, 3, weightOf("k"), "a message without fila-weight keeps the key's weight")
	f.enqueue("q", map[string]string{"key": "k", WeightHeader: "2"})
	require.EqualValues(t, 2, weightOf("k"))
	// Recovery replays the messages in enqueue order: same answer.
	f.stop()
	f = startOn(t, f.store)
	require.EqualValues(t, 2, weightOf("k"))
}

func TestQueueDepthAndBytesLimits(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	require.NoError(t, f.ask(nil, &CreateQueue{Config: QueueConfig{
		Name: "q", VisibilityTimeout: time.Minute, FairnessKeyHeader: "key", MaxDepth: 2, MaxBytes: 10,
	}}).(*AdminReply).Err)
	enqueue := func(payload string) error {
		return f.ask("q", &Enqueue{Payload: []byte(payload)}).(*EnqueueReply).Err
	}
	require.NoError(t, enqueue("12345"))
	err := enqueue("123456")
	require.ErrorIs(t, err, ErrOverloaded)
	require.ErrorContains(t, err, "config.max_bytes 10")
	require.NoError(t, enqueue("12345"))
	err = enqueue("")
	require.ErrorIs(t, err, ErrOverloaded)
	require.ErrorContains(t, err, "holds 2 messages (config.max_depth 2)")

	// Leased messages still count; an ack frees room.
	c := f.subscribe("q", 1)
	d := f.recv(c)
	require.ErrorIs(t, enqueue(""), ErrOverloaded)
	require.NoError(t, f.settle("q", &Ack{ID: d.ID, LeaseID: d.LeaseID}))
	require.NoError(t, enqueue("1"))
	// A restart counts what is stored.
	f.stop()
	f = startOn(t, f.store)
	require.ErrorIs(t, f.ask("q", &Enqueue{}).(*EnqueueReply).Err, ErrOverloaded)
}

// TestRepeatedExtendThenShorten: Extend no longer pushes an expiry entry
// for a later expiry (a holder extending over and over grew the heap with
// entries that stayed up to 12 h); the entry already queued re-arms itself.
// Extended 500 times, then shortened, the lease still expires on time, and
// an extended lease outlives its original timeout. The original timeout
// only has to outlast the first Extend's round trip, so it is seconds; the
// test then waits for its entry's tick (a test hook), not for a time.
func TestRepeatedExtendThenShorten(t *testing.T) {
	t.Parallel()
	var ticks atomic.Int64
	f := startOn(t, &faultyStore{Store: storage.NewMemory()}, countTicks("q", &ticks))
	const vt = 2 * time.Second
	f.create("q", vt)
	id := f.enqueue("q", nil)
	c := f.subscribe("q", 1)
	d := f.recv(c)
	for range 500 {
		r := f.ask("q", &Extend{ID: id, LeaseID: d.LeaseID, Timeout: time.Hour}).(*ExtendReply)
		require.NoError(t, r.Err)
	}
	// The original entry fires (the lease's only one: the extensions
	// pushed none) and re-arms for the hour: the lease is still held.
	require.Eventually(t, func() bool { return ticks.Load() > 0 }, vt+waitFor, 5*time.Millisecond, "the original entry never fired")
	require.EqualValues(t, 1, f.stats("q").InFlight)
	requireNoDelivery(t, c)
	// Shorten it: it comes back despite the hour before.
	r := f.ask("q", &Extend{ID: id, LeaseID: d.LeaseID, Timeout: 30 * time.Millisecond}).(*ExtendReply)
	require.NoError(t, r.Err)
	again := f.recv(c)
	require.Equal(t, id, again.ID)
	require.EqualValues(t, 1, again.Record.GetAttemptCount())
}

func TestClipKeepsRunesWhole(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"abcdef", 3, "abc…"},
		{"aé", 2, "a…"}, // é is two bytes: never cut in half
		{"éé", 3, "é…"},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, clip(tt.in, tt.n), "%q at %d", tt.in, tt.n)
	}
}

// TestUnsubscribeReturnsUnsentDeliveries: what waits in a gone stream's
// buffer comes back at once, attempts untouched, including a delivery made
// to it after its stream ended but before its Unsubscribe arrived (a nack
// that freed its credit).
func TestUnsubscribeReturnsUnsentDeliveries(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.create("q", time.Hour)
	id := f.enqueue("q", nil)
	a := f.subscribe("q", 1)
	d := f.recv(a) // the stream sent it, then ended
	require.NoError(t, f.settle("q", &Nack{ID: id, LeaseID: d.LeaseID}))
	// The nack gave a its credit back, so the retry went into its buffer.
	require.Len(t, a.Deliveries, 1)
	f.sys.Send(f.sys.Directory().Lookup("q").PID, &Unsubscribe{ConsumerID: a.id})
	st := f.stats("q")
	require.EqualValues(t, 1, st.Depth, "back to ready")
	require.Zero(t, st.InFlight)
	b := f.subscribe("q", 1)
	again := f.recv(b)
	require.Equal(t, id, again.ID)
	require.EqualValues(t, 1, again.Record.GetAttemptCount(), "the nack counted, the unsent delivery did not")
}

// TestNothingIsDeliveredToAnEndedStream: once a stream's context has
// ended, the queue passes it over at once, before its Unsubscribe arrives.
func TestNothingIsDeliveredToAnEndedStream(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.create("q", time.Hour)
	id := f.enqueue("q", nil)
	gone := make(chan struct{})
	c := NewConsumer(1, 1)
	c.Gone = gone
	f.ask("q", &Subscribe{Consumer: c})
	d := f.recv(c)
	close(gone) // the client ended the stream, then nacks
	require.NoError(t, f.settle("q", &Nack{ID: id, LeaseID: d.LeaseID}))
	require.Empty(t, c.Deliveries, "not redelivered to the ended stream")
	require.EqualValues(t, 1, f.stats("q").Depth, "ready for the next consumer")
}

// TestUnknownOutcomeReloadsFromStore: a write that completes with
// storage.ErrOutcomeUnknown, applied or not, is answered UNAVAILABLE (the
// gateway maps ErrShuttingDown so), ends the queue's consumers as a restart
// does, and leaves the actor holding what the store holds, not a rollback
// of memory: an enqueue applied is delivered, one not applied is not; an
// ack applied is gone, one not applied leaves the lease standing with its
// token; and so on. The invariants are checked after every step, as in
// every test here.
func TestUnknownOutcomeReloadsFromStore(t *testing.T) {
	t.Parallel()
	type state struct{ depth, inFlight int64 }
	for _, tc := range []struct {
		name string
		// stored: a message is stored before the write; leased: and
		// delivered; deferred: the write is the lease dispatch writes, one
		// nobody waits on.
		stored, leased, deferred bool
		act                      func(f *fixture, d *Delivery) error
		// what the queue holds after the reload, when the write was
		// applied and when it was not.
		applied, notApplied state
	}{
		{name: "enqueue", act: func(f *fixture, _ *Delivery) error {
			return f.ask("q", &Enqueue{Payload: []byte("x")}).(*EnqueueReply).Err
		}, applied: state{1, 0}, notApplied: state{0, 0}},
		{name: "enqueue batch", act: func(f *fixture, _ *Delivery) error {
			r := f.ask("q", &EnqueueBatch{Items: []*Enqueue{{Payload: []byte("x")}, {Payload: []byte("y")}}}).(*EnqueueBatchReply)
			require.ErrorIs(t, r.Results[1].Err, ErrOutcomeUnknown)
			return r.Results[0].Err
		}, applied: state{2, 0}, notApplied: state{0, 0}},
		{name: "ack", leased: true, act: func(f *fixture, d *Delivery) error {
			return f.settle("q", &Ack{ID: d.ID, LeaseID: d.LeaseID})
		}, applied: state{0, 0}, notApplied: state{0, 1}},
		{name: "nack", leased: true, act: func(f *fixture, d *Delivery) error {
			return f.settle("q", &Nack{ID: d.ID, LeaseID: d.LeaseID})
		}, applied: state{1, 0}, notApplied: state{0, 1}},
		{name: "extend", leased: true, act: func(f *fixture, d *Delivery) error {
			return f.ask("q", &Extend{ID: d.ID, LeaseID: d.LeaseID, Timeout: time.Hour}).(*ExtendReply).Err
		}, applied: state{0, 1}, notApplied: state{0, 1}},
		{name: "purge", stored: true, act: func(f *fixture, _ *Delivery) error {
			return f.ask("q", &Purge{}).(*MoveReply).Err
		}, applied: state{0, 0}, notApplied: state{1, 0}},
		{name: "lease write", deferred: true, applied: state{0, 1}, notApplied: state{1, 0}},
	} {
		for _, applied := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s applied %v", tc.name, applied), func(t *testing.T) {
				t.Parallel()
				f, store := newUnknownFixture(t)
				f.create("q", time.Minute)
				// A new queue writes its indexed mark deferred as it loads:
				// that write must be done before one is armed to fail.
				f.awaitIndexed("q")
				var c *Consumer
				var d *Delivery
				if tc.stored || tc.leased || tc.deferred {
					f.enqueue("q", nil)
				}
				switch {
				case tc.leased:
					c = f.subscribe("q", 1)
					d = f.recv(c)
				case tc.deferred:
					store.arm(true, applied)
					c = f.subscribe("q", 1)
					requireRestarted(t, c) // by the reload; the delivery stays in its buffer
					require.Len(t, c.Deliveries, 1)
					d = <-c.Deliveries
				}
				if tc.act != nil {
					store.arm(false, applied)
					err := tc.act(f, d)
					require.ErrorIs(t, err, ErrOutcomeUnknown)
					require.ErrorIs(t, err, storage.ErrOutcomeUnknown)
					require.ErrorIs(t, err, ErrShuttingDown, "answered UNAVAILABLE")
				}
				if c != nil {
					requireRestarted(t, c)
				}
				want := tc.notApplied
				if applied {
					want = tc.applied
				}
				st := f.requireMatchesStore("q")
				require.Equal(t, want, state{st.Depth, st.InFlight})
				if want.inFlight > 0 && d != nil {
					require.NoError(t, f.settle("q", &Ack{ID: d.ID, LeaseID: d.LeaseID}), "the lease reloaded keeps its token")
				}
				if want.depth > 0 {
					c := f.subscribe("q", int(want.depth))
					for range want.depth {
						got := f.recv(c)
						if d != nil {
							require.Equal(t, d.ID, got.ID)
						}
					}
				}
				f.requireMatchesStore("q")
			})
		}
	}
}

// requireRestarted waits until c is ended as a queue actor's restart or
// reload ends it (told to subscribe again), or fails once waitFor passes.
func requireRestarted(t *testing.T, c *Consumer) {
	t.Helper()
	select {
	case <-c.Done():
		require.True(t, IsRestart(c.Err()), "consumer told to subscribe again: %v", c.Err())
	case <-time.After(waitFor):
		t.Fatal("consumer not ended")
	}
}

// TestCompletionOfAnEarlierEpoch: an enqueue whose commit completes only
// after the queue reloaded (another write's outcome was unknown) was not in
// the store the reload read; its completion, of the earlier epoch, adds the
// message (the store has it) without touching the new epoch's reservations,
// and its caller gets its id.
func TestCompletionOfAnEarlierEpoch(t *testing.T) {
	t.Parallel()
	f, store := newUnknownFixture(t)
	f.create("q", time.Minute)
	ref := f.sys.Directory().Lookup("q")
	held, release := store.holdNext()
	late := make(chan *EnqueueReply, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		r, err := f.sys.Ask(ctx, ref.PID, nil, &Enqueue{Payload: []byte("late")})
		if err != nil {
			r = &EnqueueReply{Err: err}
		}
		late <- r.(*EnqueueReply)
	}()
	select {
	case <-held:
	case <-time.After(waitFor):
		t.Fatal("the enqueue was not submitted")
	}
	store.arm(false, false)
	require.ErrorIs(t, f.ask("q", &Enqueue{Payload: []byte("lost")}).(*EnqueueReply).Err, ErrOutcomeUnknown)
	require.Zero(t, f.requireMatchesStore("q").Depth, "reloaded: the late enqueue is not stored yet")

	release()
	var r *EnqueueReply
	select {
	case r = <-late:
	case <-time.After(waitFor):
		t.Fatal("no reply to the late enqueue")
	}
	require.NoError(t, r.Err)
	require.EqualValues(t, 1, f.requireMatchesStore("q").Depth)
	c := f.subscribe("q", 1)
	d := f.recv(c)
	require.Equal(t, r.ID, d.ID)
	require.Equal(t, "late", string(d.Record.GetPayload()))
}
