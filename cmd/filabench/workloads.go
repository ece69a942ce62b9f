package main

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/fila-dev/filad/client"
	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/internal/filadtest"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/server"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry/telemetrytest"
)

// Targets as they appear in the tables.
const (
	targetSync   = "filad"
	targetNoSync = "filad sync_writes=false"
	targetNATS   = "NATS JetStream"
	// targetNATSAlways fsyncs each message before its PubAck.
	targetNATSAlways = "NATS JetStream sync_interval=always"
)

func workloads(f benchFlags) []workload {
	var ws []workload
	for _, size := range []int{64, 1024, 64 << 10} {
		for _, p := range []int{1, 4} {
			ws = append(ws, workload{fmt.Sprintf("enqueue %dP %s", p, sizeName(size)), func(ctx context.Context, e *bench) ([]result, error) {
				n := e.f.messages
				if size > 4096 {
					n = max(n/10, 50) // 64 KiB messages: a tenth as many
				}
				payload := make([]byte, size)
				return e.compare(ctx,
					func(ctx context.Context, t *filadTarget) (result, error) {
						return t.enqueueThroughput(ctx, p, n, payload)
					},
					func(ctx context.Context, t *natsTarget) (result, error) {
						return t.enqueueThroughput(ctx, p, n, payload)
					})
			}})
		}
	}
	kib := make([]byte, 1024)
	ws = append(ws,
		workload{"lifecycle 4P/4C 1KiB", func(ctx context.Context, e *bench) ([]result, error) {
			return e.compare(ctx,
				func(ctx context.Context, t *filadTarget) (result, error) {
					return t.lifecycleThroughput(ctx, 4, 4, e.f.messages, kib, nil)
				},
				func(ctx context.Context, t *natsTarget) (result, error) {
					return t.lifecycleThroughput(ctx, 4, 4, e.f.messages, kib)
				})
		}},
		// Batched: filad through the client's Producer (1024 concurrent
		// callers keep several batches in flight, as NATS async publish
		// keeps up to 4,000 publishes pending) and Consume (frames,
		// coalesced acks); NATS with async publishes and plain explicit acks.
		workload{"enqueue batched 1KiB", func(ctx context.Context, e *bench) ([]result, error) {
			return e.compare(ctx,
				func(ctx context.Context, t *filadTarget) (result, error) {
					return t.enqueueBatchedThroughput(ctx, 1024, e.f.messages, kib)
				},
				func(ctx context.Context, t *natsTarget) (result, error) {
					return t.enqueueAsyncThroughput(ctx, e.f.messages, kib)
				})
		}},
		workload{"lifecycle batched 4C 1KiB", func(ctx context.Context, e *bench) ([]result, error) {
			return e.compare(ctx,
				func(ctx context.Context, t *filadTarget) (result, error) {
					return t.lifecycleBatchedThroughput(ctx, 1024, 4, e.f.messages, kib)
				},
				func(ctx context.Context, t *natsTarget) (result, error) {
					return t.lifecycleAsyncThroughput(ctx, 4, e.f.messages, kib)
				})
		}},
		// The durable yardstick: filad with fsync against JetStream with
		// an fsync per message, synchronous and pipelined publishes. NATS
		// manages a few hundred messages a second here, so a tenth of the
		// messages.
		workload{"durable lifecycle 4P/4C 1KiB", func(ctx context.Context, e *bench) ([]result, error) {
			n := max(e.f.messages/10, 100)
			return e.compareDurable(ctx,
				func(ctx context.Context, t *filadTarget) (result, error) {
					return t.lifecycleThroughput(ctx, 4, 4, n, kib, nil)
				},
				func(ctx context.Context, t *natsTarget) (result, error) {
					return t.lifecycleThroughput(ctx, 4, 4, n, kib)
				})
		}},
		workload{"durable lifecycle batched 4C 1KiB", func(ctx context.Context, e *bench) ([]result, error) {
			n := max(e.f.messages/4, 100)
			return e.compareDurable(ctx,
				func(ctx context.Context, t *filadTarget) (result, error) {
					return t.lifecycleBatchedThroughput(ctx, 1024, 4, n, kib)
				},
				func(ctx context.Context, t *natsTarget) (result, error) {
					return t.lifecycleAsyncThroughput(ctx, 4, n, kib)
				})
		}},
		// CPU per message: each server as a subprocess, so that its CPU time
		// is its own (filabench's clients are reported apart).
		cpuLifecycle(4, kib),
		// Fila-SDK-shaped traffic: the Python, JavaScript, Java and Ruby
		// SDKs call Enqueue once per message and ack each delivery alone.
		cpuLifecycle(8, kib),
		workload{"cpu lifecycle batched 4C 1KiB", func(ctx context.Context, e *bench) ([]result, error) {
			return e.cpuPerMessage(ctx, e.f.messages,
				func(ctx context.Context, t *filadTarget) (result, error) {
					return t.lifecycleBatchedThroughput(ctx, 1024, 4, e.f.messages, kib)
				},
				func(ctx context.Context, t *natsTarget) (result, error) {
					return t.lifecycleAsyncThroughput(ctx, 4, e.f.messages, kib)
				})
		}},
		workload{"latency", func(ctx context.Context, e *bench) ([]result, error) {
			samples := 2000
			if e.f.short {
				samples = 100
			}
			var out []result
			for _, sync := range []bool{true, false} {
				rs, err := e.onFilad(ctx, withSyncWrites(sync), func(ctx context.Context, t *filadTarget) ([]result, error) {
					light, err := t.latency(ctx, "light (1 message at a time)", 1, samples, nil)
					if err != nil {
						return nil, err
					}
					p := t.client.NewProducer(client.ProducerOptions{})
					defer p.Close()
					lingered, err := t.latency(ctx, "light, through the batching Producer (1 ms linger)", 1, samples, p)
					if err != nil {
						return nil, err
					}
					moderate, err := t.latency(ctx, "moderate (8 messages at a time)", 8, samples*4, nil)
					return append(append(light, lingered...), moderate...), err
				})
				if err != nil {
					return nil, err
				}
				for i := range rs {
					if !sync {
						rs[i].Target = targetNoSync
					}
				}
				out = append(out, rs...)
			}
			return out, nil
		}},
		workload{"fairness 1:2:3:4:5", func(ctx context.Context, e *bench) ([]result, error) {
			return e.onFilad(ctx, nil, func(ctx context.Context, t *filadTarget) ([]result, error) {
				return t.fairness(ctx, []int{1, 2, 3, 4, 5}, max(e.f.messages/4, 300))
			})
		}},
		workload{"fairness-key cardinality", func(ctx context.Context, e *bench) ([]result, error) {
			var out []result
			for _, keys := range []int{10, 1000, 10000} {
				rs, err := e.onFilad(ctx, nil, func(ctx context.Context, t *filadTarget) ([]result, error) {
					r, err := t.lifecycleThroughput(ctx, 4, 4, e.f.messages, kib, func(i int) map[string]string {
						return map[string]string{"fila-fairness-key": strconv.Itoa(i % keys)}
					})
					r.Workload = fmt.Sprintf("lifecycle 4P/4C 1KiB, %d keys", keys)
					return []result{r}, err
				})
				if err != nil {
					return nil, err
				}
				out = append(out, rs...)
			}
			out = append(out, result{Workload: "10,000 keys / 10 keys", Target: targetSync, Value: out[2].Value / out[0].Value, Unit: "ratio"})
			return out, nil
		}},
		workload{"consumer scaling", func(ctx context.Context, e *bench) ([]result, error) {
			var out []result
			for _, c := range []int{1, 10, 100} {
				rs, err := e.onFilad(ctx, nil, func(ctx context.Context, t *filadTarget) ([]result, error) {
					r, err := t.lifecycleThroughput(ctx, 4, c, e.f.messages, kib, nil)
					return []result{r}, err
				})
				if err != nil {
					return nil, err
				}
				out = append(out, rs...)
			}
			return out, nil
		}},
		workload{"telemetry overhead", func(ctx context.Context, e *bench) ([]result, error) {
			return e.telemetryOverhead(ctx, "lifecycle 4P/4C 1KiB", func(ctx context.Context, t *filadTarget) (result, error) {
				return t.lifecycleThroughput(ctx, 4, 4, e.f.messages, kib, nil)
			})
		}},
		workload{"telemetry overhead batched", func(ctx context.Context, e *bench) ([]result, error) {
			return e.telemetryOverhead(ctx, "lifecycle batched 4C 1KiB", func(ctx context.Context, t *filadTarget) (result, error) {
				return t.lifecycleBatchedThroughput(ctx, 1024, 4, e.f.messages, kib)
			})
		}},
		workload{"security overhead", func(ctx context.Context, e *bench) ([]result, error) {
			rounds := 3
			if e.f.short {
				rounds = 1
			}
			return e.securityOverhead(ctx, rounds)
		}},
		workload{"lua overhead", func(ctx context.Context, e *bench) ([]result, error) {
			return e.luaOverhead(ctx, e.f.messages)
		}},
		workload{"throttle accuracy", func(ctx context.Context, e *bench) ([]result, error) {
			d, backlog := 10*time.Second, 200_000
			if e.f.short {
				d, backlog = time.Second, 2000
			}
			return e.throttleAccuracy(ctx, d, backlog)
		}},
		workload{"operator tools", func(ctx context.Context, e *bench) ([]result, error) {
			n := 100_000
			if e.f.short {
				n = 2000
			}
			return e.onFilad(ctx, nil, func(ctx context.Context, t *filadTarget) ([]result, error) {
				return t.operatorTools(ctx, n)
			})
		}},
		workload{"memory", func(ctx context.Context, e *bench) ([]result, error) {
			n := 100_000
			if e.f.short {
				n = 2000
			}
			return e.memory(ctx, n)
		}},
	)
	ws = append(ws, backlogWorkloads()...)
	if f.hugeBacklog > 0 {
		ws = append(ws, workload{"huge-backlog", func(ctx context.Context, e *bench) ([]result, error) {
			return e.hugeBacklog(ctx, f.hugeBacklog)
		}})
	}
	if f.cluster > 0 {
		ws = append(ws, clusterWorkloads(f.cluster)...)
	}
	return ws
}

// cpuLifecycle is the one-call-per-message lifecycle (Enqueue, a Consume
// stream, Ack) with n producers and n consumers, each server as a
// subprocess so that its CPU time is its own.
func cpuLifecycle(n int, payload []byte) workload {
	return workload{fmt.Sprintf("cpu lifecycle %dP/%dC 1KiB", n, n), func(ctx context.Context, e *bench) ([]result, error) {
		return e.cpuPerMessage(ctx, e.f.messages,
			func(ctx context.Context, t *filadTarget) (result, error) {
				return t.lifecycleThroughput(ctx, n, n, e.f.messages, payload, nil)
			},
			func(ctx context.Context, t *natsTarget) (result, error) {
				return t.lifecycleThroughput(ctx, n, n, e.f.messages, payload)
			})
	}}
}

// telemetryOverhead alternates lifecycle runs with telemetry off, on at the
// default sampling and on at 100% sampling, several rounds, and reports the
// median ratio of each to the off run of its round: single runs on a shared
// machine vary by more than the effect measured. It runs with
// sync_writes=false, where throughput is bound by CPU, which is what
// telemetry costs; with fsync the cost hides in the wait for the disk.
func (e *bench) telemetryOverhead(ctx context.Context, label string, lifecycle func(context.Context, *filadTarget) (result, error)) ([]result, error) {
	rounds := 5
	if e.f.short {
		rounds = 1
	}
	noSync := withSyncWrites(false)
	variants := []struct {
		name      string
		configure func(*config.Config) (func(), error)
	}{
		{"off", noSync},
		{fmt.Sprintf("on, sampling %g", config.TraceSampleRatioDefault), both(noSync, withTelemetry(config.TraceSampleRatioDefault))},
		{"on, sampling 1", both(noSync, withTelemetry(1))},
	}
	ratios := make([][]float64, len(variants))
	var out []result
	for range rounds {
		var off float64
		for i, v := range variants {
			rs, err := e.onFilad(ctx, v.configure, func(ctx context.Context, t *filadTarget) ([]result, error) {
				r, err := lifecycle(ctx, t)
				return []result{r}, err
			})
			if err != nil {
				return nil, err
			}
			r := rs[0]
			r.Target = targetNoSync + ", telemetry " + v.name
			out = append(out, r)
			if i == 0 {
				off = r.Value
			}
			ratios[i] = append(ratios[i], r.Value/off)
		}
	}
	for i, v := range variants[1:] {
		rs := ratios[i+1]
		slices.Sort(rs)
		out = append(out, result{Workload: "telemetry " + v.name + " / off", Target: targetNoSync,
			Value: rs[len(rs)/2], Unit: "ratio", Note: fmt.Sprintf("median of %d rounds, %s", rounds, label)})
	}
	return out, nil
}

// both applies two config changes.
func both(a, b func(*config.Config) (func(), error)) func(*config.Config) (func(), error) {
	return func(c *config.Config) (func(), error) {
		stopA, err := a(c)
		if err != nil {
			return nil, err
		}
		stopB, err := b(c)
		if err != nil {
			stopA()
			return nil, err
		}
		return func() { stopB(); stopA() }, nil
	}
}

func sizeName(n int) string {
	if n >= 1024 {
		return fmt.Sprintf("%dKiB", n/1024)
	}
	return fmt.Sprintf("%dB", n)
}

// compare runs the same workload on filad with and without fsync, and on
// NATS JetStream, each on a fresh server.
func (e *bench) compare(ctx context.Context, onFilad func(context.Context, *filadTarget) (result, error), onNATS func(context.Context, *natsTarget) (result, error)) ([]result, error) {
	var out []result
	for _, sync := range []bool{true, false} {
		rs, err := e.onFilad(ctx, withSyncWrites(sync), func(ctx context.Context, t *filadTarget) ([]result, error) {
			r, err := onFilad(ctx, t)
			return []result{r}, err
		})
		if err != nil {
			return nil, err
		}
		if !sync {
			rs[0].Target = targetNoSync
		}
		out = append(out, rs...)
	}
	if e.natsBin != "" {
		r, err := e.onNATS(ctx, false, onNATS)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// compareDurable runs the same workload on filad with fsync and on NATS
// JetStream with `sync_interval: always`: both fsync before they answer.
func (e *bench) compareDurable(ctx context.Context, onFilad func(context.Context, *filadTarget) (result, error), onNATS func(context.Context, *natsTarget) (result, error)) ([]result, error) {
	out, err := e.onFilad(ctx, withSyncWrites(true), func(ctx context.Context, t *filadTarget) ([]result, error) {
		r, err := onFilad(ctx, t)
		return []result{r}, err
	})
	if err != nil || e.natsBin == "" {
		return out, err
	}
	r, err := e.onNATS(ctx, true, onNATS)
	return append(out, r), err
}

// onNATS runs fn against a fresh nats-server, with `sync_interval: always`
// when syncAlways.
func (e *bench) onNATS(ctx context.Context, syncAlways bool, fn func(context.Context, *natsTarget) (result, error)) (result, error) {
	t, err := startNATS(ctx, e.natsBin, syncAlways)
	if err != nil {
		return result{}, err
	}
	defer t.close()
	r, err := fn(ctx, t)
	r.Target = targetNATS
	if syncAlways {
		r.Target = targetNATSAlways
	}
	return r, err
}

// onFilad runs fn against a fresh in-process filad on a temp dir (sync
// writes on); configure, if set, adjusts the config and returns what to stop
// afterwards.
func (e *bench) onFilad(ctx context.Context, configure func(*config.Config) (func(), error), fn func(context.Context, *filadTarget) ([]result, error)) ([]result, error) {
	return e.onFiladWith(ctx, configure, nil, "", fn)
}

// onFiladWith is onFilad with a client that dials with tlsCfg (when set)
// and sends key (when set).
func (e *bench) onFiladWith(ctx context.Context, configure func(*config.Config) (func(), error), tlsCfg *tls.Config, key string, fn func(context.Context, *filadTarget) ([]result, error)) ([]result, error) {
	dir, err := os.MkdirTemp("", "filabench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	// The tests' configuration: loopback, a free port. (With the store
	// filabench's own, filad makes no disk reserve.)
	cfg := filadtest.Config(dir)
	if configure != nil {
		stop, err := configure(&cfg)
		if err != nil {
			return nil, err
		}
		defer stop()
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// filabench opens the store itself, to read the committer's stats.
	store, err := storage.Open(storage.Options{Dir: cfg.Storage.DataDir, SyncWrites: cfg.Storage.SyncWrites, Logger: log})
	if err != nil {
		return nil, err
	}
	defer store.Close()
	srv, err := filadtest.Serve(ctx, cfg, server.Options{Logger: log, Store: store})
	if err != nil {
		return nil, err
	}
	defer srv.Shutdown(context.Background())
	t, err := newSecureFiladTarget(srv.Addr().String(), tlsCfg, key)
	if err != nil {
		return nil, err
	}
	defer t.close()
	before := store.Stats()
	rs, err := fn(ctx, t)
	after := store.Stats()
	for i := range rs {
		if rs[i].Target == "" {
			rs[i].Target = targetSync
		}
		// How well group commit grouped: write batches per badger commit.
		if commits := after.Commits - before.Commits; rs[i].Unit == "msg/s" && commits > 0 && rs[i].Note == "" {
			rs[i].Note = fmt.Sprintf("%.1f writes per commit", float64(after.Batches-before.Batches)/float64(commits))
		}
	}
	return rs, err
}

// withSyncWrites sets storage.sync_writes.
func withSyncWrites(sync bool) func(*config.Config) (func(), error) {
	return func(c *config.Config) (func(), error) {
		c.Storage.SyncWrites = sync
		return func() {}, nil
	}
}

// withTelemetry points filad at an in-process OTLP receiver with the given
// trace sampling ratio and a 1 s metric interval.
func withTelemetry(ratio float64) func(*config.Config) (func(), error) {
	return func(cfg *config.Config) (func(), error) {
		recv, err := telemetrytest.StartReceiver("127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		tc := config.TelemetryDefaults()
		tc.OTLPEndpoint = recv.Addr()
		tc.MetricsIntervalMS = 1000
		tc.TraceSampleRatio = ratio
		cfg.Telemetry = &tc
		return recv.Stop, nil
	}
}

func rate(workload string, n int, d time.Duration) result {
	return result{Workload: workload, Value: float64(n) / d.Seconds(), Unit: "msg/s"}
}

// latency measures enqueue→delivery with producers in lockstep: each sends
// its next message only when its last one has been delivered, so the load is
// the number of producers' messages in flight. Producers stamp the send time
// in the payload and the consumer computes the delay on receipt (same clock).
// latency measures enqueue-to-delivery time with producers each sending one
// message and waiting for its delivery; through p (a batching Producer)
// when set, else with single Enqueue calls.
func (t *filadTarget) latency(ctx context.Context, load string, producers, samples int, p *client.Producer) ([]result, error) {
	q, err := t.newQueue(ctx)
	if err != nil {
		return nil, err
	}
	delays := make([]time.Duration, 0, samples)
	var mu sync.Mutex
	arrived := make([]chan struct{}, producers)
	for i := range arrived {
		arrived[i] = make(chan struct{}, 1)
	}
	consumed := make(chan error, 1)
	go func() {
		consumed <- t.consume(ctx, q, producers, samples, func(m *filav1.Message) {
			sent := int64(binary.LittleEndian.Uint64(m.GetPayload()))
			d := time.Since(time.Unix(0, sent))
			mu.Lock()
			delays = append(delays, d)
			mu.Unlock()
			arrived[m.GetPayload()[8]] <- struct{}{}
		})
	}()
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	for w := range producers {
		wg.Go(func() {
			payload := make([]byte, 1024)
			payload[8] = byte(w)
			for i := w; i < samples; i += producers {
				binary.LittleEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
				var err error
				if p != nil {
					_, err = p.Enqueue(ctx, q, nil, payload)
				} else {
					_, err = t.svc.Enqueue(ctx, &filav1.EnqueueRequest{Queue: q, Payload: payload})
				}
				if err != nil {
					errs <- err
					return
				}
				select {
				case <-arrived[w]:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	if err := <-consumed; err != nil {
		return nil, err
	}
	pct := func(p float64) float64 { return float64(percentile(delays, p).Microseconds()) }
	w := "e2e latency " + load
	return []result{
		{Workload: w, Value: pct(0.50), Unit: "µs p50"},
		{Workload: w, Value: pct(0.95), Unit: "µs p95"},
		{Workload: w, Value: pct(0.99), Unit: "µs p99"},
	}, nil
}

// fairness enqueues perKey messages for each weight's key, then leases the
// first window and reports each key's share against its weight's share.
func (t *filadTarget) fairness(ctx context.Context, weights []int, perKey int) ([]result, error) {
	q, err := t.newQueue(ctx)
	if err != nil {
		return nil, err
	}
	total := 0
	for _, w := range weights {
		total += w
	}
	n := perKey * len(weights)
	if err := t.produce(ctx, q, 8, n, nil, func(i int) map[string]string {
		w := weights[i%len(weights)]
		return map[string]string{"fila-fairness-key": fmt.Sprint("w", w), "fila-weight": fmt.Sprint(w)}
	}); err != nil {
		return nil, err
	}
	window := perKey // every key still has messages throughout the window
	streamCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := t.svc.Consume(streamCtx, &filav1.ConsumeRequest{Queue: q, MaxInFlight: uint32(min(window, 10000))})
	if err != nil {
		return nil, err
	}
	counts := map[string]int{}
	for range window {
		resp, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		counts[resp.GetMessage().GetMetadata().GetFairnessKey()]++
	}
	var out []result
	worst := 0.0
	for _, w := range weights {
		got := float64(counts[fmt.Sprint("w", w)]) / float64(window) * 100
		want := float64(w) / float64(total) * 100
		worst = max(worst, math.Abs(got-want))
		out = append(out, result{Workload: fmt.Sprintf("fairness: weight %d share", w), Value: got, Unit: "%",
			Note: fmt.Sprintf("expected %.2f%% over %d deliveries", want, window)})
	}
	return append(out, result{Workload: "fairness: worst deviation", Value: worst, Unit: "percentage points"}), nil
}

// memory runs filad as a subprocess and reads its resident set: idle, and
// after n 1 KiB messages were enqueued and then drained.
func (e *bench) memory(ctx context.Context, n int) ([]result, error) {
	p, t, stop, err := e.startFiladTarget()
	if err != nil {
		return nil, err
	}
	defer stop()
	q, err := t.newQueue(ctx)
	if err != nil {
		return nil, err
	}
	idle, err := rssMB(p.pid())
	if err != nil {
		return nil, err
	}
	if err := t.produce(ctx, q, 8, n, make([]byte, 1024), nil); err != nil {
		return nil, err
	}
	full, _ := rssMB(p.pid())
	if err := t.consume(ctx, q, 4, n, nil); err != nil {
		return nil, err
	}
	drained, _ := rssMB(p.pid())
	note := fmt.Sprintf("%d × 1 KiB", n)
	return []result{
		{Workload: "RSS idle", Target: targetSync, Value: idle, Unit: "MB"},
		{Workload: "RSS with messages enqueued", Target: targetSync, Value: full, Unit: "MB", Note: note},
		{Workload: "RSS after draining", Target: targetSync, Value: drained, Unit: "MB", Note: note},
	}, nil
}

// cpuPerMessage runs one lifecycle against filad as a subprocess (with and
// without fsync) and against NATS, and reports the server's CPU µs per
// message, with the clients' (filabench's own) in the note.
func (e *bench) cpuPerMessage(ctx context.Context, n int, onFilad func(context.Context, *filadTarget) (result, error), onNATS func(context.Context, *natsTarget) (result, error)) ([]result, error) {
	var out []result
	measure := func(pid int, target string, run func() (result, error)) error {
		m, err := startCPUMeter(pid)
		if err != nil {
			return err
		}
		r, err := run()
		if err != nil {
			return err
		}
		server, client, err := m.perMessage(n)
		if err != nil {
			return err
		}
		out = append(out, result{Workload: "CPU per message, " + r.Workload, Target: target, Value: server, Unit: "µs server CPU/msg",
			Note: fmt.Sprintf("clients %.1f µs/msg; %.0f msg/s", client, r.Value)})
		return nil
	}
	for _, sync := range []bool{true, false} {
		env := []string{fmt.Sprintf("FILA_STORAGE__SYNC_WRITES=%t", sync)}
		prof, err := e.newServerProfile(fmt.Sprintf("sync-%t", sync))
		if err != nil {
			return nil, err
		}
		p, t, stop, err := e.startFiladTarget(append(env, prof.env()...)...)
		if err != nil {
			return nil, err
		}
		target := targetSync
		if !sync {
			target = targetNoSync
		}
		err = measure(p.pid(), target, func() (result, error) {
			defer prof.start(ctx)()
			return onFilad(ctx, t)
		})
		stop()
		if err != nil {
			return nil, err
		}
	}
	if e.natsBin != "" {
		t, err := startNATS(ctx, e.natsBin, false)
		if err != nil {
			return nil, err
		}
		defer t.close()
		if err := measure(t.cmd.Process.Pid, targetNATS, func() (result, error) { return onNATS(ctx, t) }); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// percentile is the p quantile (0 < p ≤ 1) of ds by nearest rank, 0 for
// none. It sorts ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[int(math.Ceil(p*float64(len(ds))))-1]
}
