package actors

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry"
)

// Admin operations on a queue's messages: Peek reads them; Purge and
// Redrive take them out of the queue (off the ready index and the delay
// heap at once, so nothing delivers them meanwhile), then write the change
// in steps of moveStep messages, each submitted once the one before is
// durable, forgetting each step's messages then (or putting back every
// message not yet written if a step failed). Between steps the actor serves
// its other requests, and the committer other queues' writes: a purge of
// 100k messages is a hundred small transactions, not one long one.
//
// Each costs one pass over the queue's messages in memory for the turn
// that starts it (Redrive also sorts what it takes; Peek keeps only its
// page's worth): they are for operators, not the hot path.

// Messages for the admin operations.
type (
	// Peek lists up to Limit messages that are not leased (ready or
	// delayed), in id order, with ids after After. Reply: *PeekReply.
	Peek struct {
		After string
		Limit int
	}
	// PeekReply answers Peek. More says messages follow the last one.
	PeekReply struct {
		Messages []Peeked
		More     bool
	}
	// Peeked is one message as Peek shows it; Record is shared, read only.
	Peeked struct {
		ID      string
		Record  *storagev1.MessageRecord
		ReadyAt time.Time // zero unless delayed
	}
	// Purge deletes every message that is not leased. Reply: *MoveReply.
	Purge struct{}
	// Redrive moves up to Count (0: all) of a DLQ's messages that are not
	// leased, oldest first, back to its source queue, attempts from 0.
	// Reply: *MoveReply.
	Redrive struct{ Count uint64 }
	// MoveReply answers Purge and Redrive once the change is durable.
	MoveReply struct {
		Moved uint64
		Err   error
	}
	// moveDone: one step of a purge's or redrive's write has finished.
	moveDone struct {
		msgs   []*message // this step's, as they were in this queue
		rest   []*message // taken for the steps to come
		to     *QueueRef  // a redrive's source queue; nil for a purge
		moved  []*message // this step's, as the source queue has them
		done   uint64     // moved by the steps before
		sender *actor.PID
		err    error
	}
)

// moveStep and moveStepBytes bound one step of a purge or redrive: at most
// moveStep messages, and for a redrive, which writes each message again,
// no more payload bytes than moveStepBytes past the first message. A step
// is one bounded transaction, so another queue's write waits for about one.
const (
	moveStep      = 1000
	moveStepBytes = 256 << 10
)

// idle reports whether m is neither leased nor being moved.
func idle(m *message) bool { return !m.leased && !m.settling && !m.moving }

// unleased returns the messages that are not leased and not being moved,
// in id (enqueue) order.
func (q *queueActor) unleased() []*message {
	out := q.idleMessages()
	slices.SortFunc(out, byID)
	return out
}

// idleMessages returns the messages that are not leased and not being
// moved, in no order.
func (q *queueActor) idleMessages() []*message {
	var out []*message
	for _, m := range q.msgs {
		if idle(m) {
			out = append(out, m)
		}
	}
	return out
}

func byID(a, b *message) int { return strings.Compare(a.id, b.id) }

// peek answers a page of Peek in one pass over the queue, keeping only the
// Limit+1 smallest ids after req.After in a heap: no copy or sort of the
// whole queue per page.
func (q *queueActor) peek(req *Peek) *PeekReply {
	top := firstIDs{limit: req.Limit + 1}
	for _, m := range q.msgs {
		if idle(m) && m.id > req.After {
			top.offer(m)
		}
	}
	ms := top.sorted()
	r := &PeekReply{More: len(ms) > req.Limit}
	for _, m := range ms[:min(len(ms), req.Limit)] {
		r.Messages = append(r.Messages, Peeked{ID: m.id, Record: m.rec, ReadyAt: m.readyAt})
	}
	return r
}

// firstIDs keeps the limit messages with the smallest ids offered to it,
// as a max-heap on id: each offer costs O(log limit).
type firstIDs struct {
	limit int
	h     []*message
}

func (f *firstIDs) offer(m *message) {
	if f.limit <= 0 {
		return
	}
	if len(f.h) < f.limit {
		f.h = append(f.h, m)
		for i := len(f.h) - 1; i > 0; {
			p := (i - 1) / 2
			if f.h[p].id >= f.h[i].id {
				break
			}
			f.h[p], f.h[i] = f.h[i], f.h[p]
			i = p
		}
		return
	}
	if m.id >= f.h[0].id {
		return
	}
	f.h[0] = m
	for i := 0; ; {
		l, big := 2*i+1, i
		if l < len(f.h) && f.h[l].id > f.h[big].id {
			big = l
		}
		if r := l + 1; r < len(f.h) && f.h[r].id > f.h[big].id {
			big = r
		}
		if big == i {
			return
		}
		f.h[i], f.h[big] = f.h[big], f.h[i]
		i = big
	}
}

// sorted returns what f kept, in id order.
func (f *firstIDs) sorted() []*message {
	slices.SortFunc(f.h, byID)
	return f.h
}

// take removes the first n (0: all) of ms from the ready index and the
// delay heap and marks them moving.
func (q *queueActor) take(ms []*message, n uint64) []*message {
	if n > 0 && uint64(len(ms)) > n {
		ms = ms[:n]
	}
	for _, m := range ms {
		m.moving = true
		if !m.readyAt.IsZero() {
			q.undelay(m)
		}
	}
	q.ready.removeIf(func(m *message) bool { return m.moving })
	return ms
}

func (q *queueActor) purge(ctx actor.Context) {
	ms := q.take(q.idleMessages(), 0)
	q.nextMove(ctx, &moveDone{rest: ms, sender: ctx.Sender()})
}

func (q *queueActor) redrive(ctx actor.Context, req *Redrive) {
	source := strings.TrimSuffix(q.cfg.Name, DLQSuffix)
	to := q.deps.dir.Lookup(source)
	switch {
	case !IsDLQ(q.cfg.Name):
		ctx.Respond(&MoveReply{Err: fmt.Errorf("%w: dlq_queue: %q is not a dead-letter queue (its name does not end in %q)", ErrInvalid, q.cfg.Name, DLQSuffix)})
		return
	case to == nil:
		ctx.Respond(&MoveReply{Err: fmt.Errorf("%w: %q, the source queue of %q", ErrQueueNotFound, source, q.cfg.Name)})
		return
	}
	ms := q.take(q.unleased(), req.Count)
	q.nextMove(ctx, &moveDone{rest: ms, to: to, sender: ctx.Sender()})
}

// nextMove writes the next step of the purge or redrive d, or answers
// once none is left. Its span parent is the request's header when the
// request started it, none for the later steps.
func (q *queueActor) nextMove(ctx actor.Context, d *moveDone) {
	if len(d.rest) == 0 {
		what := "queue purged"
		if d.to != nil {
			what = "queue redriven"
		}
		if d.done > 0 {
			q.deps.log.Info(what, slog.String("queue_id", q.cfg.Name), slog.Uint64("messages", d.done))
		}
		ctx.Send(d.sender, &MoveReply{Moved: d.done})
		return
	}
	n := min(len(d.rest), moveStep)
	if d.to != nil {
		bytes := 0
		for i, m := range d.rest[:n] {
			if bytes += len(m.rec.GetPayload()); i > 0 && bytes > moveStepBytes {
				n = i
				break
			}
		}
	}
	step := &moveDone{msgs: d.rest[:n:n], rest: d.rest[n:], to: d.to, done: d.done, sender: d.sender}
	var b storage.Batch
	for _, m := range step.msgs {
		if d.to == nil {
			b.DeleteMessage(q.cfg.Name, m.id)
			continue
		}
		rec := redriveRecord(m.rec)
		b.MoveMessage(q.cfg.Name, d.to.Name, m.id, rec)
		step.moved = append(step.moved, &message{id: m.id, rec: rec})
	}
	q.submit(ctx, telemetry.ExtractHeaders(context.Background(), ctx.MessageHeader()), &b, func(err error) any {
		step.err = err
		return step
	})
}

// moved completes one step of a purge or redrive and starts the next.
func (q *queueActor) moved(ctx actor.Context, d *moveDone) {
	if len(d.msgs) > 0 && q.msgs[d.msgs[0].id] != d.msgs[0] {
		// The actor restarted since the step began and reloaded from
		// storage: the messages taken are not this incarnation's.
		ctx.Send(d.sender, &MoveReply{Moved: d.done, Err: fmt.Errorf("%w: the queue's actor restarted after %d messages; run it again for the rest",
			ErrFailedPrecondition, d.done)})
		return
	}
	if d.err != nil {
		for _, ms := range [][]*message{d.msgs, d.rest} {
			for _, m := range ms {
				m.moving = false
				q.makeReadyOrDelay(ctx, m, false)
			}
		}
		q.dispatch(ctx)
		ctx.Send(d.sender, &MoveReply{Moved: d.done, Err: fmt.Errorf("%w: %w", ErrStorage, d.err)})
		return
	}
	for _, m := range d.msgs {
		q.forget(m)
	}
	if d.to != nil {
		q.count(telemetry.Redriven, int64(len(d.msgs)))
		ctx.Send(d.to.PID, &adopt{msgs: d.moved})
	}
	q.changed(ctx)
	d.done += uint64(len(d.msgs))
	q.nextMove(ctx, d)
}
