package actors

import (
	"errors"
	"fmt"
	"math/rand/v2"
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
	s.mu.Unlock()
	s.Store.Submit(b, done)
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
			steps.arm(1)
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

// TestPeekKeepsOnlyItsPage checks firstIDs, Peek's bounded selection,
// against a sort of everything.
func TestPeekKeepsOnlyItsPage(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	var all []*message
	for i := range 500 {
		all = append(all, &message{id: fmt.Sprintf("%08d", rng.IntN(1_000_000)*1000+i)})
	}
	want := slices.SortedFunc(slices.Values(all), byID)
	for _, limit := range []int{0, 1, 7, 499, 500, 1000} {
		top := firstIDs{limit: limit}
		for _, m := range all {
			top.offer(m)
		}
		require.Equal(t, ids(want[:min(limit, len(want))]), ids(top.sorted()), "limit %d", limit)
		require.LessOrEqual(t, len(top.h), limit, "keeps no more than its page")
	}
}

func ids(ms []*message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.id
	}
	return out
}
