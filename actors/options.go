package actors

import (
	"errors"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/fila-dev/filad/protocol"
	"github.com/fila-dev/filad/scripting"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry"
)

// Message rules the queue actor applies.
const (
	// DefaultFairnessKey is the fairness key of a message that does not
	// carry its queue's fairness-key header.
	DefaultFairnessKey = "default"
	// WeightHeader names the header that sets a fairness key's weight.
	WeightHeader = "fila-weight"
	// MaxWeight is the largest weight a message may carry.
	MaxWeight = protocol.MaxWeight
	// MaxHeaderValueBytes is the longest header value a message may carry,
	// the producer's (SPEC §4) and the broker's own alike.
	MaxHeaderValueBytes = 8 << 10
)

// Options configures the actor system. The configured values (Quantum,
// RequestTimeout) have no defaults here: config.Defaults is their one home.
type Options struct {
	// Store persists queues and messages. Required.
	Store storage.Store
	// Quantum is the DRR credit per unit of weight per round, in messages.
	// Required: at least 1.
	Quantum int64
	// RequestTimeout bounds every wait on an actor reply. Required.
	RequestTimeout time.Duration
	// DefaultQueue holds what a queue gets when its definition leaves it
	// unset: VisibilityTimeout and FairnessKeyHeader, both required. A
	// dead-letter queue gets exactly these.
	DefaultQueue QueueConfig
	// Board receives the telemetry actor's per-queue readings, which the
	// fila.* instruments and ListQueues read. A private board when nil.
	Board *telemetry.Board
	// TracerProvider starts the queue actors' spans. No-op when nil.
	TracerProvider trace.TracerProvider
	// MeterProvider is what filad's instruments are made on. No-op when
	// nil.
	MeterProvider metric.MeterProvider
	// Series holds the queues' histograms and counters, which leave the
	// export when their queue is deleted. When nil, MeterProvider's if it
	// is a telemetry.SeriesProvider, else none (nothing is recorded).
	Series *telemetry.SeriesSet
	// Logger is filad's logger; protoactor's own logging goes to it at WARN
	// and above. slog.Default() when nil.
	Logger *slog.Logger
	// Lua bounds the queues' policy scripts. Required: Timeout and
	// BreakerThreshold above 0.
	Lua scripting.Limits
	// ConfigStore bounds the runtime config store. Required: every limit
	// at least 1.
	ConfigStore RuntimeConfigLimits
	// Placement says which queues' actors run on this node (placement.go).
	// nil: all of them, a single node.
	Placement Placement
	// MessageCacheBytes bounds the cache of message headers and payloads
	// the queues deliver from (issue 26: a queue keeps an index entry per
	// message, and reads what the cache misses from the store). 0 caches
	// nothing: every delivery reads the store.
	MessageCacheBytes int64
	// FairnessKeys is how many fairness keys of a queue get per-key series
	// (fila.fairness.*); later keys are summed as one. 0 turns them off.
	FairnessKeys int
	// onTick, when set, is called with the queue's name each time a queue
	// actor's timer fires: a test's count of the wake-ups of an idle queue.
	onTick func(queue string)
}

func (o Options) validate() (Options, error) {
	switch {
	case o.Store == nil:
		return o, errors.New("actors: Options.Store is required")
	case o.Quantum < 1:
		return o, errors.New("actors: Options.Quantum must be at least 1")
	case o.RequestTimeout <= 0:
		return o, errors.New("actors: Options.RequestTimeout must be positive")
	case o.DefaultQueue.VisibilityTimeout <= 0, o.DefaultQueue.FairnessKeyHeader == "":
		return o, errors.New("actors: Options.DefaultQueue needs VisibilityTimeout and FairnessKeyHeader")
	case o.Lua.Timeout <= 0, o.Lua.BreakerThreshold < 1:
		return o, errors.New("actors: Options.Lua needs Timeout and BreakerThreshold")
	case !o.ConfigStore.valid():
		return o, errors.New("actors: Options.ConfigStore needs MaxKeys, MaxBytes and MaxAPIKeys")
	}
	if o.Board == nil {
		o.Board = &telemetry.Board{}
	}
	if o.TracerProvider == nil {
		o.TracerProvider = tracenoop.NewTracerProvider()
	}
	if o.MeterProvider == nil {
		o.MeterProvider = metricnoop.NewMeterProvider()
	}
	if sp, ok := o.MeterProvider.(telemetry.SeriesProvider); ok && o.Series == nil {
		o.Series = sp.Series()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}
