package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/internal/testpki"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/server"
	"github.com/fila-dev/filad/telemetry/telemetrytest"
)

// TestPermissionMatrix: every RPC, with the permission it needs and with
// every other one, presented as a key and as a client certificate.
func TestPermissionMatrix(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	root := testpki.NewCA(t, "matrix CA")
	cert, key := root.Issue(t, "filad", 1, true, time.Now().Add(time.Hour))
	h := telemetrytest.New(t)
	b := setup(t, setupOpts{cfg: func(c *config.Config) {
		c.Server.TLS = config.TLS{CertFile: writeFile(t, dir, "s.pem", cert), KeyFile: writeFile(t, dir, "s.key", key),
			ClientCAFile: writeFile(t, dir, "ca.pem", root.PEM), MinVersion: "1.2"}
		c.Auth = config.Auth{Mode: "on", BootstrapKey: bootstrapKey, EndUserID: true}
	}, opts: server.Options{Logger: slog.New(&logCapture{}), TracerProvider: h.TracerProvider, MeterProvider: h.MeterProvider}})
	// connect dials as the certificate cn, sending secret when not empty.
	serial := int64(10)
	connect := func(cn, secret string) (filav1.FilaServiceClient, filav1.FilaAdminClient, func(context.Context) context.Context) {
		serial++
		c, k := root.Issue(t, cn, serial, false, time.Now().Add(time.Hour))
		conn, err := grpc.NewClient(b.srv.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(root.ClientConfig(t, c, k))))
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		ctx := func(ctx context.Context) context.Context { return ctx }
		if secret != "" {
			ctx = func(context.Context) context.Context { return withKey(secret) }
		}
		return filav1.NewFilaServiceClient(conn), filav1.NewFilaAdminClient(conn), ctx
	}
	_, bootAdmin, boot := connect("nobody", bootstrapKey)
	_, err := bootAdmin.CreateQueue(boot(nil), &filav1.CreateQueueRequest{Name: "m"})
	require.NoError(t, err)
	grant := func(name, pattern string, actions ...string) string {
		resp, err := bootAdmin.CreateApiKey(boot(nil), &filav1.CreateApiKeyRequest{Name: name,
			Permissions: []*filav1.Permission{{QueuePattern: pattern, Actions: actions}}})
		require.NoError(t, err)
		return resp.GetKey()
	}
	id := "01936f0e-7b4c-7d2a-9c3e-2f1a0b9c8d7e"
	type call func(context.Context, filav1.FilaServiceClient, filav1.FilaAdminClient) error
	stream := func(ctx context.Context, s filav1.FilaServiceClient, _ filav1.FilaAdminClient) error {
		ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		st, err := s.Lease(ctx, &filav1.LeaseRequest{Queue: "m"})
		if err != nil {
			return err
		}
		_, err = st.Recv()
		return err
	}
	rpcs := []struct {
		name    string
		action  string
		pattern string // what an allowing key needs
		call    call
	}{
		{"Enqueue", "produce", "m", func(ctx context.Context, s filav1.FilaServiceClient, _ filav1.FilaAdminClient) error {
			_, err := s.Enqueue(ctx, &filav1.EnqueueRequest{Queue: "m"})
			return err
		}},
		{"EnqueueBatch", "produce", "m", func(ctx context.Context, s filav1.FilaServiceClient, _ filav1.FilaAdminClient) error {
			_, err := s.EnqueueBatch(ctx, &filav1.EnqueueBatchRequest{Messages: []*filav1.EnqueueRequest{{Queue: "m"}}})
			return err
		}},
		{"Lease", "consume", "m", stream},
		{"Ack", "consume", "m", func(ctx context.Context, s filav1.FilaServiceClient, _ filav1.FilaAdminClient) error {
			_, err := s.Ack(ctx, &filav1.AckRequest{Queue: "m", MessageId: id})
			return err
		}},
		{"Nack", "consume", "m", func(ctx context.Context, s filav1.FilaServiceClient, _ filav1.FilaAdminClient) error {
			_, err := s.Nack(ctx, &filav1.NackRequest{Queue: "m", MessageId: id})
			return err
		}},
		{"Extend", "consume", "m", func(ctx context.Context, s filav1.FilaServiceClient, _ filav1.FilaAdminClient) error {
			_, err := s.Extend(ctx, &filav1.ExtendRequest{Queue: "m", MessageId: id, LeaseId: "x"})
			return err
		}},
		{"AckBatch", "consume", "m", func(ctx context.Context, s filav1.FilaServiceClient, _ filav1.FilaAdminClient) error {
			_, err := s.AckBatch(ctx, &filav1.AckBatchRequest{Acks: []*filav1.AckRequest{{Queue: "m", MessageId: id}}})
			return err
		}},
		{"NackBatch", "consume", "m", func(ctx context.Context, s filav1.FilaServiceClient, _ filav1.FilaAdminClient) error {
			_, err := s.NackBatch(ctx, &filav1.NackBatchRequest{Nacks: []*filav1.NackRequest{{Queue: "m", MessageId: id}}})
			return err
		}},
		{"GetStats", "admin", "m", func(ctx context.Context, _ filav1.FilaServiceClient, a filav1.FilaAdminClient) error {
			_, err := a.GetStats(ctx, &filav1.GetStatsRequest{Queue: "m"})
			return err
		}},
		{"UpdateQueue", "admin", "m", func(ctx context.Context, _ filav1.FilaServiceClient, a filav1.FilaAdminClient) error {
			_, err := a.UpdateQueue(ctx, &filav1.UpdateQueueRequest{Name: "m", Config: &filav1.QueueConfig{MaxDepth: 100}})
			return err
		}},
		{"Peek", "admin", "m", func(ctx context.Context, _ filav1.FilaServiceClient, a filav1.FilaAdminClient) error {
			_, err := a.Peek(ctx, &filav1.PeekRequest{Queue: "m"})
			return err
		}},
		{"PurgeQueue", "admin", "m", func(ctx context.Context, _ filav1.FilaServiceClient, a filav1.FilaAdminClient) error {
			_, err := a.PurgeQueue(ctx, &filav1.PurgeQueueRequest{Queue: "m"})
			return err
		}},
		{"Redrive", "admin", "m.*", func(ctx context.Context, _ filav1.FilaServiceClient, a filav1.FilaAdminClient) error {
			_, err := a.Redrive(ctx, &filav1.RedriveRequest{DlqQueue: "m.dlq"})
			return err
		}},
		{"CreateQueue", "admin", "n", func(ctx context.Context, _ filav1.FilaServiceClient, a filav1.FilaAdminClient) error {
			_, err := a.CreateQueue(ctx, &filav1.CreateQueueRequest{Name: "n"})
			return err
		}},
		{"DeleteQueue", "admin", "gone", func(ctx context.Context, _ filav1.FilaServiceClient, a filav1.FilaAdminClient) error {
			_, err := a.DeleteQueue(ctx, &filav1.DeleteQueueRequest{Queue: "gone"})
			return err
		}},
		{"ListQueues", "admin", "*", func(ctx context.Context, _ filav1.FilaServiceClient, a filav1.FilaAdminClient) error {
			_, err := a.ListQueues(ctx, &filav1.ListQueuesRequest{})
			return err
		}},
		{"SetConfig", "admin", "*", func(ctx context.Context, _ filav1.FilaServiceClient, a filav1.FilaAdminClient) error {
			_, err := a.SetConfig(ctx, &filav1.SetConfigRequest{Key: "k", Value: "v"})
			return err
		}},
		{"ListConfig", "admin", "*", func(ctx context.Context, _ filav1.FilaServiceClient, a filav1.FilaAdminClient) error {
			_, err := a.ListConfig(ctx, &filav1.ListConfigRequest{})
			return err
		}},
		{"ListApiKeys", "admin", "*", func(ctx context.Context, _ filav1.FilaServiceClient, a filav1.FilaAdminClient) error {
			_, err := a.ListApiKeys(ctx, &filav1.ListApiKeysRequest{})
			return err
		}},
	}
	others := map[string][]string{"produce": {"consume", "admin"}, "consume": {"produce", "admin"}, "admin": {"produce", "consume"}}
	for i, rpc := range rpcs {
		for _, allowed := range []bool{true, false} {
			name := fmt.Sprintf("k%d-%t", i, allowed)
			var secret string
			if allowed {
				secret = grant(name, rpc.pattern, rpc.action)
			} else {
				secret = grant(name, "*", others[rpc.action]...)
			}
			for _, asCert := range []bool{false, true} {
				var svc filav1.FilaServiceClient
				var admin filav1.FilaAdminClient
				var ctx func(context.Context) context.Context
				if asCert {
					svc, admin, ctx = connect(name, "")
				} else {
					svc, admin, ctx = connect("nobody", secret)
				}
				err := rpc.call(ctx(context.Background()), svc, admin)
				code := status.Code(err)
				what := fmt.Sprintf("%s allowed=%t cert=%t: %v", rpc.name, allowed, asCert, err)
				require.NotEqual(t, codes.Unauthenticated, code, what)
				if allowed {
					require.NotEqual(t, codes.PermissionDenied, code, what)
				} else {
					require.Equal(t, codes.PermissionDenied, code, what)
					require.Contains(t, status.Convert(err).Message(), rpc.action, what)
					require.NotContains(t, status.Convert(err).Message(), secret, what)
				}
			}
		}
	}
	// enduser.id is on (config): the key's name on the call's span.
	eventually(t, func() bool {
		for _, s := range h.Spans("fila.v1.FilaService/Enqueue") {
			if telemetrytest.HasAttr(s, attribute.String("enduser.id", "k0-true")) {
				return true
			}
		}
		return false
	}, "enduser.id on the span")
}
