package server_test

// The compatibility test of issue 20: a Fila client's view of fila.v1
// (protos/filacompat/v1, Fila's numbering written out by us under another
// package name) against filad. TestFilaNumbering holds the numbering field
// by field; TestFilaClientFlow sends Fila's messages to filad's methods and
// checks that every field arrives and comes back.

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/fila-dev/filad/config"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	fila "github.com/fila-dev/filad/protos/filacompat/v1"
)

// filaMethods are Fila's RPCs: service, method, and whether it streams
// its answers.
var filaMethods = []struct {
	service, method string
	stream          bool
}{
	{"FilaService", "Enqueue", false}, {"FilaService", "Consume", true},
	{"FilaService", "Ack", false}, {"FilaService", "Nack", false},
	{"FilaAdmin", "CreateQueue", false}, {"FilaAdmin", "DeleteQueue", false},
	{"FilaAdmin", "SetConfig", false}, {"FilaAdmin", "GetConfig", false}, {"FilaAdmin", "ListConfig", false},
	{"FilaAdmin", "GetStats", false}, {"FilaAdmin", "Redrive", false}, {"FilaAdmin", "ListQueues", false},
	{"FilaAdmin", "CreateApiKey", false}, {"FilaAdmin", "RevokeApiKey", false}, {"FilaAdmin", "ListApiKeys", false},
	{"FilaAdmin", "SetAcl", false}, {"FilaAdmin", "GetAcl", false},
}

// TestFilaNumbering: every message of Fila's API is in fila.v1 under its
// name, each of its fields with Fila's number, name, type and cardinality;
// filad's own fields in those messages are numbered from 16; every Fila
// RPC exists with Fila's request and response types.
func TestFilaNumbering(t *testing.T) {
	t.Parallel()
	msgs := fila.File_filacompat_v1_compat_proto.Messages()
	require.Positive(t, msgs.Len())
	for i := range msgs.Len() {
		theirs := msgs.Get(i)
		if theirs.IsMapEntry() {
			continue
		}
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName("fila.v1." + theirs.Name()))
		require.NoError(t, err, "fila.v1.%s", theirs.Name())
		ours := d.(protoreflect.MessageDescriptor)
		for j := range theirs.Fields().Len() {
			f := theirs.Fields().Get(j)
			o := ours.Fields().ByNumber(f.Number())
			require.NotNil(t, o, "%s: no field %d (Fila's %s)", ours.FullName(), f.Number(), f.Name())
			require.Equal(t, f.Name(), o.Name(), "%s field %d", ours.FullName(), f.Number())
			require.Equal(t, f.Kind(), o.Kind(), "%s.%s", ours.FullName(), f.Name())
			require.Equal(t, f.Cardinality(), o.Cardinality(), "%s.%s", ours.FullName(), f.Name())
			require.Equal(t, f.IsMap(), o.IsMap(), "%s.%s", ours.FullName(), f.Name())
			if f.Message() != nil && !f.IsMap() {
				require.Equal(t, f.Message().Name(), o.Message().Name(), "%s.%s", ours.FullName(), f.Name())
			}
		}
		for j := range ours.Fields().Len() {
			if o := ours.Fields().Get(j); theirs.Fields().ByNumber(o.Number()) == nil {
				require.GreaterOrEqual(t, int(o.Number()), 16, "%s.%s is filad's own: from 16 up", ours.FullName(), o.Name())
			}
		}
	}
	for _, m := range filaMethods {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName("fila.v1." + m.service))
		require.NoError(t, err)
		md := d.(protoreflect.ServiceDescriptor).Methods().ByName(protoreflect.Name(m.method))
		require.NotNil(t, md, "fila.v1.%s/%s", m.service, m.method)
		require.Equal(t, m.stream, md.IsStreamingServer(), m.method)
		require.False(t, md.IsStreamingClient(), m.method)
		for _, typ := range []protoreflect.MessageDescriptor{md.Input(), md.Output()} {
			require.NotNil(t, msgs.ByName(typ.Name()), "%s/%s uses %s, which Fila's API does not have", m.service, m.method, typ.Name())
		}
	}
}

// filaClient calls filad's fila.v1 methods with Fila's messages, as a Fila
// SDK does.
type filaClient struct {
	t    *testing.T
	conn *grpc.ClientConn
	key  string // sent as the bearer key; "" sends none
}

func (c filaClient) ctx() context.Context {
	if c.key == "" {
		return ctxT(c.t)
	}
	ctx, cancel := context.WithTimeout(withKey(c.key), waitFor)
	c.t.Cleanup(cancel)
	return ctx
}

// call invokes fila.v1.<method> ("FilaAdmin/GetStats").
func (c filaClient) call(method string, req, resp proto.Message) error {
	return c.conn.Invoke(c.ctx(), "/fila.v1."+method, req, resp)
}

// must is call that must succeed; it returns resp.
func must[T proto.Message](c filaClient, method string, req proto.Message, resp T) T {
	c.t.Helper()
	require.NoError(c.t, c.call(method, req, resp), method)
	return resp
}

// consume opens Fila's Consume stream on queue; cancel closes it.
func (c filaClient) consume(queue string) (grpc.ClientStream, context.CancelFunc) {
	c.t.Helper()
	ctx, cancel := context.WithCancel(c.ctx())
	s, err := c.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/fila.v1.FilaService/Consume")
	require.NoError(c.t, err)
	require.NoError(c.t, s.SendMsg(&fila.ConsumeRequest{Queue: queue}))
	require.NoError(c.t, s.CloseSend())
	return s, cancel
}

// next is the stream's next message, as Fila's ConsumeResponse carries it.
func next(t *testing.T, s grpc.ClientStream) *fila.Message {
	t.Helper()
	resp := &fila.ConsumeResponse{}
	require.NoError(t, s.RecvMsg(resp))
	require.NotNil(t, resp.GetMessage(), "Fila reads the delivery from field 1")
	return resp.GetMessage()
}

// The scripts of the compat queue: the tenant header is the fairness key,
// every message has weight 3 and one throttle key; a nack retries once and
// then dead-letters.
const (
	compatOnEnqueue = `function on_enqueue(msg)
  return { fairness_key = msg.headers["tenant"], weight = 3, throttle_keys = { "provider:x" } }
end`
	compatOnFailure = `function on_failure(msg, err)
  if msg.attempts >= 2 then return { action = "dlq" } end
  return { action = "retry", delay_ms = 0 }
end`
)

// TestFilaClientFlow is issue 20's compatibility test: a Fila client's
// queue config, enqueue, consume, nack, redelivery, dead letter, redrive,
// ack, stats, config store, its key model and its error codes, every field
// checked. On the commit before issue 20 it fails at the first step that
// reads a renumbered field (the queue's visibility timeout was stored as
// max_depth).
func TestFilaClientFlow(t *testing.T) {
	t.Parallel()
	const filaBootstrap = "test-bootstrap-key-12345" // the 24 characters of Fila's SDK suites
	b := setup(t, setupOpts{cfg: func(c *config.Config) { c.Auth = config.Auth{Mode: "on", BootstrapKey: filaBootstrap} }})
	anon := filaClient{t: t, conn: b.conn}
	boot := filaClient{t: t, conn: b.conn, key: filaBootstrap}
	ours := asKey(t, b, filaBootstrap) // filad's own view, for what Fila's API does not show

	requireCode(t, anon.call("FilaAdmin/ListQueues", &fila.ListQueuesRequest{}, &fila.ListQueuesResponse{}), codes.Unauthenticated)

	// The queue config arrives field by field.
	created := must(boot, "FilaAdmin/CreateQueue", &fila.CreateQueueRequest{Name: "compat", Config: &fila.QueueConfig{
		OnEnqueueScript: compatOnEnqueue, OnFailureScript: compatOnFailure, VisibilityTimeoutMs: 5000,
	}}, &fila.CreateQueueResponse{})
	require.Equal(t, "compat", created.GetQueueId())
	cfg := ours.stats(t, "compat").GetConfig()
	require.Equal(t, uint64(5000), cfg.GetVisibilityTimeoutMs())
	require.Equal(t, compatOnEnqueue, cfg.GetOnEnqueueScript())
	require.Equal(t, compatOnFailure, cfg.GetOnFailureScript())
	require.Zero(t, cfg.GetMaxDepth(), "Fila's visibility_timeout_ms is not our max_depth")
	requireCode(t, boot.call("FilaAdmin/CreateQueue", &fila.CreateQueueRequest{Name: "compat"}, &fila.CreateQueueResponse{}), codes.AlreadyExists)
	requireCode(t, boot.call("FilaAdmin/CreateQueue", &fila.CreateQueueRequest{}, &fila.CreateQueueResponse{}), codes.InvalidArgument)
	requireCode(t, boot.call("FilaService/Enqueue", &fila.EnqueueRequest{Queue: "missing", Payload: []byte("x")}, &fila.EnqueueResponse{}), codes.NotFound)

	// The config store.
	must(boot, "FilaAdmin/SetConfig", &fila.SetConfigRequest{Key: "throttle.provider:x", Value: "1000"}, &fila.SetConfigResponse{})
	got := must(boot, "FilaAdmin/GetConfig", &fila.GetConfigRequest{Key: "throttle.provider:x"}, &fila.GetConfigResponse{})
	require.Equal(t, "1000", got.GetValue())
	list := must(boot, "FilaAdmin/ListConfig", &fila.ListConfigRequest{Prefix: "throttle."}, &fila.ListConfigResponse{})
	require.Equal(t, uint32(1), list.GetTotalCount())
	require.Len(t, list.GetEntries(), 1)
	require.Equal(t, "throttle.provider:x", list.GetEntries()[0].GetKey())
	require.Equal(t, "1000", list.GetEntries()[0].GetValue())

	// Enqueue, consume: every field of the delivery.
	before := time.Now()
	id := must(boot, "FilaService/Enqueue", &fila.EnqueueRequest{Queue: "compat", Headers: map[string]string{"tenant": "a"}, Payload: []byte("p1")},
		&fila.EnqueueResponse{}).GetMessageId()
	require.NotEmpty(t, id)
	stream, closeStream := boot.consume("compat")
	m := next(t, stream)
	require.Equal(t, id, m.GetId())
	require.Equal(t, "a", m.GetHeaders()["tenant"])
	require.Equal(t, []byte("p1"), m.GetPayload())
	md := m.GetMetadata()
	require.Equal(t, "a", md.GetFairnessKey())
	require.Equal(t, uint32(3), md.GetWeight())
	require.Equal(t, []string{"provider:x"}, md.GetThrottleKeys())
	require.Zero(t, md.GetAttemptCount())
	require.Equal(t, "compat", md.GetQueueId())
	enqueued, leased := m.GetTimestamps().GetEnqueuedAt().AsTime(), m.GetTimestamps().GetLeasedAt().AsTime()
	require.False(t, enqueued.Before(before.Truncate(time.Millisecond)), "enqueued_at %v", enqueued)
	require.False(t, leased.Before(enqueued), "leased_at %v", leased)
	// The bytes a Fila client got carry filad's additions too, from 16 up:
	// the lease's expiry is the queue's 5 s after leased_at.
	raw, err := proto.Marshal(m)
	require.NoError(t, err)
	asOurs := &filav1.Message{}
	require.NoError(t, proto.Unmarshal(raw, asOurs))
	require.NotEmpty(t, asOurs.GetLeaseId())
	require.Equal(t, 5*time.Second, asOurs.GetTimestamps().GetLeaseExpiresAt().AsTime().Sub(leased))

	st := must(boot, "FilaAdmin/GetStats", &fila.GetStatsRequest{Queue: "compat"}, &fila.GetStatsResponse{})
	require.Zero(t, st.GetDepth())
	require.Equal(t, uint64(1), st.GetInFlight())
	require.Equal(t, uint32(1), st.GetActiveConsumers())

	// Nack: redelivered with attempt_count 1, then dead-lettered (the
	// on_failure script), redriven and acked.
	must(boot, "FilaService/Nack", &fila.NackRequest{Queue: "compat", MessageId: id, Error: "boom"}, &fila.NackResponse{})
	m = next(t, stream)
	require.Equal(t, id, m.GetId())
	require.Equal(t, uint32(1), m.GetMetadata().GetAttemptCount())
	must(boot, "FilaService/Nack", &fila.NackRequest{Queue: "compat", MessageId: id, Error: "boom"}, &fila.NackResponse{})
	dlq := must(boot, "FilaAdmin/GetStats", &fila.GetStatsRequest{Queue: "compat.dlq"}, &fila.GetStatsResponse{})
	require.Equal(t, uint64(1), dlq.GetDepth())
	redriven := must(boot, "FilaAdmin/Redrive", &fila.RedriveRequest{DlqQueue: "compat.dlq", Count: 0}, &fila.RedriveResponse{})
	require.Equal(t, uint64(1), redriven.GetRedriven())
	m = next(t, stream)
	require.Equal(t, id, m.GetId())
	must(boot, "FilaService/Ack", &fila.AckRequest{Queue: "compat", MessageId: id}, &fila.AckResponse{})
	requireCode(t, boot.call("FilaService/Ack", &fila.AckRequest{Queue: "compat", MessageId: id}, &fila.AckResponse{}), codes.NotFound)

	// Stats: fairness keys, throttle buckets, the cluster fields.
	closeStream()
	eventually(t, func() bool {
		return must(boot, "FilaAdmin/GetStats", &fila.GetStatsRequest{Queue: "compat"}, &fila.GetStatsResponse{}).GetActiveConsumers() == 0
	}, "the stream's consumer gone")
	for _, tenant := range []string{"b", "c"} {
		must(boot, "FilaService/Enqueue", &fila.EnqueueRequest{Queue: "compat", Headers: map[string]string{"tenant": tenant}, Payload: []byte(tenant)}, &fila.EnqueueResponse{})
	}
	st = must(boot, "FilaAdmin/GetStats", &fila.GetStatsRequest{Queue: "compat"}, &fila.GetStatsResponse{})
	require.Equal(t, uint64(2), st.GetDepth())
	require.Zero(t, st.GetInFlight())
	require.Equal(t, uint64(2), st.GetActiveFairnessKeys())
	require.Positive(t, st.GetQuantum())
	require.Len(t, st.GetPerKeyStats(), 2)
	for _, k := range st.GetPerKeyStats() {
		require.Contains(t, []string{"b", "c"}, k.GetKey())
		require.Equal(t, uint64(1), k.GetPendingCount())
		require.Equal(t, uint32(3), k.GetWeight())
	}
	require.Len(t, st.GetPerThrottleStats(), 1)
	th := st.GetPerThrottleStats()[0]
	require.Equal(t, "provider:x", th.GetKey())
	require.Equal(t, 1000.0, th.GetRatePerSecond())
	require.Equal(t, 1000.0, th.GetBurst())
	require.Positive(t, th.GetTokens())
	// Issue 24: on a single node the replication fields read 0/1/1 (no
	// node id, one copy, one node).
	require.Zero(t, st.GetLeaderNodeId())
	require.Equal(t, uint32(1), st.GetReplicationCount())
	queues := must(boot, "FilaAdmin/ListQueues", &fila.ListQueuesRequest{}, &fila.ListQueuesResponse{})
	require.Equal(t, uint32(1), queues.GetClusterNodeCount())
	var names []string
	for _, q := range queues.GetQueues() {
		names = append(names, q.GetName())
		require.Zero(t, q.GetLeaderNodeId())
	}
	require.ElementsMatch(t, []string{"compat", "compat.dlq"}, names)

	// Fila's key model: a key with no rights, granted them by key_id.
	expires := uint64(time.Now().Add(time.Hour).UnixMilli())
	made := must(boot, "FilaAdmin/CreateApiKey", &fila.CreateApiKeyRequest{Name: "app", ExpiresAtMs: expires}, &fila.CreateApiKeyResponse{})
	require.NotEmpty(t, made.GetKeyId())
	require.NotEmpty(t, made.GetKey())
	require.False(t, made.GetIsSuperadmin())
	app := filaClient{t: t, conn: b.conn, key: made.GetKey()}
	enqueueAsApp := func() error {
		return app.call("FilaService/Enqueue", &fila.EnqueueRequest{Queue: "compat", Payload: []byte("x")}, &fila.EnqueueResponse{})
	}
	requireCode(t, enqueueAsApp(), codes.PermissionDenied)
	acl := must(boot, "FilaAdmin/GetAcl", &fila.GetAclRequest{KeyId: made.GetKeyId()}, &fila.GetAclResponse{})
	require.Equal(t, made.GetKeyId(), acl.GetKeyId())
	require.Empty(t, acl.GetPermissions())
	grants := []*fila.AclPermission{{Kind: "produce", Pattern: "compat"}, {Kind: "consume", Pattern: "comp*"}}
	requireCode(t, boot.call("FilaAdmin/SetAcl", &fila.SetAclRequest{KeyId: made.GetKeyId(), Permissions: grants}, &fila.SetAclResponse{}), codes.InvalidArgument)
	grants[1].Pattern = "compat.*"
	requireCode(t, boot.call("FilaAdmin/SetAcl", &fila.SetAclRequest{KeyId: made.GetKeyId(), Permissions: []*fila.AclPermission{{Kind: "delete", Pattern: "*"}}},
		&fila.SetAclResponse{}), codes.InvalidArgument)
	requireCode(t, boot.call("FilaAdmin/SetAcl", &fila.SetAclRequest{KeyId: "no-such-key", Permissions: grants}, &fila.SetAclResponse{}), codes.NotFound)
	requireCode(t, app.call("FilaAdmin/SetAcl", &fila.SetAclRequest{KeyId: made.GetKeyId(), Permissions: grants}, &fila.SetAclResponse{}), codes.PermissionDenied)
	must(boot, "FilaAdmin/SetAcl", &fila.SetAclRequest{KeyId: made.GetKeyId(), Permissions: grants}, &fila.SetAclResponse{})
	require.NoError(t, enqueueAsApp())
	acl = must(boot, "FilaAdmin/GetAcl", &fila.GetAclRequest{KeyId: made.GetKeyId()}, &fila.GetAclResponse{})
	require.Len(t, acl.GetPermissions(), 2)
	for i, p := range acl.GetPermissions() {
		require.True(t, proto.Equal(grants[i], p), "%v", p)
	}
	require.False(t, acl.GetIsSuperadmin())

	root := must(boot, "FilaAdmin/CreateApiKey", &fila.CreateApiKeyRequest{Name: "root", IsSuperadmin: true}, &fila.CreateApiKeyResponse{})
	require.True(t, root.GetIsSuperadmin())
	rootC := filaClient{t: t, conn: b.conn, key: root.GetKey()}
	must(rootC, "FilaAdmin/ListQueues", &fila.ListQueuesRequest{}, &fila.ListQueuesResponse{})
	require.True(t, must(boot, "FilaAdmin/GetAcl", &fila.GetAclRequest{KeyId: root.GetKeyId()}, &fila.GetAclResponse{}).GetIsSuperadmin())
	keys := must(boot, "FilaAdmin/ListApiKeys", &fila.ListApiKeysRequest{}, &fila.ListApiKeysResponse{})
	require.Len(t, keys.GetKeys(), 2, "the bootstrap key is not stored, so not listed")
	for _, k := range keys.GetKeys() {
		require.Positive(t, k.GetCreatedAtMs())
		require.LessOrEqual(t, k.GetCreatedAtMs(), uint64(time.Now().UnixMilli()))
		switch k.GetKeyId() {
		case made.GetKeyId():
			require.Equal(t, "app", k.GetName())
			require.Equal(t, expires, k.GetExpiresAtMs())
			require.False(t, k.GetIsSuperadmin())
		case root.GetKeyId():
			require.Equal(t, "root", k.GetName())
			require.Zero(t, k.GetExpiresAtMs())
			require.True(t, k.GetIsSuperadmin())
		default:
			t.Fatalf("unexpected key %v", k)
		}
	}
	// A key with admin on "*" but not superadmin may not make a superadmin.
	admin := must(boot, "FilaAdmin/CreateApiKey", &fila.CreateApiKeyRequest{Name: "ops"}, &fila.CreateApiKeyResponse{})
	must(boot, "FilaAdmin/SetAcl", &fila.SetAclRequest{KeyId: admin.GetKeyId(), Permissions: []*fila.AclPermission{{Kind: "admin", Pattern: "*"}}}, &fila.SetAclResponse{})
	ops := filaClient{t: t, conn: b.conn, key: admin.GetKey()}
	requireCode(t, ops.call("FilaAdmin/CreateApiKey", &fila.CreateApiKeyRequest{Name: "sneaky", IsSuperadmin: true}, &fila.CreateApiKeyResponse{}), codes.PermissionDenied)
	must(ops, "FilaAdmin/CreateApiKey", &fila.CreateApiKeyRequest{Name: "plain"}, &fila.CreateApiKeyResponse{})

	must(boot, "FilaAdmin/RevokeApiKey", &fila.RevokeApiKeyRequest{KeyId: made.GetKeyId()}, &fila.RevokeApiKeyResponse{})
	requireCode(t, enqueueAsApp(), codes.Unauthenticated)
	requireCode(t, boot.call("FilaAdmin/RevokeApiKey", &fila.RevokeApiKeyRequest{KeyId: made.GetKeyId()}, &fila.RevokeApiKeyResponse{}), codes.NotFound)

	must(boot, "FilaAdmin/DeleteQueue", &fila.DeleteQueueRequest{Queue: "compat"}, &fila.DeleteQueueResponse{})
	requireCode(t, boot.call("FilaAdmin/GetStats", &fila.GetStatsRequest{Queue: "compat"}, &fila.GetStatsResponse{}), codes.NotFound)
}
