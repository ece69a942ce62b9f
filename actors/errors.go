package actors

import (
	"errors"
	"fmt"
)

// Errors the actors reply with. The gateway maps each to a gRPC status code;
// wrap them with fmt.Errorf("%w") to add which field and which limit.
var (
	// ErrNotFound: the thing a request names (a queue, an API key) does
	// not exist. ErrQueueNotFound is one.
	ErrNotFound = errors.New("not found")
	// ErrQueueNotFound: the queue does not exist (or is being deleted).
	ErrQueueNotFound = fmt.Errorf("queue %w", ErrNotFound)
	// ErrExists: a create of something already there (a queue, an API
	// key). ErrQueueExists is one.
	ErrExists = errors.New("already exists")
	// ErrQueueExists: CreateQueue on a name already taken.
	ErrQueueExists = fmt.Errorf("queue %w", ErrExists)
	// ErrNotLeased: Ack or Nack of a message that is not leased in the queue now.
	ErrNotLeased = errors.New("message is not leased in this queue")
	// ErrLeaseExpired: Ack, Nack or Extend named a lease that has expired or
	// been superseded by a later delivery of the same message.
	ErrLeaseExpired = errors.New("lease expired")
	// ErrShuttingDown: the broker is stopping.
	ErrShuttingDown = errors.New("broker is shutting down")
	// ErrOverloaded: the queue's mailbox is full.
	ErrOverloaded = errors.New("queue is overloaded")
	// ErrLimit: a write would take a broker-wide store past a configured
	// limit (the runtime config store's keys or bytes, the API keys); the
	// wrapping error names the limit.
	ErrLimit = errors.New("limit reached")
	// ErrStorage: a durable write failed; nothing was applied.
	ErrStorage = errors.New("storage failure")
	// ErrFailedPrecondition: the request is well formed but the state
	// forbids it (deleting a DLQ whose source queue exists).
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrNotAttempted: an item of a batch sent with StopAtRefusal that
	// came after a refused one; it was not stored.
	ErrNotAttempted = errors.New("not stored: an earlier message of this batch was refused")
	// ErrInvalid: the request broke a rule the actor checks (such as a bad weight).
	ErrInvalid = errors.New("invalid argument")
	// errRestarted ends a consumer whose queue actor restarted; the stream
	// subscribes again.
	errRestarted = errors.New("queue actor restarted")
)

// QueueNotFound is ErrQueueNotFound naming the queue: the one wording every
// path uses.
func QueueNotFound(name string) error { return fmt.Errorf("%w: %q", ErrQueueNotFound, name) }

// worded is an error that errors.Is sees as kind and whose message is its
// own wording alone, for the errors whose text clients already know
// (an API key's NOT_FOUND and ALREADY_EXISTS).
type worded struct {
	kind error
	msg  string
}

func (e *worded) Error() string { return e.msg }
func (e *worded) Unwrap() error { return e.kind }

func errorOf(kind error, format string, a ...any) error {
	return &worded{kind: kind, msg: fmt.Sprintf(format, a...)}
}

// ErrNotLeader: this node does not lead the queue's partition, so it may not
// decide for the queue; the call is to be retried at the leader. Errors that
// know the leader are a *NotLeaderError, which matches ErrNotLeader with
// errors.Is. Nothing returns it on a single node: every queue is local.
var ErrNotLeader = errors.New("not the leader of the queue")

// NotLeaderError is ErrNotLeader naming the queue and, when this node knows
// it, the client address of the node that leads the queue now.
type NotLeaderError struct {
	// Queue is the queue the call named; "" for a broker command, which
	// the meta group's leader decides.
	Queue string
	// LeaderAddr is the leader's client address (host:port), "" when not
	// known (an election is under way, or no leader has been heard of).
	LeaderAddr string
	// LeaderNode is the leader's node id, 0 when not known. A node that
	// proxies calls (gateway) forwards the call there: nothing was done
	// here, so the call can be made at the leader once.
	LeaderNode uint64
}

func (e *NotLeaderError) Error() string {
	if e.Queue == "" { // a broker command: the meta group's leader decides
		if e.LeaderAddr == "" {
			return "not the leader of the cluster's queue definitions and runtime config; its leader is not known yet"
		}
		return "not the leader of the cluster's queue definitions and runtime config; its leader is at " + e.LeaderAddr
	}
	if e.LeaderAddr == "" {
		return fmt.Sprintf("%v %q; its leader is not known yet", ErrNotLeader, e.Queue)
	}
	return fmt.Sprintf("%v %q; its leader is at %s", ErrNotLeader, e.Queue, e.LeaderAddr)
}

// Is makes errors.Is(err, ErrNotLeader) hold.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }
