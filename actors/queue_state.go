package actors

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fila-dev/filad/storage"
)

// A message's life in its queue actor is a small state machine, and
// transition is the one place that changes a message's state: it keeps the
// DRR, the delay and expiry heaps, the per-state counts, the holdings and
// the consumers' credit in step with it. docs/architecture.md ("Message
// states and their transitions") has the table.

// msgState is where a message is in its queue.
type msgState uint8

const (
	// stateNew: not yet in the queue's memory (being enqueued, adopted from
	// another queue, or read by load).
	stateNew msgState = iota
	// stateReady: in the DRR, waiting for a consumer.
	stateReady
	// stateDelayed: in the delay heap until readyAt (retry backoff or
	// fila-delay-ms).
	stateDelayed
	// stateLeased: delivered to a consumer; an expiry entry ends the lease.
	stateLeased
	// stateSettling: still leased (in flight, its consumer's credit held),
	// while its ack or nack is being written; neither an expiry nor another
	// settle touches it.
	stateSettling
	// stateMoving: taken out of ready or delayed while a purge or redrive
	// of it is being written; nothing delivers it.
	stateMoving
	// stateGone: acked, dropped, dead-lettered, purged or redriven: no
	// longer in the queue's memory. Terminal.
	stateGone
	stateCount
)

// String names the state, as invariant failures report it.
func (s msgState) String() string {
	return [...]string{"new", "ready", "delayed", "leased", "settling", "moving", "gone"}[s]
}

// transitions is the table transition enforces: transitions[from][to].
var transitions = [stateCount][stateCount]bool{
	// load, enqueue, adopt
	stateNew: {stateReady: true, stateDelayed: true, stateLeased: true},
	// dispatch; purge or redrive
	stateReady: {stateLeased: true, stateMoving: true},
	// due; purge or redrive
	stateDelayed: {stateReady: true, stateMoving: true},
	// ack or nack begins; expiry or an unsent delivery back (ready or
	// delayed by the failure rules, or gone to the DLQ or dropped); a settle
	// of an earlier incarnation that committed
	stateLeased: {stateSettling: true, stateReady: true, stateDelayed: true, stateGone: true},
	// its write failed: the lease stands; committed: an ack is gone, a nack
	// is ready, delayed or gone by the failure rules
	stateSettling: {stateLeased: true, stateReady: true, stateDelayed: true, stateGone: true},
	// its write failed: back where it was; committed: gone
	stateMoving: {stateReady: true, stateDelayed: true, stateGone: true},
}

// resident reports whether a message in state s is in q.msgs.
func (s msgState) resident() bool { return s != stateNew && s != stateGone }

// transition moves m to state to. What it needs beyond the state is set on
// m first: its lease (applyLease) for stateLeased from ready or new, which
// it drops when the message leaves leased and settling, readyAt for stateDelayed, idx
// for a new or requeued record. A message leaves stateReady only by being
// taken out of the DRR (dispatch's pop, a move's removeFrom) just before.
//
// It costs O(1) and allocates nothing but the DRR's and heaps' amortised
// growth.
func (q *queueActor) transition(m *message, to msgState) {
	from := m.state
	if !transitions[from][to] {
		panic(fmt.Sprintf("actors: message %s of queue %s: no transition from %s to %s", m.id, q.cfg.Name, from, to))
	}
	switch from {
	case stateNew:
		q.msgs[m.id] = m
		q.held.add(uint64(m.idx.PayloadBytes))
	case stateDelayed:
		m.readyAt = 0 // its heap entry goes stale
	case stateLeased, stateSettling:
		if to != stateLeased && to != stateSettling {
			q.release(m)
			m.lease = nil
		}
	}
	if from.resident() {
		q.inState[from]--
	}
	m.state = to
	if to.resident() {
		q.inState[to]++
	}
	switch to {
	case stateReady:
		// A new message (or one recovered in enqueue order), or a delayed
		// one due on its first attempt, that carries a weight sets its
		// key's weight; a requeued one is not news and leaves it alone.
		weight := int64(0)
		if from == stateNew || (from == stateDelayed && m.idx.AttemptCount == 0) {
			weight = int64(m.idx.Weight)
		}
		q.ready.push(m.idx.FairnessKey, weight, m)
	case stateDelayed:
		q.delays.push(expiry{at: m.readyTime(), id: m.id})
	case stateLeased:
		// Back from settling too: the entry queued for this lease may have
		// been passed over while it was settling. A second entry of the same
		// lease is harmless: the first to fire ends it, the other is stale.
		q.expiries.push(expiry{at: m.expiresAt, id: m.id, gen: m.leaseGen})
	case stateGone:
		q.held.remove(uint64(m.idx.PayloadBytes))
		q.deps.cache.remove(q.cacheScope, m.id)
		delete(q.msgs, m.id)
		if len(q.msgs) == 0 {
			// Go maps never shrink: after a burst, a drained queue would
			// keep the burst's buckets for good.
			q.msgs = make(map[string]*message)
		}
	}
}

// release ends m's lease and gives its consumer the slot back.
func (q *queueActor) release(m *message) {
	for _, s := range q.consumers {
		if s.c.id == m.consumer {
			s.credit++
			break
		}
	}
	m.consumer = 0
}

// inFlight is how many messages are leased, settling included.
func (q *queueActor) inFlight() int { return q.inState[stateLeased] + q.inState[stateSettling] }

// applyMessage makes a stored message's index record part of the queue:
// ready, or delayed when its ready_at is after now. It is the one apply of
// a message record, whether load read it, an enqueue or a failed
// delivery's retry committed it, or another queue's move brought it here.
// It reports whether m is delayed (the caller then arms the timer).
func (q *queueActor) applyMessage(m *message, idx storage.Index, now time.Time) (delayed bool) {
	m.idx = idx
	if at := idx.ReadyAtUnixMs; at > 0 {
		if readyAt := time.UnixMilli(at); readyAt.After(now) {
			m.readyAt = readyAt.UnixNano()
			q.transition(m, stateDelayed)
			return true
		}
	}
	q.transition(m, stateReady)
	return false
}

// applyLease makes m leased until expiresAt, with the lease's token, to
// consumer, which it takes a credit of; the one apply of a lease, whether
// load read its record (consumer nil: nobody holds it until it expires or
// is settled) or dispatch decided it. release gives the credit back.
func (q *queueActor) applyLease(m *message, leasedAt, expiresAt time.Time, leaseID string, consumer *consumerSlot) {
	q.leaseGens++
	m.lease = &lease{leaseGen: q.leaseGens, leasedAt: leasedAt, expiresAt: expiresAt, leaseID: leaseID}
	if consumer != nil {
		m.consumer = consumer.c.id
		consumer.credit--
	}
	q.transition(m, stateLeased)
}

// checkEachStep, when set (by the package's tests, before any actor
// starts), is called after every message a queue actor handles with the
// result of its checkInvariants.
var checkEachStep func(queue string, msg any, err error)

// fullCheckSize bounds the queues checkStep checks in full at every step;
// a larger one is checked in full every size/fullCheckSize steps, so that
// a test of 10,000 messages costs about fullCheckSize per step, not O(n²).
const fullCheckSize = 1000

// checkStep is checkInvariants after a step, at a bounded cost: the counts
// always, everything as often as the queue's size allows.
func (q *queueActor) checkStep() error {
	q.steps++
	size := len(q.msgs) + q.expiries.len() + q.delays.len()
	if size <= fullCheckSize || q.steps%(size/fullCheckSize+1) == 0 {
		return q.checkInvariants()
	}
	n := 0
	for _, c := range q.inState {
		n += c
	}
	if n != len(q.msgs) || q.ready.len() != q.inState[stateReady] {
		return fmt.Errorf("%d messages, %d counted by state %v; the DRR holds %d", len(q.msgs), n, q.inState, q.ready.len())
	}
	return nil
}

// checkInvariants reports the first way the queue's memory disagrees with
// itself: the per-state counts against the messages' states, a lease
// held by exactly the leased and settling ones, the holdings against the
// messages, the DRR against the ready messages, the heaps against the
// delayed and leased ones, and each consumer's credit against its leases. It costs O(messages + heap entries): tests only.
func (q *queueActor) checkInvariants() error {
	var counts [stateCount]int
	var held holdings
	leasedTo := map[uint64]int{}
	for id, m := range q.msgs {
		if m.id != id || !m.state.resident() {
			return fmt.Errorf("message %s (key %s) in state %s", m.id, id, m.state)
		}
		counts[m.state]++
		held.add(uint64(m.idx.PayloadBytes))
		if m.state == stateLeased || m.state == stateSettling {
			leasedTo[m.consumer]++
		}
		if leased := m.state == stateLeased || m.state == stateSettling; leased != (m.lease != nil) {
			return fmt.Errorf("message %s in state %s has lease %+v", m.id, m.state, m.lease)
		}
		if (m.state == stateDelayed) == (m.readyAt == 0) {
			return fmt.Errorf("message %s in state %s has readyAt %v", m.id, m.state, m.readyAt)
		}
	}
	if counts != q.inState {
		return fmt.Errorf("per-state counts %v, kept %v", counts, q.inState)
	}
	if held != q.held {
		return fmt.Errorf("holdings of the messages %+v, kept %+v", held, q.held)
	}
	inDRR := 0
	var bad error
	q.ready.forEach(func(m *message) {
		inDRR++
		if bad == nil && (q.msgs[m.id] != m || m.state != stateReady) {
			bad = fmt.Errorf("the DRR holds message %s in state %s", m.id, m.state)
		}
	})
	if bad != nil {
		return bad
	}
	if inDRR != q.ready.len() || inDRR != counts[stateReady] {
		return fmt.Errorf("the DRR holds %d messages and counts %d; %d are ready", inDRR, q.ready.len(), counts[stateReady])
	}
	due := map[string]bool{}
	for _, e := range q.delays.items {
		if m := q.msgs[e.id]; m != nil && m.state == stateDelayed && m.readyTime().Equal(e.at) {
			due[e.id] = true
		}
	}
	if len(due) != counts[stateDelayed] {
		return fmt.Errorf("%d delayed messages, %d of them in the delay heap", counts[stateDelayed], len(due))
	}
	clear(due)
	for _, e := range q.expiries.items {
		if m := q.msgs[e.id]; m != nil && m.state == stateLeased && m.leaseGen == e.gen && !e.at.After(m.expiresAt) {
			due[e.id] = true
		}
	}
	if len(due) != counts[stateLeased] {
		return fmt.Errorf("%d leased messages, %d of them with an expiry entry", counts[stateLeased], len(due))
	}
	for _, s := range q.consumers {
		if s.credit+leasedTo[s.c.id] != s.c.MaxInFlight {
			return fmt.Errorf("consumer %d: credit %d and %d leases; its maximum is %d", s.c.id, s.credit, leasedTo[s.c.id], s.c.MaxInFlight)
		}
	}
	return nil
}

// ErrOutcomeUnknown answers a request whose write the store could not say
// was done or not (storage.ErrOutcomeUnknown): it may have been applied. The
// queue has reloaded its state from the store; the caller may retry, and an
// enqueue retried may then be stored twice. It matches
// storage.ErrOutcomeUnknown and ErrShuttingDown, so that the gateway
// answers UNAVAILABLE (the client retries) without a case of its own.
var ErrOutcomeUnknown error = outcomeUnknownError{}

type outcomeUnknownError struct{}

func (outcomeUnknownError) Error() string {
	return "write outcome unknown: it may or may not have been applied; the queue reloaded from storage"
}

func (outcomeUnknownError) Is(target error) bool {
	return target == ErrShuttingDown || target == storage.ErrOutcomeUnknown
}

// unknownOutcome reports whether a completion's err leaves its write's
// fate unknown.
func unknownOutcome(err error) bool { return err != nil && errors.Is(err, storage.ErrOutcomeUnknown) }

// writeUnknown: a write nobody waits on (leases, expiries) completed with
// an unknown outcome in epoch.
type writeUnknown struct{ epoch uint64 }

// reload drops the queue's memory and loads it again from the store: what
// a queue actor does when a write of its epoch has an unknown outcome,
// instead of rolling memory back. Its consumers end as at a restart (their
// streams subscribe again); the completions still on their way belong to
// the old epoch and change memory only as far as the store says.
func (q *queueActor) reload(ctx actor.Context) {
	q.deps.log.Warn("a write's outcome is unknown; reloading the queue from storage", slog.String("queue_id", q.cfg.Name))
	q.sendReading(ctx) // counts not yet reported survive the reload
	q.endConsumers(errRestarted)
	for _, m := range q.msgs {
		if m.state == stateLeased || m.state == stateSettling {
			endDelivery(m, "reloaded")
		}
	}
	if q.timer != nil {
		q.timer.Stop()
	}
	q.timer, q.timerAt, q.throttledUntil = nil, time.Time{}, time.Time{}
	q.msgs, q.ready, q.inState = make(map[string]*message), newDRR[*message](q.deps.quantum), [stateCount]int{}
	q.expiries, q.delays = expiryHeap{}, expiryHeap{}
	q.held, q.reserved = holdings{}, holdings{}
	q.oldest.at, q.oldest.enqueued = time.Time{}, 0
	q.load(ctx)
}
