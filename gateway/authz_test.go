package gateway

import (
	"testing"

	"github.com/stretchr/testify/require"

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
