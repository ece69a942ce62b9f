package storagetest

import (
	"runtime"
	"sync"

	"github.com/fila-dev/filad/storage"
)

// Late returns a Store that writes through s but delivers every
// completion (of Submit, Defer and Write) later: on a goroutine of its
// own, never before the Submit or Defer that asked for it has returned,
// and often after later Submits were made, as a replicated store's
// completions arrive once an entry is committed. Completions still come
// one at a time in the order s made them (commit order). Reads go
// straight to s. Closing it closes s, then delivers what is left.
//
// It is for writers' tests: code that assumes done has run when Submit
// returns, or that nothing else was submitted in between, fails over it.
func Late(s storage.Store) storage.Store {
	l := &late{Store: s}
	l.idle = sync.NewCond(&l.mu)
	return l
}

type late struct {
	storage.Store

	mu         sync.Mutex
	queue      []*completion // completed by s, in its order
	delivering bool          // a goroutine is draining queue
	idle       *sync.Cond    // signalled when the deliverer stops
}

// completion is one done to call with err, s's answer, once the Submit
// that asked for it has returned.
type completion struct {
	done     func(error)
	err      error
	returned bool
}

// Close closes s, then waits until every completion is delivered.
func (l *late) Close() error {
	err := l.Store.Close()
	l.mu.Lock()
	for l.delivering || len(l.queue) > 0 {
		l.idle.Wait()
	}
	l.mu.Unlock()
	return err
}

func (l *late) Submit(b *storage.Batch, done func(error)) { l.via(l.Store.Submit, b, done) }

func (l *late) Defer(b *storage.Batch, done func(error)) { l.via(l.Store.Defer, b, done) }

func (l *late) Write(b *storage.Batch) error {
	ch := make(chan error, 1)
	l.Submit(b, func(err error) { ch <- err })
	return <-ch
}

// via submits b with submit, queueing done's call for the deliverer.
func (l *late) via(submit func(*storage.Batch, func(error)), b *storage.Batch, done func(error)) {
	c := &completion{done: done}
	submit(b, func(err error) {
		l.mu.Lock()
		c.err = err
		l.queue = append(l.queue, c)
		l.mu.Unlock()
		l.deliver()
	})
	l.mu.Lock()
	c.returned = true
	l.mu.Unlock()
	l.deliver()
}

// deliver starts the deliverer unless one runs. It calls the completions
// at the head of the queue whose Submit has returned, in order, and stops
// at one whose has not (that Submit starts it again on return).
func (l *late) deliver() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.delivering || len(l.queue) == 0 || !l.queue[0].returned {
		return
	}
	l.delivering = true
	go func() {
		for {
			// Let submitters run first, so that later Submits often come
			// before this completion.
			runtime.Gosched()
			l.mu.Lock()
			if len(l.queue) == 0 || !l.queue[0].returned {
				l.delivering = false
				l.idle.Broadcast()
				l.mu.Unlock()
				return
			}
			c := l.queue[0]
			l.queue[0] = nil
			l.queue = l.queue[1:]
			l.mu.Unlock()
			c.done(c.err)
		}
	}()
}
