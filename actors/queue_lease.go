package actors

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry"
)

// Leases: dispatch hands ready messages to consumers with credit; each
// lease has an entry in the expiry heap, each delayed message one in the
// delay heap, and one timer per queue fires for the earliest of both. A
// heap, not a FIFO: the visibility timeout can change at runtime, so a
// later lease may expire before an earlier one.

// expiry is a moment something is due for one message: its lease ends, or
// its delay.
type expiry struct {
	at  time.Time
	id  string
	gen uint64 // the lease generation it ends; stale once settled or re-leased
}

// expiryHeap is a binary min-heap of expiries by time.
type expiryHeap struct{ items []expiry }

func (h *expiryHeap) len() int { return len(h.items) }

// peek is the earliest expiry; the heap must not be empty.
func (h *expiryHeap) peek() expiry { return h.items[0] }

func (h *expiryHeap) push(e expiry) {
	h.items = append(h.items, e)
	for i := len(h.items) - 1; i > 0; {
		parent := (i - 1) / 2
		if !h.items[i].at.Before(h.items[parent].at) {
			break
		}
		h.items[i], h.items[parent] = h.items[parent], h.items[i]
		i = parent
	}
}

func (h *expiryHeap) pop() expiry {
	top := h.items[0]
	last := len(h.items) - 1
	h.items[0] = h.items[last]
	h.items[last] = expiry{} // drop the id for the GC
	h.items = h.items[:last]
	for i := 0; ; {
		least, l, r := i, 2*i+1, 2*i+2
		if l < last && h.items[l].at.Before(h.items[least].at) {
			least = l
		}
		if r < last && h.items[r].at.Before(h.items[least].at) {
			least = r
		}
		if least == i {
			break
		}
		h.items[i], h.items[least] = h.items[least], h.items[i]
		i = least
	}
	if last == 0 && cap(h.items) > fifoKeepCap {
		h.items = nil // a drained queue gives its burst's memory back
	}
	return top
}

// outgoing is a delivery dispatch has decided and not yet sent.
type outgoing struct {
	m      *message
	s      *consumerSlot
	key    string
	weight int64
}

// dispatch leases ready messages to consumers with credit, round-robin, and
// records the leases in one storage batch. It decides every delivery
// first, then reads the headers and payloads of those the message cache
// does not hold in one read of the store, then sends them.
func (q *queueActor) dispatch(ctx actor.Context) {
	if q.ready.len() == 0 || len(q.consumers) == 0 {
		return
	}
	var b storage.Batch
	now := time.Now()
	q.throttledUntil = time.Time{}
	expires := now.Add(q.cfg.VisibilityTimeout)
	n, redelivered := 0, int64(0)
	var written *LeaseWrite
	if q.deps.gateDeliveries {
		written = newLeaseWrite()
	}
	// Rounds until one sends nothing: a consumer that drains its buffer
	// while a round reads never saw it full, so it sends no
	// ConsumerReady; the next round fills it instead, as a dispatch that
	// sent each delivery as it decided it would have.
	for {
		sent, again, err := q.dispatchRound(&b, now, expires, written)
		n, redelivered = n+sent, redelivered+again
		if sent == 0 || err != nil {
			break
		}
	}
	if !q.throttledUntil.IsZero() {
		q.armTimer(ctx) // the earliest refill
	}
	if n == 0 {
		if b.Len() > 0 {
			q.deps.store.Defer(&b, q.logFailure(ctx, "undo leases"))
		}
		if written != nil {
			written.finish(nil)
		}
		return
	}
	logFailure := q.logFailure(ctx, "write leases")
	q.deps.store.Defer(&b, func(err error) {
		logFailure(err)
		if written != nil {
			written.finish(err)
		}
	})
	q.count(telemetry.Leased, int64(n))
	q.count(telemetry.Redelivered, redelivered)
	q.armTimer(ctx)
	q.changed(ctx)
}

// dispatchRound is one round of dispatch: it decides deliveries while a
// consumer has credit and buffer room and a message is ready, reads their
// headers and payloads in one go (bodies), and sends them. It reports how
// many it sent and how many of those were redeliveries. When the read
// fails, none is sent: their leases are undone in b, they are ready
// again, and the throttle tokens they took are given back.
func (q *queueActor) dispatchRound(b *storage.Batch, now, expires time.Time, written *LeaseWrite) (sent int, redelivered int64, err error) {
	out := q.outgoing[:0]
	defer func() {
		clear(out)
		q.outgoing = out[:0]
	}()
	for q.ready.len() > 0 {
		s := q.nextConsumer()
		if s == nil {
			break
		}
		m, key, weight, ok := q.ready.popWhere(q.takeThrottle)
		if !ok {
			break // every key's next message is throttled: the timer retries
		}
		// Decided: the consumer, the message (DRR, throttles), the token
		// and the clock. The lease is applied at once and written
		// deferred; its telemetry follows.
		q.applyLease(m, now, expires, q.leaseIDs.next(), s)
		b.PutLease(q.cfg.Name, m.id, m.leaseRecord())
		s.queued++
		out = append(out, outgoing{m: m, s: s, key: key, weight: weight})
	}
	if len(out) == 0 {
		return 0, 0, nil
	}
	ms := make([]*message, len(out))
	for i, o := range out {
		ms[i] = o.m
	}
	recs, err := q.bodies(ms, true)
	if err != nil {
		q.deps.log.Error("messages not delivered: their records could not be read; they stay ready", slog.String("queue_id", q.cfg.Name),
			slog.Int("messages", len(out)), slog.Any("error", err))
	}
	for i, o := range out {
		m, s := o.m, o.s
		s.queued--
		if err != nil {
			b.DeleteLease(q.cfg.Name, m.id) // after its put: the lease is undone
			q.transition(m, stateReady)
			if keys := m.idx.ThrottleKeys(); len(keys) > 0 {
				q.deps.throttles.Refund(keys, time.Now()) // not delivered: its tokens are not spent
			}
			continue
		}
		q.countPass(m) // before the send: whoever receives it sees the pass counted
		s.c.Deliveries <- &Delivery{Queue: q.cfg.Name, ID: m.id, LeaseID: m.leaseID, Record: recs[i], LeasedAt: now, ExpiresAt: expires, Written: written}
		q.fair.delivered(o.key, o.weight)
		m.span = q.deliverySpan(s.parent, m, recs[i])
		if m.idx.AttemptCount == 0 {
			waited := now.Sub(time.Unix(0, m.idx.EnqueuedAtUnixNs))
			q.metrics.WaitDuration.Record(spanContext(m), waited.Seconds())
		} else {
			redelivered++
		}
		sent++
	}
	return sent, redelivered, err
}

// nextConsumer returns the next consumer with credit and buffer room after
// the last one served, whose stream has not ended, or nil if none. Credit alone is not enough:
// a lease that expires while its message still waits in the buffer returns
// its credit before the buffer slot frees, and the actor must never block
// on a full buffer (the stream sends ConsumerReady when one drains).
func (q *queueActor) nextConsumer() *consumerSlot {
	for range q.consumers {
		q.next = (q.next + 1) % len(q.consumers)
		if s := q.consumers[q.next]; s.credit > 0 && len(s.c.Deliveries)+s.queued < cap(s.c.Deliveries) && !s.c.gone() {
			return s
		}
	}
	return nil
}

// tick handles the queue's one timer: leases whose visibility timeout has
// passed fail (as nacks do, by the queue's failure rules), delayed messages
// whose time has come become ready, and consumers get what is ready.
func (q *queueActor) tick(ctx actor.Context) {
	if q.deps.onTick != nil {
		q.deps.onTick(q.cfg.Name)
	}
	q.timerAt = time.Time{}
	now := time.Now()
	if !q.throttledUntil.After(now) {
		// The refill is due: the dispatch below takes the token or notes the
		// next refill. Kept, a due time re-armed the timer at once, for ever,
		// whenever that dispatch could not run (its consumers gone).
		q.throttledUntil = time.Time{}
	}
	var expired []*message
	for q.expiries.len() > 0 && !q.expiries.peek().at.After(now) {
		e := q.expiries.pop()
		m := q.msgs[e.id]
		if m == nil || m.state != stateLeased || m.leaseGen != e.gen {
			continue // settled or leased again since
		}
		if m.expiresAt.After(now) {
			// Extended since this entry was pushed: re-arm at the new expiry.
			// Extend itself pushes nothing for a later expiry, so however
			// often a holder extends, its lease has one entry in the heap.
			q.expiries.push(expiry{at: m.expiresAt, id: m.id, gen: m.leaseGen})
			continue
		}
		// failExpired ends the lease: until then, another entry of the
		// same lease (see transition) must not find it.
		m.leaseGen++
		endDelivery(m, "expired")
		expired = append(expired, m)
	}
	q.failExpired(ctx, expired, now, "expire leases")
	q.promote(now)
	q.armTimer(ctx)
	q.dispatch(ctx)
	q.changed(ctx)
}

// failExpired fails the messages whose leases ran out, in one write that
// nobody waits on (lease bookkeeping: if it is lost in a crash, recovery
// finds the same leases expired and fails them again). Messages it
// dead-letters reach the DLQ once the move is durable.
func (q *queueActor) failExpired(ctx actor.Context, ms []*message, now time.Time, what string) {
	if len(ms) == 0 {
		return
	}
	var b storage.Batch
	var moved []movedMessage
	var dlq *QueueRef
	for _, m := range ms {
		f := q.fail(&b, m, true, "", now)
		q.countFailure(f)
		q.applyFailure(ctx, m, f)
		if f.outcome == deadLetter {
			moved, dlq = append(moved, movedMessage{id: m.id, rec: f.rec}), f.dlq
		}
	}
	q.count(telemetry.Expired, int64(len(ms)))
	logFailure, system := q.logFailure(ctx, what), ctx.ActorSystem()
	q.deps.store.Defer(&b, func(err error) {
		logFailure(err)
		if err == nil && dlq != nil {
			handOver(system, dlq.PID, moved)
		}
	})
}

// armTimer makes sure a timerTick arrives when the earliest lease expires,
// the earliest delayed message is due, or a throttled message's bucket
// refills.
func (q *queueActor) armTimer(ctx actor.Context) {
	at := q.throttledUntil
	for _, h := range []*expiryHeap{&q.expiries, &q.delays} {
		if h.len() > 0 && (at.IsZero() || h.peek().at.Before(at)) {
			at = h.peek().at
		}
	}
	if at.IsZero() {
		return
	}
	if !q.timerAt.IsZero() && !q.timerAt.After(at) {
		return // a tick is already due no later
	}
	if q.timer != nil {
		q.timer.Stop()
	}
	q.timerAt = at
	self, system := ctx.Self(), ctx.ActorSystem()
	q.timer = time.AfterFunc(time.Until(at), func() { system.Root.Send(self, &timerTick{}) })
}

// heldLease returns the message id's current lease if leaseID (when given)
// names it, or the error a settle or extend of it gets.
func (q *queueActor) heldLease(id, leaseID string) (*message, error) {
	m := q.msgs[id]
	switch {
	case m == nil:
		return nil, fmt.Errorf("%w: message_id %s", ErrNotLeased, id)
	case leaseID != "" && (m.state != stateLeased && m.state != stateSettling || m.leaseID != leaseID):
		return nil, fmt.Errorf("%w: lease_id %s of message_id %s is no longer held", ErrLeaseExpired, leaseID, id)
	case m.state != stateLeased:
		return nil, fmt.Errorf("%w: message_id %s", ErrNotLeased, id)
	}
	return m, nil
}

// extend moves a held lease's expiry; the reply waits for the new lease
// record to be durable, so a restart keeps the extension.
func (q *queueActor) extend(ctx actor.Context, req *Extend) {
	if req.LeaseID == "" {
		ctx.Respond(&ExtendReply{Err: fmt.Errorf("%w: lease_id: must not be empty (only a lease's holder may extend it)", ErrInvalid)})
		return
	}
	m, err := q.heldLease(req.ID, req.LeaseID)
	if err != nil {
		ctx.Respond(&ExtendReply{Err: err})
		return
	}
	timeout := cmp.Or(req.Timeout, q.cfg.VisibilityTimeout)
	expires := time.Now().Add(timeout)
	rec := m.leaseRecord()
	rec.ExpiresAtUnixMs = expires.UnixMilli()
	var b storage.Batch
	b.PutLease(q.cfg.Name, m.id, rec)
	d := &extendDone{id: m.id, leaseID: m.leaseID, expiresAt: expires, epoch: q.epoch, sender: ctx.Sender()}
	q.submit(ctx, telemetry.ExtractHeaders(context.Background(), ctx.MessageHeader()), &b, func(err error) any {
		d.err = err
		return d
	})
}

func (q *queueActor) extended(ctx actor.Context, d *extendDone) {
	if unknownOutcome(d.err) {
		ctx.Send(d.sender, &ExtendReply{Err: ErrOutcomeUnknown})
		if d.epoch == q.epoch {
			q.reload(ctx)
		}
		return
	}
	if d.err != nil {
		ctx.Send(d.sender, &ExtendReply{Err: fmt.Errorf("%w: %w", ErrStorage, d.err)})
		return
	}
	m := q.msgs[d.id]
	if m == nil || (m.state != stateLeased && m.state != stateSettling) || m.leaseID != d.leaseID {
		// Settled or expired while the write was on its way: the extension
		// came too late, and the record it wrote is stale (a lease record
		// without its lease is dropped on recovery).
		ctx.Send(d.sender, &ExtendReply{Err: fmt.Errorf("%w: lease_id %s of message_id %s", ErrLeaseExpired, d.leaseID, d.id)})
		return
	}
	if d.expiresAt.Before(m.expiresAt) {
		// Shortened: the entry already queued would fire too late.
		q.expiries.push(expiry{at: d.expiresAt, id: m.id, gen: m.leaseGen})
		q.armTimer(ctx)
	}
	m.expiresAt = d.expiresAt
	ctx.Send(d.sender, &ExtendReply{ExpiresAt: d.expiresAt})
}

// leaseRecord is what storage keeps of m's current lease.
func (m *message) leaseRecord() *storagev1.LeaseRecord {
	return &storagev1.LeaseRecord{
		ExpiresAtUnixMs: m.expiresAt.UnixMilli(),
		LeasedAtUnixNs:  m.leasedAt.UnixNano(),
		LeaseId:         m.leaseID,
	}
}

// leaseIDs makes lease tokens: a random prefix per actor incarnation and a
// counter, so tokens never repeat across restarts and cost no syscall each.
type leaseIDs struct {
	prefix string
	n      uint64
}

func newLeaseIDs() leaseIDs {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return leaseIDs{prefix: hex.EncodeToString(b[:]) + "-"}
}

func (l *leaseIDs) next() string {
	l.n++
	return l.prefix + strconv.FormatUint(l.n, 36)
}
