package actors

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// repliesID is the process id every Ask's reply is sent to.
const repliesID = "replies"

// replies is the one process through which every Ask gets its reply. A
// protoactor future registers a process of its own per request (a new id
// in the process registry, then its removal) and arms a timer goroutine
// for its timeout: 4.4 % of filad's CPU under one call per message. Here a
// request is a number in the sender PID's RequestId, which protoactor
// hands back to the process with the reply, and a waiting channel under
// that number. A reply to a request no longer waited for (timed out, or
// its caller gone) is dropped.
type replies struct {
	next   atomic.Uint32
	shards [64]replyShard
	chans  sync.Pool // of chan any, buffered 1
	timers sync.Pool // of *time.Timer, stopped
}

type replyShard struct {
	mu      sync.Mutex
	waiting map[uint32]chan any
}

var _ actor.Process = (*replies)(nil)

func newReplies() *replies {
	r := &replies{}
	for i := range r.shards {
		r.shards[i].waiting = map[uint32]chan any{}
	}
	r.chans.New = func() any { return make(chan any, 1) }
	return r
}

func (r *replies) shard(id uint32) *replyShard { return &r.shards[id%uint32(len(r.shards))] }

// await registers a request and returns its number and the channel its
// reply arrives on. Numbers wrap after 2³² requests; one still waited for
// is skipped.
func (r *replies) await() (uint32, chan any) {
	ch := r.chans.Get().(chan any)
	for {
		id := r.next.Add(1)
		sh := r.shard(id)
		sh.mu.Lock()
		if _, taken := sh.waiting[id]; !taken {
			sh.waiting[id] = ch
			sh.mu.Unlock()
			return id, ch
		}
		sh.mu.Unlock()
	}
}

// claim takes request id's channel off the waiting list: the one who
// claims it is the only one to send on it.
func (r *replies) claim(id uint32) (chan any, bool) {
	sh := r.shard(id)
	sh.mu.Lock()
	ch, ok := sh.waiting[id]
	delete(sh.waiting, id)
	sh.mu.Unlock()
	return ch, ok
}

// wait returns request id's reply, or gives up after timeout
// (actor.ErrTimeout) or when ctx ends (its error). ch goes back to the
// pool either way: once claimed it gets exactly one reply, which wait has
// taken.
func (r *replies) wait(ctx context.Context, id uint32, ch chan any, timeout time.Duration) (res any, err error) {
	t, _ := r.timers.Get().(*time.Timer)
	if t == nil {
		t = time.NewTimer(timeout)
	} else {
		t.Reset(timeout)
	}
	got := false
	select {
	case res = <-ch:
		got = true
	case <-t.C:
		err = actor.ErrTimeout
	case <-ctx.Done():
		err = fmt.Errorf("actors: gave up waiting for the reply: %w", ctx.Err())
	}
	t.Stop()
	r.timers.Put(t)
	if !got {
		if _, mine := r.claim(id); !mine {
			// The reply was claimed as the wait ended: it is on its way.
			res, err = <-ch, nil
		}
	}
	r.chans.Put(ch)
	return res, err
}

// SendUserMessage implements actor.Process: pid.RequestId says whose
// reply message is.
func (r *replies) SendUserMessage(pid *actor.PID, message any) {
	if ch, ok := r.claim(pid.RequestId); ok {
		ch <- actor.UnwrapEnvelopeMessage(message)
	}
}

// SendSystemMessage implements actor.Process: nothing watches replies.
func (*replies) SendSystemMessage(*actor.PID, any) {}

// Stop implements actor.Process: replies lives as long as the system.
func (*replies) Stop(*actor.PID) {}
