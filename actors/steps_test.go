package actors

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fila-dev/filad/storage"
)

// stepStore wraps a Store: once armed, it records the units of every batch
// submitted, and fails each from the failFrom-th on (1-based; 0: none), as
// a disk that fills up or a process that dies would leave things.
type stepStore struct {
	storage.Store
	mu       sync.Mutex
	armed    bool
	units    []int
	failFrom int
	// hold, when set, keeps the next batch from being written until it
	// is closed; held is closed once that batch is submitted.
	hold, held chan struct{}
}

var errInjected = errors.New("write failed (injected by a test)")

func (s *stepStore) Submit(b *storage.Batch, done func(error)) {
	s.mu.Lock()
	if s.armed {
		s.units = append(s.units, b.Units())
		if s.failFrom > 0 && len(s.units) >= s.failFrom {
			s.mu.Unlock()
			done(errInjected)
			return
		}
	}
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
	s.Store.Submit(b, done)
}

// holdFirst arms s, and keeps the next batch submitted from being written
// until the returned channel is closed.
func (s *stepStore) holdFirst() chan struct{} {
	s.arm(0)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold, s.held = make(chan struct{}), make(chan struct{})
	return s.hold
}

// waitHeld waits until the batch holdFirst holds has been submitted.
func (s *stepStore) waitHeld(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	held := s.held
	s.mu.Unlock()
	select {
	case <-held:
	case <-time.After(waitFor):
		t.Fatal("no batch was submitted")
	}
}

// arm starts recording, failing from the failFrom-th batch on.
func (s *stepStore) arm(failFrom int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed, s.units, s.failFrom = true, nil, failFrom
}

func (s *stepStore) submitted() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.units)
}

func newStepFixture(t *testing.T) (*fixture, *stepStore) {
	t.Helper()
	steps := &stepStore{Store: storage.NewMemory()}
	return startOn(t, &faultyStore{Store: steps}), steps
}

// moveOps are the two operations that move a queue's messages in steps,
// each with the queue it is asked of.
var moveOps = []struct {
	name, from string
	op         any
}{
	{"purge", "q", &Purge{}},
	{"redrive", "q.dlq", &Redrive{}},
}

// requireBoundedSteps fails unless units are at least want batches of at
// most limit units each.
func requireBoundedSteps(t *testing.T, units []int, want, limit int) {
	t.Helper()
	require.GreaterOrEqual(t, len(units), want, "written in steps: %v", units)
	for _, u := range units {
		require.LessOrEqual(t, u, limit, "a step is bounded: %v", units)
	}
}

// TestPurgeAndRedriveWriteInBoundedSteps (issue 19, row 8): a purge or
// redrive of a queue larger than one step is written in steps of at most
// moveStep messages (before, one batch of every message, which held the
// shared committer, and so every other queue's writes, for the whole of
// it). A step that fails puts back every message not yet written, and the
// reply counts what was.
func TestPurgeAndRedriveWriteInBoundedSteps(t *testing.T) {
	t.Parallel()
	const n = 2*moveStep + 10
	for _, tc := range []struct {
		name  string
		from  string // the queue operated on
		op    any
		after func(f *fixture, moved int)
	}{
		{"purge", "q", &Purge{}, func(f *fixture, moved int) {
			require.EqualValues(t, n-moved, f.stats("q").Depth)
		}},
		{"redrive", "q.dlq", &Redrive{}, func(f *fixture, moved int) {
			require.EqualValues(t, n-moved, f.stats("q.dlq").Depth)
			require.EqualValues(t, moved, f.stats("q").Depth, "every step's messages reach the source")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, steps := newStepFixture(t)
			f.create("q", time.Minute)
			f.fill(tc.from, n)

			// The second step fails: the first step's messages are gone,
			// the rest are back.
			steps.arm(2)
			r := f.ask(tc.from, tc.op).(*MoveReply)
			require.ErrorIs(t, r.Err, ErrStorage)
			require.EqualValues(t, moveStep, r.Moved)
			tc.after(f, moveStep)

			steps.arm(0)
			r = f.ask(tc.from, tc.op).(*MoveReply)
			require.NoError(t, r.Err)
			require.EqualValues(t, n-moveStep, r.Moved)
			requireBoundedSteps(t, steps.submitted(), 2, moveStep)
			tc.after(f, n)
			qc, err := steps.LoadQueue(tc.from)
			require.NoError(t, err)
			require.Empty(t, qc.Messages)
		})
	}
}

// TestDeleteQueueReapsInBoundedSteps (issue 19, rows 7 and 8): a delete
// removes both records at once, and then the contents of the queue and its
// DLQ in steps of at most reapLimit; when it has answered, nothing is left.
func TestDeleteQueueReapsInBoundedSteps(t *testing.T) {
	t.Parallel()
	const n = reapLimit + 10
	f, steps := newStepFixture(t)
	f.create("q", time.Minute)
	f.fill("q", n)
	f.fill("q.dlq", n)
	c := f.subscribe("q", 5) // and some leases
	for range 5 {
		f.recv(c)
	}
	steps.arm(0)
	require.NoError(t, f.ask(nil, &DeleteQueue{Name: "q"}).(*AdminReply).Err)
	// Per queue: two steps of messages, one of leases, one for the mark.
	requireBoundedSteps(t, steps.submitted(), 7, reapLimit)
	requireNothingOf(t, steps, "q", "q.dlq")
}

// requireNothingOf fails unless the store holds no record, mark, message
// or lease of the named queues.
func requireNothingOf(t *testing.T, s storage.Store, names ...string) {
	t.Helper()
	recs, err := s.Queues()
	require.NoError(t, err)
	for _, rec := range recs {
		require.NotContains(t, names, rec.GetName())
	}
	deleted, err := s.DeletedQueues()
	require.NoError(t, err)
	require.Empty(t, deleted)
	for _, name := range names {
		qc, err := s.LoadQueue(name)
		require.NoError(t, err)
		require.Empty(t, qc.Messages, name)
		require.Empty(t, qc.Leases, name)
	}
}

// TestDeleteQueueCutShortIsFinishedLater (issue 19, row 7): a delete whose
// reap stops part way (the writes fail, as they would for a process killed
// then) has already removed both queues, in one unit; what is left is
// reaped on the next start, or before the name is created again, so the
// new queue and its DLQ start empty.
func TestDeleteQueueCutShortIsFinishedLater(t *testing.T) {
	t.Parallel()
	for _, then := range []string{"restart", "create again"} {
		t.Run(then, func(t *testing.T) {
			t.Parallel()
			f, steps := newStepFixture(t)
			f.create("q", time.Minute)
			f.fill("q", 30)
			f.fill("q.dlq", 30)
			steps.arm(2) // the delete's mark is written, its reap fails
			require.ErrorIs(t, f.ask(nil, &DeleteQueue{Name: "q"}).(*AdminReply).Err, ErrStorage)
			recs, err := steps.Queues()
			require.NoError(t, err)
			require.Empty(t, recs, "both queues are gone at once")
			deleted, err := steps.DeletedQueues()
			require.NoError(t, err)
			require.Equal(t, []string{"q", "q.dlq"}, deleted, "and marked, their messages still stored")
			steps.arm(0)

			if then == "restart" {
				f.stop()
				f = startOn(t, f.store)
				require.Eventually(t, func() bool {
					deleted, err := steps.DeletedQueues()
					return err == nil && len(deleted) == 0
				}, waitFor, time.Millisecond, "recovery finishes the delete")
				requireNothingOf(t, steps, "q", "q.dlq")
			}
			f.create("q", time.Minute)
			require.Zero(t, f.stats("q").Depth)
			require.Zero(t, f.stats("q.dlq").Depth, "the old dead letters do not come back")
			qc, err := steps.LoadQueue("q.dlq")
			require.NoError(t, err)
			require.Empty(t, qc.Messages)
		})
	}
}

// TestPurgeAndRedriveTakeAStepATime (issue 19, row 8): a purge or redrive
// takes its messages out of the queue a step at a time, so no turn of the
// queue's actor costs more than a step. While its first step is being
// written, only that step's messages have left the ready index (before,
// the first turn took all of them, and sorted them for a redrive), the
// queue answers its own requests, and a message enqueued meanwhile is
// newer than the operation and stays.
func TestPurgeAndRedriveTakeAStepATime(t *testing.T) {
	t.Parallel()
	const n = 3 * moveStep
	for _, tc := range moveOps {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, steps := newStepFixture(t)
			f.create("q", time.Minute)
			f.fill(tc.from, n)
			release := steps.holdFirst()
			reply := make(chan *MoveReply, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), waitFor)
				defer cancel()
				r, err := f.sys.Ask(ctx, f.sys.Directory().Lookup(tc.from).PID, nil, tc.op)
				if err != nil {
					r = &MoveReply{Err: err}
				}
				reply <- r.(*MoveReply)
			}()
			steps.waitHeld(t)
			require.EqualValues(t, n-moveStep, f.stats(tc.from).Depth, "only the first step is out of the queue")
			late := f.enqueue(tc.from, nil)
			close(release)
			r := <-reply
			require.NoError(t, r.Err)
			require.EqualValues(t, n, r.Moved)
			p := f.ask(tc.from, &Peek{Limit: 10}).(*PeekReply)
			require.Equal(t, []string{late}, peekedIDs(p), "enqueued after it began: it stays")
			requireBoundedSteps(t, steps.submitted(), 3, moveStep)
		})
	}
}

// TestRedriveCountTakesTheOldest: a redrive of Count messages, more than a
// step, moves exactly Count, the oldest, and skips the leased ones.
func TestRedriveCountTakesTheOldest(t *testing.T) {
	t.Parallel()
	f, _ := newStepFixture(t)
	f.create("q", time.Minute)
	var ids []string
	for range moveStep + 20 {
		ids = append(ids, f.enqueue("q.dlq", nil))
	}
	c := f.subscribe("q.dlq", 3) // leases the three oldest
	for range 3 {
		f.recv(c)
	}
	const count = moveStep + 5
	r := f.ask("q.dlq", &Redrive{Count: count}).(*MoveReply)
	require.NoError(t, r.Err)
	require.EqualValues(t, count, r.Moved)
	p := f.ask("q.dlq", &Peek{Limit: 100}).(*PeekReply)
	require.Equal(t, ids[3+count:], peekedIDs(p), "the newest stay")
	moved := f.ask("q", &Peek{Limit: 10}).(*PeekReply)
	require.Equal(t, ids[3:13], peekedIDs(moved), "the oldest not leased went first")
}

// TestPeekPages: Peek reads only what its page needs, past leased
// messages, across the chunks it reads the store in.
func TestPeekPages(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.create("q", time.Minute)
	var ids []string
	for range 150 {
		ids = append(ids, f.enqueue("q", nil))
	}
	c := f.subscribe("q", 100) // the 100 oldest are leased
	for range 100 {
		f.recv(c)
	}
	for _, tc := range []struct {
		after string
		limit int
		want  []string
		more  bool
	}{
		{"", 1, ids[100:101], true},
		{"", 50, ids[100:150], false},
		{"", 49, ids[100:149], true},
		{ids[120], 10, ids[121:131], true},
		{ids[149], 10, nil, false},
		{"", 0, nil, true},
	} {
		p := f.ask("q", &Peek{After: tc.after, Limit: tc.limit}).(*PeekReply)
		require.Equal(t, tc.want, peekedIDs(p), "%+v", tc)
		require.Equal(t, tc.more, p.More, "%+v", tc)
	}
}

// TestStepwiseOperationsOutlastTheRequestTimeout (issue 19): a purge or
// redrive of a big queue runs in steps and may take longer than
// Options.RequestTimeout, which bounds one actor turn's reply. Its caller
// waits for the whole operation (before, it got a timeout at 30 s while
// the operation went on), and one who goes away stops waiting.
//
// Only the stepwise request runs under the short request timeout: the
// fixture's own requests (the queue's creation, its fill) keep the long
// one, so a busy machine cannot fail them.
func TestStepwiseOperationsOutlastTheRequestTimeout(t *testing.T) {
	t.Parallel()
	const requestTimeout = 200 * time.Millisecond
	for _, tc := range moveOps {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, steps := newStepFixture(t)
			f.create("q", time.Minute)
			f.fill(tc.from, 2*moveStep)
			pid := f.sys.Directory().Lookup(tc.from).PID
			release := steps.holdFirst()
			reply := make(chan any, 1)
			// Only Ask reads it, and no other Ask runs until the reply.
			f.sys.opts.RequestTimeout = requestTimeout
			start := time.Now()
			go func() {
				r, err := f.sys.Ask(context.Background(), pid, nil, tc.op)
				if err != nil {
					r = err
				}
				reply <- r
			}()
			steps.waitHeld(t)
			// The step stays held until the request timeout has passed:
			// this waits for time to pass, not for an event.
			time.Sleep(requestTimeout - time.Since(start) + requestTimeout/2)
			close(release)
			r := <-reply
			require.IsType(t, &MoveReply{}, r, "the reply, not a timeout: %v", r)
			require.NoError(t, r.(*MoveReply).Err)
			require.EqualValues(t, 2*moveStep, r.(*MoveReply).Moved)
			require.Greater(t, time.Since(start), requestTimeout)
			f.sys.opts.RequestTimeout = waitFor

			// A caller who goes away stops waiting; the operation goes on.
			f.fill(tc.from, 2*moveStep)
			release = steps.holdFirst()
			ctx, cancel := context.WithCancel(context.Background())
			gone := make(chan error, 1)
			go func() {
				_, err := f.sys.Ask(ctx, pid, nil, tc.op)
				gone <- err
			}()
			steps.waitHeld(t)
			cancel()
			require.ErrorIs(t, <-gone, context.Canceled)
			close(release)
			require.Eventually(t, func() bool { return f.stats(tc.from).Depth == 0 }, waitFor, 10*time.Millisecond,
				"the operation finished without its caller")
		})
	}
}
