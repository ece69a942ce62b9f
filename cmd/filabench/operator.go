package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"time"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// operatorTools measures what an operator tool on a large queue costs the
// rest of the broker: a queue of n 1 KiB messages (its DLQ for redrive)
// is purged, redriven, paged through with Peek, and deleted, each while
// another queue gets an Enqueue every probeEvery (open loop: a stall
// delays every Enqueue sent during it, not just one) and one caller asks
// for the big queue's stats in lockstep. It reports how long the operation
// took, the other queue's Enqueue latency while it ran (issue 19 wants its
// p99 under 50 ms for a purge of 100k), and the longest the big queue's
// own GetStats waited.
const probeEvery = 2 * time.Millisecond

func (t *filadTarget) operatorTools(ctx context.Context, n int) ([]result, error) {
	other, err := t.newQueue(ctx)
	if err != nil {
		return nil, err
	}
	payload := make([]byte, 1024)
	fill := func(queue string) error { return t.produceBatched(ctx, queue, 1024, n, payload) }
	ops := []struct {
		name    string
		prepare func(q string) (string, error) // returns the queue the probe asks stats of
		run     func(q string) error
	}{
		// The yardstick: the same probes for a second after a fill, with no
		// operation, to tell the operation's cost from badger's own
		// (flushes and compactions of what the fill wrote).
		{"nothing (baseline)", func(q string) (string, error) { return q, fill(q) }, func(string) error {
			select {
			case <-time.After(time.Second):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}},
		{"purge", func(q string) (string, error) { return q, fill(q) }, func(q string) error {
			_, err := t.admin.PurgeQueue(ctx, &filav1.PurgeQueueRequest{Queue: q})
			return err
		}},
		{"redrive", func(q string) (string, error) { return q + ".dlq", fill(q + ".dlq") }, func(q string) error {
			_, err := t.admin.Redrive(ctx, &filav1.RedriveRequest{DlqQueue: q + ".dlq"})
			return err
		}},
		{"peek every page", func(q string) (string, error) { return q, fill(q) }, func(q string) error {
			token := ""
			for {
				r, err := t.admin.Peek(ctx, &filav1.PeekRequest{Queue: q, Limit: 1000, PageToken: token})
				if err != nil || r.GetNextPageToken() == "" {
					return err
				}
				token = r.GetNextPageToken()
			}
		}},
		{"delete (queue and DLQ full)", func(q string) (string, error) {
			if err := fill(q + ".dlq"); err != nil {
				return "", err
			}
			return q, fill(q)
		}, func(q string) error {
			_, err := t.admin.DeleteQueue(ctx, &filav1.DeleteQueueRequest{Queue: q})
			return err
		}},
	}
	var out []result
	for _, op := range ops {
		q, err := t.newQueue(ctx)
		if err != nil {
			return nil, err
		}
		statsOf, err := op.prepare(q)
		if err != nil {
			return nil, err
		}
		var (
			stop          = make(chan struct{})
			wg            sync.WaitGroup
			enqueues      []time.Duration
			statsMax      time.Duration
			probeErr      = make(chan error, 2)
			probeEnqueue  = &filav1.EnqueueRequest{Queue: other, Payload: payload}
			probeGetStats = &filav1.GetStatsRequest{Queue: statsOf}
			stopped       = func() bool {
				select {
				case <-stop:
					return true
				default:
					return false
				}
			}
		)
		var mu sync.Mutex
		wg.Go(func() {
			tick := time.NewTicker(probeEvery)
			defer tick.Stop()
			var sent sync.WaitGroup
			defer sent.Wait()
			for !stopped() {
				sent.Go(func() {
					start := time.Now()
					_, err := t.svc.Enqueue(ctx, probeEnqueue)
					mu.Lock()
					defer mu.Unlock()
					if err != nil && len(probeErr) == 0 {
						probeErr <- err
					}
					enqueues = append(enqueues, time.Since(start))
				})
				<-tick.C
			}
		})
		wg.Go(func() {
			for !stopped() {
				start := time.Now()
				_, err := t.admin.GetStats(ctx, probeGetStats)
				if err != nil && op.name[:6] != "delete" {
					probeErr <- err
					return
				}
				statsMax = max(statsMax, time.Since(start))
			}
		})
		gcBefore, schedBefore := gcCycles(), schedLatencies()
		start := time.Now()
		err = op.run(q)
		took := time.Since(start)
		gcs := gcCycles() - gcBefore
		sched := schedLatencies().since(schedBefore)
		close(stop)
		wg.Wait()
		close(probeErr)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op.name, err)
		}
		if err := <-probeErr; err != nil {
			return nil, fmt.Errorf("%s: probe: %w", op.name, err)
		}
		pct := func(p float64) float64 { return float64(percentile(enqueues, p).Microseconds()) / 1000 }
		w := fmt.Sprintf("%s, %d messages", op.name, n)
		// The machine's load and the collections during the operation say
		// how far a figure is this operation's and how far its neighbours'.
		note := fmt.Sprintf("%d enqueues to another queue meanwhile; %d GC cycles; goroutine run-queue wait p99 %.1f ms; load average %s",
			len(enqueues), gcs, sched.quantile(0.99)*1000, loadAverage())
		out = append(out,
			result{Workload: w, Value: took.Seconds() * 1000, Unit: "ms taken"},
			result{Workload: w + ": other queue's Enqueue", Value: pct(0.50), Unit: "ms p50", Note: note},
			result{Workload: w + ": other queue's Enqueue", Value: pct(0.99), Unit: "ms p99", Note: note},
			result{Workload: w + ": other queue's Enqueue", Value: pct(1), Unit: "ms max", Note: note},
			result{Workload: w + ": its own GetStats", Value: float64(statsMax.Microseconds()) / 1000, Unit: "ms max"},
		)
	}
	return out, nil
}

// gcCycles is the number of garbage collections so far; filad runs in
// this process, so its collections are among them.
func gcCycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// schedHist is the Go scheduler's histogram of how long goroutines waited
// runnable before they ran (/sched/latencies:seconds). filad runs in
// this process: a wait there is one every hop of a request pays, so it
// tells CPU-bound work inside filad (badger's compactions, say) from a
// lock or a queue.
type schedHist struct {
	counts  []uint64
	buckets []float64
}

func schedLatencies() schedHist {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(s)
	h := s[0].Value.Float64Histogram()
	return schedHist{counts: slices.Clone(h.Counts), buckets: h.Buckets}
}

// since is the histogram of the waits after before was read.
func (h schedHist) since(before schedHist) schedHist {
	d := schedHist{counts: slices.Clone(h.counts), buckets: h.buckets}
	for i := range min(len(d.counts), len(before.counts)) {
		d.counts[i] -= before.counts[i]
	}
	return d
}

// quantile is the upper bound of the bucket that holds quantile q, in
// seconds (0 for an empty histogram).
func (h schedHist) quantile(q float64) float64 {
	var total uint64
	for _, c := range h.counts {
		total += c
	}
	want := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for i, c := range h.counts {
		if seen += c; seen >= want && c > 0 {
			return h.buckets[i+1]
		}
	}
	return 0
}

// loadAverage is the machine's one-minute load average, or "?".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}
