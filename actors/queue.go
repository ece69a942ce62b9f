package actors

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry"
)

// Messages a queue actor handles. Requests are answered to the envelope's
// sender; the gateway carries the caller's span context in the envelope
// header.
type (
	// Enqueue stores a message. Reply: *EnqueueReply.
	Enqueue struct {
		Headers map[string]string
		Payload []byte
	}
	// EnqueueReply answers Enqueue once the message is durable.
	EnqueueReply struct {
		ID          string
		FairnessKey string
		Err         error
	}
	// Ack deletes a leased message. Reply: *SettleReply.
	Ack struct{ ID string }
	// Nack returns a leased message to ready with attempt_count + 1. Reply: *SettleReply.
	Nack struct{ ID string }
	// SettleReply answers Ack and Nack once the change is durable.
	SettleReply struct{ Err error }
	// Subscribe adds a consumer. Reply: *SubscribeReply.
	Subscribe struct{ Consumer *Consumer }
	// SubscribeReply confirms a Subscribe; Queue is where Unsubscribe goes.
	SubscribeReply struct{ Queue *actor.PID }
	// Unsubscribe removes a consumer; its leases stay until they expire.
	Unsubscribe struct{ ConsumerID uint64 }
	// ConsumerReady tells the queue that a consumer's buffer, which was
	// full, has room again.
	ConsumerReady struct{}
	// GetStats asks for the queue's statistics. Reply: *QueueStats.
	GetStats struct{}
	// QueueStats is a queue's state now.
	QueueStats struct {
		Depth, InFlight int64
		Consumers       int
		Quantum         int64
		Keys            []KeyStats
	}
	// KeyStats is one active fairness key.
	KeyStats struct {
		Key     string
		Pending int
		Deficit int64
		Weight  int64
	}
	// PanicForTest makes the queue actor panic, so tests can watch its
	// supervisor restart it from storage. Only in-process code can send it.
	PanicForTest struct{}

	// endConsumers ends every consumer of the queue with err.
	endConsumers struct{ err error }
	// enqueueDone, settleDone: a storage commit has finished.
	enqueueDone struct {
		msg    *message
		sender *actor.PID
		err    error
		span   trace.Span
		ctx    context.Context // the span's, for logs
	}
	settleDone struct {
		id     string
		nack   bool
		rec    *storagev1.MessageRecord // the record after a nack
		sender *actor.PID
		err    error
		span   trace.Span
		ctx    context.Context // the span's, for logs
	}
	// leaseTick: the earliest lease may have expired.
	leaseTick struct{}
	// flushReading: report the queue's reading to the telemetry actor.
	flushReading struct{}
)

// message is the queue actor's view of one stored message.
type message struct {
	id  string
	rec *storagev1.MessageRecord
	// leased is true from delivery until ack, nack or expiry.
	leased   bool
	settling bool // an ack or nack is being written
	leaseGen uint64
	leasedAt time.Time
	consumer uint64 // the consumer it is leased to
}

type expiry struct {
	at  time.Time
	id  string
	gen uint64
}

type consumerSlot struct {
	c *Consumer
	// credit is how many more messages the consumer may hold unsettled: it
	// starts at its buffer size, falls with each delivery, and rises when a
	// message leased to it is acked, nacked or expires.
	credit int
	// parent is the Lease call's span context; deliveries are its children.
	parent context.Context
}

// queueActor owns one queue: its ready messages (by DRR), consumers, leases
// and their timers. Nothing else touches this state.
type queueActor struct {
	cfg  QueueConfig
	opts Options
	deps queueDeps

	msgs      map[string]*message
	ready     *drr[*message]
	leased    int
	expiries  fifo[expiry]
	timer     *time.Timer
	timerAt   time.Time
	consumers []*consumerSlot
	next      int // round-robin position in consumers
	dirty     bool
	// counts are the changes made durable since the last reading was sent.
	counts telemetry.QueueReading
}

// queueDeps are the PIDs a queue actor talks to.
type queueDeps struct {
	telemetry *actor.PID
}

// QueueConfig is a queue's definition.
type QueueConfig struct {
	Name              string
	VisibilityTimeout time.Duration
	FairnessKeyHeader string
}

func (c QueueConfig) record() *storagev1.QueueRecord {
	return &storagev1.QueueRecord{
		Name:                c.Name,
		VisibilityTimeoutMs: uint64(c.VisibilityTimeout / time.Millisecond),
		FairnessKeyHeader:   c.FairnessKeyHeader,
		CreatedAtUnixMs:     time.Now().UnixMilli(),
	}
}

func queueConfigFrom(rec *storagev1.QueueRecord) QueueConfig {
	return QueueConfig{
		Name:              rec.GetName(),
		VisibilityTimeout: time.Duration(rec.GetVisibilityTimeoutMs()) * time.Millisecond,
		FairnessKeyHeader: rec.GetFairnessKeyHeader(),
	}
}

func newQueueActor(cfg QueueConfig, opts Options, deps queueDeps) actor.Actor {
	return &queueActor{
		cfg:   cfg,
		opts:  opts,
		deps:  deps,
		msgs:  make(map[string]*message),
		ready: newDRR[*message](opts.Quantum),
	}
}

// Receive implements actor.Actor.
func (q *queueActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		q.load(ctx)
	case *actor.Restarting:
		q.sendReading(ctx) // counts not yet reported survive the restart
		q.stop(errRestarted)
	case *actor.Stopping:
		q.stop(ErrQueueNotFound)
	case *Enqueue:
		q.enqueue(ctx, m)
	case *enqueueDone:
		q.enqueued(ctx, m)
	case *Ack:
		q.settle(ctx, m.ID, false)
	case *Nack:
		q.settle(ctx, m.ID, true)
	case *settleDone:
		q.settled(ctx, m)
	case *Subscribe:
		q.consumers = append(q.consumers, &consumerSlot{
			c:      m.Consumer,
			credit: cap(m.Consumer.Deliveries),
			parent: telemetry.ExtractHeaders(context.Background(), ctx.MessageHeader()),
		})
		ctx.Respond(&SubscribeReply{Queue: ctx.Self()})
		q.changed(ctx)
		q.dispatch(ctx)
	case *Unsubscribe:
		q.unsubscribe(ctx, m.ConsumerID)
	case *ConsumerReady:
		q.dispatch(ctx)
	case *leaseTick:
		q.expire(ctx)
	case *flushReading:
		q.sendReading(ctx)
	case *endConsumers:
		q.endConsumers(m.err)
	case *GetStats:
		ctx.Respond(q.stats())
	case *PanicForTest:
		panic("actors: panic injected by test")
	}
}

// load loads the queue from storage: on first start, after a restart by the
// supervisor, and after a broker restart alike.
func (q *queueActor) load(ctx actor.Context) {
	contents, err := q.opts.Store.LoadQueue(q.cfg.Name)
	if err != nil {
		// Panicking hands the failure to the supervisor, which retries.
		panic(fmt.Errorf("actors: load queue %s: %w", q.cfg.Name, err))
	}
	now := time.Now()
	var expired storage.Batch
	var held []expiry
	for _, sm := range contents.Messages {
		m := &message{id: sm.ID, rec: sm.Record}
		q.msgs[m.id] = m
		if l, ok := contents.Leases[m.id]; ok {
			at := time.UnixMilli(l.GetExpiresAtUnixMs())
			if at.After(now) {
				m.leased, m.leaseGen, m.leasedAt = true, 1, time.Unix(0, l.GetLeasedAtUnixNs())
				q.leased++
				held = append(held, expiry{at: at, id: m.id, gen: 1})
				continue
			}
			m.rec = withAttempt(m.rec)
			expired.PutMessage(q.cfg.Name, m.id, m.rec)
			expired.DeleteLease(q.cfg.Name, m.id)
		}
		q.ready.push(m.rec.GetFairnessKey(), int64(m.rec.GetWeight()), m)
	}
	sortExpiries(held)
	for _, e := range held {
		q.expiries.push(e)
	}
	if expired.Len() > 0 {
		q.opts.Store.Defer(&expired, q.logFailure("expire leases on recovery"))
	}
	q.armTimer(ctx)
	q.changed(ctx)
	q.opts.Logger.Debug("queue recovered", slog.String("queue_id", q.cfg.Name),
		slog.Int("messages", len(q.msgs)), slog.Int("leased", q.leased))
}

func (q *queueActor) stop(reason error) {
	if q.timer != nil {
		q.timer.Stop()
	}
	q.endConsumers(reason)
}

func (q *queueActor) endConsumers(err error) {
	for _, s := range q.consumers {
		s.c.end(err)
	}
	q.consumers = nil
}

func (q *queueActor) unsubscribe(ctx actor.Context, id uint64) {
	for i, s := range q.consumers {
		if s.c.id == id {
			q.consumers = append(q.consumers[:i], q.consumers[i+1:]...)
			q.changed(ctx)
			return
		}
	}
}

func (q *queueActor) enqueue(ctx actor.Context, req *Enqueue) {
	spanCtx, span := q.startSpan(ctx.MessageHeader(), SpanEnqueue)
	fail := func(err error) {
		endSpan(span, err)
		ctx.Respond(&EnqueueReply{Err: err})
	}
	key := req.Headers[q.cfg.FairnessKeyHeader]
	if key == "" {
		key = DefaultFairnessKey
	}
	weight := uint32(1)
	if w, ok := req.Headers[WeightHeader]; ok {
		n, err := strconv.ParseUint(w, 10, 32)
		if err != nil || n < 1 || n > MaxWeight {
			fail(fmt.Errorf("%w: header %s must be an integer from 1 to %d", ErrInvalid, WeightHeader, MaxWeight))
			return
		}
		weight = uint32(n)
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
	var b storage.Batch
	b.PutMessage(q.cfg.Name, m.id, rec)
	commit := q.commitSpan(spanCtx)
	self, sender, system := ctx.Self(), ctx.Sender(), ctx.ActorSystem()
	q.opts.Store.Submit(&b, func(err error) {
		endSpan(commit, err)
		system.Root.Send(self, &enqueueDone{msg: m, sender: sender, err: err, span: span, ctx: spanCtx})
	})
}

func (q *queueActor) enqueued(ctx actor.Context, d *enqueueDone) {
	if d.err != nil {
		err := fmt.Errorf("%w: %v", ErrStorage, d.err)
		endSpan(d.span, err)
		ctx.Send(d.sender, &EnqueueReply{Err: err})
		return
	}
	d.span.End()
	// After a restart the message may already have been loaded from storage.
	if _, known := q.msgs[d.msg.id]; !known {
		q.msgs[d.msg.id] = d.msg
		q.ready.push(d.msg.rec.GetFairnessKey(), int64(d.msg.rec.GetWeight()), d.msg)
	}
	q.counts.Enqueued++
	q.debug(d.ctx, "message enqueued", slog.String("msg_id", d.msg.id), slog.String("fairness_key", d.msg.rec.GetFairnessKey()))
	ctx.Send(d.sender, &EnqueueReply{ID: d.msg.id, FairnessKey: d.msg.rec.GetFairnessKey()})
	q.dispatch(ctx)
	q.changed(ctx)
}

func (q *queueActor) settle(ctx actor.Context, id string, nack bool) {
	spanCtx, span := q.startSpan(ctx.MessageHeader(), SpanSettle)
	if span.IsRecording() {
		span.SetAttributes(telemetry.MessagingAttrs(telemetry.OpSettle, q.cfg.Name, id)...)
		span.SetAttributes(attribute.Bool("fila.nack", nack))
	}
	m := q.msgs[id]
	if m == nil || !m.leased || m.settling {
		err := fmt.Errorf("%w: message_id %s", ErrNotLeased, id)
		endSpan(span, err)
		ctx.Respond(&SettleReply{Err: err})
		return
	}
	m.settling = true
	var b storage.Batch
	d := &settleDone{id: id, nack: nack, sender: ctx.Sender(), span: span, ctx: spanCtx}
	if nack {
		d.rec = withAttempt(m.rec)
		b.PutMessage(q.cfg.Name, id, d.rec)
	} else {
		b.DeleteMessage(q.cfg.Name, id)
	}
	b.DeleteLease(q.cfg.Name, id)
	commit := q.commitSpan(spanCtx)
	self, system := ctx.Self(), ctx.ActorSystem()
	q.opts.Store.Submit(&b, func(err error) {
		endSpan(commit, err)
		d.err = err
		system.Root.Send(self, d)
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
			if !m.leasedAt.Add(q.cfg.VisibilityTimeout).After(time.Now()) {
				q.expiries.push(expiry{at: time.Now(), id: m.id, gen: m.leaseGen})
				q.armTimer(ctx)
			}
		}
		err := fmt.Errorf("%w: %v", ErrStorage, d.err)
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
			q.ready.push(m.rec.GetFairnessKey(), int64(m.rec.GetWeight()), m)
		} else {
			delete(q.msgs, d.id)
			if len(q.msgs) == 0 {
				// Go maps never shrink: after a burst, a drained queue would
				// keep the burst's buckets for good.
				q.msgs = make(map[string]*message)
			}
		}
	}
	if d.nack {
		q.counts.Nacked++
		q.debug(d.ctx, "message nacked", slog.String("msg_id", d.id))
	} else {
		q.counts.Acked++
		q.debug(d.ctx, "message acked", slog.String("msg_id", d.id))
	}
	ctx.Send(d.sender, &SettleReply{})
	q.dispatch(ctx)
	q.changed(ctx)
}

// dispatch leases ready messages to consumers with credit, round-robin, and
// records the leases in one storage batch.
func (q *queueActor) dispatch(ctx actor.Context) {
	if q.ready.len() == 0 || len(q.consumers) == 0 {
		return
	}
	var b storage.Batch
	now := time.Now()
	expires := now.Add(q.cfg.VisibilityTimeout)
	lease := &storagev1.LeaseRecord{ExpiresAtUnixMs: expires.UnixMilli(), LeasedAtUnixNs: now.UnixNano()}
	n := 0
	for q.ready.len() > 0 {
		s := q.nextConsumer()
		if s == nil {
			break
		}
		m, _, _ := q.ready.pop()
		m.leased, m.leasedAt, m.consumer = true, now, s.c.id
		m.leaseGen++
		q.leased++
		q.expiries.push(expiry{at: expires, id: m.id, gen: m.leaseGen})
		b.PutLease(q.cfg.Name, m.id, lease)
		s.credit--
		s.c.Deliveries <- &Delivery{Queue: q.cfg.Name, ID: m.id, Record: m.rec, LeasedAt: now}
		q.deliverySpan(s.parent, m).End()
		n++
	}
	if n == 0 {
		return
	}
	q.opts.Store.Defer(&b, q.logFailure("write leases"))
	q.counts.Leased += int64(n)
	q.armTimer(ctx)
	q.changed(ctx)
}

// unlease ends m's lease and gives its consumer the slot back.
func (q *queueActor) unlease(m *message) {
	m.leased = false
	q.leased--
	for _, s := range q.consumers {
		if s.c.id == m.consumer {
			s.credit++
			break
		}
	}
	m.consumer = 0
}

// nextConsumer returns the next consumer with credit and buffer room after
// the last one served, or nil if none has both. Credit alone is not enough:
// a lease that expires while its message still waits in the buffer returns
// its credit before the buffer slot frees, and the actor must never block
// on a full buffer (the stream sends ConsumerReady when one drains).
func (q *queueActor) nextConsumer() *consumerSlot {
	for range q.consumers {
		q.next = (q.next + 1) % len(q.consumers)
		if s := q.consumers[q.next]; s.credit > 0 && len(s.c.Deliveries) < cap(s.c.Deliveries) {
			return s
		}
	}
	return nil
}

// expire returns every lease whose visibility timeout has passed to ready.
func (q *queueActor) expire(ctx actor.Context) {
	q.timerAt = time.Time{}
	now := time.Now()
	var b storage.Batch
	for q.expiries.len() > 0 && !q.expiries.items[q.expiries.head].at.After(now) {
		e := q.expiries.pop()
		m := q.msgs[e.id]
		if m == nil || !m.leased || m.settling || m.leaseGen != e.gen {
			continue // settled or leased again since
		}
		q.unlease(m)
		m.rec = withAttempt(m.rec)
		b.PutMessage(q.cfg.Name, m.id, m.rec)
		b.DeleteLease(q.cfg.Name, m.id)
		q.ready.push(m.rec.GetFairnessKey(), int64(m.rec.GetWeight()), m)
	}
	if b.Len() > 0 {
		q.opts.Store.Defer(&b, q.logFailure("expire leases"))
		q.changed(ctx)
	}
	q.armTimer(ctx)
	q.dispatch(ctx)
}

// armTimer makes sure a leaseTick arrives when the earliest lease expires.
func (q *queueActor) armTimer(ctx actor.Context) {
	if q.expiries.len() == 0 {
		return
	}
	at := q.expiries.items[q.expiries.head].at
	if !q.timerAt.IsZero() && !q.timerAt.After(at) {
		return // a tick is already due no later
	}
	if q.timer != nil {
		q.timer.Stop()
	}
	q.timerAt = at
	self, system := ctx.Self(), ctx.ActorSystem()
	q.timer = time.AfterFunc(time.Until(at), func() { system.Root.Send(self, &leaseTick{}) })
}

// changed schedules one reading after the messages already in the mailbox,
// so a burst of changes costs one message to the telemetry actor.
func (q *queueActor) changed(ctx actor.Context) {
	if !q.dirty {
		q.dirty = true
		ctx.Send(ctx.Self(), &flushReading{})
	}
}

// sendReading reports the gauges now and the counts since the last reading.
func (q *queueActor) sendReading(ctx actor.Context) {
	r := q.counts
	r.Depth, r.Leases, r.Consumers = int64(q.ready.len()), int64(q.leased), int64(len(q.consumers))
	ctx.Send(q.deps.telemetry, &queueReading{queue: q.cfg.Name, delta: r})
	q.counts, q.dirty = telemetry.QueueReading{}, false
}

func (q *queueActor) stats() *QueueStats {
	st := &QueueStats{
		Depth:     int64(q.ready.len()),
		InFlight:  int64(q.leased),
		Consumers: len(q.consumers),
		Quantum:   q.opts.Quantum,
	}
	for _, k := range q.ready.stats() {
		st.Keys = append(st.Keys, KeyStats{Key: k.key, Pending: k.pending, Deficit: k.deficit, Weight: k.weight})
	}
	return st
}

// logFailure is the completion of a write nobody waits on (leases, expiries):
// a failure is logged, and recovery reconciles from what did commit.
func (q *queueActor) logFailure(what string) func(error) {
	log := q.opts.Logger
	name := q.cfg.Name
	return func(err error) {
		if err != nil {
			log.Error("storage write failed", slog.String("queue_id", name), slog.String("op", what), slog.Any("error", err))
		}
	}
}

// W3C trace-context header names, as the message carries them to consumers.
const (
	traceparentHeader = "traceparent"
	tracestateHeader  = "tracestate"
)

func sortExpiries(es []expiry) {
	slices.SortFunc(es, func(a, b expiry) int { return a.at.Compare(b.at) })
}

// withAttempt returns a copy of rec with attempt_count + 1; records are
// never changed in place because deliveries share them.
func withAttempt(rec *storagev1.MessageRecord) *storagev1.MessageRecord {
	return &storagev1.MessageRecord{
		Headers:             rec.GetHeaders(),
		Payload:             rec.GetPayload(),
		FairnessKey:         rec.GetFairnessKey(),
		Weight:              rec.GetWeight(),
		AttemptCount:        rec.GetAttemptCount() + 1,
		EnqueuedAtUnixNs:    rec.GetEnqueuedAtUnixNs(),
		CreationTraceparent: rec.GetCreationTraceparent(),
		CreationTracestate:  rec.GetCreationTracestate(),
	}
}
