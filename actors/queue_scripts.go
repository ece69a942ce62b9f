package actors

import (
	"context"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/fila-dev/filad/scripting"
	"github.com/fila-dev/filad/telemetry"
)

// The queue's Lua hooks (docs/scripting.md): on_enqueue decides a new
// message's fairness key, weight and throttle keys; on_failure decides
// retry or dead letter on a nack or expiry. A hook that fails, times out or
// returns nonsense changes nothing: the queue's defaults apply, the failure
// is counted, and a WARN is logged at most every scriptWarnEvery.

// scriptWarnEvery bounds the WARNs a queue's failing scripts log.
const scriptWarnEvery = 10 * time.Second

// luaMetrics are one hook's duration histogram and error counter.
type luaMetrics struct {
	duration *telemetry.Histogram
	errors   *telemetry.Counter
}

// luaMetricsOf returns hook's instruments, made once per actor.
func (q *queueActor) luaMetricsOf(hook string) luaMetrics {
	m, ok := q.lua[hook]
	if !ok {
		if q.lua == nil {
			q.lua = map[string]luaMetrics{}
		}
		m.duration, m.errors = q.metrics.Lua(hook)
		q.lua[hook] = m
	}
	return m
}

// recordScript measures one hook call and says on span what it decided.
func (q *queueActor) recordScript(ctx context.Context, hook string, c scripting.Call, decided ...attribute.KeyValue) {
	if !c.Ran {
		return
	}
	ins := q.luaMetricsOf(hook)
	ins.duration.Record(ctx, c.Duration.Seconds())
	span := trace.SpanFromContext(ctx)
	if c.Err != nil {
		ins.errors.Add(1)
		if c.BreakerOpened {
			q.metrics.LuaBreakerActivations.Add(1)
		}
		if span.IsRecording() {
			span.AddEvent("fila.lua."+hook, trace.WithAttributes(attribute.Bool("messaging.fila.lua.failed", true),
				attribute.Bool("messaging.fila.lua.breaker_opened", c.BreakerOpened)))
		}
		if now := time.Now(); now.Sub(q.warned) >= scriptWarnEvery || c.BreakerOpened {
			q.warned = now
			// Never c.Err: a script's error text may be built from the
			// message's headers. Its kind and line say where to look.
			kind, detail := c.Failure()
			q.deps.log.Warn("queue script failed; the queue's defaults applied", slog.String("queue_id", q.cfg.Name),
				slog.String("hook", hook), slog.Bool("breaker_opened", c.BreakerOpened), slog.String("failure", kind), slog.String("detail", detail))
		}
		return
	}
	if span.IsRecording() {
		span.AddEvent("fila.lua."+hook, trace.WithAttributes(decided...))
	}
}

// scriptEnqueue runs on_enqueue for a new message; the zero result means
// the defaults.
func (q *queueActor) scriptEnqueue(ctx context.Context, req *Enqueue) scripting.EnqueueResult {
	if !q.scripts.Has(scripting.OnEnqueue) {
		return scripting.EnqueueResult{}
	}
	res, c := q.scripts.OnEnqueue(scripting.EnqueueInput{Headers: req.Headers, PayloadSize: len(req.Payload), Queue: q.cfg.Name})
	q.recordScript(ctx, scripting.OnEnqueue, c,
		attribute.Int("messaging.fila.lua.weight", int(res.Weight)), attribute.Int("messaging.fila.lua.throttle_keys", len(res.ThrottleKeys)))
	return res
}

// scriptFailure runs on_failure for a failed delivery of m; ok is false
// when the queue's own policy decides.
func (q *queueActor) scriptFailure(m *message, attempts uint32, errText string) (scripting.FailureResult, bool) {
	if !q.scripts.Has(scripting.OnFailure) {
		return scripting.FailureResult{}, false
	}
	body, err := q.body(m)
	if err != nil {
		// Without its headers the script cannot decide: the queue's own
		// policy does.
		q.deps.log.Error("on_failure not run: the message's record could not be read", slog.String("queue_id", q.cfg.Name),
			slog.String("msg_id", m.id), slog.Any("error", err))
		return scripting.FailureResult{}, false
	}
	res, ok, c := q.scripts.OnFailure(scripting.FailureInput{Headers: body.GetHeaders(), ID: m.id, Attempts: attempts, Queue: q.cfg.Name, Error: errText})
	action := "retry"
	if res.DeadLetter {
		action = "dlq"
	}
	q.recordScript(spanContext(m), scripting.OnFailure, c,
		attribute.String("messaging.fila.lua.action", action), attribute.Int64("messaging.fila.lua.delay_ms", res.Delay.Milliseconds()))
	return res, ok
}
