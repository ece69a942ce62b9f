package actors

import (
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fila-dev/filad/protocol"
	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry"
)

// Failure handling: what happens to a message whose delivery ended without
// an ack (a nack, a lease that expired, or one found expired on recovery),
// and the delays that hold a message back (retry backoff, fila-delay-ms).
// docs/failures.md is the operator's account of the same rules.

// Failure-handling rules.
const (
	// DLQSuffix ends the name of a dead-letter queue: "orders.dlq" is the
	// DLQ of "orders". A DLQ has no DLQ of its own.
	DLQSuffix = ".dlq"
	// DelayHeader holds a producer's enqueue delay in milliseconds.
	DelayHeader = "fila-delay-ms"
	// MaxDelay bounds fila-delay-ms and every retry backoff.
	MaxDelay = protocol.MaxDelay
	// MaxAttemptsLimit is the largest max_attempts a queue may have.
	MaxAttemptsLimit = 10_000
	// The headers a dead-lettered message gets: its source queue, how many
	// deliveries it had, why the last one failed ("nack" or "expired"), and
	// the last nack's error, clipped to MaxDLQErrorBytes.
	HeaderDLQSource   = "fila-dlq-source-queue"
	HeaderDLQAttempts = "fila-dlq-attempts"
	HeaderDLQReason   = "fila-dlq-reason"
	HeaderDLQError    = "fila-dlq-error"
	MaxDLQErrorBytes  = 1024
)

// DLQName is the name of queue's dead-letter queue.
func DLQName(queue string) string { return queue + DLQSuffix }

// IsDLQ reports whether queue is a dead-letter queue by its name.
func IsDLQ(queue string) bool { return strings.HasSuffix(queue, DLQSuffix) }

// Backoff is an exponential retry delay. The zero value retries at once.
type Backoff struct {
	// Initial is the first retry's delay; 0 turns backoff off.
	Initial time.Duration
	// Max caps the delay; 0 means Initial × Multiplier^9.
	Max time.Duration
	// Multiplier grows the delay per attempt, from 1 to 10; 0 means 2.
	Multiplier float64
}

// DefaultBackoffMultiplier is Backoff.Multiplier when it is 0.
const DefaultBackoffMultiplier = 2

// Delay is how long the retry after the attempt-th failed delivery waits:
// min(Initial × Multiplier^(attempt−1), Max), never over MaxDelay.
func (b Backoff) Delay(attempt uint32) time.Duration {
	if b.Initial <= 0 {
		return 0
	}
	mult := b.Multiplier
	if mult == 0 {
		mult = DefaultBackoffMultiplier
	}
	limit := b.Max
	if limit == 0 {
		limit = time.Duration(float64(b.Initial) * math.Pow(mult, 9))
	}
	limit = min(limit, MaxDelay)
	d := float64(b.Initial) * math.Pow(mult, float64(max(attempt, 1)-1))
	if d >= float64(limit) { // also catches +Inf for large attempts
		return limit
	}
	return time.Duration(d)
}

// outcome is what a failed delivery leads to.
type outcome int

const (
	retryNow   outcome = iota // ready again at once
	retryLater                // delayed by the backoff
	deadLetter                // moved to the DLQ
	drop                      // deleted: max_attempts with dead_letter off
)

// failure is a failed delivery's fate, decided and written by fail and
// installed by applyFailure.
type failure struct {
	outcome outcome
	// idx is a retried message's new index record in this queue; rec, a
	// dead-lettered one's whole record in the DLQ.
	idx storage.Index
	rec *storagev1.MessageRecord
	// dlq receives a dead-lettered message.
	dlq *QueueRef
}

// fail is the one way a delivery ends unsettled: it decides what becomes
// of m — by the queue's on_failure script when it has one that answers,
// else by its max_attempts, retry_backoff and dead_letter — writes that
// into b (dropping m's lease), and returns it for applyFailure, which the
// caller runs once that is safe. expired says the lease ran out; errText is
// a nack's reason.
func (q *queueActor) fail(b *storage.Batch, m *message, expired bool, errText string, now time.Time) failure {
	attempts := m.idx.AttemptCount + 1 // deliveries so far
	if res, ok := q.scriptFailure(m, attempts, errText); ok {
		if res.DeadLetter {
			if f, done := q.endLife(b, m, attempts, expired, errText); done {
				return f
			}
		}
		return q.retry(b, m, res.Delay, now)
	}
	if q.cfg.MaxAttempts > 0 && attempts >= q.cfg.MaxAttempts {
		if f, done := q.endLife(b, m, attempts, expired, errText); done {
			return f
		}
	}
	return q.retry(b, m, q.cfg.Backoff.Delay(attempts), now)
}

// endLife moves m to the queue's DLQ, or deletes it when dead_letter is off
// or the queue is a DLQ itself. done is false when the DLQ is missing
// (being deleted and re-created): the message then retries rather than
// being lost.
func (q *queueActor) endLife(b *storage.Batch, m *message, attempts uint32, expired bool, errText string) (f failure, done bool) {
	if !q.cfg.DeadLetter || IsDLQ(q.cfg.Name) {
		b.DeleteSettled(q.cfg.Name, m.id)
		return failure{outcome: drop}, true
	}
	dlq := q.deps.dir.Lookup(DLQName(q.cfg.Name))
	if dlq == nil {
		return failure{}, false
	}
	body, err := q.body(m)
	if err != nil {
		// Its headers and payload are unreadable now: it retries rather
		// than being lost or dead-lettered without them.
		q.deps.log.Error("message not dead-lettered: its record could not be read; it retries", slog.String("queue_id", q.cfg.Name),
			slog.String("msg_id", m.id), slog.Any("error", err))
		return failure{}, false
	}
	rec := deadLetterRecord(body, q.cfg.Name, attempts, expired, errText)
	b.MoveMessage(q.cfg.Name, DLQName(q.cfg.Name), m.id, rec)
	return failure{outcome: deadLetter, rec: rec, dlq: dlq}, true
}

// retry writes m back with attempt_count + 1, ready after delay: its
// index record alone, as its headers and payload stay as they are.
func (q *queueActor) retry(b *storage.Batch, m *message, delay time.Duration, now time.Time) failure {
	f := failure{outcome: retryNow, idx: nextAttempt(m.idx)}
	if delay > 0 {
		f.idx.ReadyAtUnixMs = readyAtMillis(now.Add(min(delay, MaxDelay)))
		f.outcome = retryLater
	}
	b.PutIndex(q.cfg.Name, m.id, f.idx)
	b.DeleteLease(q.cfg.Name, m.id)
	return f
}

// applyFailure installs what fail decided, in memory: m is ready, delayed,
// or gone from this queue. A dead-lettered message is handed to the DLQ by
// the caller once the move is durable (handOver). It records nothing: the
// caller counts the outcome (countFailure).
func (q *queueActor) applyFailure(ctx actor.Context, m *message, f failure) {
	switch f.outcome {
	case retryNow, retryLater:
		if q.applyMessage(m, f.idx, time.Now()) {
			q.armTimer(ctx)
		}
	case deadLetter, drop:
		q.transition(m, stateGone)
	}
}

// countFailure counts a failed delivery's end in the queue's reading.
func (q *queueActor) countFailure(f failure) {
	if f.outcome == deadLetter || f.outcome == drop {
		q.count(telemetry.DeadLettered, 1)
	}
}

// deadLetterRecord is rec as the DLQ stores it: the same headers, payload,
// key and creation context, attempts starting again from 0, plus the
// headers saying where it came from and why.
func deadLetterRecord(rec *storagev1.MessageRecord, source string, attempts uint32, expired bool, errText string) *storagev1.MessageRecord {
	headers := make(map[string]string, len(rec.GetHeaders())+4)
	for k, v := range rec.GetHeaders() {
		headers[k] = v
	}
	headers[HeaderDLQSource] = source
	headers[HeaderDLQAttempts] = strconv.FormatUint(uint64(attempts), 10)
	if expired {
		headers[HeaderDLQReason] = "expired"
		delete(headers, HeaderDLQError)
	} else {
		headers[HeaderDLQReason] = "nack"
		headers[HeaderDLQError] = clip(errText, MaxDLQErrorBytes)
	}
	out := withAttempt(rec)
	out.Headers, out.AttemptCount, out.ReadyAtUnixMs = headers, 0, 0
	return out
}

// redriveRecord is a DLQ's rec as its source queue stores it again: the
// dead-letter headers gone, attempts from 0, ready at once.
func redriveRecord(rec *storagev1.MessageRecord) *storagev1.MessageRecord {
	headers := make(map[string]string, len(rec.GetHeaders()))
	for k, v := range rec.GetHeaders() {
		switch k {
		case HeaderDLQSource, HeaderDLQAttempts, HeaderDLQReason, HeaderDLQError:
		default:
			headers[k] = v
		}
	}
	out := withAttempt(rec)
	out.Headers, out.AttemptCount, out.ReadyAtUnixMs = headers, 0, 0
	return out
}

// handOver sends the messages another queue's write moved into (the DLQ,
// or a redrive's source), once that write is durable. Called on the
// committer's goroutine: it touches nothing of the actor's.
func handOver(system *actor.ActorSystem, to *actor.PID, moved []movedMessage) {
	if len(moved) > 0 {
		system.Root.Send(to, &adopt{msgs: moved})
	}
}

// adopted takes in messages another queue's durable write moved here.
func (q *queueActor) adopted(ctx actor.Context, msgs []movedMessage) {
	n, delayed, now := 0, false, time.Now()
	for _, mm := range msgs {
		if _, known := q.msgs[mm.id]; known {
			continue // loaded from storage by a restart since the move
		}
		m := &message{id: mm.id}
		q.deps.cache.put(q.cacheScope, m.id, mm.rec)
		delayed = q.applyMessage(m, storage.IndexOf(mm.rec), now) || delayed
		n++
	}
	if delayed {
		q.armTimer(ctx)
	}
	if n > 0 {
		q.dispatch(ctx)
		q.changed(ctx)
	}
}

// promote makes every delayed message whose time has come ready.
func (q *queueActor) promote(now time.Time) {
	for q.delays.len() > 0 && !q.delays.peek().at.After(now) {
		e := q.delays.pop()
		m := q.msgs[e.id]
		if m == nil || m.state != stateDelayed || !m.readyTime().Equal(e.at) {
			continue // purged, redriven or moved since
		}
		q.transition(m, stateReady)
	}
}

// readyAtMillis is t in Unix milliseconds rounded up, as records store a
// ready time: a delay never ends early by the rounding.
func readyAtMillis(t time.Time) int64 {
	return (t.UnixNano() + int64(time.Millisecond) - 1) / int64(time.Millisecond)
}

// enqueueDelay parses a message's fila-delay-ms header: 0 when absent.
func enqueueDelay(headers map[string]string) (time.Duration, error) {
	v, ok := headers[DelayHeader]
	if !ok {
		return 0, nil
	}
	ms, err := strconv.ParseUint(v, 10, 64)
	if err != nil || ms > uint64(MaxDelay/time.Millisecond) {
		return 0, fmt.Errorf("%w: header %s must be an integer from 0 to %d (milliseconds)", ErrInvalid, DelayHeader, MaxDelay/time.Millisecond)
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// String names the outcome, as the settle span's messaging.fila.outcome.
func (o outcome) String() string {
	return [...]string{"retry", "retry_delayed", "dead_letter", "drop"}[o]
}
