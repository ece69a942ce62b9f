package actors

import (
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry"
)

// The write paths: each request becomes one storage batch, and the reply
// goes out only once the batch is durable.

func (q *queueActor) enqueue(ctx actor.Context, req *Enqueue) {
	spanCtx, span := q.startSpan(ctx.MessageHeader(), telemetry.SpanEnqueue)
	fail := func(err error) {
		endSpan(span, err)
		ctx.Respond(&EnqueueReply{Err: err})
	}
	key := req.Headers[q.cfg.FairnessKeyHeader]
	if key == "" {
		key = DefaultFairnessKey
	}
	// 0 when the message carries no weight: then it leaves its key's weight
	// as the latest message that did carry one set it.
	weight := uint32(0)
	if w, ok := req.Headers[WeightHeader]; ok {
		n, err := strconv.ParseUint(w, 10, 32)
		if err != nil || n < 1 || n > MaxWeight {
			fail(fmt.Errorf("%w: header %s must be an integer from 1 to %d", ErrInvalid, WeightHeader, MaxWeight))
			return
		}
		weight = uint32(n)
	}
	if err := q.held.admit(q.cfg, len(req.Payload)); err != nil {
		fail(err)
		return
	}
	uid, err := uuid.NewV7()
	if err != nil {
		fail(fmt.Errorf("%w: message id: %v", ErrStorage, err))
		return
	}
	id := uid.String()
	if span.IsRecording() {
		span.SetAttributes(telemetry.MessagingAttrs(telemetry.OpSend, q.cfg.Name, id)...)
		span.SetAttributes(telemetry.KeyFairnessKey.String(key))
	}
	// The message's creation context is this span's: delivery links to it,
	// and a consumer's processing span can join its trace.
	carrier := telemetry.InjectHeaders(spanCtx)
	if len(carrier[tracestateHeader]) > MaxHeaderValueBytes {
		// W3C lets a vendor drop tracestate; a header over the producers'
		// limit would make every delivery of the message oversized.
		delete(carrier, tracestateHeader)
	}
	headers := req.Headers
	if _, own := headers[traceparentHeader]; !own && carrier[traceparentHeader] != "" {
		if headers == nil {
			headers = make(map[string]string, 2)
		}
		// The request's map is ours: the gateway hands it over.
		headers[traceparentHeader] = carrier[traceparentHeader]
		if ts := carrier[tracestateHeader]; ts != "" {
			headers[tracestateHeader] = ts
		}
	}
	rec := &storagev1.MessageRecord{
		Headers:             headers,
		Payload:             req.Payload,
		FairnessKey:         key,
		Weight:              weight,
		EnqueuedAtUnixNs:    time.Now().UnixNano(),
		CreationTraceparent: carrier[traceparentHeader],
		CreationTracestate:  carrier[tracestateHeader],
	}
	m := &message{id: id, rec: rec}
	q.held.add(rec) // now, so a burst cannot overshoot while it commits
	var b storage.Batch
	b.PutMessage(q.cfg.Name, m.id, rec)
	sender := ctx.Sender()
	q.submit(ctx, spanCtx, &b, func(err error) any {
		return &enqueueDone{msg: m, owner: q, sender: sender, err: err, span: span, ctx: spanCtx}
	})
}

func (q *queueActor) enqueued(ctx actor.Context, d *enqueueDone) {
	// Only this incarnation counted the message in held when it submitted
	// it; after a supervisor restart the load counted what was stored.
	mine := d.owner == q
	if d.err != nil {
		if mine {
			q.held.remove(d.msg.rec)
		}
		err := fmt.Errorf("%w: %w", ErrStorage, d.err)
		endSpan(d.span, err)
		ctx.Send(d.sender, &EnqueueReply{Err: err})
		return
	}
	d.span.End()
	// After a restart the message may already have been loaded from storage.
	if _, known := q.msgs[d.msg.id]; !known {
		q.msgs[d.msg.id] = d.msg
		q.makeReady(d.msg, true)
		if !mine {
			q.held.add(d.msg.rec)
		}
	}
	q.count(telemetry.Enqueued, 1)
	q.debug(d.ctx, "message enqueued", slog.String("msg_id", d.msg.id), slog.String("fairness_key", d.msg.rec.GetFairnessKey()))
	ctx.Send(d.sender, &EnqueueReply{ID: d.msg.id, FairnessKey: d.msg.rec.GetFairnessKey()})
	q.dispatch(ctx)
	q.changed(ctx)
}

// settle writes an ack (delete) or a nack (requeue) of id's lease (leaseID's,
// when given); reason is a nack's error text, for the DEBUG log.
func (q *queueActor) settle(ctx actor.Context, id, leaseID string, nack bool, reason string) {
	spanCtx, span := q.startSpan(ctx.MessageHeader(), telemetry.SpanSettle)
	if span.IsRecording() {
		span.SetAttributes(telemetry.MessagingAttrs(telemetry.OpSettle, q.cfg.Name, id)...)
		span.SetAttributes(attribute.Bool("fila.nack", nack))
	}
	m, err := q.heldLease(id, leaseID)
	if err != nil {
		endSpan(span, err)
		ctx.Respond(&SettleReply{Err: err})
		return
	}
	if nack {
		q.debug(spanCtx, "nack received", slog.String("msg_id", id), slog.String("error", clip(reason, maxLoggedNackError)))
	}
	m.settling = true
	var b storage.Batch
	d := &settleDone{id: id, nack: nack, sender: ctx.Sender(), span: span, ctx: spanCtx}
	if nack {
		d.rec = q.requeue(&b, m)
	} else {
		b.DeleteMessage(q.cfg.Name, id)
		b.DeleteLease(q.cfg.Name, id)
	}
	q.submit(ctx, spanCtx, &b, func(err error) any {
		d.err = err
		return d
	})
}

func (q *queueActor) settled(ctx actor.Context, d *settleDone) {
	m := q.msgs[d.id]
	if d.err != nil {
		if m != nil {
			m.settling = false
			// The lease stands. If it expired while the write was failing, its
			// expiry entry was skipped: expire it now. Otherwise that entry is
			// still queued and fires on time.
			if !m.expiresAt.After(time.Now()) {
				q.expiries.push(expiry{at: time.Now(), id: m.id, gen: m.leaseGen})
				q.armTimer(ctx)
			}
		}
		err := fmt.Errorf("%w: %w", ErrStorage, d.err)
		endSpan(d.span, err)
		ctx.Send(d.sender, &SettleReply{Err: err})
		return
	}
	d.span.End()
	if m != nil { // nil only if a restart reloaded the queue after the commit
		if m.leased {
			q.unlease(m)
		}
		m.settling = false
		if d.nack {
			m.rec = d.rec
			q.makeReady(m, false)
		} else {
			q.forget(m)
		}
	}
	if d.nack {
		q.count(telemetry.Nacked, 1)
		q.debug(d.ctx, "message nacked", slog.String("msg_id", d.id))
	} else {
		q.count(telemetry.Acked, 1)
		q.debug(d.ctx, "message acked", slog.String("msg_id", d.id))
	}
	ctx.Send(d.sender, &SettleReply{})
	q.dispatch(ctx)
	q.changed(ctx)
}

// maxLoggedNackError bounds the nack reason in the DEBUG log.
const maxLoggedNackError = 512

// clip shortens s to at most n bytes, on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }
