package actors

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry"
)

// Admin operations on a queue's messages walk them in id order from the
// store's keys (Store.QueueItems, a cursor that reads a bounded number of
// keys), looking each up in memory, so that no turn costs more than a
// step, whatever the queue holds:
//
//   - Peek reads the ids after its page token until it has its page: a
//     page costs about its length (plus the leased messages it passes).
//   - Purge and Redrive take up to moveStep messages a turn out of the
//     queue (off the ready index and the delay heap, so nothing delivers
//     them meanwhile), write them in steps (background batches: other
//     queues' writes go first, see storage.Batch.SetBackground), each
//     submitted once the one before is durable, forget each step's
//     messages then (or put back every message taken and not yet written
//     if a step failed), and take the next ones. Between turns the actor
//     serves its other requests. They stop at the greatest id stored when
//     they began: a message enqueued meanwhile stays.

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
	// moveDone: one step of a purge's or redrive's write has finished,
	// or (msgs empty) a turn found nothing to write and the next turn
	// goes on.
	moveDone struct {
		op     *moveOp
		msgs   []*message     // this step's, as they were in this queue
		moved  []movedMessage // this step's, as the source queue has them
		sender *actor.PID     // op's: a retired queue answers it
		err    error
	}
)

// moveOp is a purge or redrive in progress.
type moveOp struct {
	// epoch is the incarnation that began it: after a restart or a reload
	// the messages it took are not the new epoch's.
	epoch  uint64
	to     *QueueRef // a redrive's source queue; nil for a purge
	cursor string    // the last id read from the store
	bound  string    // the greatest id stored when it began
	limit  uint64    // a redrive's Count; 0: all
	taken  uint64    // messages taken out so far
	done   uint64    // messages written so far
	rest   []*message
	// read is set once the cursor has passed bound (or limit is reached):
	// nothing more is to be taken.
	read   bool
	sender *actor.PID
}

// moveStep bounds one turn of a purge or redrive: it reads at most
// moveStep ids and takes at most moveStep messages. moveStepBytes bounds
// one step of a redrive's write, which writes each message again: no more
// payload bytes than moveStepBytes past the first message. A step is one
// bounded transaction, so another queue's write waits for about one.
const (
	moveStep      = 1000
	moveStepBytes = 256 << 10
)

// idle reports whether m is neither leased nor being moved.
func idle(m *message) bool { return m.state == stateReady || m.state == stateDelayed }

// peek answers a page of Peek: it reads ids after req.After in chunks and
// keeps the messages that are not leased, until it has Limit+1 of them or
// the queue ends.
func (q *queueActor) peek(req *Peek) any {
	r := &PeekReply{}
	var page []*message
	chunk := min(max(req.Limit+1, 64), moveStep)
	for after := req.After; ; {
		ids, err := q.deps.store.QueueItems(q.cfg.Name, false, after, chunk)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrStorage, err)
		}
		for _, id := range ids {
			m := q.msgs[id]
			if m == nil || !idle(m) {
				continue
			}
			if len(page) == req.Limit {
				r.More = true
				return q.peeked(r, page)
			}
			page = append(page, m)
		}
		if len(ids) < chunk {
			return q.peeked(r, page)
		}
		after = ids[len(ids)-1]
	}
}

// peeked completes r with the page's messages, their headers and payloads
// read in one go (bodies).
func (q *queueActor) peeked(r *PeekReply, page []*message) any {
	recs, err := q.bodies(page, false)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStorage, err)
	}
	for i, m := range page {
		r.Messages = append(r.Messages, Peeked{ID: m.id, Record: recs[i], ReadyAt: m.readyTime()})
	}
	return r
}

func (q *queueActor) purge(ctx actor.Context) {
	q.startMove(ctx, &moveOp{})
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
	case !to.Location.Local():
		// The family is moving to another node: this actor is about to stop too.
		ctx.Respond(&MoveReply{Err: to.Location.NotLeader(source)})
		return
	}
	q.startMove(ctx, &moveOp{to: to, limit: req.Count})
}

func (q *queueActor) startMove(ctx actor.Context, op *moveOp) {
	bound, err := q.deps.store.LastMessage(q.cfg.Name)
	if err != nil {
		ctx.Respond(&MoveReply{Err: fmt.Errorf("%w: %w", ErrStorage, err)})
		return
	}
	op.epoch, op.bound, op.sender = q.epoch, bound, ctx.Sender()
	op.read = bound == ""
	q.nextMove(ctx, op)
}

// takeMore takes up to moveStep more of op's messages out of the queue:
// those of the next ids from the store that are neither leased nor being
// moved.
func (q *queueActor) takeMore(op *moveOp) error {
	ids, err := q.deps.store.QueueItems(q.cfg.Name, false, op.cursor, moveStep)
	if err != nil {
		return err
	}
	op.read = len(ids) < moveStep
	keys := map[string]int{} // ready messages taken, by fairness key
	for _, id := range ids {
		if id > op.bound || (op.limit > 0 && op.taken == op.limit) {
			op.read = true
			break
		}
		op.cursor = id
		m := q.msgs[id]
		if m == nil || !idle(m) {
			continue
		}
		if m.state == stateReady {
			keys[m.idx.FairnessKey]++
		}
		q.transition(m, stateMoving)
		op.rest = append(op.rest, m)
		op.taken++
	}
	if op.limit > 0 && op.taken == op.limit {
		op.read = true
	}
	q.ready.removeFrom(keys, func(m *message) bool { return m.state == stateMoving })
	return nil
}

// nextMove takes the next messages of op if it has none left to write,
// and writes the next step, or answers once nothing is left. A turn that
// took nothing (every message it read was leased) hands the rest to the
// next turn, so that one turn reads at most moveStep ids.
func (q *queueActor) nextMove(ctx actor.Context, op *moveOp) {
	if len(op.rest) == 0 && !op.read {
		if err := q.takeMore(op); err != nil {
			ctx.Send(op.sender, &MoveReply{Moved: op.done, Err: fmt.Errorf("%w: %w", ErrStorage, err)})
			return
		}
		if len(op.rest) == 0 && !op.read {
			q.config.inflight.Add(1) // the next turn is part of the operation, as a write is
			ctx.Send(ctx.Self(), &moveDone{op: op, sender: op.sender})
			return
		}
	}
	if len(op.rest) == 0 {
		what := "queue purged"
		if op.to != nil {
			what = "queue redriven"
		}
		if op.done > 0 {
			q.deps.log.Info(what, slog.String("queue_id", q.cfg.Name), slog.Uint64("messages", op.done))
		}
		ctx.Send(op.sender, &MoveReply{Moved: op.done})
		return
	}
	n := min(len(op.rest), moveStep)
	if op.to != nil {
		bytes := 0
		for i, m := range op.rest[:n] {
			if bytes += int(m.idx.PayloadBytes); i > 0 && bytes > moveStepBytes {
				n = i
				break
			}
		}
	}
	step := &moveDone{op: op, msgs: op.rest[:n:n], sender: op.sender}
	op.rest = op.rest[n:]
	if len(op.rest) == 0 {
		op.rest = nil // let the taken turn's array go
	}
	var b storage.Batch
	b.SetBackground()
	var recs []*storagev1.MessageRecord
	if op.to != nil {
		var err error
		if recs, err = q.bodies(step.msgs, false); err != nil {
			// As a failed write of the step: its messages go back.
			step.err = err
			q.config.inflight.Add(1) // as a write's completion is
			ctx.Send(ctx.Self(), step)
			return
		}
	}
	for i, m := range step.msgs {
		if op.to == nil {
			b.DeleteMessage(q.cfg.Name, m.id)
			continue
		}
		rec := redriveRecord(recs[i])
		b.MoveMessage(q.cfg.Name, op.to.Name, m.id, rec)
		step.moved = append(step.moved, movedMessage{id: m.id, rec: rec})
	}
	q.submit(ctx, telemetry.ExtractHeaders(context.Background(), ctx.MessageHeader()), &b, func(err error) any {
		step.err = err
		return step
	})
}

// moved completes one step of a purge or redrive and starts the next.
func (q *queueActor) moved(ctx actor.Context, d *moveDone) {
	op := d.op
	if op.epoch != q.epoch {
		// The actor restarted since the operation began and reloaded from
		// storage: the messages taken are not this incarnation's.
		ctx.Send(op.sender, &MoveReply{Moved: op.done, Err: fmt.Errorf("%w: the queue's actor restarted after %d messages; run it again for the rest",
			ErrFailedPrecondition, op.done)})
		return
	}
	if unknownOutcome(d.err) {
		ctx.Send(op.sender, &MoveReply{Moved: op.done, Err: ErrOutcomeUnknown})
		q.reload(ctx)
		return
	}
	if d.err != nil {
		delayed, now := false, time.Now()
		for _, ms := range [][]*message{d.msgs, op.rest} {
			for _, m := range ms {
				delayed = q.applyMessage(m, m.idx, now) || delayed
			}
		}
		if delayed {
			q.armTimer(ctx)
		}
		q.dispatch(ctx)
		ctx.Send(op.sender, &MoveReply{Moved: op.done, Err: fmt.Errorf("%w: %w", ErrStorage, d.err)})
		return
	}
	for _, m := range d.msgs {
		q.transition(m, stateGone)
	}
	if op.to != nil && len(d.msgs) > 0 {
		q.count(telemetry.Redriven, int64(len(d.msgs)))
		ctx.Send(op.to.PID, &adopt{msgs: d.moved})
	}
	if len(d.msgs) > 0 {
		q.changed(ctx)
	}
	op.done += uint64(len(d.msgs))
	q.nextMove(ctx, op)
}

// removeFrom drops, from each named key, as many items as keys names for
// it (or, if it holds fewer such items, every one), those for which drop
// is true, in place, keeping the order of the others, and returns how many
// it dropped. It reads a key's items from its head only until it has
// dropped its count: a purge or redrive takes the oldest messages of a key
// first, so a step costs about the step's messages, not the key's whole
// backlog (reading all of it every step made a purge quadratic in the
// queue's depth, issue 19). It allocates nothing; it lives here, beside
// its one caller, rather than beside the scheduler's hot path in drr.go.
func (d *drr[T]) removeFrom(keys map[string]int, drop func(T) bool) int {
	n := 0
	for key, want := range keys {
		k := d.keys[key]
		if k == nil {
			continue
		}
		live := k.items.items[k.items.head:]
		kept, dropped, i := 0, 0, 0
		for ; i < len(live) && dropped < want; i++ {
			if drop(live[i]) {
				dropped++
			} else {
				live[kept] = live[i]
				kept++
			}
		}
		// live[:kept] is kept, live[kept:i] is free, live[i:] is unread.
		if kept == 0 {
			clear(live[:i]) // the common case: a prefix went
			k.items.head += i
		} else {
			m := copy(live[kept:], live[i:])
			clear(live[kept+m:])
			k.items.items = k.items.items[:k.items.head+kept+m]
		}
		n += dropped
		if k.items.len() == 0 {
			k.items = fifo[T]{}
			d.deactivate(k)
		}
	}
	d.ready -= n
	return n
}
