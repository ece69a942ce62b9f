package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/fila-dev/filad/scripting"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry"
)

// A queue actor's life is in these files:
//
//	queue.go           the actor: Receive, start and stop, consumers, stats, readings
//	queue_messages.go  the messages it handles and its view of a message
//	queue_state.go     a message's states, transition, the apply of records, reload
//	queue_write.go     Enqueue, Ack and Nack: a durable write, then the reply
//	queue_lease.go     dispatch to consumers, credit, visibility timers, expiry
//	queue_store.go     its config and records, loading from storage
//	failure.go         nack and expiry outcomes: retry, backoff delay, dead letter
//	queue_admin.go     peek, purge and redrive
//	queue_trace.go     its spans and DEBUG logs

// queueActor owns one queue: its ready messages (by DRR), consumers, leases
// and their timers. Nothing else touches this state.
type queueActor struct {
	// config is the broker's cell; cfg is what it held when last read.
	config *configCell
	cfg    QueueConfig
	deps   queueDeps

	msgs  map[string]*message
	ready *drr[*message]
	// inState counts the messages in q.msgs by state; transition keeps it.
	inState  [stateCount]int
	expiries expiryHeap
	// delays holds the delayed messages by ready time (entries of messages
	// no longer delayed are stale and skipped).
	delays    expiryHeap
	timer     *time.Timer
	timerAt   time.Time
	consumers []*consumerSlot
	next      int // round-robin position in consumers
	dirty     bool
	// counts are the changes made durable since the last reading was sent.
	counts telemetry.QueueReading
	// queueAttr labels this queue's measurements; made once, as the name
	// never changes.
	queueAttr metric.MeasurementOption
	leaseIDs  leaseIDs
	// leaseGens numbers the queue's leases (lease.leaseGen).
	leaseGens uint64
	// mailbox counts the requests waiting for this actor.
	mailbox *mailboxDepth
	// epoch is this incarnation's (configCell.epochs): a completion of an
	// earlier one found memory reloaded since its write was decided.
	epoch uint64
	// cacheScope names this incarnation's entries in the message cache
	// (the queue's name and epoch): a queue that loads again, here after
	// its partition was led elsewhere meanwhile, must not deliver a record
	// the other leader has since rewritten (a redrive, another move to
	// the DLQ), so it never reads an earlier incarnation's entries.
	cacheScope string
	// held is the stored messages (those in msgs); reserved, the enqueues
	// of this epoch being written. Both count against max_depth and
	// max_bytes.
	held, reserved holdings
	// fair counts deliveries per fairness key for the fila.fairness.* metrics.
	fair *fairnessMeter
	// scripts runs the queue's Lua hooks.
	scripts *scripting.Runner
	// metrics are the queue's histograms and counters; lua and
	// throttleCounters hold those per hook and per throttle key.
	metrics          *telemetry.QueueMetrics
	lua              map[string]luaMetrics
	throttleCounters map[[2]string]*telemetry.Counter
	// throttledUntil is when the earliest bucket that held a message back
	// refills; zero when nothing was held back at the last dispatch.
	throttledUntil time.Time
	// warned is when a script's bad result was last logged (one WARN per
	// scriptWarnEvery per queue).
	warned time.Time
	// oldest is oldestReady's last look: when, and the enqueue time found.
	oldest struct {
		at       time.Time
		enqueued int64
	}
	// retired is set once the queue is deleted: every request is answered
	// with it, and the actor stops as soon as it is idle.
	retired *retire
	// steps counts the messages handled, while checkEachStep is set.
	steps int
	// outgoing is dispatch's list, kept between calls to spare an
	// allocation each.
	outgoing []outgoing
}

// queueDeps is what a queue actor shares with the rest of the system, all
// of it safe for concurrent use.
type queueDeps struct {
	store   storage.Store
	quantum int64
	log     *slog.Logger
	tracer  trace.Tracer
	// series holds the queues' histograms and counters.
	series    *telemetry.SeriesSet
	telemetry *actor.PID
	// dir finds a queue's DLQ, or a DLQ's source, to hand messages over.
	dir *Directory
	// fairness is Options.FairnessKeys.
	fairness int
	// lua bounds the scripts; runtime is what fila.get reads.
	lua     scripting.Limits
	runtime *RuntimeConfig
	// throttles are the token buckets of throttle keys, shared by queues.
	throttles *Throttles
	// onTick is Options.onTick.
	onTick func(queue string)
	// cache holds the headers and payloads of messages likely to be
	// delivered soon, for every queue of the system.
	cache *messageCache
	// dispatcher runs the mailboxes of the queue actors the broker spawns.
	dispatcher *workerDispatcher
	// gateDeliveries holds each delivery until its lease is durable
	// (Delivery.Written): in a cluster, where a deposed leader must not
	// deliver from stale state.
	gateDeliveries bool
}

// configCell holds a queue's current config. The broker replaces it (and
// then tells the actor); the actor reads it when it starts, so a supervisor
// restart comes back with the config in force, not the one it was spawned
// with.
type configCell struct {
	p atomic.Pointer[QueueConfig]
	// metrics are the queue's synchronous instruments, made by its first
	// actor: a supervisor restart counts on in the same series.
	metricsOnce sync.Once
	metrics     *telemetry.QueueMetrics
	series      *telemetry.QueueSeries
	// epochs numbers the queue's actor incarnations: each load takes the
	// next (a supervisor restart, a reload after an unknown outcome).
	epochs atomic.Uint64
	// inflight counts the completions submitted and not yet received, of
	// every incarnation: a retired queue stops only once none is left.
	inflight atomic.Int64
}

// queueMetrics returns the queue's instruments, opening its series in set
// the first time.
func (c *configCell) queueMetrics(set *telemetry.SeriesSet) *telemetry.QueueMetrics {
	c.metricsOnce.Do(func() {
		c.series = set.Open(c.get().Name)
		c.metrics = telemetry.NewQueueMetrics(c.series)
	})
	return c.metrics
}

func newConfigCell(cfg QueueConfig) *configCell {
	c := &configCell{}
	c.set(cfg)
	return c
}

func (c *configCell) get() QueueConfig    { return *c.p.Load() }
func (c *configCell) set(cfg QueueConfig) { c.p.Store(&cfg) }

type consumerSlot struct {
	c *Consumer
	// credit is how many more messages the consumer may hold unsettled: it
	// starts at its buffer size, falls with each delivery, and rises when a
	// message leased to it is acked, nacked or expires.
	credit int
	// parent is the Lease call's span context; deliveries are its children.
	parent context.Context
	// queued counts the deliveries dispatch has decided for it and not yet
	// put in its buffer: they have room there already.
	queued int
}

func newQueueActor(config *configCell, mailbox *mailboxDepth, deps queueDeps) actor.Actor {
	return &queueActor{
		mailbox: mailbox,
		config:  config,
		cfg:     config.get(),
		deps:    deps,
		msgs:    make(map[string]*message),
		ready:   newDRR[*message](deps.quantum),
		queueAttr: metric.WithAttributeSet(attribute.NewSet(
			attribute.String(telemetry.AttrQueueID, config.get().Name))),
		leaseIDs: newLeaseIDs(),
		fair:     newFairnessMeter(deps.fairness),
		scripts:  scripting.NewRunner(deps.lua, deps.runtime),
		metrics:  config.queueMetrics(deps.series),
	}
}

// Receive implements actor.Actor.
func (q *queueActor) Receive(ctx actor.Context) {
	q.receive(ctx)
	if checkEachStep != nil {
		checkEachStep(q.cfg.Name, ctx.Message(), q.checkStep())
	}
}

func (q *queueActor) receive(ctx actor.Context) {
	if q.retired != nil {
		q.receiveRetired(ctx)
		return
	}
	switch m := ctx.Message().(type) {
	case *actor.Started:
		q.load(ctx)
	case *actor.Restarting:
		q.sendReading(ctx) // counts not yet reported survive the restart
		q.stop(errRestarted)
	case *actor.Stopping:
		q.stop(ErrShuttingDown)
	case *configChanged:
		q.reconfigure()
		q.changed(ctx) // the limits' gauges
	case *Enqueue:
		q.enqueue(ctx, []*Enqueue{m}, false, false)
	case *EnqueueBatch:
		q.enqueue(ctx, m.Items, true, m.StopAtRefusal)
	case *enqueueDone:
		q.config.inflight.Add(-1)
		q.enqueued(ctx, m)
	case *Ack:
		q.settle(ctx, []SettleItem{{ID: m.ID, LeaseID: m.LeaseID}}, false)
	case *Nack:
		q.settle(ctx, []SettleItem{{ID: m.ID, LeaseID: m.LeaseID, Nack: true, Error: m.Error}}, false)
	case *SettleBatch:
		q.settle(ctx, m.Items, true)
	case *settleDone:
		q.config.inflight.Add(-1)
		q.settled(ctx, m)
	case *Extend:
		q.extend(ctx, m)
	case *extendDone:
		q.config.inflight.Add(-1)
		q.extended(ctx, m)
	case *Subscribe:
		q.subscribe(ctx, m.Consumer)
	case *Unsubscribe:
		q.unsubscribe(ctx, m.ConsumerID, m.Unsent)
	case *ConsumerReady:
		q.dispatch(ctx)
	case *timerTick:
		q.tick(ctx)
	case *writeUnknown:
		if m.epoch == q.epoch {
			q.reload(ctx)
		}
	case *adopt:
		q.adopted(ctx, m.msgs)
	case *Redrive:
		q.redrive(ctx, m)
	case *Peek:
		ctx.Respond(q.peek(m))
	case *Purge:
		q.purge(ctx)
	case *moveDone:
		q.config.inflight.Add(-1)
		q.moved(ctx, m)
	case *flushReading:
		q.sendReading(ctx)
	case *endConsumers:
		q.endConsumers(m.err)
	case *retire:
		q.retired = m
		q.stop(m.err)
		q.retireIfIdle(ctx)
	case *GetStats:
		ctx.Respond(q.stats())
	case *awaitLoaded:
		q.sendReading(ctx) // before the answer: the reading is then in the telemetry actor's mailbox first
		ctx.Respond(&loaded{messages: len(q.msgs)})
	}
}

// receiveRetired serves a deleted queue until it stops: requests get its
// error at once (a request that reached the actor as the queue was deleted
// must not wait for a reply that would never come), and completions of its
// last writes are answered as usual, since those writes did happen.
func (q *queueActor) receiveRetired(ctx actor.Context) {
	err := q.retired.err
	switch m := ctx.Message().(type) {
	case *enqueueDone, *settleDone, *extendDone, *moveDone:
		q.config.inflight.Add(-1)
		err := err
		if errors.Is(err, ErrNotLeader) {
			// The queue moved to another node while this was written: it
			// may have been, and a not-leader answer (whose hint invites a
			// retry there) could store it twice. Its caller learns that
			// the outcome is unknown.
			err = fmt.Errorf("%w: the queue %q moved to another node while this was written", ErrOutcomeUnknown, q.cfg.Name)
		}
		switch d := m.(type) {
		case *enqueueDone:
			for _, it := range d.items {
				endSpan(it.span, err)
			}
			ctx.Send(d.sender, enqueueRefusal(len(d.items), d.batch, err))
		case *settleDone:
			for _, it := range d.items {
				endSpan(it.span, err)
			}
			ctx.Send(d.sender, settleRefusal(len(d.items), d.batch, err))
		case *extendDone:
			ctx.Send(d.sender, &ExtendReply{Err: err})
		case *moveDone:
			ctx.Send(d.sender, &MoveReply{Err: err})
		}
	case *Enqueue:
		ctx.Respond(enqueueRefusal(1, false, err))
	case *EnqueueBatch:
		ctx.Respond(enqueueRefusal(len(m.Items), true, err))
	case *Ack, *Nack:
		ctx.Respond(settleRefusal(1, false, err))
	case *SettleBatch:
		ctx.Respond(settleRefusal(len(m.Items), true, err))
	case *Extend:
		ctx.Respond(&ExtendReply{Err: err})
	case *Subscribe:
		m.Consumer.end(err)
		ctx.Respond(&SubscribeReply{Queue: ctx.Self()})
	case *GetStats, *Peek:
		ctx.Respond(err)
	case *Redrive, *Purge:
		ctx.Respond(&MoveReply{Err: err})
	case *adopt:
		// Moved here as the queue was deleted: the purge after it stops
		// removes them.
	case *actor.Stopped:
		q.deps.series.Drop(q.cfg.Name, q.config.series) // its series leave the next export
		ctx.Send(q.retired.stopped, &AdminReply{})
		return
	case actor.SystemMessage, *actor.Stopping, *actor.Restarting:
		return // lifecycle: nothing to answer, nothing new to wait for
	}
	q.retireIfIdle(ctx)
}

// enqueueRefusal answers n enqueued items, all with err.
func enqueueRefusal(n int, batch bool, err error) any {
	if !batch {
		return &EnqueueReply{Err: err}
	}
	r := &EnqueueBatchReply{Results: make([]EnqueueReply, n)}
	for i := range r.Results {
		r.Results[i].Err = err
	}
	return r
}

// settleRefusal answers n settle items, all with err.
func settleRefusal(n int, batch bool, err error) any {
	if !batch {
		return &SettleReply{Err: err}
	}
	r := &SettleBatchReply{Errs: make([]error, n)}
	for i := range r.Errs {
		r.Errs[i] = err
	}
	return r
}

// retireIfIdle stops a retired actor once its mailbox holds nothing but
// the message being handled and no write of its is in flight.
func (q *queueActor) retireIfIdle(ctx actor.Context) {
	// inflight is the cell's: an actor restarted by its supervisor waits
	// for its predecessors' writes too.
	if q.config.inflight.Load() <= 0 && q.mailbox.n.Load() <= 1 {
		ctx.Stop(ctx.Self())
	}
}

func (q *queueActor) stop(reason error) {
	if q.timer != nil {
		q.timer.Stop()
	}
	q.scripts.Close()
	q.endConsumers(reason)
}

func (q *queueActor) subscribe(ctx actor.Context, c *Consumer) {
	q.consumers = append(q.consumers, &consumerSlot{
		c:      c,
		credit: c.MaxInFlight,
		parent: telemetry.ExtractHeaders(context.Background(), ctx.MessageHeader()),
	})
	ctx.Respond(&SubscribeReply{Queue: ctx.Self()})
	q.changed(ctx)
	q.dispatch(ctx)
}

func (q *queueActor) endConsumers(err error) {
	for _, s := range q.consumers {
		s.c.end(err)
	}
	q.consumers = nil
}

// unsubscribe removes a consumer whose stream has ended. Its leases of
// messages it sent stay until they expire, but what still waits in its
// buffer, and what its stream took and failed to send (unsent), never
// reached the consumer: those leases are returned at once, the attempt
// count untouched, instead of holding the messages for a visibility
// timeout. Deliveries can reach the buffer of a stream that is already gone
// (a nack that frees its credit, say) until this message arrives; they
// come back here too.
func (q *queueActor) unsubscribe(ctx actor.Context, id uint64, unsent []*Delivery) {
	i := slices.IndexFunc(q.consumers, func(s *consumerSlot) bool { return s.c.id == id })
	if i < 0 {
		return
	}
	s := q.consumers[i]
	q.consumers = slices.Delete(q.consumers, i, i+1)
	for {
		select {
		case d := <-s.c.Deliveries:
			unsent = append(unsent, d)
			continue
		default:
		}
		break
	}
	var b storage.Batch
	for _, d := range unsent {
		m := q.msgs[d.ID]
		if m == nil || m.state != stateLeased || m.leaseID != d.LeaseID {
			continue
		}
		endDelivery(m, "returned")
		b.DeleteLease(q.cfg.Name, m.id)
		q.transition(m, stateReady)
	}
	if b.Len() > 0 {
		q.deps.store.Defer(&b, q.logFailure(ctx, "return unsent leases"))
		q.dispatch(ctx)
	}
	q.changed(ctx)
}

func (q *queueActor) stats() *QueueStats {
	st := &QueueStats{
		Depth:     int64(q.ready.len()),
		InFlight:  int64(q.inFlight()),
		Delayed:   int64(q.inState[stateDelayed]),
		Config:    q.cfg,
		Consumers: len(q.consumers),
		Quantum:   q.deps.quantum,
	}
	for _, k := range q.ready.stats() {
		st.Keys = append(st.Keys, KeyStats{Key: k.key, Pending: k.pending, Deficit: k.deficit, Weight: k.weight})
	}
	return st
}

// oldestReady is the enqueue time, in Unix milliseconds, of the oldest
// message at the head of a fairness key's ready list (a nacked message goes
// to its key's back with its old enqueue time, so one behind a head can be
// older still); 0 when nothing is ready. The instrument reports the age, so
// it grows between readings. Looking costs one step per active key: past
// manyKeys keys it is worked out at most every oldestReadyEvery.
func (q *queueActor) oldestReady() int64 {
	if q.ready.len() == 0 {
		return 0
	}
	now := time.Now()
	if q.ready.active <= manyKeys || now.Sub(q.oldest.at) >= oldestReadyEvery {
		q.oldest.at, q.oldest.enqueued = now, 0
		q.ready.forEachHead(func(m *message) {
			if at := m.idx.EnqueuedAtUnixNs; q.oldest.enqueued == 0 || at < q.oldest.enqueued {
				q.oldest.enqueued = at
			}
		})
	}
	return q.oldest.enqueued / int64(time.Millisecond)
}

const (
	manyKeys         = 100
	oldestReadyEvery = time.Second
)

// count adds n to one of the queue's counters; the next reading reports it.
func (q *queueActor) count(c telemetry.Count, n int64) { q.counts.Counts[c] += n }

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
	r.Gauges[telemetry.Depth] = int64(q.ready.len())
	r.Gauges[telemetry.LeasesActive] = int64(q.inFlight())
	r.Gauges[telemetry.ConsumersActive] = int64(len(q.consumers))
	r.Gauges[telemetry.Delayed] = int64(q.inState[stateDelayed])
	r.Gauges[telemetry.OldestReady] = q.oldestReady()
	r.Gauges[telemetry.DRRActiveKeys] = int64(q.ready.active)
	r.Gauges[telemetry.Bytes] = int64(q.held.bytes + q.reserved.bytes)
	r.Gauges[telemetry.MaxDepth] = int64(q.cfg.MaxDepth)
	r.Gauges[telemetry.MaxBytes] = int64(q.cfg.MaxBytes)
	credit := 0
	for _, s := range q.consumers {
		credit += s.credit
	}
	r.Gauges[telemetry.ConsumerCredit] = int64(credit)
	turns, rounds := q.ready.takeCounts()
	r.Counts[telemetry.DRRKeysProcessed] += turns
	r.Counts[telemetry.DRRRounds] += rounds
	r.Keys = q.fair.reading(q.ready)
	ctx.Send(q.deps.telemetry, &queueReading{queue: q.cfg.Name, delta: r})
	q.counts, q.dirty = telemetry.QueueReading{}, false
}

// submit hands b to the committer and sends done's message to the actor
// once b is durable or has failed; the commit span and the commit duration
// cover the wait. It is the one way a queue actor waits on storage.
func (q *queueActor) submit(ctx actor.Context, spanCtx context.Context, b *storage.Batch, done func(error) any) {
	commit := q.commitSpan(spanCtx)
	if commit.SpanContext().IsValid() {
		b.SetTrace(trace.ContextWithSpan(spanCtx, commit))
	}
	self, system := ctx.Self(), ctx.ActorSystem()
	hist, start := q.metrics.CommitDuration, time.Now()
	q.deps.store.Submit(b, func(err error) {
		// On the committer's goroutine: touch nothing of the actor's.
		hist.Record(spanCtx, time.Since(start).Seconds())
		endSpan(commit, err)
		system.Root.Send(self, done(err))
	})
	// After Submit, which may panic (a storage bug): then no completion
	// comes. Before the completion is handled: it is in the mailbox at the
	// earliest, behind the message being handled.
	q.config.inflight.Add(1)
}
