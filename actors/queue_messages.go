package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.opentelemetry.io/otel/trace"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
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
	// Ack deletes a leased message. With LeaseID set, only that lease may
	// be acked: an expired or superseded one gets ErrLeaseExpired. Reply:
	// *SettleReply.
	Ack struct{ ID, LeaseID string }
	// Nack returns a leased message to ready with attempt_count + 1; LeaseID
	// as for Ack. Error is the consumer's reason, logged at DEBUG. Reply:
	// *SettleReply.
	Nack struct {
		ID, LeaseID string
		Error       string
	}
	// Extend sets a lease to expire Timeout from now (the queue's visibility
	// timeout when 0). LeaseID is required. Reply: *ExtendReply.
	Extend struct {
		ID, LeaseID string
		Timeout     time.Duration
	}
	// ExtendReply answers Extend once the new expiry is durable.
	ExtendReply struct {
		ExpiresAt time.Time
		Err       error
	}
	// SettleReply answers Ack and Nack once the change is durable.
	SettleReply struct{ Err error }
	// EnqueueBatch stores many messages in one commit; each is checked as
	// an Enqueue is, and a refused one fails alone, unless StopAtRefusal:
	// then every item after the first refused one is refused too, with
	// ErrNotAttempted, so a bulk load that stops there stores no message
	// after the one that failed. Reply: *EnqueueBatchReply.
	EnqueueBatch struct {
		Items         []*Enqueue
		StopAtRefusal bool
	}
	// EnqueueBatchReply answers EnqueueBatch, one result per item, in order.
	EnqueueBatchReply struct{ Results []EnqueueReply }
	// SettleBatch acks and nacks many leases in one commit. Reply:
	// *SettleBatchReply.
	SettleBatch struct{ Items []SettleItem }
	// SettleItem is one Ack (Nack false) or Nack of a SettleBatch.
	SettleItem struct {
		ID, LeaseID string
		Nack        bool
		Error       string
	}
	// SettleBatchReply answers SettleBatch, one error (nil: done) per item,
	// in order.
	SettleBatchReply struct{ Errs []error }
	// Subscribe adds a consumer. Reply: *SubscribeReply.
	Subscribe struct{ Consumer *Consumer }
	// SubscribeReply confirms a Subscribe; Queue is where Unsubscribe goes.
	SubscribeReply struct{ Queue *actor.PID }
	// Unsubscribe removes a consumer; the leases of what it sent stay until
	// they expire. Unsent are deliveries its stream took but could not send:
	// they come back at once, like what is still in its buffer.
	Unsubscribe struct {
		ConsumerID uint64
		Unsent     []*Delivery
	}
	// ConsumerReady tells the queue that a consumer's buffer, which was
	// full, has room again.
	ConsumerReady struct{}
	// GetStats asks for the queue's statistics. Reply: *QueueStats.
	GetStats struct{}
	// QueueStats is a queue's state now.
	QueueStats struct {
		Depth, InFlight, Delayed int64
		Config                   QueueConfig
		Consumers                int
		Quantum                  int64
		Keys                     []KeyStats
	}
	// KeyStats is one active fairness key.
	KeyStats struct {
		Key     string
		Pending int
		Deficit int64
		Weight  int64
	}
)

// Messages a queue actor sends itself or gets from the broker.
type (
	// configChanged: the broker replaced the queue's config cell.
	configChanged struct{}
	// endConsumers ends every consumer of the queue with err.
	endConsumers struct{ err error }
	// retire: the queue is deleted. The actor answers every request with
	// err from now on, and stops itself once nothing is left in its mailbox
	// and none of its writes is in flight; then it tells stopped.
	retire struct {
		err     error
		stopped *actor.PID
	}
	// enqueueDone, settleDone: a storage commit has finished.
	// Each carries the epoch of the incarnation that submitted it: only
	// that incarnation's memory reflects the write's decisions.
	enqueueDone struct {
		items  []*enqueueItem
		batch  bool // answer with an EnqueueBatchReply
		epoch  uint64
		sender *actor.PID
		err    error
	}
	extendDone struct {
		id, leaseID string
		expiresAt   time.Time
		epoch       uint64
		sender      *actor.PID
		err         error
	}
	settleDone struct {
		items  []*settleItem
		batch  bool // answer with a SettleBatchReply
		epoch  uint64
		sender *actor.PID
		err    error
	}
	// timerTick: the earliest lease expiry or delay may be due.
	timerTick struct{}
	// adopt: another queue's durable write moved these messages here (a
	// dead-lettering into a DLQ, or a redrive out of one).
	adopt struct{ msgs []movedMessage }
	// flushReading: report the queue's reading to the telemetry actor.
	flushReading struct{}
)

// movedMessage is a message as another queue's write stored it.
type movedMessage struct {
	id  string
	rec *storagev1.MessageRecord
}

// message is the queue actor's view of one stored message: its index
// entry, not its headers and payload, which are read from the message
// cache or the store when it is delivered (body). It is kept small (96
// bytes, issue 26): a ready message costs it, its id and its slots in the
// queue's map and DRR, and nothing else; what only a leased message needs
// is in its lease.
type message struct {
	id string
	// idx is what the queue schedules it by; a retry installs a new one.
	idx storage.Index
	// lease is the current lease, while the message is leased or
	// settling; nil in every other state. Its fields are promoted, so only
	// code that knows the message is leased reads them.
	*lease
	// readyAt is when a delayed message (retry backoff or fila-delay-ms)
	// becomes ready, in Unix nanoseconds; 0 in every other state.
	readyAt int64
	// state is where the message is in its life; only transition changes
	// it (queue_state.go).
	state msgState
	// throttled: a throttle held it back since it last passed one (it is
	// counted as held once).
	throttled bool
}

// lease is a leased message's lease.
type lease struct {
	// leaseGen tells this lease's expiry entries from older ones: unique
	// among the queue's leases (queueActor.leaseGens), and moved on when
	// an expiry ends the lease.
	leaseGen  uint64
	leaseID   string // the token, as the consumer has it
	leasedAt  time.Time
	expiresAt time.Time // Extend moves it
	consumer  uint64    // the consumer it is leased to; 0: none (recovered)
	// span is the delivery span; nil unless recorded.
	span trace.Span
}

// readyTime is m's readyAt as a time; zero unless m is delayed.
func (m *message) readyTime() time.Time {
	if m.readyAt == 0 {
		return time.Time{}
	}
	return time.Unix(0, m.readyAt)
}

// deliverySpan is m's delivery span, nil when it is not leased or its
// delivery is not recorded.
func (m *message) deliverySpan() trace.Span {
	if m == nil || m.lease == nil {
		return nil
	}
	return m.span
}
