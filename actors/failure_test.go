package actors

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry"
)

func TestBackoffDelay(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	tests := []struct {
		name    string
		b       Backoff
		attempt uint32
		want    time.Duration
	}{
		{"off", Backoff{}, 3, 0},
		{"first retry waits initial", Backoff{Initial: 100 * ms, Max: time.Second, Multiplier: 2}, 1, 100 * ms},
		{"attempt 0 counts as the first", Backoff{Initial: 100 * ms, Max: time.Second, Multiplier: 2}, 0, 100 * ms},
		{"grows by the multiplier", Backoff{Initial: 100 * ms, Max: time.Second, Multiplier: 3}, 3, 900 * ms},
		{"capped at max", Backoff{Initial: 100 * ms, Max: time.Second, Multiplier: 2}, 5, time.Second},
		{"multiplier 0 means 2", Backoff{Initial: 100 * ms, Max: time.Second}, 2, 200 * ms},
		{"max 0 means initial × m^9", Backoff{Initial: ms, Multiplier: 2}, 40, 512 * ms},
		{"huge attempts do not overflow", Backoff{Initial: time.Second, Max: time.Hour, Multiplier: 10}, 4000, time.Hour},
		{"never over MaxDelay", Backoff{Initial: time.Hour, Max: 100 * time.Hour, Multiplier: 10}, 3, MaxDelay},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, tt.b.Delay(tt.attempt))
		})
	}
}

// createWith creates a queue (and its DLQ) with cfg's failure rules.
func (f *fixture) createWith(cfg QueueConfig) {
	f.t.Helper()
	cfg.FairnessKeyHeader = "key"
	require.NoError(f.t, f.ask(nil, &CreateQueue{Config: cfg}).(*AdminReply).Err)
}

func TestPoisonMessageIsDeadLetteredAfterMaxAttemptsAndRedriven(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.createWith(QueueConfig{Name: "q", VisibilityTimeout: time.Minute, MaxAttempts: 3, DeadLetter: true})
	id := f.enqueue("q", map[string]string{"h": "v"})
	c := f.subscribe("q", 1)
	for attempt := range 3 {
		d := f.recv(c)
		require.Equal(t, id, d.ID)
		require.EqualValues(t, attempt, d.Record.GetAttemptCount())
		require.NoError(t, f.settle("q", &Nack{ID: id, LeaseID: d.LeaseID, Error: "boom"}))
	}
	requireNoDelivery(t, c)
	st := f.stats("q")
	require.Zero(t, st.Depth+st.InFlight+st.Delayed, "gone from the source")

	dlq := f.subscribe("q.dlq", 1)
	d := f.recv(dlq)
	require.Equal(t, id, d.ID, "the same message, by id")
	require.Equal(t, map[string]string{"h": "v", HeaderDLQSource: "q", HeaderDLQAttempts: "3",
		HeaderDLQReason: "nack", HeaderDLQError: "boom"}, d.Record.GetHeaders())
	require.Equal(t, []byte("p"), d.Record.GetPayload())
	require.Zero(t, d.Record.GetAttemptCount())
	require.NoError(t, f.settle("q.dlq", &Nack{ID: id, LeaseID: d.LeaseID}), "back to ready in the DLQ")
	d = f.recv(dlq)
	f.sys.Send(f.sys.Directory().Lookup("q.dlq").PID, &Unsubscribe{ConsumerID: dlq.id})
	require.NoError(t, f.settle("q.dlq", &Nack{ID: id, LeaseID: d.LeaseID}))

	r := f.ask("q.dlq", &Redrive{}).(*MoveReply)
	require.NoError(t, r.Err)
	require.EqualValues(t, 1, r.Moved)
	d = f.recv(c)
	require.Equal(t, id, d.ID)
	require.Zero(t, d.Record.GetAttemptCount(), "redriven with attempts from 0")
	require.Equal(t, map[string]string{"h": "v"}, d.Record.GetHeaders(), "dead-letter headers gone")
	require.Zero(t, f.stats("q.dlq").Depth)

	require.Eventually(t, func() bool {
		q, dl := f.board.Snapshot()["q"], f.board.Snapshot()["q.dlq"]
		return q.Counts[telemetry.DeadLettered] == 1 && q.Counts[telemetry.Nacked] == 3 && dl.Counts[telemetry.Redriven] == 1
	}, waitFor, 5*time.Millisecond)
}

func TestExpiredLeaseCountsTowardsMaxAttempts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.createWith(QueueConfig{Name: "q", VisibilityTimeout: 20 * time.Millisecond, MaxAttempts: 2, DeadLetter: true})
	id := f.enqueue("q", nil)
	c := f.subscribe("q", 2)
	require.Equal(t, id, f.recv(c).ID)
	require.Equal(t, id, f.recv(c).ID, "expired once, delivered again")
	dlq := f.subscribe("q.dlq", 1)
	d := f.recv(dlq)
	require.Equal(t, "expired", d.Record.GetHeaders()[HeaderDLQReason])
	require.NotContains(t, d.Record.GetHeaders(), HeaderDLQError)
	require.Eventually(t, func() bool {
		return f.board.Snapshot()["q"].Counts[telemetry.Expired] == 2
	}, waitFor, 5*time.Millisecond)
}

func TestMaxAttemptsWithDeadLetterOffDropsTheMessage(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.createWith(QueueConfig{Name: "q", VisibilityTimeout: time.Minute, MaxAttempts: 1, DeadLetter: false})
	id := f.enqueue("q", nil)
	c := f.subscribe("q", 1)
	d := f.recv(c)
	require.NoError(t, f.settle("q", &Nack{ID: id, LeaseID: d.LeaseID}))
	require.Zero(t, f.stats("q").Depth)
	require.Zero(t, f.stats("q.dlq").Depth)
	qc, err := f.store.LoadQueue("q")
	require.NoError(t, err)
	require.Empty(t, qc.Messages, "deleted from storage too")
}

func TestRetryBackoffHoldsMessagesBackAcrossARestart(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	// The first retry waits initial; the second a minute, which no restart
	// on a slow machine outlasts, so "still delayed" is never a race.
	const initial = 150 * time.Millisecond
	f.createWith(QueueConfig{Name: "q", VisibilityTimeout: time.Minute,
		Backoff: Backoff{Initial: initial, Max: time.Minute, Multiplier: 400}})
	id := f.enqueue("q", nil)
	c := f.subscribe("q", 1)
	d := f.recv(c)
	// The clock starts before the Nack: the broker's delay starts while it
	// handles the Nack, so a time taken after the answer could be up to
	// that long late (it failed by 1.3 ms).
	nacked := time.Now()
	require.NoError(t, f.settle("q", &Nack{ID: id, LeaseID: d.LeaseID}))
	d = f.recv(c)
	require.GreaterOrEqual(t, time.Since(nacked), initial, "not delivered before its delay")
	require.EqualValues(t, 1, d.Record.GetAttemptCount())

	nacked = time.Now()
	require.NoError(t, f.settle("q", &Nack{ID: id, LeaseID: d.LeaseID}))
	st := f.stats("q")
	require.EqualValues(t, 0, st.Depth, "a delayed message is not ready depth")
	require.EqualValues(t, 1, st.Delayed)
	requireNoDelivery(t, c)

	// A restart keeps the delay: the ready time is stored, and the queue
	// recovers the message delayed.
	f.stop()
	rec := storedMessage(t, f.store, "q", id)
	require.GreaterOrEqual(t, rec.GetReadyAtUnixMs(), nacked.Add(time.Minute).UnixMilli(), "the delay is stored")
	f = startOn(t, f.store)
	c = f.subscribe("q", 1)
	require.EqualValues(t, 1, f.stats("q").Delayed, "recovered as delayed")
	requireNoDelivery(t, c)

	// While filad is down the minute runs out but for initial: the
	// recovered queue delivers the message when it is due, not before.
	f.stop()
	due := time.Now().Add(initial)
	rec.ReadyAtUnixMs = readyAtMillis(due)
	var b storage.Batch
	b.PutMessage("q", id, rec)
	require.NoError(t, f.store.Write(&b))
	f = startOn(t, f.store)
	c = f.subscribe("q", 1)
	d = f.recv(c)
	require.False(t, time.Now().Before(due), "not delivered before its ready time")
	require.EqualValues(t, 2, d.Record.GetAttemptCount())
}

// storedMessage is the record store holds for the message id of queue.
func storedMessage(t *testing.T, store storage.Store, queue, id string) *storagev1.MessageRecord {
	t.Helper()
	qc, err := store.LoadQueue(queue)
	require.NoError(t, err)
	for _, m := range qc.Messages {
		if m.ID == id {
			return m.Record
		}
	}
	t.Fatalf("message %s of %s is not stored", id, queue)
	return nil
}

func TestEnqueueDelayHeader(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.create("q", time.Minute)
	c := f.subscribe("q", 2)
	// A minute's delay outlasts the steps below however slow the machine,
	// so the message enqueued after it without one is always first.
	sent := time.Now()
	held := f.enqueue("q", map[string]string{DelayHeader: "60000"})
	now := f.enqueue("q", map[string]string{DelayHeader: "0"})
	require.Equal(t, now, f.recv(c).ID, "0 is no delay")
	require.EqualValues(t, 1, f.stats("q").Delayed)
	requireNoDelivery(t, c)
	require.GreaterOrEqual(t, storedMessage(t, f.store, "q", held).GetReadyAtUnixMs(), sent.Add(time.Minute).UnixMilli(), "the delay is stored")
	// A short delay ends: the message is delivered then, not before.
	sent = time.Now()
	late := f.enqueue("q", map[string]string{DelayHeader: "120"})
	d := f.recv(c)
	require.Equal(t, late, d.ID)
	require.GreaterOrEqual(t, time.Since(sent), 120*time.Millisecond)

	before := f.stats("q")
	for _, bad := range []string{"-1", "soon", "86400001", "1e3"} {
		r := f.ask("q", &Enqueue{Headers: map[string]string{DelayHeader: bad}}).(*EnqueueReply)
		require.ErrorIs(t, r.Err, ErrInvalid, bad)
		require.ErrorContains(t, r.Err, DelayHeader)
	}
	require.Equal(t, before, f.stats("q"), "refused enqueues change nothing")
}

func TestPeekPurgeAndTheirRules(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.create("q", time.Minute)
	var ids []string
	for range 5 {
		ids = append(ids, f.enqueue("q", nil))
	}
	delayed := f.enqueue("q", map[string]string{DelayHeader: "600000"})
	c := f.subscribe("q", 1)
	leased := f.recv(c)
	require.Equal(t, ids[0], leased.ID)

	// Peek pages through what is not leased, in id order, delayed included.
	p := f.ask("q", &Peek{Limit: 3}).(*PeekReply)
	require.True(t, p.More)
	require.Equal(t, []string{ids[1], ids[2], ids[3]}, peekedIDs(p))
	p = f.ask("q", &Peek{After: ids[3], Limit: 3}).(*PeekReply)
	require.False(t, p.More)
	require.Equal(t, []string{ids[4], delayed}, peekedIDs(p))
	require.False(t, p.Messages[1].ReadyAt.IsZero(), "shows when a delayed one is due")

	r := f.ask("q", &Purge{}).(*MoveReply)
	require.NoError(t, r.Err)
	require.EqualValues(t, 5, r.Moved, "four ready and one delayed; the leased one stays")
	st := f.stats("q")
	require.Zero(t, st.Depth+st.Delayed)
	require.EqualValues(t, 1, st.InFlight)
	require.NoError(t, f.settle("q", &Ack{ID: leased.ID, LeaseID: leased.LeaseID}))
	qc, err := f.store.LoadQueue("q")
	require.NoError(t, err)
	require.Empty(t, qc.Messages)

	r = f.ask("q", &Redrive{}).(*MoveReply)
	require.ErrorIs(t, r.Err, ErrInvalid, "q is not a DLQ")
}

func peekedIDs(p *PeekReply) []string {
	var out []string
	for _, m := range p.Messages {
		out = append(out, m.ID)
	}
	return out
}

func TestDeadLetterQueueLifecycle(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.create("q", time.Minute)
	require.NotNil(t, f.sys.Directory().Lookup("q.dlq"), "created with its source")
	require.Nil(t, f.sys.Directory().Lookup("q.dlq.dlq"), "a DLQ has no DLQ")

	err := f.ask(nil, &DeleteQueue{Name: "q.dlq"}).(*AdminReply).Err
	require.ErrorIs(t, err, ErrFailedPrecondition)
	require.NotNil(t, f.sys.Directory().Lookup("q.dlq"))

	require.NoError(t, f.ask(nil, &DeleteQueue{Name: "q"}).(*AdminReply).Err)
	require.Nil(t, f.sys.Directory().Lookup("q"))
	require.Nil(t, f.sys.Directory().Lookup("q.dlq"), "deleted with its source")
	recs, err := f.store.Queues()
	require.NoError(t, err)
	require.Empty(t, recs)

	// A queue stored before DLQs existed gets its DLQ on recovery.
	f.create("old", time.Minute)
	require.NoError(t, f.ask(nil, &DeleteQueue{Name: "old"}).(*AdminReply).Err)
	f.create("old.dlq", time.Minute) // a plain queue now: its source is gone
	require.NoError(t, f.ask(nil, &DeleteQueue{Name: "old.dlq"}).(*AdminReply).Err)
	require.NoError(t, writeQueueRecord(f, QueueConfig{Name: "legacy", VisibilityTimeout: time.Minute, FairnessKeyHeader: "key"}))
	f.stop()
	f = startOn(t, f.store)
	require.NotNil(t, f.sys.Directory().Lookup("legacy.dlq"))
}

// writeQueueRecord stores a queue definition behind the broker's back, as
// an older filad would have left it (with no schema version: so the
// migrations run again on the next start).
func writeQueueRecord(f *fixture, cfg QueueConfig) error {
	var b storage.Batch
	b.PutQueue(cfg.record())
	b.SetSchemaVersion(0)
	return f.store.Write(&b)
}

func TestUpdateQueueChangesTheNextFailureAndSurvivesRestarts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.createWith(QueueConfig{Name: "q", VisibilityTimeout: time.Minute, DeadLetter: true})
	id := f.enqueue("q", nil)
	c := f.subscribe("q", 1)
	d := f.recv(c)
	two := uint32(2)
	r := f.ask(nil, &UpdateQueue{Name: "q", Patch: QueuePatch{MaxAttempts: &two}}).(*UpdateQueueReply)
	require.NoError(t, r.Err)
	require.EqualValues(t, 2, r.Config.MaxAttempts)
	require.Equal(t, time.Minute, r.Config.VisibilityTimeout, "unpatched fields stay")
	require.True(t, r.Config.DeadLetter)

	// A crash of the queue actor: the restarted actor has the new rule.
	f.store.panicNext.Store(true)
	f.sys.Send(f.sys.Directory().Lookup("q").PID, &Enqueue{})
	<-c.Done()
	require.NoError(t, f.settle("q", &Nack{ID: id, LeaseID: d.LeaseID}), "the lease survived the restart")
	// Then a broker restart: still the new rule.
	f.stop()
	f = startOn(t, f.store)
	require.EqualValues(t, 2, f.stats("q").Config.MaxAttempts)
	c = f.subscribe("q", 1)
	d = f.recv(c)
	require.EqualValues(t, 1, d.Record.GetAttemptCount())
	require.NoError(t, f.settle("q", &Nack{ID: id, LeaseID: d.LeaseID}))
	require.EqualValues(t, 1, f.stats("q.dlq").Depth, "dead-lettered on its second failure")
}

func TestRuntimeConfigStore(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	set := func(k, v string) {
		t.Helper()
		require.NoError(t, f.ask(nil, &SetConfig{Key: k, Value: v}).(*AdminReply).Err)
	}
	set("limits.b", "2")
	set("limits.a", "1")
	set("other", "x")
	set("limits.a", "10")
	set("gone", "y")
	set("gone", "")
	rc := f.sys.RuntimeConfig()
	v, ok := rc.Get("limits.a")
	require.True(t, ok)
	require.Equal(t, "10", v)
	_, ok = rc.Get("gone")
	require.False(t, ok, "an empty value deletes")
	require.Equal(t, []storage.ConfigEntry{{Key: "limits.a", Value: "10"}, {Key: "limits.b", Value: "2"}}, rc.List("limits."))
	require.Len(t, rc.List(""), 3)

	f.stop()
	f = startOn(t, f.store)
	require.Equal(t, []storage.ConfigEntry{{Key: "limits.a", Value: "10"}, {Key: "limits.b", Value: "2"}, {Key: "other", Value: "x"}},
		f.sys.RuntimeConfig().List(""), "durable across a restart")
}

func TestErrorTypes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want string
	}{
		{QueueNotFound("q"), "queue_not_found"},
		{fmt.Errorf("%w: lease_id x", ErrLeaseExpired), "lease_expired"},
		{fmt.Errorf("%w: %w", ErrStorage, errors.New("disk")), "storage"},
		{errors.New("something else"), "_OTHER"},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, errorType(tt.err), tt.err.Error())
	}
}
