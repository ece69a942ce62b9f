package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/config"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/server"
	"github.com/fila-dev/filad/telemetry"
	"github.com/fila-dev/filad/telemetry/telemetrytest"
)

const bootstrapKey = "bootstrap-secret-0123456789abcdefghijklmnop"

func withKey(key string) context.Context { return withAuthorization("Bearer " + key) }

// withAuthorization sends header as the call's authorization.
func withAuthorization(header string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", header)
}

// TestAuth: keys are required (mode on), checked before anything runs, and
// each RPC needs its action on its queue; a revoked key's stream ends.
func TestAuth(t *testing.T) {
	t.Parallel()
	logs := &logCapture{}
	h := telemetrytest.New(t)
	b := setup(t, setupOpts{cfg: func(c *config.Config) { c.Auth = config.Auth{Mode: "on", BootstrapKey: bootstrapKey} },
		opts: server.Options{Logger: slog.New(logs), TracerProvider: h.TracerProvider, MeterProvider: h.MeterProvider}})
	boot := withKey(bootstrapKey)
	_, err := b.admin.CreateQueue(boot, &filav1.CreateQueueRequest{Name: "orders"})
	require.NoError(t, err)

	newKey := func(name string, perms ...*filav1.Permission) string {
		t.Helper()
		resp, err := b.admin.CreateApiKey(boot, &filav1.CreateApiKeyRequest{Name: name, Permissions: perms})
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(resp.GetKey(), "fila_"))
		return resp.GetKey()
	}
	producer := newKey("producer", &filav1.Permission{QueuePattern: "orders", Actions: []string{"produce"}})
	consumer := newKey("consumer", &filav1.Permission{QueuePattern: "orders", Actions: []string{"consume"}})
	opsKey := newKey("ops", &filav1.Permission{QueuePattern: "orders.*", Actions: []string{"admin"}})

	enqueue := func(ctx context.Context) error {
		_, err := b.svc.Enqueue(ctx, &filav1.EnqueueRequest{Queue: "orders"})
		return err
	}
	stats := func(ctx context.Context) error {
		_, err := b.admin.GetStats(ctx, &filav1.GetStatsRequest{Queue: "orders"})
		return err
	}
	lease := func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		s, err := b.svc.Consume(ctx, &filav1.ConsumeRequest{Queue: "orders"})
		if err != nil {
			return err
		}
		_, err = s.Recv()
		return err
	}
	tests := []struct {
		name string
		call func(context.Context) error
		ctx  context.Context
		code codes.Code
		msg  string
	}{
		{"no key", enqueue, context.Background(), codes.Unauthenticated, "an api key is required"},
		{"a bad key", enqueue, withKey("fila_nonsense"), codes.Unauthenticated, "not valid"},
		{"producer enqueues", enqueue, withKey(producer), codes.OK, ""},
		{"consumer may not enqueue", enqueue, withKey(consumer), codes.PermissionDenied, `produce on queue "orders" is not allowed`},
		{"consumer leases", lease, withKey(consumer), codes.OK, ""},
		{"producer may not lease", lease, withKey(producer), codes.PermissionDenied, `consume on queue "orders"`},
		{"producer may not read stats", stats, withKey(producer), codes.PermissionDenied, `admin on queue "orders"`},
		{"orders.* does not match orders", stats, withKey(opsKey), codes.PermissionDenied, "admin"},
		{"bootstrap reads stats", stats, boot, codes.OK, ""},
	}
	for _, tt := range tests {
		err := tt.call(tt.ctx)
		require.Equal(t, tt.code.String(), status.Code(err).String(), "%s: %v", tt.name, err)
		require.Contains(t, status.Convert(err).Message(), tt.msg, tt.name)
	}
	// A prefix pattern allows the queues under it, and broker-wide calls
	// need "*".
	_, err = b.admin.CreateQueue(withKey(opsKey), &filav1.CreateQueueRequest{Name: "orders.eu"})
	require.NoError(t, err)
	_, err = b.admin.ListQueues(withKey(opsKey), &filav1.ListQueuesRequest{})
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	// Health needs no key.
	_, err = healthpb.NewHealthClient(b.conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	require.NoError(t, err)

	// A stream opened before its key expires ends when it does, and the key
	// is refused from then on.
	// 3 s: time to open the stream before the expiry on a busy machine.
	// The key holds milliseconds: its expiry is this truncated, and the
	// stream may end up to 1 ms before an untruncated time.
	expires := time.UnixMilli(time.Now().Add(3 * time.Second).UnixMilli())
	soon, err := b.admin.CreateApiKey(boot, &filav1.CreateApiKeyRequest{Name: "brief", ExpiresAtMs: uint64(expires.UnixMilli()),
		Permissions: []*filav1.Permission{{QueuePattern: "orders", Actions: []string{"consume"}}}})
	require.NoError(t, err)
	brief, err := b.svc.Consume(withKey(soon.GetKey()), &filav1.ConsumeRequest{Queue: "orders"})
	require.NoError(t, err)
	_, err = brief.Recv() // nothing is ready: this returns when the key expires
	if time.Now().Before(expires) {
		t.Fatalf("the stream ended before its key expired: %v", err)
	}
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), "expired")
	err = lease(withKey(soon.GetKey()))
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), "the api key has expired")

	// Revoking a key ends its live stream (docs: within a second; the test
	// waits longer, for a busy machine).
	require.NoError(t, enqueue(withKey(producer)))
	sctx, cancel := context.WithCancel(withKey(consumer))
	defer cancel()
	stream, err := b.svc.Consume(sctx, &filav1.ConsumeRequest{Queue: "orders"})
	require.NoError(t, err)
	_, err = stream.Recv() // the message just enqueued
	require.NoError(t, err)
	_, err = b.admin.RevokeApiKey(boot, &filav1.RevokeApiKeyRequest{Name: "consumer"})
	require.NoError(t, err)
	ended := make(chan error, 1)
	go func() { _, err := stream.Recv(); ended <- err }()
	select {
	case err := <-ended:
		require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	case <-time.After(waitFor):
		t.Fatalf("the revoked key's stream still runs after %v", waitFor)
	}
	require.Equal(t, codes.Unauthenticated, status.Code(lease(withKey(consumer))), "and the key is refused from now on")

	// Keys are listed without secrets; the config RPCs neither show nor
	// change them.
	list, err := b.admin.ListApiKeys(boot, &filav1.ListApiKeysRequest{})
	require.NoError(t, err)
	names := []string{}
	for _, k := range list.GetKeys() {
		names = append(names, k.GetName())
	}
	require.ElementsMatch(t, []string{"producer", "ops", "brief"}, names, "consumer was revoked")
	cfg, err := b.admin.ListConfig(boot, &filav1.ListConfigRequest{})
	require.NoError(t, err)
	require.Zero(t, cfg.GetTotalCount())
	_, err = b.admin.SetConfig(boot, &filav1.SetConfigRequest{Key: "auth.key.evil", Value: "{}"})
	require.Equal(t, codes.InvalidArgument, status.Code(err))

	// Failures are counted by reason; no secret reaches a log line.
	h.AssertCounter(t, telemetry.AuthFailures.Name, []attribute.KeyValue{attribute.String("reason", "missing_key")}, 1)
	require.Positive(t, func() int64 {
		v, _ := h.Value(t, telemetry.AuthFailures.Name, attribute.String("reason", "permission_denied"))
		return v
	}())
	for _, secret := range []string{bootstrapKey, producer, consumer, opsKey, soon.GetKey()} {
		require.NotContains(t, logs.text(), secret)
	}
	require.Contains(t, logs.text(), "refused a call")
}

// TestBearerSchemeIsCaseInsensitive is issue 19's item 8: "authorization:
// bearer <key>" was refused, but the scheme is case-insensitive (RFC 6750).
func TestBearerSchemeIsCaseInsensitive(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{cfg: func(c *config.Config) { c.Auth = config.Auth{Mode: "on", BootstrapKey: bootstrapKey} }})
	asKey(t, b, bootstrapKey).createQueue(t, "q", nil)
	tests := []struct {
		header string
		code   codes.Code
	}{
		{"Bearer " + bootstrapKey, codes.OK},
		{"bearer " + bootstrapKey, codes.OK},
		{"BEARER " + bootstrapKey, codes.OK},
		{"Bearer  " + bootstrapKey, codes.OK},
		{"Basic " + bootstrapKey, codes.Unauthenticated},
		{"bearer" + bootstrapKey, codes.Unauthenticated},
		{bootstrapKey, codes.Unauthenticated},
	}
	for i, tt := range tests {
		_, err := b.svc.Enqueue(withAuthorization(tt.header), &filav1.EnqueueRequest{Queue: "q"})
		require.Equal(t, tt.code.String(), status.Code(err).String(), "case %d (the header is not printed: it holds the key): %v", i, err)
	}
}

// TestKeyExpiredAtCreationIsRefused is issue 19's item 8: CreateApiKey
// with expires_at in the past answered OK and a secret that could never
// work (so did one past the year 9999). Now it is INVALID_ARGUMENT naming
// the field and the limit, and nothing is stored.
func TestKeyExpiredAtCreationIsRefused(t *testing.T) {
	t.Parallel()
	b := asKey(t, setup(t, setupOpts{cfg: func(c *config.Config) { c.Auth = config.Auth{Mode: "on", BootstrapKey: bootstrapKey} }}), bootstrapKey)
	perms := []*filav1.Permission{{QueuePattern: "*", Actions: []string{"produce"}}}
	tests := []struct {
		at  time.Time
		msg string
	}{
		{time.Now().Add(-time.Second), "is not in the future"},
		{time.UnixMilli(1), "is not in the future"}, // 0 would mean no expiry
		// Past what a stored key can encode: it was stored empty, and its
		// secret never worked.
		{time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), "is after the limit of 9999-12-31T23:59:59Z"},
	}
	for _, tt := range tests {
		_, err := b.admin.CreateApiKey(ctxT(t), &filav1.CreateApiKeyRequest{Name: "old", ExpiresAtMs: uint64(tt.at.UnixMilli()), Permissions: perms})
		requireCode(t, err, codes.InvalidArgument)
		require.Contains(t, status.Convert(err).Message(), "expires_at_ms: ")
		require.Contains(t, status.Convert(err).Message(), tt.msg)
	}
	list, err := b.admin.ListApiKeys(ctxT(t), &filav1.ListApiKeysRequest{})
	require.NoError(t, err)
	require.Empty(t, list.GetKeys(), "nothing stored")
	// The name is free: a key expiring in the future is created under it.
	_, err = b.admin.CreateApiKey(ctxT(t), &filav1.CreateApiKeyRequest{Name: "old", ExpiresAtMs: uint64(time.Now().Add(time.Hour).UnixMilli()), Permissions: perms})
	require.NoError(t, err)
}

// TestAuthIsOffOnLoopbackByDefault: mode auto needs no key on 127.0.0.1.
func TestAuthIsOffOnLoopbackByDefault(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	require.Equal(t, "auto", b.cfg.Auth.Mode)
	b.createQueue(t, "open", nil)
}

// TestConcurrentKeyCreatesOneWins: two CreateApiKey calls for one name at
// once: exactly one secret works, the other call is ALREADY_EXISTS.
func TestConcurrentKeyCreatesOneWins(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{cfg: func(c *config.Config) { c.Auth = config.Auth{Mode: "on", BootstrapKey: bootstrapKey} }})
	for round := range 20 {
		name := fmt.Sprintf("race-%d", round)
		secrets := make(chan string, 2)
		codesSeen := make(chan codes.Code, 2)
		for range 2 {
			go func() {
				resp, err := b.admin.CreateApiKey(withKey(bootstrapKey), &filav1.CreateApiKeyRequest{Name: name,
					Permissions: []*filav1.Permission{{QueuePattern: "*", Actions: []string{"admin"}}}})
				codesSeen <- status.Code(err)
				secrets <- resp.GetKey()
			}()
		}
		got := []codes.Code{<-codesSeen, <-codesSeen}
		require.ElementsMatch(t, []codes.Code{codes.OK, codes.AlreadyExists}, got)
		working := 0
		for range 2 {
			if s := <-secrets; s != "" {
				if _, err := b.admin.ListQueues(withKey(s), &filav1.ListQueuesRequest{}); err == nil {
					working++
				}
			}
		}
		require.Equal(t, 1, working, "the winner's secret works")
	}
}

// TestSetAclEndsStreamsItNoLongerAllows: SetAcl takes a key's consume right
// on a queue away, and the key's open Consume stream on that queue ends
// with PERMISSION_DENIED, while its stream on a queue still allowed goes
// on delivering (issue 20: a key's rights are changed after it is made).
func TestSetAclEndsStreamsItNoLongerAllows(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{cfg: func(c *config.Config) { c.Auth = config.Auth{Mode: "on", BootstrapKey: bootstrapKey} }})
	boot := asKey(t, b, bootstrapKey)
	boot.createQueue(t, "kept", nil)
	boot.createQueue(t, "taken", nil)
	made, err := boot.admin.CreateApiKey(ctxT(t), &filav1.CreateApiKeyRequest{Name: "worker"})
	require.NoError(t, err)
	grant := func(queues ...string) {
		t.Helper()
		req := &filav1.SetAclRequest{KeyId: made.GetKeyId()}
		for _, q := range queues {
			req.Permissions = append(req.Permissions, &filav1.AclPermission{Kind: "consume", Pattern: q})
		}
		_, err := boot.admin.SetAcl(ctxT(t), req)
		require.NoError(t, err)
	}
	grant("kept", "taken")
	worker := asKey(t, b, made.GetKey())
	kept, _ := worker.lease(t, "kept")
	taken, _ := worker.lease(t, "taken")
	// Both streams are subscribed once each has delivered a message.
	boot.enqueue(t, "kept", nil, []byte("1"))
	boot.enqueue(t, "taken", nil, []byte("1"))
	recvN(t, kept, 1)
	recvN(t, taken, 1)

	grant("kept")
	_, err = taken.Recv()
	requireCode(t, err, codes.PermissionDenied)
	require.Contains(t, status.Convert(err).Message(), "no longer allowed")
	boot.enqueue(t, "kept", nil, []byte("2"))
	require.Equal(t, []byte("2"), recvN(t, kept, 1)[0].GetPayload(), "the stream still allowed goes on")
	again, err := worker.svc.Consume(ctxT(t), &filav1.ConsumeRequest{Queue: "taken"})
	require.NoError(t, err)
	_, err = again.Recv()
	requireCode(t, err, codes.PermissionDenied)
}
