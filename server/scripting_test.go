package server_test

import (
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/telemetry"
)

// tenantFairness is docs/scripting.md's first example.
const tenantFairness = `
function on_enqueue(msg)
  local tenant = msg.headers["tenant"] or "anonymous"
  return { fairness_key = tenant, weight = tonumber(fila.get("weight." .. tenant)) or 1 }
end`

// TestScriptAssignsFairness: a tenant header becomes the fairness key and
// the weights come from the runtime config store; DRR shares follow them.
func TestScriptAssignsFairness(t *testing.T) {
	t.Parallel()
	b, h := harnessed(t, setupOpts{})
	for k, v := range map[string]string{"weight.a": "1", "weight.b": "3"} {
		_, err := b.admin.SetConfig(ctxT(t), &filav1.SetConfigRequest{Key: k, Value: v})
		require.NoError(t, err)
	}
	b.createQueue(t, "tenants", &filav1.QueueConfig{OnEnqueueScript: tenantFairness})
	var reqs []*filav1.EnqueueRequest
	for range 100 {
		for _, tenant := range []string{"a", "b"} {
			reqs = append(reqs, &filav1.EnqueueRequest{Queue: "tenants", Headers: map[string]string{"tenant": tenant}})
		}
	}
	_, err := b.svc.EnqueueBatch(ctxT(t), &filav1.EnqueueBatchRequest{Messages: reqs})
	require.NoError(t, err)
	st := b.stats(t, "tenants")
	require.EqualValues(t, 2, st.GetActiveFairnessKeys())

	stream, err := b.svc.Consume(ctxT(t), &filav1.ConsumeRequest{Queue: "tenants", MaxInFlight: 80})
	require.NoError(t, err)
	share := map[string]int{}
	for _, m := range recvN(t, stream, 80) {
		share[m.GetMetadata().GetFairnessKey()]++
		require.Equal(t, m.GetHeaders()["tenant"], m.GetMetadata().GetFairnessKey())
	}
	require.Equal(t, map[string]int{"a": 20, "b": 60}, share, "weights 1:3 from the script")
	b.sync(t, "tenants")
	hook := []attribute.KeyValue{attribute.String("queue_id", "tenants"), attribute.String("hook", "on_enqueue")}
	require.EqualValues(t, 200, h.HistogramCount(t, telemetry.LuaDuration.Name, hook...), "one call per message")
}

// TestFailureScriptRetriesThenDeadLetters: on_failure retries with a delay
// and dead-letters on the third attempt, whatever max_attempts says.
func TestFailureScriptRetriesThenDeadLetters(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.createQueue(t, "jobs", &filav1.QueueConfig{OnFailureScript: `
function on_failure(msg, err)
  if msg.attempts >= 2 then return { action = "dlq" } end
  return { action = "retry", delay_ms = 1 }
end`})
	id := b.enqueue(t, "jobs", nil, nil)
	stream, _ := b.lease(t, "jobs")
	for range 2 {
		m := recvN(t, stream, 1)[0]
		_, err := b.svc.Nack(ctxT(t), &filav1.NackRequest{Queue: "jobs", MessageId: id, LeaseId: m.GetLeaseId(), Error: "bad input"})
		require.NoError(t, err)
	}
	require.EqualValues(t, 1, b.stats(t, "jobs.dlq").GetDepth(), "dead-lettered by the script on the second failure")
}

// TestBadScripts: a script that does not compile, or lacks its hook, is
// INVALID_ARGUMENT naming the field, with Lua's message and line; one that
// fails at run time leaves Enqueue working, counted, and opens the breaker.
func TestBadScripts(t *testing.T) {
	t.Parallel()
	b, h := harnessed(t, setupOpts{})
	for _, tt := range []struct{ script, want string }{
		{"function on_enqueue(msg)\n  return {\nend", "config.on_enqueue_script: on_enqueue line:3"},
		{"x = 1", "config.on_enqueue_script: the script defines no function on_enqueue"},
		{"while true do end", "config.on_enqueue_script: "},
	} {
		_, err := b.admin.CreateQueue(ctxT(t), &filav1.CreateQueueRequest{Name: "bad", Config: &filav1.QueueConfig{OnEnqueueScript: tt.script}})
		require.Equal(t, codes.InvalidArgument, status.Code(err), tt.script)
		require.Contains(t, status.Convert(err).Message(), tt.want)
	}
	b.createQueue(t, "flaky", nil)
	_, err := b.admin.UpdateQueue(ctxT(t), &filav1.UpdateQueueRequest{Name: "flaky",
		Config:     &filav1.QueueConfig{OnEnqueueScript: `function on_enqueue(msg) if msg.headers.boom then error("boom") end return nil end`},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"on_enqueue_script"}}})
	require.NoError(t, err)
	for range 4 {
		b.enqueue(t, "flaky", map[string]string{"boom": "1"}, nil) // never fails the Enqueue
	}
	require.EqualValues(t, 4, b.stats(t, "flaky").GetDepth())
	b.sync(t, "flaky")
	hook := []attribute.KeyValue{attribute.String("queue_id", "flaky"), attribute.String("hook", "on_enqueue")}
	h.AssertCounter(t, telemetry.LuaErrors.Name, hook, 3)
	h.AssertCounter(t, telemetry.LuaBreakerActivations.Name, qattr("flaky"), 1)
	require.EqualValues(t, 3, h.HistogramCount(t, telemetry.LuaDuration.Name, hook...), "the fourth was bypassed")
}

// TestThrottleThroughTheAPI: throttle rates are runtime config, checked on
// the way in, shown by GetStats, and counted: pass and hit decisions and the
// tokens left.
func TestThrottleThroughTheAPI(t *testing.T) {
	t.Parallel()
	b, h := harnessed(t, setupOpts{})
	for _, bad := range []string{"fast", "0", "-3", "10,0", "10,x"} {
		_, err := b.admin.SetConfig(ctxT(t), &filav1.SetConfigRequest{Key: "throttle.provider:aws", Value: bad})
		require.Equal(t, codes.InvalidArgument, status.Code(err), bad)
		require.Contains(t, status.Convert(err).Message(), "value of throttle.provider:aws")
	}
	_, err := b.admin.SetConfig(ctxT(t), &filav1.SetConfigRequest{Key: "throttle.provider:aws", Value: "0.001,2"})
	require.NoError(t, err)
	b.createQueue(t, "calls", &filav1.QueueConfig{OnEnqueueScript: `function on_enqueue(msg) return { throttle_keys = { "provider:aws" } } end`})
	for range 3 {
		b.enqueue(t, "calls", nil, nil)
	}
	stream, _ := b.lease(t, "calls")
	recvN(t, stream, 2) // the burst
	st := b.stats(t, "calls")
	require.EqualValues(t, 1, st.GetDepth(), "the third waits for a token")
	require.Len(t, st.GetPerThrottleStats(), 1)
	ts := st.GetPerThrottleStats()[0]
	require.Equal(t, "provider:aws", ts.GetKey())
	require.EqualValues(t, 2, ts.GetBurst())
	require.InDelta(t, 0.001, ts.GetRatePerSecond(), 1e-12)
	require.Less(t, ts.GetTokens(), 1.0)

	decision := func(result string) []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("queue_id", "calls"), attribute.String("throttle_key", "provider:aws"), attribute.String("result", result)}
	}
	h.AssertCounter(t, telemetry.ThrottleDecisions.Name, decision("pass"), 2)
	hits, ok := h.Value(t, telemetry.ThrottleDecisions.Name, decision("hit")...)
	require.True(t, ok)
	require.Positive(t, hits, "the third was held back")
	tokens, ok := h.Float(t, telemetry.ThrottleTokens.Name, attribute.String("throttle_key", "provider:aws"))
	require.True(t, ok)
	require.Less(t, tokens, 1.0)
}

// A hook that cuts a header's multi-byte character in half returns a key
// that is not UTF-8: the call fails (the defaults apply) and the message
// is stored and delivered. Before, the store's proto encoding panicked
// in the queue actor and the Enqueue got no answer.
func TestAHookKeyThatIsNotUTF8FallsBackToTheDefaults(t *testing.T) {
	t.Parallel()
	b, _ := harnessed(t, setupOpts{})
	b.createQueue(t, "halves", &filav1.QueueConfig{OnEnqueueScript: `
function on_enqueue(msg)
  return { fairness_key = string.sub(msg.headers["tenant"], 1, 1), throttle_keys = { string.sub(msg.headers["tenant"], 2) } }
end`})
	_, err := b.svc.Enqueue(ctxT(t), &filav1.EnqueueRequest{Queue: "halves", Headers: map[string]string{"tenant": "é"}, Payload: []byte("p")})
	require.NoError(t, err)
	stream, err := b.svc.Consume(ctxT(t), &filav1.ConsumeRequest{Queue: "halves"})
	require.NoError(t, err)
	m := recvN(t, stream, 1)[0]
	require.Equal(t, "p", string(m.GetPayload()))
	require.True(t, utf8.ValidString(m.GetMetadata().GetFairnessKey()), "fairness key %q", m.GetMetadata().GetFairnessKey())
	require.NotEqual(t, "\xc3", m.GetMetadata().GetFairnessKey())
}
