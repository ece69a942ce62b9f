package server_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/config"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// TestBadInput covers every row of SPEC §4 that a request can trigger: each
// gets its status, a message naming the field, and changes nothing.
func TestBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{cfg: func(c *config.Config) { c.Server.MaxMessageBytes = 1024 }})
	b.createQueue(t, "q", nil)
	// A ready message, never leased: acking it is as wrong as acking an
	// unknown id.
	readyID := b.enqueue(t, "q", nil, []byte("ready"))
	unknownID := "01936f0e-7b4c-7d2a-9c3e-2f1a0b9c8d7e"

	manyHeaders := map[string]string{}
	for i := range 65 {
		manyHeaders[strings.Repeat("h", i+1)] = "v"
	}
	const secret = "SECRET-HEADER-VALUE"
	tests := []struct {
		name     string
		call     func() error
		code     codes.Code
		contains string
	}{
		{"enqueue empty queue name", enqueueTo(b, "", nil, nil), codes.InvalidArgument, "queue: must not be empty"},
		{"enqueue long queue name", enqueueTo(b, strings.Repeat("q", 256), nil, nil), codes.InvalidArgument, "over the limit of 255"},
		{"enqueue bad queue name", enqueueTo(b, "q/1", nil, nil), codes.InvalidArgument, "outside [A-Za-z0-9._-]"},
		{"enqueue unknown queue", enqueueTo(b, "nope", nil, nil), codes.NotFound, `queue not found: "nope"`},
		{"payload over limit", enqueueTo(b, "q", nil, make([]byte, 1025)), codes.InvalidArgument, "over the limit of 1024 (server.max_message_bytes)"},
		{"too many headers", enqueueTo(b, "q", manyHeaders, nil), codes.InvalidArgument, "over the limit of 64"},
		{"header key too long", enqueueTo(b, "q", map[string]string{strings.Repeat("k", 257): "v"}, nil), codes.InvalidArgument, "key of 257 bytes"},
		{"header value too long", enqueueTo(b, "q", map[string]string{"k": strings.Repeat(secret, 500)}, nil), codes.InvalidArgument, "over the limit of 8192"},
		{"weight not a number", enqueueTo(b, "q", map[string]string{"fila-weight": "heavy"}, nil), codes.InvalidArgument, "fila-weight"},
		{"weight zero", enqueueTo(b, "q", map[string]string{"fila-weight": "0"}, nil), codes.InvalidArgument, "1 to 1000"},
		{"weight too big", enqueueTo(b, "q", map[string]string{"fila-weight": "1001"}, nil), codes.InvalidArgument, "1 to 1000"},
		{"create existing queue", func() error {
			_, err := b.admin.CreateQueue(ctxT(t), &filav1.CreateQueueRequest{Name: "q"})
			return err
		}, codes.AlreadyExists, "q"},
		{"create bad name", func() error {
			_, err := b.admin.CreateQueue(ctxT(t), &filav1.CreateQueueRequest{Name: "a b"})
			return err
		}, codes.InvalidArgument, "name:"},
		{"create bad visibility timeout", func() error {
			_, err := b.admin.CreateQueue(ctxT(t), &filav1.CreateQueueRequest{Name: "vt", Config: &filav1.QueueConfig{VisibilityTimeoutMs: 1}})
			return err
		}, codes.InvalidArgument, "config.visibility_timeout_ms"},
		{"delete unknown queue", func() error {
			_, err := b.admin.DeleteQueue(ctxT(t), &filav1.DeleteQueueRequest{Queue: "nope"})
			return err
		}, codes.NotFound, "nope"},
		{"stats unknown queue", func() error {
			_, err := b.admin.GetStats(ctxT(t), &filav1.GetStatsRequest{Queue: "nope"})
			return err
		}, codes.NotFound, "nope"},
		{"ack malformed id", ack(b, "q", "not-a-uuid"), codes.InvalidArgument, "message_id"},
		{"ack empty id", ack(b, "q", ""), codes.InvalidArgument, "message_id: must not be empty"},
		{"ack unknown id", ack(b, "q", unknownID), codes.NotFound, unknownID},
		{"ack ready (not leased) message", ack(b, "q", readyID), codes.NotFound, "not leased"},
		{"ack in unknown queue", ack(b, "nope", readyID), codes.NotFound, "nope"},
		{"nack malformed id", func() error {
			_, err := b.svc.Nack(ctxT(t), &filav1.NackRequest{Queue: "q", MessageId: "zzz"})
			return err
		}, codes.InvalidArgument, "message_id"},
		{"nack unknown id", func() error {
			_, err := b.svc.Nack(ctxT(t), &filav1.NackRequest{Queue: "q", MessageId: unknownID})
			return err
		}, codes.NotFound, "not leased"},
		{"lease unknown queue", func() error {
			s, err := b.svc.Lease(ctxT(t), &filav1.LeaseRequest{Queue: "nope"})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}, codes.NotFound, "nope"},
		{"lease bad queue name", func() error {
			s, err := b.svc.Lease(ctxT(t), &filav1.LeaseRequest{Queue: ""})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}, codes.InvalidArgument, "queue"},
	}
	before := b.stats(t, "q")
	require.EqualValues(t, 1, before.GetDepth())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			requireCode(t, err, tt.code)
			msg := status.Convert(err).Message()
			require.Contains(t, msg, tt.contains)
			require.NotContains(t, msg, secret, "a header value never appears in an error")
			after := b.stats(t, "q")
			require.Equal(t, before.GetDepth(), after.GetDepth(), "depth unchanged")
			require.Equal(t, before.GetInFlight(), after.GetInFlight(), "in-flight unchanged")
		})
	}
	list, err := b.admin.ListQueues(ctxT(t), &filav1.ListQueuesRequest{})
	require.NoError(t, err)
	require.Len(t, list.GetQueues(), 1, "no queue was created by a bad request")
}

func enqueueTo(b *bundle, queue string, headers map[string]string, payload []byte) func() error {
	return func() error {
		_, err := b.svc.Enqueue(bgCtx(), &filav1.EnqueueRequest{Queue: queue, Headers: headers, Payload: payload})
		return err
	}
}

func ack(b *bundle, queue, id string) func() error {
	return func() error {
		_, err := b.svc.Ack(bgCtx(), &filav1.AckRequest{Queue: queue, MessageId: id})
		return err
	}
}

// TestPerKeyStatsArePaged: 600 fairness keys of 8 KiB made a 4.9 MB GetStats
// answer, which a default gRPC client cannot receive.
func TestPerKeyStatsArePaged(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.createQueue(t, "wide", nil)
	const keys = 600
	for i := range keys {
		key := fmt.Sprintf("%03d-%s", i, strings.Repeat("k", 8<<10-4))
		b.enqueue(t, "wide", map[string]string{"fila-fairness-key": key}, nil)
	}
	seen := map[string]bool{}
	req := &filav1.GetStatsRequest{Queue: "wide", Sort: filav1.KeySort_KEY_SORT_PENDING}
	for pages := 1; ; pages++ {
		st, err := b.admin.GetStats(ctxT(t), req)
		require.NoError(t, err, "page %d", pages)
		require.EqualValues(t, keys, st.GetActiveFairnessKeys())
		require.LessOrEqual(t, len(st.GetPerKeyStats()), 100)
		for _, k := range st.GetPerKeyStats() {
			require.False(t, seen[k.GetKey()])
			seen[k.GetKey()] = true
		}
		if st.GetNextPageToken() == "" {
			require.Equal(t, 6, pages)
			break
		}
		req.PageToken = st.GetNextPageToken()
	}
	require.Len(t, seen, keys)
	_, err := b.admin.GetStats(ctxT(t), &filav1.GetStatsRequest{Queue: "wide", Limit: 5000})
	requireCode(t, err, codes.InvalidArgument)
}
