package server_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

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
			s, err := b.svc.Consume(ctxT(t), &filav1.ConsumeRequest{Queue: "nope"})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}, codes.NotFound, "nope"},
		{"max_attempts over the limit", createWith(b, "ma", &filav1.QueueConfig{MaxAttempts: 10_001}), codes.InvalidArgument, "config.max_attempts: 10001 is over the limit of 10000"},
		{"backoff multiplier out of range", createWith(b, "bm", &filav1.QueueConfig{RetryBackoff: &filav1.RetryBackoff{InitialMs: 10, Multiplier: 11}}),
			codes.InvalidArgument, "config.retry_backoff.multiplier"},
		{"backoff max below initial", createWith(b, "bx", &filav1.QueueConfig{RetryBackoff: &filav1.RetryBackoff{InitialMs: 10, MaxMs: 5}}),
			codes.InvalidArgument, "config.retry_backoff.max_ms: 5 is below initial_ms 10"},
		{"backoff over the max delay", createWith(b, "bd", &filav1.QueueConfig{RetryBackoff: &filav1.RetryBackoff{InitialMs: 86_400_001}}),
			codes.InvalidArgument, "config.retry_backoff.initial_ms"},
		{"name leaves no room for its DLQ", createWith(b, strings.Repeat("n", 252), nil), codes.InvalidArgument, "limit of 251 for a queue with a dead-letter queue"},
		{"update unknown queue", func() error {
			_, err := b.admin.UpdateQueue(ctxT(t), &filav1.UpdateQueueRequest{Name: "nope", Config: &filav1.QueueConfig{MaxAttempts: 3}})
			return err
		}, codes.NotFound, "nope"},
		{"update unknown mask field", func() error {
			_, err := b.admin.UpdateQueue(ctxT(t), &filav1.UpdateQueueRequest{Name: "q", UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"colour"}}})
			return err
		}, codes.InvalidArgument, `update_mask: "colour"`},
		{"update max_attempts out of range", func() error {
			_, err := b.admin.UpdateQueue(ctxT(t), &filav1.UpdateQueueRequest{Name: "q", Config: &filav1.QueueConfig{MaxAttempts: 99_999}})
			return err
		}, codes.InvalidArgument, "config.max_attempts"},
		{"redrive a queue that is not a DLQ", redrive(b, "q"), codes.InvalidArgument, "dlq_queue: \"q\" is not a dead-letter queue"},
		{"redrive unknown DLQ", redrive(b, "nope.dlq"), codes.NotFound, "nope.dlq"},
		{"delay not a number", enqueueTo(b, "q", map[string]string{"fila-delay-ms": "soon"}, nil), codes.InvalidArgument, "fila-delay-ms"},
		{"delay negative", enqueueTo(b, "q", map[string]string{"fila-delay-ms": "-5"}, nil), codes.InvalidArgument, "0 to 86400000"},
		{"delay over the max", enqueueTo(b, "q", map[string]string{"fila-delay-ms": "86400001"}, nil), codes.InvalidArgument, "0 to 86400000"},
		{"delete a DLQ whose source exists", func() error {
			_, err := b.admin.DeleteQueue(ctxT(t), &filav1.DeleteQueueRequest{Queue: "q.dlq"})
			return err
		}, codes.FailedPrecondition, `"q.dlq" is the dead-letter queue of "q"`},
		{"peek over the page limit", func() error {
			_, err := b.admin.Peek(ctxT(t), &filav1.PeekRequest{Queue: "q", Limit: 5000})
			return err
		}, codes.InvalidArgument, "limit: 5000"},
		{"peek with a foreign page token", func() error {
			_, err := b.admin.Peek(ctxT(t), &filav1.PeekRequest{Queue: "q", PageToken: "xyz"})
			return err
		}, codes.InvalidArgument, "page_token"},
		{"purge unknown queue", func() error {
			_, err := b.admin.PurgeQueue(ctxT(t), &filav1.PurgeQueueRequest{Queue: "nope"})
			return err
		}, codes.NotFound, "nope"},
		{"config key with a space", setConfig(b, "a b", "v"), codes.InvalidArgument, "key: ' ' at byte 1"},
		{"config key empty", setConfig(b, "", "v"), codes.InvalidArgument, "key: must not be empty"},
		{"config value too long", setConfig(b, "k", strings.Repeat(secret, 4000)), codes.InvalidArgument, "value: 76000 bytes is over the limit of 65536"},
		{"consume bad queue name", func() error {
			s, err := b.svc.Consume(ctxT(t), &filav1.ConsumeRequest{Queue: ""})
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
			require.Zero(t, after.GetDelayed(), "nothing delayed")
			require.True(t, proto.Equal(before.GetConfig(), after.GetConfig()), "config unchanged")
		})
	}
	list, err := b.admin.ListQueues(ctxT(t), &filav1.ListQueuesRequest{})
	require.NoError(t, err)
	require.Len(t, list.GetQueues(), 2, "no queue was created by a bad request: q and q.dlq")
	cfg, err := b.admin.ListConfig(ctxT(t), &filav1.ListConfigRequest{})
	require.NoError(t, err)
	require.Zero(t, cfg.GetTotalCount(), "no config key was set by a bad request")
}

func createWith(b *bundle, name string, cfg *filav1.QueueConfig) func() error {
	return func() error {
		_, err := b.admin.CreateQueue(bgCtx(), &filav1.CreateQueueRequest{Name: name, Config: cfg})
		return err
	}
}

func redrive(b *bundle, dlq string) func() error {
	return func() error {
		_, err := b.admin.Redrive(bgCtx(), &filav1.RedriveRequest{DlqQueue: dlq})
		return err
	}
}

func setConfig(b *bundle, key, value string) func() error {
	return func() error {
		_, err := b.admin.SetConfig(bgCtx(), &filav1.SetConfigRequest{Key: key, Value: value})
		return err
	}
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
