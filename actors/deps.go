package actors

import (
	"cmp"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry"
)

// Defaults for Options.
const (
	QuantumDefault           = 1
	VisibilityTimeoutDefault = 30 * time.Second
	FairnessKeyHeaderDefault = "fila-fairness-key"
	DefaultFairnessKey       = "default"
	// WeightHeader names the header that sets a fairness key's weight.
	WeightHeader = "fila-weight"
	// MaxWeight is the largest weight a message may carry.
	MaxWeight = 1000
)

// Options configures the actor system. Store is required.
type Options struct {
	// Store persists queues and messages. Required.
	Store storage.Store
	// Quantum is the DRR credit per unit of weight per round, in messages.
	// Defaults to QuantumDefault.
	Quantum int64
	// Board receives the telemetry actor's per-queue readings, which the
	// fila.* instruments and ListQueues read. Defaults to a private board.
	Board *telemetry.Board
	// Tracer starts the queue actors' spans. Defaults to a no-op tracer.
	Tracer trace.Tracer
	// Logger is filad's logger; protoactor's own logging goes to it at WARN
	// and above. Defaults to slog.Default().
	Logger *slog.Logger
	// MaxMailbox is the queue mailbox depth above which Enqueue is refused
	// with ErrOverloaded. Defaults to MaxMailboxDefault.
	MaxMailbox int64
	// RequestTimeout bounds every wait on an actor reply. Defaults to
	// RequestTimeoutDefault.
	RequestTimeout time.Duration
}

// MaxMailboxDefault bounds a queue actor's backlog of requests.
const MaxMailboxDefault = 100_000

// RequestTimeoutDefault bounds waits on actor replies; a storage commit
// that takes longer is reported as unavailable rather than waited on forever.
const RequestTimeoutDefault = 30 * time.Second

func (o Options) withDefaults() Options {
	o.Quantum = cmp.Or(o.Quantum, QuantumDefault)
	o.Logger = cmp.Or(o.Logger, slog.Default())
	o.MaxMailbox = cmp.Or(o.MaxMailbox, MaxMailboxDefault)
	o.RequestTimeout = cmp.Or(o.RequestTimeout, RequestTimeoutDefault)
	if o.Board == nil {
		o.Board = &telemetry.Board{}
	}
	if o.Tracer == nil {
		o.Tracer = tracenoop.NewTracerProvider().Tracer(telemetry.ScopeName)
	}
	return o
}
