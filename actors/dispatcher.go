package actors

import (
	"sync"
	"sync/atomic"
)

const (
	// mailboxThroughput is how many messages a mailbox handles before its
	// run yields the goroutine: protoactor's default.
	mailboxThroughput = 300
	// maxParkedWorkers bounds the workers that wait for a run: more than
	// the mailboxes that run at once on a busy node, and a few MiB of
	// stacks at most.
	maxParkedWorkers = 128
)

// workerDispatcher runs actors' mailboxes on goroutines it keeps between
// runs. protoactor's default dispatcher starts a goroutine for every run
// of a mailbox (`go fn()`), and a run ends whenever the mailbox empties:
// under one call per message that is a new goroutine for nearly every
// message, whose stack then grows, by copying, to what a queue actor's
// handling needs. In the one-call lifecycle's CPU profile, stack growth
// was 8.6 % of filad's CPU, most of it under mailbox runs
// (docs/decisions.md, "Issue 27"). A worker keeps its grown stack (until
// the garbage collector finds it mostly unused) and costs no goroutine
// start.
//
// A run is handed to a parked worker if one waits, and to a new one
// otherwise, so Schedule never blocks (it is called from senders, which
// may be other mailboxes' runs). At most maxParked workers wait between
// runs; the others end, so a burst over many queues does not leave
// thousands behind.
type workerDispatcher struct {
	throughput int
	maxParked  int32
	parked     atomic.Int32
	live       atomic.Int32 // workers running or parked
	work       chan func()  // unbuffered: a send succeeds only when a worker waits
	done       chan struct{}
	stop       sync.Once
}

// newWorkerDispatcher returns a dispatcher whose mailboxes handle up to
// throughput messages before yielding (protoactor's meaning), keeping up
// to maxParked idle workers.
func newWorkerDispatcher(throughput, maxParked int) *workerDispatcher {
	return &workerDispatcher{throughput: throughput, maxParked: int32(maxParked),
		work: make(chan func()), done: make(chan struct{})}
}

// Schedule implements actor.Dispatcher.
func (d *workerDispatcher) Schedule(fn func()) {
	select {
	case d.work <- fn:
	default:
		d.live.Add(1)
		go d.worker(fn)
	}
}

// Throughput implements actor.Dispatcher.
func (d *workerDispatcher) Throughput() int { return d.throughput }

// close ends the parked workers and those that finish their run; a run
// scheduled after it still runs, on a goroutine of its own.
func (d *workerDispatcher) close() { d.stop.Do(func() { close(d.done) }) }

func (d *workerDispatcher) worker(fn func()) {
	defer d.live.Add(-1)
	for {
		fn()
		if d.parked.Add(1) > d.maxParked {
			d.parked.Add(-1)
			return
		}
		select {
		case fn = <-d.work:
			d.parked.Add(-1)
		case <-d.done:
			d.parked.Add(-1)
			return
		}
	}
}
