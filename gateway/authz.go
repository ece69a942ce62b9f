package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/fila-dev/filad/actors"
	"github.com/fila-dev/filad/auth"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/telemetry"
)

// Authorizer checks every call's key (or mTLS certificate) and its
// permission before any actor is asked: UNAUTHENTICATED for who-are-you
// failures, PERMISSION_DENIED for not-allowed, naming the action and the
// queue, never the key. Health and reflection need no key.
type Authorizer struct {
	keys    *auth.Keyring
	rc      *actors.RuntimeConfig // where keys live: watched by open streams
	log     *slog.Logger
	enduser bool
	// failures counts fila.auth.failures by reason.
	failures metric.Int64Counter
	warnMu   sync.Mutex
	warned   time.Time
	// streams are the open Consume streams by key name, for revocation and
	// ACL changes.
	streamsMu sync.Mutex
	streams   map[string]map[*tracked]struct{}
}

// tracked is one open stream: how to end it, and the queue its request
// named once it has been read (guarded by streamsMu).
type tracked struct {
	cancel context.CancelCauseFunc
	queue  string
}

// AuthOptions configures NewAuthorizer.
type AuthOptions struct {
	// Bootstrap is the secret of a key with every permission (config).
	Bootstrap string
	// EndUser puts enduser.id = the key's name on the call's span.
	EndUser       bool
	MeterProvider metric.MeterProvider
	Logger        *slog.Logger
}

// errRevoked, errExpired and errDenied are why a key's streams end early.
var (
	errRevoked = errors.New("api key revoked")
	errExpired = errors.New("api key expired")
	errDenied  = errors.New("api key no longer allowed")
)

// NewAuthorizer checks calls against the keys stored in sys's runtime
// config store and opts.Bootstrap.
func NewAuthorizer(sys *actors.System, opts AuthOptions) (*Authorizer, error) {
	failures, err := opts.MeterProvider.Meter(telemetry.ScopeName, metric.WithInstrumentationVersion(telemetry.Version)).
		Int64Counter(telemetry.AuthFailures.Name, metric.WithUnit(telemetry.AuthFailures.Unit), metric.WithDescription(telemetry.AuthFailures.Description))
	if err != nil {
		return nil, err
	}
	return &Authorizer{
		keys: auth.NewKeyring(keySource{sys.RuntimeConfig()}, opts.Bootstrap), rc: sys.RuntimeConfig(), log: opts.Logger, enduser: opts.EndUser,
		failures: failures, streams: map[string]map[*tracked]struct{}{},
	}, nil
}

// keySource reads the stored keys from the runtime config store.
type keySource struct{ rc *actors.RuntimeConfig }

func (s keySource) Version() uint64 { return s.rc.Version() }

func (s keySource) Keys() []auth.Entry {
	var out []auth.Entry
	for _, e := range s.rc.List(auth.KeyPrefix) {
		out = append(out, auth.Entry{Key: e.Key, Value: e.Value})
	}
	return out
}

// exempt calls need no key.
func exempt(method string) bool {
	return strings.HasPrefix(method, "/grpc.health.") || strings.HasPrefix(method, "/grpc.reflection.")
}

// Unary checks unary calls.
func (a *Authorizer) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if exempt(info.FullMethod) {
		return handler(ctx, req)
	}
	k, err := a.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if err := a.authorize(ctx, k, required(req)); err != nil {
		return nil, err
	}
	return handler(context.WithValue(ctx, callerKey{}, k), req)
}

// callerKey holds the call's key in its context.
type callerKey struct{}

// callerOf is the key a call was authorized with; nil when auth is off.
func callerOf(ctx context.Context) *auth.Key {
	k, _ := ctx.Value(callerKey{}).(*auth.Key)
	return k
}

// Stream checks Consume streams: the key when the stream opens, the
// permission on the queue its request names; a revoked key's streams end.
func (a *Authorizer) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if exempt(info.FullMethod) {
		return handler(srv, ss)
	}
	// Taken before the key is read: a change after that read wakes watch.
	changed := a.rc.Changed()
	k, err := a.authenticate(ss.Context())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ss.Context())
	defer cancel(nil)
	t := a.track(k.Name, cancel)
	defer a.untrack(k.Name, t)
	go a.watch(ctx, changed, k, t)
	if !k.ExpiresAt.IsZero() { // a stream does not outlive its key
		expiry := time.AfterFunc(time.Until(k.ExpiresAt), func() { cancel(errExpired) })
		defer expiry.Stop()
	}
	err = handler(srv, &checkedStream{ServerStream: ss, ctx: ctx, a: a, key: k, tracked: t})
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errRevoked):
		return status.Error(codes.Unauthenticated, "the api key of this stream was revoked")
	case errors.Is(cause, errExpired):
		return status.Error(codes.Unauthenticated, "the api key of this stream has expired")
	case errors.Is(cause, errDenied):
		return status.Error(codes.PermissionDenied, "consume on this stream's queue is no longer allowed for its api key (SetAcl)")
	}
	return err
}

// checkedStream checks the request a stream reads against its key.
type checkedStream struct {
	grpc.ServerStream
	ctx     context.Context
	a       *Authorizer
	key     *auth.Key
	tracked *tracked
}

func (s *checkedStream) Context() context.Context { return s.ctx }

func (s *checkedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	// The key as it is now (a SetAcl may have changed it since the stream
	// opened), checked and the queue recorded in one step under streamsMu,
	// so that a SetAcl either sees the queue or is seen here.
	s.a.streamsMu.Lock()
	defer s.a.streamsMu.Unlock()
	k := s.key
	if now := s.a.keys.ByName(k.Name); now != nil && now.Hash == k.Hash {
		k = now
	}
	if err := s.a.authorize(s.ctx, k, required(m)); err != nil {
		return err
	}
	if r, ok := m.(*filav1.ConsumeRequest); ok {
		s.tracked.queue = r.GetQueue()
	}
	return nil
}

func (a *Authorizer) track(name string, cancel context.CancelCauseFunc) *tracked {
	t := &tracked{cancel: cancel}
	a.streamsMu.Lock()
	defer a.streamsMu.Unlock()
	if a.streams[name] == nil {
		a.streams[name] = map[*tracked]struct{}{}
	}
	a.streams[name][t] = struct{}{}
	return t
}

func (a *Authorizer) untrack(name string, t *tracked) {
	a.streamsMu.Lock()
	defer a.streamsMu.Unlock()
	delete(a.streams[name], t)
	if len(a.streams[name]) == 0 {
		delete(a.streams, name)
	}
}

// revoked ends the open streams of the key named name.
func (a *Authorizer) revoked(name string) {
	a.streamsMu.Lock()
	defer a.streamsMu.Unlock()
	for t := range a.streams[name] {
		t.cancel(errRevoked)
	}
}

// watch ends t's stream, opened with k, once k is revoked or may no
// longer consume the stream's queue, whichever node made the change: in a
// cluster the runtime config store is replicated, and its snapshot here
// changes when the meta group applies another node's write (revoked and
// aclChanged cover the changes made through this node, at once). It
// returns when ctx ends.
func (a *Authorizer) watch(ctx context.Context, changed <-chan struct{}, k *auth.Key, t *tracked) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		changed = a.rc.Changed()
		now := a.keys.ByName(k.Name)
		a.streamsMu.Lock()
		switch {
		case now == nil || now.Hash != k.Hash:
			t.cancel(errRevoked)
		case t.queue != "" && !now.Allows(auth.Consume, t.queue):
			t.cancel(errDenied)
		}
		a.streamsMu.Unlock()
	}
}

// aclChanged ends the open streams of k (as it is now stored) on queues it
// may no longer consume from. A stream whose request has not been read yet
// is checked against k's new rights when it is (checkedStream.RecvMsg).
func (a *Authorizer) aclChanged(k *auth.Key) {
	a.streamsMu.Lock()
	defer a.streamsMu.Unlock()
	for t := range a.streams[k.Name] {
		if t.queue != "" && !k.Allows(auth.Consume, t.queue) {
			t.cancel(errDenied)
		}
	}
}

// authenticate finds the call's key: "authorization: Bearer <key>" (the
// scheme in any case), or
// else the mTLS client certificate's common name, which stands for the key
// of that name.
func (a *Authorizer) authenticate(ctx context.Context) (*auth.Key, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	var k *auth.Key
	reason, who := "", ""
	if vals := md.Get("authorization"); len(vals) > 0 {
		secret, ok := auth.BearerSecret(vals[0])
		if k = a.keys.BySecret(secret); !ok || k == nil {
			reason, who = "invalid_key", auth.Fingerprint(secret)
			k = nil
		}
	} else if cn := peerCommonName(ctx); cn != "" {
		if k = a.keys.ByName(cn); k == nil {
			reason, who = "unknown_certificate", cn
		}
	} else {
		reason = "missing_key"
	}
	if k != nil && k.Expired(time.Now()) {
		reason, who, k = "expired_key", k.Name, nil
	}
	if k == nil {
		a.fail(ctx, reason, who)
		msg := map[string]string{
			"missing_key":         "an api key is required: send authorization: Bearer <key>",
			"invalid_key":         "the api key is not valid (unknown or revoked)",
			"unknown_certificate": "the client certificate's subject has no api key",
			"expired_key":         "the api key has expired",
		}[reason]
		return nil, status.Error(codes.Unauthenticated, msg)
	}
	if a.enduser {
		if span := trace.SpanFromContext(ctx); span.IsRecording() {
			span.SetAttributes(attribute.String("enduser.id", k.Name))
		}
	}
	return k, nil
}

// authorize checks every need of a call; one that is not allowed refuses
// the whole call (a batch is never applied in part).
func (a *Authorizer) authorize(ctx context.Context, k *auth.Key, needs []need) error {
	for _, n := range needs {
		if k.Allows(n.action, n.queue) {
			continue
		}
		a.fail(ctx, "permission_denied", k.Name)
		switch owner := auth.Owner(n.queue); {
		case n.queue == "":
			return status.Errorf(codes.PermissionDenied, "%s on the whole broker (a permission for \"*\") is not allowed for this key", n.action)
		case owner != n.queue:
			return status.Errorf(codes.PermissionDenied, "%s on queue %q is not allowed for this key (the rights on a dead-letter queue are those on %s)",
				n.action, n.queue, ownerName(owner))
		default:
			return status.Errorf(codes.PermissionDenied, "%s on queue %q is not allowed for this key", n.action, n.queue)
		}
	}
	return nil
}

// ownerName names an Owner in a message.
func ownerName(owner string) string {
	if owner == "" {
		return "the whole broker (\"*\")"
	}
	return fmt.Sprintf("queue %q", owner)
}

// authWarnEvery bounds the WARNs a flood of bad keys logs.
const authWarnEvery = 10 * time.Second

// fail counts an authentication or authorization failure and logs one WARN
// per authWarnEvery, naming the key by name or fingerprint, never its
// secret.
func (a *Authorizer) fail(ctx context.Context, reason, who string) {
	a.failures.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
	a.warnMu.Lock()
	now := time.Now()
	due := now.Sub(a.warned) >= authWarnEvery
	if due {
		a.warned = now
	}
	a.warnMu.Unlock()
	if due {
		a.log.Warn("refused a call (further refusals within 10 s are only counted in fila.auth.failures)",
			slog.String("reason", reason), slog.String("key", who))
	}
}

func peerCommonName(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.PeerCertificates) == 0 {
		return ""
	}
	return info.State.PeerCertificates[0].Subject.CommonName
}

// need is one right a call needs: action on queue ("" for the whole
// broker).
type need struct {
	action auth.Action
	queue  string
}

// on is the needs of action on each of queues.
func on(action auth.Action, queues ...string) []need {
	out := make([]need, len(queues))
	for i, q := range queues {
		out[i] = need{action, q}
	}
	return out
}

// required is what a request needs: its entry in permissions, or, for a
// request not there (none of filad's, which TestEveryMethodHasPermission
// holds), admin on the whole broker, the safe default.
func required(req any) []need {
	if m, ok := req.(proto.Message); ok {
		if needs := permissions[m.ProtoReflect().Descriptor().FullName()]; needs != nil {
			return needs(m)
		}
	}
	return on(auth.Admin, "")
}

// permissions is what each RPC needs, by the full name of its request
// message: every RPC of the services filad serves has its own request
// type and an entry here (TestEveryMethodHasPermission walks the
// registered services' descriptors to keep it so). Key.Allows decides a
// dead-letter queue's rights by its source's, so nothing here names that
// rule.
var permissions = byRequest(
	// FilaService: the hot path.
	rule(func(r *filav1.EnqueueRequest) []need { return on(auth.Produce, r.GetQueue()) }),
	rule(func(r *filav1.EnqueueBatchRequest) []need { return on(auth.Produce, queuesOf(r.GetMessages())...) }),
	rule(func(r *filav1.ConsumeRequest) []need { return on(auth.Consume, r.GetQueue()) }),
	rule(func(r *filav1.AckRequest) []need { return on(auth.Consume, r.GetQueue()) }),
	rule(func(r *filav1.NackRequest) []need { return on(auth.Consume, r.GetQueue()) }),
	rule(func(r *filav1.ExtendRequest) []need { return on(auth.Consume, r.GetQueue()) }),
	rule(func(r *filav1.AckBatchRequest) []need { return on(auth.Consume, queuesOf(r.GetAcks())...) }),
	rule(func(r *filav1.NackBatchRequest) []need { return on(auth.Consume, queuesOf(r.GetNacks())...) }),
	// FilaAdmin, on one queue.
	rule(func(r *filav1.CreateQueueRequest) []need { return on(auth.Admin, r.GetName()) }),
	rule(func(r *filav1.DeleteQueueRequest) []need { return on(auth.Admin, r.GetQueue()) }),
	rule(func(r *filav1.UpdateQueueRequest) []need { return on(auth.Admin, r.GetName()) }),
	rule(func(r *filav1.GetStatsRequest) []need { return on(auth.Admin, r.GetQueue()) }),
	rule(func(r *filav1.RedriveRequest) []need {
		// Redrive moves a DLQ's messages into its source queue (the name
		// without ".dlq"): admin on the DLQ, and produce where they land.
		// A name that is no DLQ's is refused by the queue (INVALID_ARGUMENT)
		// and moves nothing, so it needs admin only.
		dlq := r.GetDlqQueue()
		needs := on(auth.Admin, dlq)
		if target, ok := strings.CutSuffix(dlq, auth.DLQSuffix); ok {
			needs = append(needs, need{auth.Produce, target})
		}
		return needs
	}),
	rule(func(r *filav1.PeekRequest) []need { return on(auth.Admin, r.GetQueue()) }),
	rule(func(r *filav1.PurgeQueueRequest) []need { return on(auth.Admin, r.GetQueue()) }),
	// FilaAdmin on the whole broker: the queue list, the config store, the
	// keys and their ACLs, the backup, the cluster's status.
	rule(broker[*filav1.ListQueuesRequest]),
	rule(broker[*filav1.SetConfigRequest]),
	rule(broker[*filav1.GetConfigRequest]),
	rule(broker[*filav1.ListConfigRequest]),
	rule(broker[*filav1.CreateApiKeyRequest]),
	rule(broker[*filav1.RevokeApiKeyRequest]),
	rule(broker[*filav1.ListApiKeysRequest]),
	rule(broker[*filav1.SetAclRequest]),
	rule(broker[*filav1.GetAclRequest]),
	rule(broker[*filav1.BackupRequest]),
	rule(broker[*filav1.GetClusterStatusRequest]),
	// Membership.
	rule(broker[*filav1.AddNodeRequest]),
	rule(broker[*filav1.RemoveNodeRequest]),
	// Leader transfer (issue 25).
	rule(broker[*filav1.TransferLeaderRequest]),
)

// permission is one entry of permissions: a request type and its needs.
type permission struct {
	request protoreflect.FullName
	needs   func(proto.Message) []need
}

// rule is the permission of requests of type R.
func rule[R proto.Message](needs func(R) []need) permission {
	var zero R // a nil message still describes its type
	return permission{zero.ProtoReflect().Descriptor().FullName(), func(m proto.Message) []need { return needs(m.(R)) }}
}

// broker is admin on the whole broker, whatever the request.
func broker[R any](R) []need { return on(auth.Admin, "") }

// byRequest indexes ps by request type; a type given twice is a bug.
func byRequest(ps ...permission) map[protoreflect.FullName]func(proto.Message) []need {
	m := make(map[protoreflect.FullName]func(proto.Message) []need, len(ps))
	for _, p := range ps {
		if m[p.request] != nil {
			panic("gateway: two permissions for " + p.request)
		}
		m[p.request] = p.needs
	}
	return m
}

// queuesOf is the queue each item of a batch names.
func queuesOf[T interface{ GetQueue() string }](items []T) []string {
	qs := make([]string, len(items))
	for i, it := range items {
		qs[i] = it.GetQueue()
	}
	return qs
}
