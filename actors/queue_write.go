package actors

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"
	"unicode/utf8"
	"unique"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry"
)

// The write paths: a request (one item, or a batch of them) becomes one
// storage batch, and the replies go out only once it is durable. An item
// refused before the write (a bad weight, a full queue, a lease not held)
// fails alone.

// enqueueItem is one message of an Enqueue or EnqueueBatch on its way to
// storage.
type enqueueItem struct {
	msg          *message
	rec          *storagev1.MessageRecord // msg's, whole: the cache's once committed
	span         trace.Span
	ctx          context.Context // the span's, for logs
	err          error           // refused before the write
	throttleKeys []string        // on_enqueue's
}

func (q *queueActor) enqueue(ctx actor.Context, reqs []*Enqueue, batch, stopAtRefusal bool) {
	parent := telemetry.ExtractHeaders(context.Background(), ctx.MessageHeader())
	var b storage.Batch
	items := make([]*enqueueItem, len(reqs))
	refused := false
	for i, req := range reqs {
		if refused {
			spanCtx, span := q.startChild(parent, telemetry.SpanEnqueue)
			items[i] = &enqueueItem{span: span, ctx: spanCtx, err: ErrNotAttempted}
			continue
		}
		items[i] = q.decideEnqueue(parent, req, &b)
		refused = stopAtRefusal && items[i].err != nil
	}
	d := &enqueueDone{items: items, batch: batch, epoch: q.epoch, sender: ctx.Sender()}
	if b.Len() == 0 {
		q.enqueued(ctx, d) // nothing to write: every item was refused
		return
	}
	q.submit(ctx, commitParent(parent, batch, items[0].ctx), &b, func(err error) any {
		d.err = err
		return d
	})
}

// decideEnqueue is an enqueue's decide step, the leader's alone: it
// settles everything that is not a function of the records (the span, the
// fairness key and weight from the headers and the on_enqueue hook, the
// delay, admission, the message id, the clock, the creation context) into
// the message's record, reserves its room and adds its write to b; or
// refuses it. Applying the record once committed is enqueued's.
func (q *queueActor) decideEnqueue(parent context.Context, req *Enqueue, b *storage.Batch) *enqueueItem {
	spanCtx, span := q.enqueueSpan(parent, req)
	it := &enqueueItem{span: span, ctx: spanCtx}
	key, weight, delay, err := q.route(spanCtx, req, it)
	if err != nil {
		it.err = err
		return it
	}
	if reason, err := q.holding().admit(q.cfg, len(req.Payload)); err != nil {
		q.metrics.Refused[reason].Add(1)
		it.err = err
		return it
	}
	q.metrics.MessageSize.Record(spanCtx, float64(len(req.Payload)))
	uid, err := uuid.NewV7()
	if err != nil {
		it.err = fmt.Errorf("%w: message id: %v", ErrStorage, err)
		return it
	}
	id := uid.String()
	if span.IsRecording() {
		span.SetAttributes(telemetry.MessagingAttrs(telemetry.OpSend, q.cfg.Name, id)...)
		span.SetAttributes(telemetry.KeyFairnessKey.String(key))
	}
	now := time.Now()
	rec := newMessageRecord(spanCtx, req, key, weight, it.throttleKeys, now)
	if delay > 0 {
		rec.ReadyAtUnixMs = readyAtMillis(now.Add(delay))
	}
	it.rec = rec
	it.msg = &message{id: id, idx: storage.IndexOf(rec)}
	q.reserved.add(uint64(len(req.Payload))) // now, so a burst cannot overshoot while it commits
	b.PutMessageIndexed(q.cfg.Name, id, rec, it.msg.idx)
	return it
}

// enqueueSpan starts an enqueued message's span. A message that carries a
// trace context of another trace than the call (an item of a batch from
// many producers) keeps it: its span joins that trace. In the call's own
// trace (a single Enqueue), the span stays a child of the RPC span.
func (q *queueActor) enqueueSpan(parent context.Context, req *Enqueue) (context.Context, trace.Span) {
	if _, own := req.Headers[traceparentHeader]; own {
		carried := telemetry.ExtractHeaders(context.Background(), propagation.MapCarrier(req.Headers))
		if c := trace.SpanContextFromContext(carried); c.IsValid() && c.TraceID() != trace.SpanContextFromContext(parent).TraceID() {
			parent = carried
		}
	}
	return q.startChild(parent, telemetry.SpanEnqueue)
}

// route is where req goes in the queue: its fairness key and weight, from
// its headers unless the on_enqueue hook names them (the hook's throttle
// keys go into it), and its delay. weight is 0 when the message carries
// none: then it leaves its key's weight as the latest message that did
// carry one set it.
func (q *queueActor) route(spanCtx context.Context, req *Enqueue, it *enqueueItem) (key string, weight uint32, delay time.Duration, err error) {
	key = req.Headers[q.cfg.FairnessKeyHeader]
	if key == "" {
		key = DefaultFairnessKey
	}
	defer func() { key = unique.Make(key).Value() }() // one string per key, not per message
	if w, ok := req.Headers[WeightHeader]; ok {
		n, err := strconv.ParseUint(w, 10, 32)
		if err != nil || n < 1 || n > MaxWeight {
			return "", 0, 0, fmt.Errorf("%w: header %s must be an integer from 1 to %d", ErrInvalid, WeightHeader, MaxWeight)
		}
		weight = uint32(n)
	}
	if res := q.scriptEnqueue(spanCtx, req); res.FairnessKey != "" || res.Weight > 0 || len(res.ThrottleKeys) > 0 {
		key = cmp.Or(res.FairnessKey, key)
		weight = cmp.Or(res.Weight, weight)
		it.throttleKeys = res.ThrottleKeys
	}
	delay, err = enqueueDelay(req.Headers)
	return key, weight, delay, err
}

// newMessageRecord is req's record as the queue stores it, enqueued at now.
// The message's creation context is the span's in spanCtx: delivery links
// to it, and a consumer's processing span can join its trace. Only a
// sampled context is written: an unsampled traceparent (…-00) would make a
// consumer with its own always-on tracing drop its spans, and would cost
// every message ~100 bytes and a parse for a trace nobody records.
func newMessageRecord(spanCtx context.Context, req *Enqueue, key string, weight uint32, throttleKeys []string, now time.Time) *storagev1.MessageRecord {
	var carrier map[string]string
	if trace.SpanContextFromContext(spanCtx).IsSampled() {
		carrier = telemetry.InjectHeaders(spanCtx)
	}
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
	return &storagev1.MessageRecord{
		Headers:             headers,
		Payload:             req.Payload,
		FairnessKey:         key,
		Weight:              weight,
		EnqueuedAtUnixNs:    now.UnixNano(),
		CreationTraceparent: carrier[traceparentHeader],
		CreationTracestate:  carrier[tracestateHeader],
		ThrottleKeys:        throttleKeys,
	}
}

// enqueued is an enqueue's commit edge: the reservations of this epoch are
// released, the committed records are applied, and then the replies, the
// items' spans, the logs and the counters go out.
func (q *queueActor) enqueued(ctx actor.Context, d *enqueueDone) {
	// Only this epoch reserved the messages when it submitted them; after
	// a restart the load counted what was stored.
	mine, unknown := d.epoch == q.epoch, unknownOutcome(d.err)
	if mine {
		for _, it := range d.items {
			if it.err == nil {
				q.reserved.remove(uint64(len(it.rec.GetPayload())))
			}
		}
	}
	delayed := false
	if d.err == nil {
		delayed = q.applyEnqueued(d.items, time.Now())
	}
	replies := make([]EnqueueReply, len(d.items))
	added := 0
	for i, it := range d.items {
		switch {
		case it.err != nil:
			replies[i].Err = it.err
		case unknown:
			replies[i].Err = ErrOutcomeUnknown
		case d.err != nil:
			replies[i].Err = fmt.Errorf("%w: %w", ErrStorage, d.err)
		default:
			added++
			q.debug(it.ctx, "message enqueued", slog.String("msg_id", it.msg.id), slog.String("fairness_key", it.msg.idx.FairnessKey))
			replies[i] = EnqueueReply{ID: it.msg.id, FairnessKey: it.msg.idx.FairnessKey}
		}
		endSpan(it.span, replies[i].Err)
	}
	if d.batch {
		ctx.Send(d.sender, &EnqueueBatchReply{Results: replies})
	} else {
		ctx.Send(d.sender, &replies[0])
	}
	if unknown && mine {
		q.reload(ctx)
		return
	}
	if delayed {
		q.armTimer(ctx)
	}
	if added > 0 {
		q.count(telemetry.Enqueued, int64(added))
		q.dispatch(ctx)
		q.changed(ctx)
	}
}

// applyEnqueued applies the committed records of items (those not refused
// before the write), as of now, and reports whether one is delayed.
func (q *queueActor) applyEnqueued(items []*enqueueItem, now time.Time) (delayed bool) {
	for _, it := range items {
		if it.err != nil {
			continue
		}
		// After a restart the message may already have been loaded.
		if _, known := q.msgs[it.msg.id]; !known {
			q.deps.cache.put(q.cacheScope, it.msg.id, it.rec) // hot: the next to be delivered, when the backlog is small
			delayed = q.applyMessage(it.msg, it.msg.idx, now) || delayed
		}
	}
	return delayed
}

// settleItem is one Ack or Nack on its way to storage.
type settleItem struct {
	id   string
	nack bool
	fate failure // a nack's outcome
	span trace.Span
	ctx  context.Context
	err  error // refused before the write
}

// settle writes acks (deletes) and nacks (failed deliveries: see fail) of
// held leases.
func (q *queueActor) settle(ctx actor.Context, reqs []SettleItem, batch bool) {
	parent := telemetry.ExtractHeaders(context.Background(), ctx.MessageHeader())
	var b storage.Batch
	items := make([]*settleItem, len(reqs))
	for i, r := range reqs {
		items[i] = q.prepareSettle(parent, r, &b)
	}
	d := &settleDone{items: items, batch: batch, epoch: q.epoch, sender: ctx.Sender()}
	if b.Len() == 0 {
		q.settled(ctx, d)
		return
	}
	q.submit(ctx, commitParent(parent, batch, items[0].ctx), &b, func(err error) any {
		d.err = err
		return d
	})
}

func (q *queueActor) prepareSettle(parent context.Context, r SettleItem, b *storage.Batch) *settleItem {
	spanCtx, span := q.settleSpan(parent, q.msgs[r.ID])
	if span.IsRecording() {
		op := telemetry.OpAck
		if r.Nack {
			op = telemetry.OpNack
		}
		span.SetAttributes(telemetry.MessagingAttrs(op, q.cfg.Name, r.ID)...)
	}
	it := &settleItem{id: r.ID, nack: r.Nack, span: span, ctx: spanCtx}
	m, err := q.heldLease(r.ID, r.LeaseID)
	if err != nil {
		it.err = err
		return it
	}
	if r.Nack {
		q.debug(spanCtx, "nack received", slog.String("msg_id", r.ID), slog.String("error", clip(r.Error, maxLoggedNackError)))
	}
	q.transition(m, stateSettling)
	if r.Nack {
		it.fate = q.fail(b, m, false, r.Error, time.Now())
		if span.IsRecording() {
			span.SetAttributes(telemetry.KeyOutcome.String(it.fate.outcome.String()))
		}
	} else {
		b.DeleteSettled(q.cfg.Name, r.ID)
	}
	return it
}

func (q *queueActor) settled(ctx actor.Context, d *settleDone) {
	errs := make([]error, len(d.items))
	var acked, nacked int64
	var dlq *QueueRef // the queue's DLQ, when a nack dead-lettered
	var moved []movedMessage
	// Only this epoch's memory holds the items as settling; an earlier
	// one's settle that committed ends a lease the reload found still
	// standing, and changes nothing otherwise.
	mine, unknown := d.epoch == q.epoch, unknownOutcome(d.err)
	rearm, now := false, time.Now()
	for i, it := range d.items {
		m := q.msgs[it.id]
		switch {
		case it.err != nil:
			errs[i] = it.err
		case unknown:
			errs[i] = ErrOutcomeUnknown
		case d.err != nil:
			errs[i] = fmt.Errorf("%w: %w", ErrStorage, d.err)
			if mine && m != nil && m.state == stateSettling {
				// The lease stands, with an expiry entry again (one that
				// fell due while it was settling was passed over).
				q.transition(m, stateLeased)
				rearm = true
			}
		default:
			if m != nil && (m.state == stateSettling && mine || m.state == stateLeased && !mine) {
				// The delivery's telemetry ends at the commit edge; then
				// the apply.
				q.metrics.ProcessDuration.Record(spanContext(m), now.Sub(m.leasedAt).Seconds())
				if it.nack {
					endDelivery(m, "nack: "+it.fate.outcome.String())
					q.countFailure(it.fate)
				} else {
					endDelivery(m, "ack")
				}
				if q.applySettle(ctx, m, it) {
					dlq, moved = it.fate.dlq, append(moved, movedMessage{id: m.id, rec: it.fate.rec})
				}
			}
			if it.nack {
				nacked++
				q.debug(it.ctx, "message nacked", slog.String("msg_id", it.id))
			} else {
				acked++
				q.debug(it.ctx, "message acked", slog.String("msg_id", it.id))
			}
		}
		endSpan(it.span, errs[i])
	}
	if unknown && mine {
		q.reload(ctx)
	}
	if rearm {
		q.armTimer(ctx)
	}
	if dlq != nil {
		ctx.Send(dlq.PID, &adopt{msgs: moved}) // the move is durable
	}
	if d.batch {
		ctx.Send(d.sender, &SettleBatchReply{Errs: errs})
	} else {
		ctx.Send(d.sender, &SettleReply{Err: errs[0]})
	}
	if acked+nacked > 0 {
		q.count(telemetry.Acked, acked)
		q.count(telemetry.Nacked, nacked)
		q.dispatch(ctx)
		q.changed(ctx)
	}
}

// applySettle applies a committed ack (m is gone) or nack (m is ready,
// delayed or gone, as fail decided), and reports whether the nack moved m
// to the DLQ, which the caller then hands it to.
func (q *queueActor) applySettle(ctx actor.Context, m *message, it *settleItem) (deadLettered bool) {
	if !it.nack {
		q.transition(m, stateGone)
		return false
	}
	q.applyFailure(ctx, m, it.fate)
	return it.fate.outcome == deadLetter
}

// commitParent is the span the commit span goes under: the item's own span
// for a single request, the batch call's for a batch (its items may belong
// to different traces).
func commitParent(call context.Context, batch bool, item context.Context) context.Context {
	if batch {
		return call
	}
	return item
}

// maxLoggedNackError bounds the nack reason in the DEBUG log.
const maxLoggedNackError = 512

// clip shortens s to at most n bytes, on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
