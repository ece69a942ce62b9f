package gateway

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/fila-dev/filad/actors"
	"github.com/fila-dev/filad/auth"
	"github.com/fila-dev/filad/protocol"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// Proxying (docs/architecture.md, "Routing"; docs/decisions.md). In a
// cluster every node serves the whole API on its client port. A unary
// call refused here because another node leads what it needs (a
// NotLeaderError naming that node: nothing was done here) is made again,
// with the same request, on that node's internal port; a batch sends
// each leader its items as one batch and merges the results back in item
// order. The forwarded call carries the caller's deadline, the name of
// the key it was authorized with, and its trace context, and is marked
// forwarded, so that the node receiving it never forwards it again. Consume
// streams are never proxied: they keep answering UNAVAILABLE with the
// leader's address (Fila's convention). A forwarded call that fails is
// not retried (its outcome may be unknown), but for one case: a plain
// refusal there that names another leader, which this node tries once
// (a node that holds no replica of a partition knows its leader only as a
// guess: Leaders). So a unary call makes two hops at most.

// Metadata of a forwarded call, read only on the internal port.
const (
	// ForwardedMetadata marks a call forwarded by another node; its
	// value is that node's id. The internal port serves only such calls,
	// and never forwards them again.
	ForwardedMetadata = "x-fila-forwarded-by"
	// ForwardedKeyMetadata is the name of the API key the forwarding node
	// authorized the call with (absent when its auth is off). The
	// receiving node checks that key's rights again, as it stores them.
	ForwardedKeyMetadata = "x-fila-forwarded-key"
)

// Leaders learns from forwards who leads a queue's partition (a cluster's
// Placement, for the partitions this node holds no replica of and whose
// leader it can only guess). Calls are concurrent; it must not block.
type Leaders interface {
	// Led: node leads queue's partition (it served a call for queue, or
	// another node named it the leader).
	Led(queue string, node uint64)
	// Missed: node did not answer for queue (unreachable, or no leader
	// known there): guess another.
	Missed(queue string, node uint64)
}

// Peers are the connections to the other nodes' internal ports.
type Peers interface {
	// Conn is the connection to node's internal port (dialed on first
	// use); an error when node is no member this node knows.
	Conn(node uint64) (grpc.ClientConnInterface, error)
}

// ForwardCounter counts the calls this node forwarded to a leader: one
// per unary call forwarded and one per leader a batch sent items to,
// whatever their outcome. Its zero value is ready; it is safe for
// concurrent use.
type ForwardCounter struct{ n atomic.Uint64 }

// Load is the number of calls forwarded so far.
func (c *ForwardCounter) Load() uint64 { return c.n.Load() }

func (c *ForwardCounter) add() { c.n.Add(1) }

// Forwarded is the count of the calls this node forwarded (see
// ForwardCounter), for the fila.cluster.forwarded metric.
func (s *Server) Forwarded() *ForwardCounter { return &s.forwarded }

// forwardedKey marks the context of a call that another node forwarded.
type forwardedKey struct{}

// isForwarded reports whether the call was forwarded here: it is served
// here, or refused, and never forwarded again.
func isForwarded(ctx context.Context) bool { return ctx.Value(forwardedKey{}) != nil }

// forwardTo is the node a handler's error asks the call to be forwarded
// to, 0 for none: this node proxies, the call was not forwarded here,
// and err is a plain refusal naming the leader's node.
func (s *Server) forwardTo(ctx context.Context, err error) uint64 {
	if s.opts.Peers == nil || isForwarded(ctx) || err == nil {
		return 0
	}
	var h *leaderHint
	if !errors.As(err, &h) || h.node == s.opts.NodeID {
		return 0
	}
	return h.node
}

// forwardable is forwardTo for an error the translator or an actor gave
// (before toStatus), as a batch item gets.
func (s *Server) forwardable(ctx context.Context, err error) uint64 {
	if s.opts.Peers == nil || err == nil || !errors.Is(err, actors.ErrNotLeader) {
		return 0
	}
	return s.forwardTo(ctx, toStatus(err))
}

// ProxyUnary is the client port's interceptor that forwards a unary call
// refused here to the node that leads what it needs. It goes after the
// authorizer, whose key the forwarded call carries.
func (s *Server) ProxyUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if h := (*leaderHint)(nil); errors.As(err, &h) && h.addr != "" && len(metadata.ValueFromIncomingContext(ctx, protocol.RedirectMetadata)) > 0 {
		// The caller follows hints (protocol.RedirectMetadata), and this
		// refusal has one to follow; without an address it is proxied.
		return resp, err
	}
	node := s.forwardTo(ctx, err)
	if node == 0 {
		return resp, err
	}
	m, ok := req.(proto.Message)
	if !ok {
		return resp, err
	}
	reply, rerr := newReply(info.FullMethod)
	if rerr != nil {
		return resp, err
	}
	queue := refusedQueue(err)
	ferr := s.forward(ctx, node, info.FullMethod, m, reply)
	if next := s.retryAt(ferr, node); next != 0 {
		// The node asked is not the leader and names it: a guess of this
		// node's was stale. Nothing was done there; try once at the leader.
		node = next
		reply, _ = newReply(info.FullMethod)
		ferr = s.forward(ctx, node, info.FullMethod, m, reply)
	}
	s.learn(queue, node, ferr)
	if ferr != nil {
		return nil, ferr
	}
	return reply, nil
}

// refusedQueue is the queue a leaderHint refused ("" for none).
func refusedQueue(err error) string {
	var h *leaderHint
	if errors.As(err, &h) {
		return h.queue
	}
	return ""
}

// retryAt is the node to retry a forward to node at, 0 for none: its
// error is a plain refusal there naming another leader.
func (s *Server) retryAt(err error, node uint64) uint64 {
	var h *leaderHint
	if !errors.As(err, &h) || h.node == 0 || h.node == node || h.node == s.opts.NodeID {
		return 0
	}
	return h.node
}

// learn tells Options.Leaders what the forward of a call for queue to
// node showed: node answered (it leads), it named another, or it did not
// answer.
func (s *Server) learn(queue string, node uint64, err error) {
	if s.opts.Leaders == nil || queue == "" {
		return
	}
	var h *leaderHint
	switch code := status.Code(err); {
	case errors.As(err, &h) && h.node != 0 && h.node != s.opts.NodeID:
		s.opts.Leaders.Led(queue, h.node)
	case code == codes.Unavailable || code == codes.DeadlineExceeded:
		s.opts.Leaders.Missed(queue, node)
	default: // served there, or refused for the call's own reasons
		s.opts.Leaders.Led(queue, node)
	}
}

// newReply is a new response message of the fila.v1 method full
// ("/fila.v1.FilaService/Enqueue"), found in the registered descriptors.
func newReply(full string) (proto.Message, error) {
	svc, method, ok := strings.Cut(strings.TrimPrefix(full, "/"), "/")
	if !ok {
		return nil, errors.New("gateway: not a method name")
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		return nil, err
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, errors.New("gateway: not a service")
	}
	md := sd.Methods().ByName(protoreflect.Name(method))
	if md == nil || md.IsStreamingServer() || md.IsStreamingClient() {
		return nil, errors.New("gateway: not a unary method")
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		return nil, err
	}
	return mt.New().Interface(), nil
}

// forward makes the call method(req) on node's internal port into reply,
// under a "fila.proxy <method>" span, with the caller's deadline (or
// Options.ForwardTimeout when it set none), key name and trace context.
// A refusal there that names a leader comes back as a leaderHint, so the
// caller's client may follow it; it is not forwarded again.
func (s *Server) forward(ctx context.Context, node uint64, method string, req, reply proto.Message) error {
	s.forwarded.add()
	if s.opts.OnForward != nil {
		s.opts.OnForward(ctx, method)
	}
	ctx, span := s.tracer.Start(ctx, "fila.proxy "+method[strings.LastIndexByte(method, '/')+1:],
		trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attribute.Int64("fila.node.target", int64(node))))
	defer span.End()
	err := s.invoke(ctx, node, method, req, reply)
	if err != nil {
		// The code only: a status message may quote what the caller sent.
		span.SetStatus(otelcodes.Error, status.Code(err).String())
	}
	return err
}

// stepwiseMethods answer once an operation of many steps has finished (a
// purge, a redrive, the delete of a full queue), which may rightly take
// longer than ForwardTimeout; as on the leader itself (actors.System.Ask),
// their wait is bounded by the caller alone.
var stepwiseMethods = map[string]bool{
	filav1.FilaAdmin_PurgeQueue_FullMethodName:  true,
	filav1.FilaAdmin_Redrive_FullMethodName:     true,
	filav1.FilaAdmin_DeleteQueue_FullMethodName: true,
}

func (s *Server) invoke(ctx context.Context, node uint64, method string, req, reply proto.Message) error {
	conn, err := s.opts.Peers.Conn(node)
	if err != nil {
		return status.Errorf(codes.Unavailable, "the leader, node %d, cannot be reached: %v", node, err)
	}
	md := metadata.Pairs(ForwardedMetadata, strconv.FormatUint(s.opts.NodeID, 10))
	if k := callerOf(ctx); k != nil {
		md.Set(ForwardedKeyMetadata, k.Name)
	}
	if stopAtRefusal(ctx) {
		md.Set(StopAtRefusalMetadata, "true")
	}
	otel.GetTextMapPropagator().Inject(ctx, MetadataCarrier(md))
	if _, ok := ctx.Deadline(); !ok && s.opts.ForwardTimeout > 0 && !stepwiseMethods[method] {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.opts.ForwardTimeout)
		defer cancel()
	}
	var trailer metadata.MD
	err = conn.Invoke(metadata.NewOutgoingContext(ctx, md), method, req, reply, grpc.Trailer(&trailer))
	if err == nil {
		return nil
	}
	st := status.Convert(err)
	if v := trailer.Get(LeaderHintMetadata); st.Code() == codes.Unavailable && len(v) > 0 {
		h := &leaderHint{st: st, addr: v[0]}
		if n := trailer.Get(leaderNodeMetadata); len(n) > 0 {
			h.node, _ = strconv.ParseUint(n[0], 10, 64)
		}
		return h
	}
	return st.Err()
}

// MetadataCarrier is gRPC metadata as an OpenTelemetry propagator's
// carrier (whose keys are lower case, as metadata's are): what the proxy
// injects the caller's trace context into.
type MetadataCarrier metadata.MD

func (c MetadataCarrier) Get(key string) string {
	if v := metadata.MD(c).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c MetadataCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }

func (c MetadataCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// remote is the items of a batch bound for one other node, by their
// positions in the batch.
type remote struct {
	// at are the positions forwarded to each node.
	at map[uint64][]int
	// queue is the queue each forwarded position's refusal named.
	queue map[int]string
}

// errItemUnavailable is what learn is told of a forwarded batch whose
// item for a queue was answered UNAVAILABLE.
var errItemUnavailable = status.Error(codes.Unavailable, "gateway: a forwarded item was refused")

func newRemote() remote { return remote{at: map[uint64][]int{}, queue: map[int]string{}} }

// add forwards position i, refused here for queue, to node.
func (r remote) add(node uint64, i int, queue string) {
	r.at[node] = append(r.at[node], i)
	r.queue[i] = queue
}

// forwardParts sends each node of away its items as one call of method
// (build makes its request and an empty reply from the positions), all
// at once, and calls answer with each reply or the error the whole call
// got. It returns when every call has answered.
//
// Then it tells Options.Leaders what each queue's items showed (learn):
// an item answered UNAVAILABLE (the node is no leader of its queue, and an
// item's result names none) counts as a miss, so that a stale guess moves
// on and is asked about at once rather than at the next refresh. code
// reads the result answer gave position i.
func forwardParts(s *Server, ctx context.Context, away remote, method string,
	build func(at []int) (req, reply proto.Message), answer func(at []int, reply proto.Message, err error), code func(i int) codes.Code) *sync.WaitGroup {
	var wg sync.WaitGroup
	for node, at := range away.at {
		wg.Go(func() {
			req, reply := build(at)
			err := s.forward(ctx, node, method, req, reply)
			answer(at, reply, err)
			missed := map[string]bool{} // queue → an item of it answered UNAVAILABLE
			for _, i := range at {
				q := away.queue[i]
				missed[q] = missed[q] || err == nil && code(i) == codes.Unavailable
			}
			for q, m := range missed {
				if m {
					s.learn(q, node, errItemUnavailable)
				} else {
					s.learn(q, node, err)
				}
			}
		})
	}
	return &wg
}

// Internal serves, on the cluster's internal gRPC server, the fila.v1
// unary calls that other nodes forward. It is registered before that
// server serves (the raft transport shares it, and must serve before
// this node's gateway can exist); until Bind it answers UNAVAILABLE.
type Internal struct {
	gw atomic.Pointer[Server]
}

// Bind makes s serve the forwarded calls.
func (in *Internal) Bind(s *Server) { in.gw.Store(s) }

// Register adds the unary methods of fila.v1.FilaService and FilaAdmin
// to g. Streams are not registered (UNIMPLEMENTED): they are never
// forwarded.
func (in *Internal) Register(g *grpc.Server) {
	for _, sd := range []*grpc.ServiceDesc{&filav1.FilaService_ServiceDesc, &filav1.FilaAdmin_ServiceDesc} {
		desc := grpc.ServiceDesc{ServiceName: sd.ServiceName, HandlerType: sd.HandlerType, Metadata: sd.Metadata}
		for _, m := range sd.Methods {
			handler := m.Handler
			desc.Methods = append(desc.Methods, grpc.MethodDesc{MethodName: m.MethodName,
				Handler: func(_ any, ctx context.Context, dec func(any) error, outer grpc.UnaryServerInterceptor) (any, error) {
					gw := in.gw.Load()
					if gw == nil {
						return nil, status.Error(codes.Unavailable, "this node is starting: it serves no forwarded calls yet")
					}
					return handler(gw, ctx, dec, chainUnary(outer, gw.acceptForwarded))
				}})
		}
		// nil: the handlers above find the gateway themselves.
		g.RegisterService(&desc, nil)
	}
}

// chainUnary runs outer (the server's own interceptors, if any) around
// inner.
func chainUnary(outer, inner grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	if outer == nil {
		return inner
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return outer(ctx, req, info, func(ctx context.Context, req any) (any, error) {
			return inner(ctx, req, info, handler)
		})
	}
}

// acceptForwarded admits a forwarded call: it must be marked so, and with
// auth on, it runs with the key the forwarding node named, whose rights
// are checked here again. Its refusals carry the leader hint, as on the
// client port.
func (s *Server) acceptForwarded(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if len(md.Get(ForwardedMetadata)) == 0 {
		return nil, status.Error(codes.PermissionDenied, "the internal port serves only calls forwarded by another node; call the client port")
	}
	ctx = context.WithValue(ctx, forwardedKey{}, true)
	if a := s.opts.Auth; a != nil {
		k, err := a.forwardedKey(ctx, md)
		if err != nil {
			return nil, err
		}
		if err := a.authorize(ctx, k, required(req)); err != nil {
			return nil, err
		}
		ctx = context.WithValue(ctx, callerKey{}, k)
	}
	resp, err := handler(ctx, req)
	if hint := internalHintOf(err); hint != nil {
		_ = grpc.SetTrailer(ctx, hint)
	}
	return resp, err
}

// forwardedKey is the key a forwarded call names, as this node stores it.
func (a *Authorizer) forwardedKey(ctx context.Context, md metadata.MD) (*auth.Key, error) {
	names := md.Get(ForwardedKeyMetadata)
	if len(names) == 0 {
		a.fail(ctx, "missing_key", "")
		return nil, status.Error(codes.Unauthenticated, "a forwarded call must name its api key")
	}
	k := a.keys.ByName(names[0])
	if k == nil || k.Expired(time.Now()) {
		a.fail(ctx, "invalid_key", names[0])
		return nil, status.Error(codes.Unauthenticated, "the api key of the forwarded call is not valid here (unknown, revoked or expired)")
	}
	return k, nil
}
