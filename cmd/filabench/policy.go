package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fila-dev/filad/client"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// tenantScript is a realistic on_enqueue: the tenant from a header, its
// weight through fila.get (docs/scripting.md's first example).
const tenantScript = `
function on_enqueue(msg)
  local tenant = msg.headers["tenant"] or "anonymous"
  return { fairness_key = tenant, weight = tonumber(fila.get("weight." .. tenant)) or 1 }
end`

// luaOverhead runs the batched lifecycle against filad as a subprocess on
// a queue without a script and on one with tenantScript, and reports the
// server CPU per message of each and the difference: what the hook costs.
func (e *bench) luaOverhead(ctx context.Context, n int) ([]result, error) {
	p, t, stop, err := e.startFiladTarget("FILA_STORAGE__SYNC_WRITES=false")
	if err != nil {
		return nil, err
	}
	defer stop()
	if _, err := t.admin.SetConfig(ctx, &filav1.SetConfigRequest{Key: "weight.anonymous", Value: "2"}); err != nil {
		return nil, err
	}
	var cpu [2]float64
	var out []result
	for i, script := range []string{"", tenantScript} {
		t.queueConfig = &filav1.QueueConfig{OnEnqueueScript: script}
		m, err := startCPUMeter(p.pid())
		if err != nil {
			return nil, err
		}
		r, err := t.lifecycleBatchedThroughput(ctx, 1024, 4, n, make([]byte, 1024))
		if err != nil {
			return nil, err
		}
		server, _, err := m.perMessage(n)
		if err != nil {
			return nil, err
		}
		cpu[i] = server
		label := "without a script"
		if script != "" {
			label = "with on_enqueue (tenant header, weight via fila.get)"
		}
		out = append(out, result{Workload: "Lua: lifecycle batched 4C 1KiB, " + label, Target: targetNoSync, Value: server,
			Unit: "µs server CPU/msg", Note: fmt.Sprintf("%.0f msg/s", r.Value)})
	}
	return append(out, result{Workload: "Lua: on_enqueue cost", Target: targetNoSync, Value: cpu[1] - cpu[0], Unit: "µs server CPU/msg",
		Note: "difference of the two; target ≤ 10"}), nil
}

// throttleAccuracy delivers one throttled fairness key (rate 200/s, burst
// 10) among three unthrottled ones until the unthrottled keys' backlog is
// drained (at most d), and the same without the throttle, and reports the
// throttled key's rate and the others' rate against the run without it.
func (e *bench) throttleAccuracy(ctx context.Context, d time.Duration, backlog int) ([]result, error) {
	const rate = 200
	var others [2]float64
	var out []result
	for i, throttled := range []bool{false, true} {
		rs, err := e.onFilad(ctx, withSyncWrites(false), func(ctx context.Context, t *filadTarget) ([]result, error) {
			if throttled {
				if _, err := t.admin.SetConfig(ctx, &filav1.SetConfigRequest{Key: "throttle.limited", Value: fmt.Sprintf("%d,10", rate)}); err != nil {
					return nil, err
				}
			}
			t.queueConfig = &filav1.QueueConfig{OnEnqueueScript: `
function on_enqueue(msg)
  local k = msg.headers["k"]
  if k == "t" then return { fairness_key = k, throttle_keys = { "limited" } } end
  return { fairness_key = k }
end`}
			q, err := t.newQueue(ctx)
			if err != nil {
				return nil, err
			}
			p := t.client.NewProducer(client.ProducerOptions{})
			defer p.Close()
			keys := []string{"t", "u1", "u2", "u3"}
			if err := inParallel(256, backlog, func(i int) error {
				_, err := p.Enqueue(ctx, q, map[string]string{"k": keys[i%len(keys)]}, nil)
				return err
			}); err != nil {
				return nil, err
			}
			// Consume until the unthrottled keys' backlog is all delivered
			// (or d passes): their rate is what the throttled key must not
			// slow, and the throttled key's rate is measured over the same
			// time.
			var tCount, uCount atomic.Int64
			uBacklog := int64(backlog - backlog/len(keys))
			cctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			start := time.Now()
			var done atomic.Int64 // nanoseconds from start when the last u arrived
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() {
					_ = t.client.Consume(cctx, q, client.ConsumeOptions{MaxInFlight: 256}, func(_ context.Context, m *filav1.Message) error {
						if m.GetMetadata().GetFairnessKey() == "t" {
							tCount.Add(1)
						} else if uCount.Add(1) == uBacklog {
							done.Store(int64(time.Since(start)))
							cancel()
						}
						return nil
					})
				})
			}
			wg.Wait()
			secs := d.Seconds()
			if ns := done.Load(); ns > 0 {
				secs = time.Duration(ns).Seconds()
			}
			label := "unthrottled"
			if throttled {
				label = fmt.Sprintf("key t throttled at %d/s", rate)
			}
			return []result{
				{Workload: "throttle: key t, " + label, Target: targetNoSync, Value: float64(tCount.Load()) / secs, Unit: "msg/s"},
				{Workload: "throttle: keys u1-u3, " + label, Target: targetNoSync, Value: float64(uCount.Load()) / secs, Unit: "msg/s",
					Note: fmt.Sprintf("%d delivered in %.1f s", uCount.Load(), secs)},
			}, nil
		})
		if err != nil {
			return nil, err
		}
		others[i] = rs[1].Value
		out = append(out, rs...)
		if throttled {
			out = append(out, result{Workload: "throttle: key t's rate / its limit", Target: targetNoSync, Value: rs[0].Value / rate, Unit: "ratio",
				Note: "target within 5%"})
		}
	}
	return append(out, result{Workload: "throttle: others' rate, throttled run / unthrottled run", Target: targetNoSync,
		Value: others[1] / others[0], Unit: "ratio", Note: "target ≥ 0.95"}), nil
}
