// Package client is the Go client for filad's fila.v1 API: typed wrappers
// over the generated stubs, a Consume helper that runs a handler per message
// and settles it, and OpenTelemetry on both sides, so a producer's span, the
// broker's spans and the consumer's processing span form one trace.
//
// It sits at the top level, beside the broker's packages rather than inside
// them, because it is what other programs import: it depends only on protos
// and OpenTelemetry, never on the broker's internals, and the CLI (cmd/fila)
// and the examples use nothing else.
package client

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/telemetry"
)

// ScopeName is the instrumentation scope of the client's spans.
const ScopeName = "github.com/fila-dev/filad/client"

// Options configures a Client.
type Options struct {
	// TracerProvider makes the client's spans and the otelgrpc client spans.
	// Defaults to the global provider.
	TracerProvider trace.TracerProvider
	// MeterProvider records the messaging conventions' client metrics
	// (messaging.client.sent.messages, messaging.client.consumed.messages,
	// messaging.client.operation.duration, messaging.process.duration).
	// Defaults to the global provider.
	MeterProvider metric.MeterProvider
	// Propagator injects and extracts trace context in gRPC metadata and in
	// message headers. Defaults to the global propagator.
	Propagator propagation.TextMapPropagator
	// TLS, when set, dials with TLS (add a client certificate for mTLS);
	// nil dials plaintext.
	TLS *tls.Config
	// APIKey, when set, is sent with every call as "authorization: Bearer
	// <key>" (docs/security.md).
	APIKey string
	// DialOptions are added to the defaults (transport, otelgrpc).
	DialOptions []grpc.DialOption
	// Seeds are cluster nodes' client addresses that Dial tries first, in
	// order, before its addr: it connects to the first that answers
	// within SeedTimeout, so that a client that knows several nodes
	// starts while one of them is down. Empty: Dial connects lazily to
	// addr alone.
	Seeds []string
	// SeedTimeout bounds the wait for each seed's answer. Defaults to
	// SeedTimeoutDefault.
	SeedTimeout time.Duration
}

// SeedTimeoutDefault is Options.SeedTimeout's default.
const SeedTimeoutDefault = 3 * time.Second

// Client talks to one filad, or to a filad cluster through one of its
// nodes: a call that node refuses with a leader's address (it does not
// lead the queue) is made again at that leader, and that queue's calls go
// there from then on. It is safe for concurrent use.
type Client struct {
	leaders *leaders
	// nodes are the addresses the client was given (the seeds, then the
	// dialed one): where a consumer whose stream ended looks for the
	// queue's leader when no node named it.
	nodes   []string
	conn    *grpc.ClientConn
	svc     filav1.FilaServiceClient
	admin   filav1.FilaAdminClient
	tracer  trace.Tracer
	metrics instruments
	sets    sync.Map // setKey → attribute.Set, see metricSet
	prop    propagation.TextMapPropagator
	// server is server.address and server.port for the spans.
	server []attribute.KeyValue
}

// Dial connects to filad at addr (host:port), over TLS when opts.TLS is
// set; the connection is made lazily, on the first call. With
// opts.Seeds, it connects now, to the first of the seeds (then addr, if
// not "") that answers, and fails naming them when none does.
func Dial(addr string, opts Options) (*Client, error) {
	tp := opts.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	mp := opts.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	prop := opts.Propagator
	if prop == nil {
		prop = otel.GetTextMapPropagator()
	}
	transport := insecure.NewCredentials()
	if opts.TLS != nil {
		transport = credentials.NewTLS(opts.TLS)
	}
	dial := []grpc.DialOption{grpc.WithTransportCredentials(transport)}
	if opts.APIKey != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(bearer(opts.APIKey)))
	}
	dial = append(append(dial,
		grpc.WithStatsHandler(cleanStreamEnd{otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(prop))})),
		opts.DialOptions...)
	// A cluster node that does not lead a queue names the one that does;
	// the client goes there (leaders.go).
	follow := newLeaders(func(addr string) (*grpc.ClientConn, error) { return grpc.NewClient(addr, dial...) })
	dialOne := func(addr string) (*grpc.ClientConn, error) {
		conn, err := grpc.NewClient(addr, append(slices.Clip(dial),
			grpc.WithChainUnaryInterceptor(follow.unary), grpc.WithChainStreamInterceptor(follow.stream))...)
		if err != nil {
			return nil, fmt.Errorf("client: dial %s: %w", addr, err)
		}
		return conn, nil
	}
	var conn *grpc.ClientConn
	var err error
	nodes := knownNodes(opts.Seeds, addr)
	if len(opts.Seeds) == 0 {
		conn, err = dialOne(addr)
	} else {
		conn, addr, err = dialSeeds(append(slices.Clip(opts.Seeds), addr), cmp.Or(opts.SeedTimeout, SeedTimeoutDefault), dialOne)
	}
	if err != nil {
		return nil, err
	}
	return &Client{
		leaders: follow,
		nodes:   nodes,
		conn:    conn,
		svc:     filav1.NewFilaServiceClient(conn),
		admin:   filav1.NewFilaAdminClient(conn),
		tracer:  tp.Tracer(ScopeName, trace.WithInstrumentationVersion(telemetry.Version)),
		metrics: newInstruments(mp),
		prop:    prop,
		server:  serverAttrs(addr),
	}, nil
}

// dialSeeds connects to the first of addrs ("" skipped) that answers
// within timeout, and returns its connection and address.
func dialSeeds(addrs []string, timeout time.Duration, dial func(string) (*grpc.ClientConn, error)) (*grpc.ClientConn, string, error) {
	var errs []error
	for _, addr := range addrs {
		if addr == "" {
			continue
		}
		conn, err := dial(addr)
		if err == nil {
			if err = awaitReady(conn, timeout); err == nil {
				return conn, addr, nil
			}
			_ = conn.Close()
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	if len(errs) == 0 {
		return nil, "", errors.New("client: no address to dial")
	}
	return nil, "", fmt.Errorf("client: no seed answered: %w", errors.Join(errs...))
}

// awaitReady connects conn and waits until it is ready, fails its first
// attempt, or timeout passes.
func awaitReady(conn *grpc.ClientConn, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn.Connect()
	for {
		switch st := conn.GetState(); st {
		case connectivity.Ready:
			return nil
		case connectivity.TransientFailure, connectivity.Shutdown:
			return fmt.Errorf("not reachable (%s)", st)
		default:
			if !conn.WaitForStateChange(ctx, st) {
				return fmt.Errorf("no answer within %v", timeout)
			}
		}
	}
}

// Close closes the connection, and those to the cluster leaders it was
// sent to.
func (c *Client) Close() error {
	c.leaders.close()
	return c.conn.Close()
}

// Enqueue stores a message in queue and returns its id once it is durable.
// It runs under a "send <queue>" producer span whose context it injects into
// the message headers (unless headers already carry a traceparent), so
// consumers can join the producer's trace. headers is not modified.
func (c *Client) Enqueue(ctx context.Context, queue string, headers map[string]string, payload []byte) (string, error) {
	start := time.Now()
	ctx, span, h := c.startSend(ctx, queue, headers)
	defer span.End()
	resp, err := c.svc.Enqueue(ctx, &filav1.EnqueueRequest{Queue: queue, Headers: h, Payload: payload})
	c.recordSend(ctx, queue, start, err)
	if err != nil {
		fail(span, err)
		return "", err
	}
	span.SetAttributes(attribute.String("messaging.message.id", resp.GetMessageId()))
	return resp.GetMessageId(), nil
}

// startSend starts a message's "send <queue>" producer span and returns a
// copy of headers carrying its context (unless they carry a traceparent).
func (c *Client) startSend(ctx context.Context, queue string, headers map[string]string) (context.Context, trace.Span, map[string]string) {
	ctx, span := c.tracer.Start(ctx, spanName(telemetry.OpSend, queue), trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(c.attrs(telemetry.OpSend, queue)...))
	h := make(map[string]string, len(headers)+2)
	for k, v := range headers {
		h[k] = v
	}
	if _, own := h["traceparent"]; !own {
		c.prop.Inject(ctx, propagation.MapCarrier(h))
	}
	return ctx, span, h
}

// Ack deletes m, a message as a lease stream delivered it. It sends m's
// lease_id, so if m's lease has expired (and the message may be another
// consumer's now) the broker answers FAILED_PRECONDITION and changes nothing.
// It runs under an "ack <queue>" client span.
func (c *Client) Ack(ctx context.Context, m *filav1.Message) error {
	start, queue := time.Now(), m.GetMetadata().GetQueueId()
	ctx, span := c.startSettle(ctx, telemetry.OpAck, queue, 1)
	defer span.End()
	span.SetAttributes(attribute.String("messaging.message.id", m.GetId()))
	_, err := c.svc.Ack(ctx, &filav1.AckRequest{Queue: queue, MessageId: m.GetId(), LeaseId: m.GetLeaseId()})
	c.recordOperation(ctx, telemetry.OpAck, queue, start, err)
	fail(span, err)
	return err
}

// Nack returns m to ready with attempt_count + 1, under m's lease as Ack
// does; reason is for the broker's debug log only. It runs under a
// "nack <queue>" client span.
func (c *Client) Nack(ctx context.Context, m *filav1.Message, reason string) error {
	start, queue := time.Now(), m.GetMetadata().GetQueueId()
	ctx, span := c.startSettle(ctx, telemetry.OpNack, queue, 1)
	defer span.End()
	span.SetAttributes(attribute.String("messaging.message.id", m.GetId()))
	_, err := c.svc.Nack(ctx, &filav1.NackRequest{Queue: queue, MessageId: m.GetId(), LeaseId: m.GetLeaseId(), Error: reason})
	c.recordOperation(ctx, telemetry.OpNack, queue, start, err)
	fail(span, err)
	return err
}

// spanName is the conventions' "{operation} {destination}".
func spanName(op, queue string) string { return op + " " + queue }

// startSettle starts an "ack <queue>" or "nack <queue>" client span for op
// of n messages, with links to where their processing ran.
func (c *Client) startSettle(ctx context.Context, op, queue string, n int, links ...trace.Link) (context.Context, trace.Span) {
	attrs := c.attrs(op, queue)
	if n > 1 {
		attrs = append(attrs, attribute.Int("messaging.batch.message_count", n))
	}
	return c.tracer.Start(ctx, spanName(op, queue), trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...), trace.WithLinks(links...))
}

// Extend makes m's lease end timeout from now (the queue's visibility
// timeout when 0) and returns the new expiry. A lease that has already
// expired cannot be extended: FAILED_PRECONDITION.
func (c *Client) Extend(ctx context.Context, m *filav1.Message, timeout time.Duration) (time.Time, error) {
	resp, err := c.svc.Extend(ctx, &filav1.ExtendRequest{
		Queue: m.GetMetadata().GetQueueId(), MessageId: m.GetId(), LeaseId: m.GetLeaseId(),
		VisibilityTimeoutMs: uint64(timeout / time.Millisecond),
	})
	if err != nil {
		return time.Time{}, err
	}
	return resp.GetLeaseExpiresAt().AsTime(), nil
}

// Lease opens a consumer stream on queue (the Consume RPC; the method keeps
// its name because what it yields are leases). Each message it yields is leased
// to this stream until acked, nacked or its visibility timeout passes; the
// broker leases at most maxInFlight unsettled messages to it (0: the
// broker's default, 256). Cancel ctx to close the stream; its leases stay
// until they expire.
func (c *Client) Lease(ctx context.Context, queue string, maxInFlight uint32) (*Stream, error) {
	return c.LeaseBatched(ctx, queue, maxInFlight, 1)
}

// LeaseBatched is Lease with frames: the broker sends up to maxBatch ready
// messages per frame (never waiting to fill one); Next still yields them
// one at a time.
func (c *Client) LeaseBatched(ctx context.Context, queue string, maxInFlight, maxBatch uint32) (*Stream, error) {
	s, err := c.svc.Consume(ctx, &filav1.ConsumeRequest{Queue: queue, MaxInFlight: maxInFlight, MaxBatch: maxBatch})
	if err != nil {
		return nil, err
	}
	return &Stream{s: s, c: c, ctx: ctx, queue: queue, opened: time.Now()}, nil
}

// Stream is an open lease stream. It is not safe for concurrent use.
type Stream struct {
	s       filav1.FilaService_ConsumeClient
	pending []*filav1.Message // the rest of the last frame
	c       *Client
	ctx     context.Context
	queue   string
	// opened and delivered tell Consume's reconnector whether this stream
	// worked before it ended.
	opened    time.Time
	delivered bool
}

// Next blocks for the next leased message. Each frame's messages count in
// messaging.client.consumed.messages (operation "receive") as they arrive.
func (s *Stream) Next() (*filav1.Message, error) {
	for len(s.pending) == 0 {
		resp, err := s.s.Recv()
		if err != nil {
			return nil, err
		}
		s.delivered = true
		if m := resp.GetMessage(); m != nil {
			s.c.recordConsumed(s.ctx, s.queue, 1)
			return m, nil
		}
		s.pending = resp.GetMessages()
		s.c.recordConsumed(s.ctx, s.queue, len(s.pending))
	}
	m := s.pending[0]
	s.pending[0] = nil
	s.pending = s.pending[1:]
	return m, nil
}

// QueueConfig is a queue's settings; zero values mean the broker's defaults.
type QueueConfig struct {
	VisibilityTimeoutMS uint64
	FairnessKeyHeader   string
}

// CreateQueue defines a queue.
func (c *Client) CreateQueue(ctx context.Context, name string, cfg QueueConfig) error {
	_, err := c.admin.CreateQueue(ctx, &filav1.CreateQueueRequest{Name: name, Config: &filav1.QueueConfig{
		VisibilityTimeoutMs: cfg.VisibilityTimeoutMS, FairnessKeyHeader: cfg.FairnessKeyHeader,
	}})
	return err
}

// DeleteQueue removes a queue with its messages; its streams end with NOT_FOUND.
func (c *Client) DeleteQueue(ctx context.Context, name string) error {
	_, err := c.admin.DeleteQueue(ctx, &filav1.DeleteQueueRequest{Queue: name})
	return err
}

// ListQueues lists every queue with its depth, in-flight count and consumers.
func (c *Client) ListQueues(ctx context.Context) ([]*filav1.QueueInfo, error) {
	resp, err := c.admin.ListQueues(ctx, &filav1.ListQueuesRequest{})
	return resp.GetQueues(), err
}

// Admin is the generated FilaAdmin client on this connection, for the admin
// RPCs that have no helper here (UpdateQueue, Redrive, Peek, PurgeQueue and
// the runtime config store).
func (c *Client) Admin() filav1.FilaAdminClient { return c.admin }

// Stats returns a queue's statistics, including per-fairness-key DRR state.
func (c *Client) Stats(ctx context.Context, queue string) (*filav1.GetStatsResponse, error) {
	return c.admin.GetStats(ctx, &filav1.GetStatsRequest{Queue: queue})
}

// attrs are the messaging conventions' span attributes of op on queue, with
// its messaging.operation.type and the server's address.
func (c *Client) attrs(op, queue string) []attribute.KeyValue {
	attrs := append(telemetry.MessagingAttrs(op, queue, ""), c.server...)
	if typ := telemetry.OperationType(op); typ != "" {
		attrs = append(attrs, attribute.String("messaging.operation.type", typ))
	}
	return attrs
}

// serverAttrs are server.address and server.port of addr (host:port).
func serverAttrs(addr string) []attribute.KeyValue {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return []attribute.KeyValue{attribute.String("server.address", addr)}
	}
	attrs := []attribute.KeyValue{attribute.String("server.address", host)}
	if p, err := strconv.Atoi(port); err == nil {
		attrs = append(attrs, attribute.Int("server.port", p))
	}
	return attrs
}

// fail marks span failed with err, if any: its status, the error event, and
// error.type (the gRPC status code, or the error's Go type).
func fail(span trace.Span, err error) {
	if err == nil {
		return
	}
	span.SetAttributes(attribute.String("error.type", errorType(err)))
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
}

// bearer sends an API key with every call. It allows plaintext: filad asks
// for keys on loopback-only listeners only when told to, and TLS is the
// operator's choice (docs/security.md).
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }
