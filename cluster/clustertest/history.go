package clustertest

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Kind is what an operation did.
type Kind int

const (
	// Enqueue sent a message whose payload is its ID.
	Enqueue Kind = iota + 1
	// Deliver is a message as a consumer (or the drain) received it, with
	// its lease token.
	Deliver
	// Ack settled a delivery by its lease token.
	Ack
	// DrainEnd marks the end of the final drain: every message still in the
	// broker has been delivered to the drain, which holds it still. It has
	// no ID.
	DrainEnd
)

func (k Kind) String() string {
	switch k {
	case Enqueue:
		return "enqueue"
	case Deliver:
		return "deliver"
	case Ack:
		return "ack"
	case DrainEnd:
		return "drain-end"
	}
	return "kind?"
}

// Outcome is what the client knows about an operation's effect.
type Outcome int

const (
	// OK: the broker answered success; the effect happened.
	OK Outcome = iota + 1
	// Failed: the broker answered a definite error; the effect did not happen.
	Failed
	// Unknown: no answer the client can trust (a timeout, UNAVAILABLE, a
	// connection lost after the request was sent); the effect may or may
	// not have happened, now or later.
	Unknown
)

func (o Outcome) String() string {
	switch o {
	case OK:
		return "ok"
	case Failed:
		return "failed"
	case Unknown:
		return "unknown"
	}
	return "outcome?"
}

// OutcomeOf classifies a call's error. Only codes with which filad refuses
// a request before changing anything are Failed; everything else, a
// transport error above all, is Unknown, because the request may have been
// applied and its answer lost.
func OutcomeOf(err error) Outcome {
	if err == nil {
		return OK
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return Unknown
	}
	s, ok := status.FromError(err)
	if !ok {
		return Unknown
	}
	switch s.Code() {
	case codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.PermissionDenied,
		codes.Unauthenticated, codes.FailedPrecondition, codes.OutOfRange, codes.Unimplemented,
		codes.ResourceExhausted:
		return Failed
	default: // Unavailable, DeadlineExceeded, Canceled, Aborted, Internal, Unknown, DataLoss
		return Unknown
	}
}

// Open is the return time of an operation whose outcome is unknown: it may
// take effect at any time after its call, so it is open to the end.
const Open int64 = math.MaxInt64 / 2

// Op is one recorded operation. Times are nanoseconds on the Unix clock of
// the machine that runs the test and the nodes (see History.Now).
type Op struct {
	Kind Kind
	// ID is the client-chosen message id (the payload); empty for DrainEnd.
	ID string
	// Token is the lease token of a Deliver or Ack.
	Token string
	// MessageID is the broker's id of the message, for Deliver and Ack.
	MessageID string
	// Client is the recording worker (producers, consumers and the drain
	// number themselves); porcupine's visualisation groups by it.
	Client int
	// Call and Return bound when the effect happened. A Deliver's Call is
	// when its lease was taken (see DeliverCall); an Unknown op's Return is
	// Open.
	Call, Return int64
	Outcome      Outcome
	// Drain marks a Deliver to the final drain.
	Drain bool
}

// History records operations from many goroutines.
type History struct {
	mu     sync.Mutex
	ops    []Op
	counts map[[2]int]int // by kind and outcome
	// t0 anchors Now: monotonic time since t0, on t0's Unix clock, so a
	// wall-clock step during the run does not reorder the client's events.
	t0 time.Time
}

// NewHistory starts an empty history.
func NewHistory() *History { return &History{t0: time.Now(), counts: map[[2]int]int{}} }

// Now is the current time, in the nanoseconds Op uses.
func (h *History) Now() int64 { return h.t0.UnixNano() + int64(time.Since(h.t0)) }

// Add records op; an Unknown op's Return is set to Open.
func (h *History) Add(op Op) {
	if op.Outcome == Unknown {
		op.Return = Open
	}
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.counts[[2]int{int(op.Kind), int(op.Outcome)}]++
	h.mu.Unlock()
}

// Count is how many ops of kind with outcome were recorded so far.
func (h *History) Count(kind Kind, outcome Outcome) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.counts[[2]int{int(kind), int(outcome)}]
}

// Ops returns a copy of what was recorded.
func (h *History) Ops() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Op(nil), h.ops...)
}

// DeliverCall is the earliest moment a delivery's lease can have been
// taken: the broker's leased_at, but never before the stream was opened
// (no lease is taken for a stream that does not exist) nor after the
// client received it. Using the broker's clock is what lets the checker
// tell a message leased before an ack (and only read after it from the
// stream's buffer, which is correct) from one leased after it (a
// resurrection); it assumes the nodes and the test share one clock, as
// processes on one machine do.
func DeliverCall(leasedAt time.Time, streamOpened, received int64) int64 {
	c := leasedAt.UnixNano()
	if leasedAt.IsZero() || c < streamOpened {
		c = streamOpened
	}
	return min(c, received)
}
