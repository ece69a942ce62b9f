package actors

import (
	"context"
	"sync/atomic"
	"time"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
)

// Delivery is one leased message on its way to a consumer stream. Its
// fields are read-only once sent: the record is shared with the queue actor,
// which never mutates a record in place.
type Delivery struct {
	Queue     string
	ID        string
	LeaseID   string
	Record    *storagev1.MessageRecord
	LeasedAt  time.Time
	ExpiresAt time.Time
	// Written, when not nil (in a cluster), is the write of the lease
	// record: the stream must not send the message before it is durable
	// (Written.Wait). A partition leader deposed without knowing it would
	// otherwise deliver from stale state a message the new leader already
	// saw acked. On a single node it is nil: the lease is written
	// deferred, and a crash at worst redelivers.
	Written *LeaseWrite
}

// LeaseWrite is the outcome of one dispatch's lease write, shared by its
// deliveries.
type LeaseWrite struct {
	done chan struct{}
	err  error
}

func newLeaseWrite() *LeaseWrite { return &LeaseWrite{done: make(chan struct{})} }

// finish records the write's outcome; called once.
func (w *LeaseWrite) finish(err error) {
	w.err = err
	close(w.done)
}

// Wait returns once the lease write is durable (nil), failed (its
// error: the delivery must not be sent), or ctx ended.
func (w *LeaseWrite) Wait(ctx context.Context) error {
	if w == nil {
		return nil
	}
	select {
	case <-w.done:
		return w.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

var consumerIDs atomic.Uint64

// Consumer is one lease stream's mailbox for deliveries. The queue actor
// delivers to it only while it has fewer than MaxInFlight unsettled
// messages and room in its small buffer, so a push never blocks, a slow
// consumer holds at most MaxInFlight without slowing anyone else, and a
// stream that stops reading holds at most its buffer (plus what its
// transport window took) while the other consumers get the rest.
type Consumer struct {
	id uint64
	// MaxInFlight is the most messages leased to it and not yet settled.
	MaxInFlight int
	// Deliveries receives leased messages; its capacity is the buffer size.
	Deliveries chan *Delivery
	// Done is closed when the queue actor ends this consumer; Err says why.
	done chan struct{}
	err  error
	// Gone, when set, is closed once the consumer's stream has ended (its
	// context's Done): the queue delivers nothing more to it, even before
	// its Unsubscribe arrives.
	Gone <-chan struct{}
}

// gone reports whether the consumer's stream has ended.
func (c *Consumer) gone() bool {
	select {
	case <-c.Gone:
		return true
	default:
		return false
	}
}

// DeliveryBuffer is the most deliveries waiting for one stream to send
// them. Before it existed the buffer was max_in_flight deep, and 200
// streams that never read held 19,874 of 20,000 messages until their
// leases expired.
const DeliveryBuffer = 8

// MaxFrameBuffer bounds the buffer of a consumer that asks for frames: a
// stream that asks for max_batch 1000 and never reads must not hold 1000
// messages (the non-reading-stream bug again); frames larger than this are
// assembled from what arrives while the stream sends.
const MaxFrameBuffer = 64

// NewConsumer returns a consumer that may hold maxInFlight unsettled
// messages and is sent frames of up to maxBatch; its buffer holds a frame's
// worth, at least DeliveryBuffer and at most MaxFrameBuffer.
func NewConsumer(maxInFlight, maxBatch int) *Consumer {
	maxInFlight = max(maxInFlight, 1)
	return &Consumer{
		id:          consumerIDs.Add(1),
		MaxInFlight: maxInFlight,
		Deliveries:  make(chan *Delivery, min(maxInFlight, max(DeliveryBuffer, min(maxBatch, MaxFrameBuffer)))),
		done:        make(chan struct{}),
	}
}

// ID identifies the consumer in Unsubscribe messages.
func (c *Consumer) ID() uint64 { return c.id }

// Done is closed when the queue actor has ended the consumer.
func (c *Consumer) Done() <-chan struct{} { return c.done }

// Err says why the consumer was ended; valid once Done is closed.
// ErrQueueNotFound: the queue was deleted; ErrShuttingDown: the broker is
// stopping; IsRestart(err): subscribe again.
func (c *Consumer) Err() error { return c.err }

// IsRestart reports whether err ended a consumer because its queue actor was
// restarted by its supervisor; the stream should subscribe again.
func IsRestart(err error) bool { return err == errRestarted }

// end is called once, by the owning queue actor.
func (c *Consumer) end(err error) {
	c.err = err
	close(c.done)
}
