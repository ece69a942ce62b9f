package gateway

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/fila-dev/filad/actors"
	"github.com/fila-dev/filad/auth"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// TestDLQSuffixAgrees: auth names dead-letter queues without importing the
// actors; the two suffixes must be one.
func TestDLQSuffixAgrees(t *testing.T) {
	t.Parallel()
	require.Equal(t, actors.DLQSuffix, auth.DLQSuffix)
	require.Equal(t, "orders", auth.Owner(actors.DLQName("orders")))
}

// TestRequired: what each request needs. Redrive needs produce where the
// messages land, its DLQ's source (issue 19, row 4: admin on orders.* could
// Redrive orders.dlq into orders, where it may not produce).
func TestRequired(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		req  any
		want []need
	}{
		{"Enqueue", &filav1.EnqueueRequest{Queue: "q"}, on(auth.Produce, "q")},
		{"EnqueueBatch names every queue", &filav1.EnqueueBatchRequest{Messages: []*filav1.EnqueueRequest{{Queue: "a"}, {Queue: "b.dlq"}}},
			on(auth.Produce, "a", "b.dlq")},
		{"AckBatch", &filav1.AckBatchRequest{Acks: []*filav1.AckRequest{{Queue: "a"}, {Queue: "a.dlq"}}}, on(auth.Consume, "a", "a.dlq")},
		{"NackBatch", &filav1.NackBatchRequest{Nacks: []*filav1.NackRequest{{Queue: "a"}}}, on(auth.Consume, "a")},
		{"Lease", &filav1.ConsumeRequest{Queue: "q.dlq"}, on(auth.Consume, "q.dlq")},
		{"Peek", &filav1.PeekRequest{Queue: "q.dlq"}, on(auth.Admin, "q.dlq")},
		{"Redrive", &filav1.RedriveRequest{DlqQueue: "orders.dlq"}, []need{{auth.Admin, "orders.dlq"}, {auth.Produce, "orders"}}},
		{"Redrive of a DLQ name's DLQ lands in the DLQ name", &filav1.RedriveRequest{DlqQueue: "o.dlq.dlq"},
			[]need{{auth.Admin, "o.dlq.dlq"}, {auth.Produce, "o.dlq"}}},
		{"Redrive of no DLQ moves nothing", &filav1.RedriveRequest{DlqQueue: "orders"}, on(auth.Admin, "orders")},
		{"ListQueues is broker-wide", &filav1.ListQueuesRequest{}, on(auth.Admin, "")},
		{"CreateApiKey is broker-wide", &filav1.CreateApiKeyRequest{}, on(auth.Admin, "")},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, required(tt.req), tt.name)
	}
}

// TestEveryMethodHasPermission: every method of every service the gateway
// registers is exempt from keys (health, reflection) or has its own entry
// in permissions, so that a new RPC cannot silently fall to required's
// default; and every entry is some method's, so none is left behind when
// an RPC goes.
func TestEveryMethodHasPermission(t *testing.T) {
	t.Parallel()
	g := grpc.NewServer()
	(&Server{health: health.NewServer()}).Register(g)
	byInput := map[protoreflect.FullName]string{} // request type → its method
	services := g.GetServiceInfo()
	require.Contains(t, services, filav1.FilaService_ServiceDesc.ServiceName)
	require.Contains(t, services, filav1.FilaAdmin_ServiceDesc.ServiceName)
	for name, info := range services {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		require.NoError(t, err, "service %s has no descriptor", name)
		sd, ok := d.(protoreflect.ServiceDescriptor)
		require.True(t, ok, "%s is not a service", name)
		for _, m := range info.Methods {
			method := "/" + name + "/" + m.Name
			if exempt(method) {
				continue
			}
			md := sd.Methods().ByName(protoreflect.Name(m.Name))
			require.NotNil(t, md, "%s: no descriptor", method)
			in := md.Input().FullName()
			require.Contains(t, permissions, in, "%s: no entry for %s in gateway/authz.go's permissions", method, in)
			other, dup := byInput[in]
			require.False(t, dup, "%s and %s share the request type %s: give each RPC its own, so that each has its own permission", method, other, in)
			byInput[in] = method
		}
	}
	for in := range permissions {
		require.Contains(t, byInput, in, "permissions has an entry for %s, which no registered method takes", in)
	}
}

// TestRequiredDefault: a message with no entry needs admin on the whole
// broker, the safe side.
func TestRequiredDefault(t *testing.T) {
	t.Parallel()
	for _, req := range []any{&filav1.ConsumeResponse{}, "not a message", nil} {
		require.Equal(t, on(auth.Admin, ""), required(req), "%T", req)
	}
	for _, req := range []any{&filav1.BackupRequest{}, &filav1.SetAclRequest{}, &filav1.SetConfigRequest{Key: "throttle.x"}} {
		require.Equal(t, on(auth.Admin, ""), required(req), "%T", req)
	}
}
