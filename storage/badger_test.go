package storage

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, dir string) *Badger {
	t.Helper()
	s, err := Open(Options{Dir: dir, SyncWrites: true})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func TestConcurrentWritesShareCommits(t *testing.T) {
	t.Parallel()
	s := open(t, t.TempDir())
	const writers = 64
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			var b Batch
			b.PutMessage("q", fmt.Sprint(i), &storagev1.MessageRecord{Payload: make([]byte, 100)})
			if err := s.Write(&b); err != nil {
				t.Errorf("write: %v", err)
			}
		})
	}
	wg.Wait()
	st := s.Stats()
	require.EqualValues(t, writers, st.Batches)
	require.Less(t, st.Commits, st.Batches, "group commit: concurrent writes share fsyncs")
	qc, err := s.LoadQueue("q")
	require.NoError(t, err)
	require.Len(t, qc.Messages, writers)
}

// TestBatchesOverTheTransactionLimitAreSplit: the longest queue name and
// more changes than one badger transaction takes (a purge of 8,300 such
// messages failed with "Txn is too big" before) still commit, in several
// transactions, each unit whole.
func TestBatchesOverTheTransactionLimitAreSplit(t *testing.T) {
	t.Parallel()
	s := open(t, t.TempDir())
	queue := strings.Repeat("q", 255)
	const n = 20_000
	var b Batch
	for i := range n {
		id := fmt.Sprintf("01936f0e-7b4c-7d2a-9c3e-%012d", i)
		b.PutMessage(queue, id, &storagev1.MessageRecord{Payload: make([]byte, 64)})
		b.PutLease(queue, id, &storagev1.LeaseRecord{ExpiresAtUnixMs: 1, LeaseId: strings.Repeat("l", 24)})
	}
	require.Len(t, b.units, n, "a message and its lease are one unit")
	require.Greater(t, int64(b.size), s.maxSize, "the batch is over one transaction's limit")
	before := s.Stats()
	require.NoError(t, s.Write(&b))
	after := s.Stats()
	require.Greater(t, after.Commits-before.Commits, uint64(1), "split into several transactions")
	require.EqualValues(t, 1, after.Batches-before.Batches)
	qc, err := s.LoadQueue(queue)
	require.NoError(t, err)
	require.Len(t, qc.Messages, n)
	require.Len(t, qc.Leases, n)

	// Deleting it whole goes in bounded steps, each one transaction.
	const limit = 1000
	before = s.Stats()
	steps, r := 0, NewReaper(queue)
	for last := false; !last; steps++ {
		var step *Batch
		step, last, err = r.Next(s, limit)
		require.NoError(t, err)
		require.NoError(t, s.Write(step))
	}
	require.Equal(t, 2*n/limit+1, steps, "20 steps of messages, 20 of leases, then the one that forgets the queue")
	require.EqualValues(t, steps, s.Stats().Commits-before.Commits, "every step is one transaction")
	qc, err = s.LoadQueue(queue)
	require.NoError(t, err)
	require.Empty(t, qc.Messages)
	require.Empty(t, qc.Leases)
}

func TestBatchUnitsGroupOneItem(t *testing.T) {
	t.Parallel()
	var b Batch
	b.PutQueue(&storagev1.QueueRecord{Name: "q"})
	b.PutMessage("q", "a", &storagev1.MessageRecord{})
	b.DeleteLease("q", "a")
	b.DeleteMessage("q", "b")
	b.DeleteLease("q", "b")
	b.PutLease("q", "a", &storagev1.LeaseRecord{})
	b.DeleteQueue("q")
	b.DeleteQueue("q")
	var sizes []int
	for u := range b.units {
		sizes = append(sizes, len(b.unit(u)))
	}
	// A message is its record and its index record (index.go).
	require.Equal(t, []int{1, 3, 3, 1, 1, 1}, sizes)
}

// TestOpenAfterAKillThatLeftAnEmptyMemtable: a kill -9 between badger
// creating a memtable file and sizing it leaves a file of 0 bytes, and
// badger.Open then failed ("Create a new file"), so filad did not start
// (seen in TestKill9DuringDeleteQueueLeavesBothOrNeither).
func TestOpenAfterAKillThatLeftAnEmptyMemtable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, SyncWrites: true})
	require.NoError(t, err)
	var b Batch
	b.PutQueue(&storagev1.QueueRecord{Name: "kept"})
	require.NoError(t, s.Write(&b))
	require.NoError(t, s.Close())
	require.NoError(t, os.WriteFile(filepath.Join(dir, "00007.mem"), nil, 0o644))
	s = open(t, dir)
	qs, err := s.Queues()
	require.NoError(t, err)
	require.Len(t, qs, 1)
	require.NoFileExists(t, filepath.Join(dir, "00007.mem"))
}

// TestBackgroundBatchesGiveWay: while the committer is busy, three
// background steps of a purge and then another queue's write arrive. The
// write is committed after at most one of the steps, in a transaction of
// its own, and the steps each commit alone; before the background lane
// the write rode in one transaction with all three steps.
func TestBackgroundBatchesGiveWay(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		commits []int // items per transaction, in commit order
		hold    = make(chan struct{})
		held    = make(chan struct{})
	)
	s, err := Open(Options{Dir: t.TempDir(), SyncWrites: true, OnCommit: func(items int) {
		mu.Lock()
		first := len(commits) == 0
		commits = append(commits, items)
		mu.Unlock()
		if first {
			close(held)
			<-hold // the committer is busy until the test has submitted everything
		}
	}})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })

	write := func(queue string, n int, background bool) <-chan error {
		var b Batch
		for i := range n {
			b.PutMessage(queue, fmt.Sprintf("%04d", i), &storagev1.MessageRecord{Payload: []byte("x")})
		}
		if background {
			b.SetBackground()
		}
		done := make(chan error, 1)
		s.Submit(&b, func(err error) { done <- err })
		return done
	}
	first := write("other", 1, false)
	<-held
	var steps []<-chan error
	for range 3 {
		steps = append(steps, write("purged", 100, true))
	}
	probe := write("other", 1, false)
	close(hold)
	for _, done := range append([]<-chan error{first, probe}, steps...) {
		require.NoError(t, <-done)
	}
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []int{1, 100, 1, 100, 100}, commits,
		"one step, then the waiting write alone, then the other steps one by one")
}

// TestBackgroundBatchesDoNotStarveDeferredOnes: two operations' steps keep
// the background lane busy (each step submits the next when it is durable);
// a deferred lease write still commits once DeferMax has passed, not only
// when the steps run out.
func TestBackgroundBatchesDoNotStarveDeferredOnes(t *testing.T) {
	t.Parallel()
	s := open(t, t.TempDir())
	const steps = 500 // at ~0.4 ms a synced commit, far longer than DeferMax
	var (
		mu        sync.Mutex
		committed int // background steps durable so far
		deferAt   = -1
		wg        sync.WaitGroup
	)
	var step func(op, i int)
	step = func(op, i int) {
		var b Batch
		b.DeleteMessage(fmt.Sprint("purged", op), fmt.Sprint(i))
		b.SetBackground()
		s.Submit(&b, func(err error) {
			if err != nil {
				t.Errorf("step: %v", err)
			}
			mu.Lock()
			committed++
			mu.Unlock()
			if i+1 < steps {
				step(op, i+1)
				return
			}
			wg.Done()
		})
	}
	wg.Add(2)
	step(0, 0)
	step(1, 0)
	var lease Batch
	lease.PutLease("other", "m", &storagev1.LeaseRecord{ExpiresAtUnixMs: 1})
	done := make(chan struct{})
	s.Defer(&lease, func(err error) {
		if err != nil {
			t.Errorf("deferred write: %v", err)
		}
		mu.Lock()
		deferAt = committed
		mu.Unlock()
		close(done)
	})
	<-done
	wg.Wait()
	require.Less(t, deferAt, 2*steps-1, "the deferred write went in while the steps were still running")
}

// TestDeleteQueueItemsGivesWayBetweenSteps: a DeleteQueueItems of more
// keys than a step takes is committed in steps from the background lane;
// a write waiting meanwhile goes in after the first step, and another
// background batch gets its turn before the delete's next step.
func TestDeleteQueueItemsGivesWayBetweenSteps(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		armed   bool
		commits []int // items per transaction once armed, in commit order
		hold    = make(chan struct{})
		held    = make(chan struct{})
	)
	s, err := Open(Options{Dir: t.TempDir(), SyncWrites: true, OnCommit: func(items int) {
		mu.Lock()
		if !armed {
			mu.Unlock()
			return
		}
		first := len(commits) == 0
		commits = append(commits, items)
		mu.Unlock()
		if first {
			close(held)
			<-hold // the committer is busy until the test has submitted everything
		}
	}})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	const n = 2*prefixStepKeys + prefixStepKeys/2
	var fill Batch
	for i := range n {
		fill.PutMessage("big", fmt.Sprintf("%05d", i), &storagev1.MessageRecord{Payload: []byte("x")})
	}
	require.NoError(t, s.Write(&fill))
	mu.Lock()
	armed = true
	mu.Unlock()

	var (
		order  = make(chan string, 4)
		submit = func(name string, b *Batch) {
			s.Submit(b, func(err error) {
				if err != nil {
					t.Errorf("%s: %v", name, err) // not FailNow: this is the committer
				}
				order <- name
			})
		}
		message = func(queue string) *Batch {
			var b Batch
			b.PutMessage(queue, "1", &storagev1.MessageRecord{})
			return &b
		}
	)
	submit("first", message("other"))
	<-held
	var del Batch
	del.DeleteQueueItems("big")
	submit("delete", &del)
	submit("probe", message("other"))
	var step Batch
	for i := range 100 {
		step.DeleteMessage("purged", fmt.Sprint(i))
	}
	step.SetBackground()
	submit("step", &step)
	close(hold)
	var got []string
	for range 4 {
		got = append(got, <-order)
	}
	require.Equal(t, []string{"first", "probe", "step", "delete"}, got)
	mu.Lock()
	defer mu.Unlock()
	// The messages' index records (index.go) are a prefix of their own:
	// the same steps again.
	require.Equal(t, []int{1, prefixStepKeys, 1, 100, prefixStepKeys, prefixStepKeys / 2, prefixStepKeys, prefixStepKeys, prefixStepKeys / 2}, commits,
		"a step of the delete, the waiting write, the other background batch, the delete's other steps")
	qc, err := s.LoadQueue("big")
	require.NoError(t, err)
	require.Empty(t, qc.Messages)
}

// TestCompactorsOption: Options.Compactors sets badger's compaction
// goroutines (at least its minimum of 2); 0 keeps badger's default.
func TestCompactorsOption(t *testing.T) {
	for _, tc := range []struct{ asked, want int }{{0, badger.DefaultOptions("").NumCompactors}, {1, 2}, {2, 2}, {3, 3}} {
		t.Run(fmt.Sprint(tc.asked), func(t *testing.T) {
			s, err := Open(Options{Dir: t.TempDir(), Compactors: tc.asked})
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, s.Close()) })
			require.Equal(t, tc.want, s.DB().Opts().NumCompactors)
		})
	}
}
