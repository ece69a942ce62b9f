// Package gateway is filad's gRPC face: it serves fila.v1.FilaService and
// fila.v1.FilaAdmin, the gRPC health service and server reflection. Each
// call is translated on its handler's goroutine into an actor message and
// asked of the queue actor (or the broker) it routes to, with the call's
// context and its W3C span context in the envelope header.
package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/fila-dev/filad/actors"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/telemetry"
)

// Options configures a Server. The configured values have no defaults
// here (config.Defaults is their one home): all but Alarms, Auth, Backup
// and Logger are required.
type Options struct {
	// System is the running actor tree.
	System *actors.System
	// MaxMessageBytes is the largest Enqueue payload.
	MaxMessageBytes int
	// MaxMailbox is the queue mailbox depth at which Enqueue is refused with
	// RESOURCE_EXHAUSTED.
	MaxMailbox int64
	// DefaultMaxInFlight is a lease stream's max_in_flight when the request
	// leaves it 0: the most messages leased to it and not yet acked or
	// nacked.
	DefaultMaxInFlight int
	// MaxBatchItems and MaxBatchBytes bound one batch call.
	MaxBatchItems, MaxBatchBytes int
	// Alarms, when set, refuse Enqueue while a resource alarm is raised.
	Alarms *Alarms
	// Auth, when set, is the authorizer in front of the services; revoking
	// a key ends its streams through it.
	Auth *Authorizer
	// Backup writes a consistent snapshot of the store (the Backup RPC);
	// nil answers UNIMPLEMENTED.
	Backup func(io.Writer) error
	// Cluster, on a cluster node, says where queues are led, for the
	// replication fields of GetStats and ListQueues; nil is a single node.
	Cluster ClusterView
	// Logger is slog.Default() when nil.
	Logger *slog.Logger
	// Peers, when set (a cluster), are the other nodes' internal ports, to
	// which a call refused here for another node's queue is forwarded
	// (proxy.go); nil refuses it with the leader's address.
	Peers Peers
	// Leaders, if set, is told what each forward learnt about who leads a
	// queue's partition: how a node that holds no replica of it finds the
	// leader (proxy.go).
	Leaders Leaders
	// NodeID is this node's id in the cluster, sent with forwarded calls.
	NodeID uint64
	// OnForward, if set, is told each call forwarded to a leader (once per
	// leader for a split batch): the fila.cluster.forwarded counter.
	OnForward func(ctx context.Context, fullMethod string)
	// ForwardTimeout bounds a forwarded call whose caller set no
	// deadline; 0 leaves it unbounded.
	ForwardTimeout time.Duration
	// TracerProvider makes the proxy's spans; the global one when nil.
	TracerProvider trace.TracerProvider
}

func (o Options) validate() (Options, error) {
	switch {
	case o.System == nil:
		return o, errors.New("gateway: Options.System is required")
	case o.MaxMessageBytes < 1, o.MaxMailbox < 1, o.DefaultMaxInFlight < 1, o.MaxBatchItems < 1, o.MaxBatchBytes < 1:
		return o, fmt.Errorf("gateway: incomplete Options %+v (build them from config)", o)
	}
	o.Logger = cmp.Or(o.Logger, slog.Default())
	if o.TracerProvider == nil {
		o.TracerProvider = otel.GetTracerProvider()
	}
	return o, nil
}

// Server implements the fila.v1 services.
type Server struct {
	filav1.UnimplementedFilaServiceServer
	filav1.UnimplementedFilaAdminServer

	opts    Options
	sys     *actors.System
	health  *health.Server
	closing atomic.Bool
	// translator turns every call (and each item of a batch) into its actor
	// message.
	translator *translator
	// keysMu orders the changes to API keys (keys.go).
	keysMu sync.Mutex
	// tracer makes the proxy's spans; forwarded counts what it forwards.
	tracer    trace.Tracer
	forwarded ForwardCounter
}

// New returns a Server for opts.System.
func New(opts Options) (*Server, error) {
	opts, err := opts.validate()
	if err != nil {
		return nil, err
	}
	return &Server{opts: opts, sys: opts.System, health: health.NewServer(),
		tracer: opts.TracerProvider.Tracer(telemetry.ScopeName, trace.WithInstrumentationVersion(telemetry.Version)),
		translator: &translator{
			dir:           opts.System.Directory(),
			broker:        opts.System.Broker(),
			maxPayload:    opts.MaxMessageBytes,
			maxMailbox:    opts.MaxMailbox,
			alarms:        opts.Alarms,
			queueDefaults: opts.System.DefaultQueue(),
			lua:           opts.System.LuaLimits(),
			log:           opts.Logger,
		}}, nil
}

// Register adds the fila.v1 services, health and reflection to g.
func (s *Server) Register(g *grpc.Server) {
	filav1.RegisterFilaServiceServer(g, s)
	filav1.RegisterFilaAdminServer(g, s)
	healthpb.RegisterHealthServer(g, s.health)
	reflection.Register(g)
	for _, name := range []string{"", filav1.FilaService_ServiceDesc.ServiceName, filav1.FilaAdmin_ServiceDesc.ServiceName} {
		s.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
}

// BeginShutdown is the first step of a graceful stop: new calls get
// UNAVAILABLE, health reports NOT_SERVING, and every lease stream ends with
// UNAVAILABLE. Unary calls in flight go on.
func (s *Server) BeginShutdown(ctx context.Context) {
	s.closing.Store(true)
	s.health.Shutdown()
	if _, err := s.sys.Ask(ctx, s.sys.Broker(), nil, &actors.EndStreams{}); err != nil {
		s.opts.Logger.Warn("ending lease streams", slog.Any("error", err))
	}
}

// Close is the last step of a stop, after the gRPC server has stopped. The
// gateway owns no actors or connections, so it releases nothing; the
// connections a cluster proxies over (Options.Peers) are their owner's.
func (s *Server) Close() {}

// ask translates a call and asks the actor it routes to, bounded by ctx,
// with ctx's span context in the envelope header; it returns the reply, or
// the call's error as a status. The handler's goroutine does the
// translating: a stateless hop through an actor would add a mailbox and a
// goroutine switch to every call (docs/decisions.md).
func (s *Server) ask(ctx context.Context, c *call) (any, error) {
	if s.closing.Load() {
		return nil, toStatus(actors.ErrShuttingDown)
	}
	pid, msg, err := s.translator.target(c)
	if errors.Is(err, actors.ErrQueueNotFound) && s.sys.SyncQueues(ctx) == nil {
		// In a cluster the definition may still be on its way here (the
		// queue was created through another node): once this node has
		// applied the meta group as far as it was committed when asked,
		// not found is the answer. On a single node this is at once.
		pid, msg, err = s.translator.target(c)
	}
	if err != nil {
		return nil, toStatus(err)
	}
	res, err := s.sys.Ask(ctx, pid, telemetry.InjectHeaders(ctx), msg)
	if err != nil {
		return nil, toStatus(err)
	}
	if err, ok := res.(error); ok {
		return nil, toStatus(err)
	}
	return res, nil
}

// askFor is ask with the reply's type checked; replies carrying an error
// become a status.
func askFor[R any](s *Server, ctx context.Context, c *call, errOf func(R) error) (R, error) {
	var zero R
	res, err := s.ask(ctx, c)
	if err != nil {
		return zero, err
	}
	r, ok := res.(R)
	if !ok {
		return zero, toStatus(errUnexpectedReply(res))
	}
	if err := errOf(r); err != nil {
		return zero, toStatus(err)
	}
	return r, nil
}
