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
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/internal/testpki"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/server"
	"github.com/fila-dev/filad/telemetry/telemetrytest"
)

// TestPermissionMatrix: every RPC, with the permission it needs and with
// keys that lack it, presented as a key and as a client certificate. The
// rights on a dead-letter queue "m.dlq" are those on "m" ("m.*" does not
// reach it), and Redrive needs produce on the queue it moves messages into.
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
		// Connected (TLS handshake done) before any call.
		conn.Connect()
		readyCtx, ready := context.WithTimeout(context.Background(), waitFor)
		for st := conn.GetState(); st != connectivity.Ready; st = conn.GetState() {
			require.True(t, conn.WaitForStateChange(readyCtx, st), "connection to filad not ready")
		}
		ready()
		ctx := func(ctx context.Context) context.Context { return ctx }
		if secret != "" {
			ctx = func(context.Context) context.Context { return withKey(secret) }
		}
		return filav1.NewFilaServiceClient(conn), filav1.NewFilaAdminClient(conn), ctx
	}
	bootSvc, bootAdmin, boot := connect("nobody", bootstrapKey)
	_, err := bootAdmin.CreateQueue(boot(nil), &filav1.CreateQueueRequest{Name: "m"})
	require.NoError(t, err)
	grant := func(name string, perms ...*filav1.Permission) string {
		resp, err := bootAdmin.CreateApiKey(boot(nil), &filav1.CreateApiKeyRequest{Name: name, Permissions: perms})
		require.NoError(t, err)
		return resp.GetKey()
	}
	id := "01936f0e-7b4c-7d2a-9c3e-2f1a0b9c8d7e"
	type call func(context.Context, filav1.FilaServiceClient, filav1.FilaAdminClient) error
	lease := func(queue string) call {
		return func(ctx context.Context, s filav1.FilaServiceClient, _ filav1.FilaAdminClient) error {
			// A message waits, so an allowed stream answers with it at once
			// and a refused one with the refusal: no deadline decides which.
			_, err := bootSvc.Enqueue(boot(nil), &filav1.EnqueueRequest{Queue: queue})
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(ctx, waitFor)
			defer cancel()
			st, err := s.Consume(ctx, &filav1.ConsumeRequest{Queue: queue})
			if err != nil {
				return err
			}
			_, err = st.Recv()
			return err
		}
	}
	enqueue := func(queue string) call {
		return func(ctx context.Context, s filav1.FilaServiceClient, _ filav1.FilaAdminClient) error {
			_, err := s.Enqueue(ctx, &filav1.EnqueueRequest{Queue: queue})
			return err
		}
	}
	ack := func(queue string) call {
		return func(ctx context.Context, s filav1.FilaServiceClient, _ filav1.FilaAdminClient) error {
			_, err := s.Ack(ctx, &filav1.AckRequest{Queue: queue, MessageId: id})
			return err
		}
	}
	nack := func(queue string) call {
		return func(ctx context.Context, s filav1.FilaServiceClient, _ filav1.FilaAdminClient) error {
			_, err := s.Nack(ctx, &filav1.NackRequest{Queue: queue, MessageId: id})
			return err
		}
	}
	extend := func(queue string) call {
		return func(ctx context.Context, s filav1.FilaServiceClient, _ filav1.FilaAdminClient) error {
			_, err := s.Extend(ctx, &filav1.ExtendRequest{Queue: queue, MessageId: id, LeaseId: "x"})
			return err
		}
	}
	ackBatch := func(queues ...string) call {
		return func(ctx context.Context, s filav1.FilaServiceClient, _ filav1.FilaAdminClient) error {
			req := &filav1.AckBatchRequest{}
			for _, q := range queues {
				req.Acks = append(req.Acks, &filav1.AckRequest{Queue: q, MessageId: id})
			}
			_, err := s.AckBatch(ctx, req)
			return err
		}
	}
	nackBatch := func(queues ...string) call {
		return func(ctx context.Context, s filav1.FilaServiceClient, _ filav1.FilaAdminClient) error {
			req := &filav1.NackBatchRequest{}
			for _, q := range queues {
				req.Nacks = append(req.Nacks, &filav1.NackRequest{Queue: q, MessageId: id})
			}
			_, err := s.NackBatch(ctx, req)
			return err
		}
	}
	stats := func(queue string) call {
		return func(ctx context.Context, _ filav1.FilaServiceClient, a filav1.FilaAdminClient) error {
			_, err := a.GetStats(ctx, &filav1.GetStatsRequest{Queue: queue})
			return err
		}
	}
	update := func(queue string) call {
		return func(ctx context.Context, _ filav1.FilaServiceClient, a filav1.FilaAdminClient) error {
			_, err := a.UpdateQueue(ctx, &filav1.UpdateQueueRequest{Name: queue, Config: &filav1.QueueConfig{MaxDepth: 100}})
			return err
		}
	}
	peek := func(queue string) call {
		return func(ctx context.Context, _ filav1.FilaServiceClient, a filav1.FilaAdminClient) error {
			_, err := a.Peek(ctx, &filav1.PeekRequest{Queue: queue})
			return err
		}
	}
	purge := func(queue string) call {
		return func(ctx context.Context, _ filav1.FilaServiceClient, a filav1.FilaAdminClient) error {
			_, err := a.PurgeQueue(ctx, &filav1.PurgeQueueRequest{Queue: queue})
			return err
		}
	}
	create := func(queue string) call {
		return func(ctx context.Context, _ filav1.FilaServiceClient, a filav1.FilaAdminClient) error {
			_, err := a.CreateQueue(ctx, &filav1.CreateQueueRequest{Name: queue})
			return err
		}
	}
	deleteQueue := func(queue string) call {
		return func(ctx context.Context, _ filav1.FilaServiceClient, a filav1.FilaAdminClient) error {
			_, err := a.DeleteQueue(ctx, &filav1.DeleteQueueRequest{Queue: queue})
			return err
		}
	}
	redrive := func(ctx context.Context, _ filav1.FilaServiceClient, a filav1.FilaAdminClient) error {
		_, err := a.Redrive(ctx, &filav1.RedriveRequest{DlqQueue: "m.dlq"})
		return err
	}
	perm := func(pattern string, actions ...string) *filav1.Permission {
		return &filav1.Permission{QueuePattern: pattern, Actions: actions}
	}
	// A keyCase is a key's permissions and what a refusal of the call
	// names: "" for a key that must be allowed.
	type keyCase struct {
		perms []*filav1.Permission
		names string
	}
	all := []string{"produce", "consume", "admin"}
	others := map[string][]string{"produce": {"consume", "admin"}, "consume": {"produce", "admin"}, "admin": {"produce", "consume"}}
	type row struct {
		name  string
		allow []*filav1.Permission // what an allowing key has
		deny  []keyCase            // keys that are refused
		call  call
	}
	// plain needs action on pattern: every other action on "*" is refused.
	plain := func(name, action, pattern string, c call) row {
		return row{name, []*filav1.Permission{perm(pattern, action)}, []keyCase{{[]*filav1.Permission{perm("*", others[action]...)}, action}}, c}
	}
	// dlq needs action on "m" for a call on "m.dlq": "m.*" with every
	// action is refused too, naming the DLQ (issue 19, row 4).
	dlq := func(name, action string, c call) row {
		r := plain(name, action, "m", c)
		r.deny = append(r.deny, keyCase{[]*filav1.Permission{perm("m.*", all...)}, action + ` on queue "m.dlq" is not allowed for this key (the rights on a dead-letter queue are those on queue "m")`})
		return r
	}
	// batchTouchingDLQ: a batch naming "m.e" and "m.dlq" is refused whole
	// unless the key may reach both.
	batchTouchingDLQ := func(name string, c call) row {
		return row{name, []*filav1.Permission{perm("m.*", "consume"), perm("m", "consume")},
			[]keyCase{{[]*filav1.Permission{perm("m.*", all...)}, `consume on queue "m.dlq"`}}, c}
	}
	rpcs := []row{
		plain("Enqueue", "produce", "m", enqueue("m")),
		plain("EnqueueBatch", "produce", "m", func(ctx context.Context, s filav1.FilaServiceClient, _ filav1.FilaAdminClient) error {
			_, err := s.EnqueueBatch(ctx, &filav1.EnqueueBatchRequest{Messages: []*filav1.EnqueueRequest{{Queue: "m"}}})
			return err
		}),
		plain("Lease", "consume", "m", lease("m")),
		plain("Ack", "consume", "m", ack("m")),
		plain("Nack", "consume", "m", nack("m")),
		plain("Extend", "consume", "m", extend("m")),
		plain("AckBatch", "consume", "m", ackBatch("m")),
		plain("NackBatch", "consume", "m", nackBatch("m")),
		plain("GetStats", "admin", "m", stats("m")),
		plain("UpdateQueue", "admin", "m", update("m")),
		plain("Peek", "admin", "m", peek("m")),
		plain("PurgeQueue", "admin", "m", purge("m")),
		// Redrive moves m.dlq's messages into m: admin on m (the DLQ's
		// owner) and produce on m (where they land).
		{"Redrive", []*filav1.Permission{perm("m", "admin", "produce")}, []keyCase{
			{[]*filav1.Permission{perm("*", "produce", "consume")}, `admin on queue "m.dlq"`},
			{[]*filav1.Permission{perm("m.*", all...)}, `admin on queue "m.dlq"`},
			{[]*filav1.Permission{perm("m", "admin", "consume")}, `produce on queue "m"`},
			{[]*filav1.Permission{perm("m", "admin"), perm("m.*", "produce")}, `produce on queue "m"`},
		}, redrive},
		plain("CreateQueue", "admin", "n", create("n")),
		plain("DeleteQueue", "admin", "gone", deleteQueue("gone")),
		plain("ListQueues", "admin", "*", func(ctx context.Context, _ filav1.FilaServiceClient, a filav1.FilaAdminClient) error {
			_, err := a.ListQueues(ctx, &filav1.ListQueuesRequest{})
			return err
		}),
		plain("SetConfig", "admin", "*", func(ctx context.Context, _ filav1.FilaServiceClient, a filav1.FilaAdminClient) error {
			_, err := a.SetConfig(ctx, &filav1.SetConfigRequest{Key: "k", Value: "v"})
			return err
		}),
		plain("ListConfig", "admin", "*", func(ctx context.Context, _ filav1.FilaServiceClient, a filav1.FilaAdminClient) error {
			_, err := a.ListConfig(ctx, &filav1.ListConfigRequest{})
			return err
		}),
		plain("ListApiKeys", "admin", "*", func(ctx context.Context, _ filav1.FilaServiceClient, a filav1.FilaAdminClient) error {
			_, err := a.ListApiKeys(ctx, &filav1.ListApiKeysRequest{})
			return err
		}),
		plain("GetClusterStatus", "admin", "*", func(ctx context.Context, _ filav1.FilaServiceClient, a filav1.FilaAdminClient) error {
			_, err := a.GetClusterStatus(ctx, &filav1.GetClusterStatusRequest{})
			return err
		}),
		plain("Backup", "admin", "*", func(ctx context.Context, _ filav1.FilaServiceClient, a filav1.FilaAdminClient) error {
			st, err := a.Backup(ctx, &filav1.BackupRequest{})
			if err != nil {
				return err
			}
			_, err = st.Recv() // the refusal, or the first chunk
			return err
		}),
		// A DLQ belongs to its source queue: every right on m.dlq is the
		// same right on m.
		dlq("Enqueue m.dlq", "produce", enqueue("m.dlq")),
		dlq("Lease m.dlq", "consume", lease("m.dlq")),
		dlq("Ack m.dlq", "consume", ack("m.dlq")),
		dlq("Nack m.dlq", "consume", nack("m.dlq")),
		dlq("Extend m.dlq", "consume", extend("m.dlq")),
		dlq("AckBatch m.dlq", "consume", ackBatch("m.dlq")),
		dlq("NackBatch m.dlq", "consume", nackBatch("m.dlq")),
		dlq("GetStats m.dlq", "admin", stats("m.dlq")),
		dlq("UpdateQueue m.dlq", "admin", update("m.dlq")),
		dlq("Peek m.dlq", "admin", peek("m.dlq")),
		dlq("PurgeQueue m.dlq", "admin", purge("m.dlq")),
		dlq("DeleteQueue m.dlq", "admin", deleteQueue("m.dlq")), // allowed: FAILED_PRECONDITION while m exists
		batchTouchingDLQ("AckBatch m.e,m.dlq", ackBatch("m.e", "m.dlq")),
		batchTouchingDLQ("NackBatch m.e,m.dlq", nackBatch("m.e", "m.dlq")),
		// A DLQ's name is its source's to create, even before the source
		// exists (CreateQueue of the source adopts it).
		{"CreateQueue o.dlq", []*filav1.Permission{perm("o", "admin")},
			[]keyCase{{[]*filav1.Permission{perm("o.*", all...)}, `admin on queue "o.dlq"`}}, create("o.dlq")},
	}
	_, err = bootAdmin.CreateQueue(boot(nil), &filav1.CreateQueueRequest{Name: "m.e"})
	require.NoError(t, err)
	for i, rpc := range rpcs {
		// The allowing key first (names ""), then the refused ones.
		keys := append([]keyCase{{rpc.allow, ""}}, rpc.deny...)
		for j, k := range keys {
			name := fmt.Sprintf("k%d-true", i)
			if j > 0 {
				name = fmt.Sprintf("k%d-false-%d", i, j)
			}
			secret := grant(name, k.perms...)
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
				what := fmt.Sprintf("%s key=%s %v cert=%t: %v", rpc.name, name, k.perms, asCert, err)
				require.NotEqual(t, codes.Unauthenticated, code, what)
				if k.names == "" {
					require.NotEqual(t, codes.PermissionDenied, code, what)
				} else {
					require.Equal(t, codes.PermissionDenied, code, what)
					require.Contains(t, status.Convert(err).Message(), k.names, what)
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

// bearer sends a key with every call of a connection.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

// asKey is b's server seen through a connection that sends secret.
func asKey(t *testing.T, b *bundle, secret string) *bundle {
	t.Helper()
	conn := dial(t, b.srv.Addr(), grpc.WithPerRPCCredentials(bearer(secret)))
	return &bundle{srv: b.srv, svc: filav1.NewFilaServiceClient(conn), admin: filav1.NewFilaAdminClient(conn), conn: conn, cfg: b.cfg}
}

// TestDLQBelongsToItsSource is issue 19's row 4: a key with admin,consume
// on "orders.*" and no right on "orders" could Peek "orders.dlq" (payloads,
// headers, fila-dlq-error), Redrive it into "orders", Purge it and
// UpdateQueue it. Now every such call is PERMISSION_DENIED and changes
// nothing, while a key with the rights on "orders" may.
func TestDLQBelongsToItsSource(t *testing.T) {
	t.Parallel()
	srv := setup(t, setupOpts{cfg: func(c *config.Config) { c.Auth = config.Auth{Mode: "on", BootstrapKey: bootstrapKey} }})
	boot := asKey(t, srv, bootstrapKey)
	newKey := func(name string, perms ...*filav1.Permission) *bundle {
		t.Helper()
		resp, err := boot.admin.CreateApiKey(ctxT(t), &filav1.CreateApiKeyRequest{Name: name, Permissions: perms})
		require.NoError(t, err)
		return asKey(t, srv, resp.GetKey())
	}
	// One dead letter in orders.dlq: a nack on the only attempt.
	boot.createQueue(t, "orders", &filav1.QueueConfig{MaxAttempts: 1})
	boot.enqueue(t, "orders", map[string]string{"card": "4111"}, []byte("secret payload"))
	stream, cancel := boot.lease(t, "orders")
	m := recvN(t, stream, 1)[0]
	_, err := boot.svc.Nack(ctxT(t), &filav1.NackRequest{Queue: "orders", MessageId: m.GetId(), LeaseId: m.GetLeaseId(), Error: "declined"})
	require.NoError(t, err)
	cancel()
	eventually(t, func() bool { return boot.stats(t, "orders.dlq").GetDepth() == 1 }, "the dead letter in orders.dlq")
	before := boot.stats(t, "orders.dlq").GetConfig()

	hostile := newKey("orders-star", &filav1.Permission{QueuePattern: "orders.*", Actions: []string{"admin", "consume"}})
	calls := []struct {
		name string
		call func(context.Context) error
	}{
		{"Peek", func(ctx context.Context) error {
			_, err := hostile.admin.Peek(ctx, &filav1.PeekRequest{Queue: "orders.dlq", IncludePayload: true})
			return err
		}},
		{"Redrive", func(ctx context.Context) error {
			_, err := hostile.admin.Redrive(ctx, &filav1.RedriveRequest{DlqQueue: "orders.dlq"})
			return err
		}},
		{"PurgeQueue", func(ctx context.Context) error {
			_, err := hostile.admin.PurgeQueue(ctx, &filav1.PurgeQueueRequest{Queue: "orders.dlq"})
			return err
		}},
		{"UpdateQueue", func(ctx context.Context) error {
			_, err := hostile.admin.UpdateQueue(ctx, &filav1.UpdateQueueRequest{Name: "orders.dlq", Config: &filav1.QueueConfig{MaxDepth: 7}})
			return err
		}},
		{"GetStats", func(ctx context.Context) error {
			_, err := hostile.admin.GetStats(ctx, &filav1.GetStatsRequest{Queue: "orders.dlq"})
			return err
		}},
		{"DeleteQueue", func(ctx context.Context) error {
			_, err := hostile.admin.DeleteQueue(ctx, &filav1.DeleteQueueRequest{Queue: "orders.dlq"})
			return err
		}},
		{"Lease", func(ctx context.Context) error {
			s, err := hostile.svc.Consume(ctx, &filav1.ConsumeRequest{Queue: "orders.dlq"})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}},
	}
	for _, c := range calls {
		err := c.call(ctxT(t))
		requireCode(t, err, codes.PermissionDenied)
		require.Contains(t, status.Convert(err).Message(), `on queue "orders.dlq" is not allowed for this key (the rights on a dead-letter queue are those on queue "orders")`, c.name)
	}
	// Nothing changed: the dead letter is where it was, orders got nothing,
	// and the DLQ's config is as it was.
	st := boot.stats(t, "orders.dlq")
	require.EqualValues(t, 1, st.GetDepth())
	require.Equal(t, before.GetMaxDepth(), st.GetConfig().GetMaxDepth())
	boot.requireEmpty(t, "orders")
	// The key still reaches what its pattern names.
	hostile.createQueue(t, "orders.eu", nil)

	// Admin on orders reaches orders.dlq; Redrive also needs produce on
	// orders, where the messages land.
	owner := newKey("orders-admin", &filav1.Permission{QueuePattern: "orders", Actions: []string{"admin"}})
	peeked, err := owner.admin.Peek(ctxT(t), &filav1.PeekRequest{Queue: "orders.dlq"})
	require.NoError(t, err)
	require.Len(t, peeked.GetMessages(), 1)
	_, err = owner.admin.Redrive(ctxT(t), &filav1.RedriveRequest{DlqQueue: "orders.dlq"})
	requireCode(t, err, codes.PermissionDenied)
	require.Contains(t, status.Convert(err).Message(), `produce on queue "orders" is not allowed`)
	require.EqualValues(t, 1, boot.stats(t, "orders.dlq").GetDepth(), "a refused Redrive moves nothing")
	full := newKey("orders-owner", &filav1.Permission{QueuePattern: "orders", Actions: []string{"admin", "produce"}})
	moved, err := full.admin.Redrive(ctxT(t), &filav1.RedriveRequest{DlqQueue: "orders.dlq"})
	require.NoError(t, err)
	require.EqualValues(t, 1, moved.GetRedriven())

	// A queue named x.dlq with no queue x is still x's by name: the broker
	// would adopt it as the DLQ of an x created later.
	boot.createQueue(t, "x.dlq", nil)
	xStar := newKey("x-star", &filav1.Permission{QueuePattern: "x.*", Actions: []string{"admin"}})
	_, err = xStar.admin.GetStats(ctxT(t), &filav1.GetStatsRequest{Queue: "x.dlq"})
	requireCode(t, err, codes.PermissionDenied)
	xAdmin := newKey("x-admin", &filav1.Permission{QueuePattern: "x", Actions: []string{"admin"}})
	_, err = xAdmin.admin.GetStats(ctxT(t), &filav1.GetStatsRequest{Queue: "x.dlq"})
	require.NoError(t, err)

	// A permission on a DLQ's own name could never take effect: refused,
	// naming the field and where to grant it.
	_, err = boot.admin.CreateApiKey(ctxT(t), &filav1.CreateApiKeyRequest{Name: "dlq-ops",
		Permissions: []*filav1.Permission{{QueuePattern: "orders.dlq", Actions: []string{"admin"}}}})
	requireCode(t, err, codes.InvalidArgument)
	require.Contains(t, status.Convert(err).Message(), `permissions[0]: queue pattern "orders.dlq" names a dead-letter queue, whose rights are those on "orders"`)
}
