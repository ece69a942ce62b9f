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
// heap at once, so nothing delivers them meanwhile), write the change, and
// forget them once it is durable, or put them back if it failed. Each
// costs O(messages in the queue): they are for operators, not the hot path.

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
	// moveDone: a purge's or redrive's write has finished.
	moveDone struct {
		msgs   []*message // as they were in this queue
		to     *QueueRef  // a redrive's source queue; nil for a purge
		moved  []*message // as the source queue has them
		sender *actor.PID
		err    error
	}
)

// unleased returns the messages that are not leased and not being moved,
// in id (enqueue) order, with ids after after.
func (q *queueActor) unleased(after string) []*message {
	var out []*message
	for _, m := range q.msgs {
		if !m.leased && !m.settling && !m.moving && m.id > after {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b *message) int { return strings.Compare(a.id, b.id) })
	return out
}

func (q *queueActor) peek(req *Peek) *PeekReply {
	ms := q.unleased(req.After)
	r := &PeekReply{More: len(ms) > req.Limit}
	for _, m := range ms[:min(len(ms), req.Limit)] {
		r.Messages = append(r.Messages, Peeked{ID: m.id, Record: m.rec, ReadyAt: m.readyAt})
	}
	return r
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
	ms := q.take(q.unleased(""), 0)
	var b storage.Batch
	for _, m := range ms {
		b.DeleteMessage(q.cfg.Name, m.id)
	}
	q.submitMove(ctx, &b, &moveDone{msgs: ms, sender: ctx.Sender()})
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
	ms := q.take(q.unleased(""), req.Count)
	d := &moveDone{msgs: ms, to: to, sender: ctx.Sender()}
	var b storage.Batch
	for _, m := range ms {
		rec := redriveRecord(m.rec)
		b.MoveMessage(q.cfg.Name, source, m.id, rec)
		d.moved = append(d.moved, &message{id: m.id, rec: rec})
	}
	q.submitMove(ctx, &b, d)
}

func (q *queueActor) submitMove(ctx actor.Context, b *storage.Batch, d *moveDone) {
	if b.Len() == 0 {
		ctx.Respond(&MoveReply{})
		return
	}
	q.submit(ctx, telemetry.ExtractHeaders(context.Background(), ctx.MessageHeader()), b, func(err error) any {
		d.err = err
		return d
	})
}

// moved completes a purge or redrive.
func (q *queueActor) moved(ctx actor.Context, d *moveDone) {
	if d.err != nil {
		for _, m := range d.msgs {
			m.moving = false
			q.makeReadyOrDelay(ctx, m, false)
		}
		q.dispatch(ctx)
		ctx.Send(d.sender, &MoveReply{Err: fmt.Errorf("%w: %w", ErrStorage, d.err)})
		return
	}
	for _, m := range d.msgs {
		q.forget(m)
	}
	what := "queue purged"
	if d.to != nil {
		what = "queue redriven"
		q.count(telemetry.Redriven, int64(len(d.msgs)))
		ctx.Send(d.to.PID, &adopt{msgs: d.moved})
	}
	q.deps.log.Info(what, slog.String("queue_id", q.cfg.Name), slog.Int("messages", len(d.msgs)))
	q.changed(ctx)
	ctx.Send(d.sender, &MoveReply{Moved: uint64(len(d.msgs))})
}
