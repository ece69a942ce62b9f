package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// The backlog workloads (issue 26): a queue keeps an index entry per
// message in memory and reads payloads from disk when it delivers them.
//
//	backlog-memory:  RSS per queued message, 1M × 1 KiB and 100k × 64 KiB,
//	                 enqueued and after a restart (the index alone)
//	backlog-restart: kill -9 with 1M × 1 KiB queued, time until filad
//	                 serves at full depth, and its RSS then
//	backlog-drain:   the batched lifecycle's consumers draining a backlog
//	                 far larger than the message cache, and one that fits,
//	                 with the p99 of the store reads the cache's misses cost
//	huge-backlog:    with -huge-backlog N (10M in the issue): N × 1 KiB
//	                 enqueued, kill -9, restart, drained, with the peak RSS
//	                 of each phase
func backlogWorkloads() []workload {
	return []workload{
		{"backlog-memory", func(ctx context.Context, e *bench) ([]result, error) {
			var out []result
			for _, c := range []struct{ n, size int }{{e.backlogN(1_000_000), 1024}, {e.backlogN(100_000), 64 << 10}} {
				r, err := e.backlogMemory(ctx, c.n, c.size)
				if err != nil {
					return nil, err
				}
				out = append(out, r...)
			}
			return out, nil
		}},
		{"backlog-restart", func(ctx context.Context, e *bench) ([]result, error) {
			return e.backlogRestart(ctx, e.backlogN(1_000_000))
		}},
		{"backlog-drain", func(ctx context.Context, e *bench) ([]result, error) {
			return e.backlogDrain(ctx, e.backlogN(200_000))
		}},
	}
}

// backlogN is n, or a fiftieth of it with -short.
func (e *bench) backlogN(n int) int {
	if e.f.short {
		return n / 50
	}
	return n
}

// fillBacklog enqueues n messages of size bytes into a new queue through
// the batching Producer and returns the queue.
func fillBacklog(ctx context.Context, t *filadTarget, n, size int) (string, error) {
	q, err := t.newQueue(ctx)
	if err != nil {
		return "", err
	}
	return q, t.produceBatched(ctx, q, 256, n, make([]byte, size))
}

// awaitDepth polls q's depth until it is n, for up to a minute.
func awaitDepth(ctx context.Context, t *filadTarget, q string, n int) error {
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := t.admin.GetStats(ctx, &filav1.GetStatsRequest{Queue: q})
		if err == nil && st.GetDepth() == uint64(n) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("queue %s: depth %d, not %d, after a minute (%v)", q, st.GetDepth(), n, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// perMessage is the RSS growth from idle per message, in bytes.
func perMessage(rss, idle float64, n int) float64 { return (rss - idle) * (1 << 20) / float64(n) }

func (e *bench) backlogMemory(ctx context.Context, n, size int) ([]result, error) {
	p, t, stop, err := e.startFiladTarget("FILA_STORAGE__SYNC_WRITES=false")
	if err != nil {
		return nil, err
	}
	defer func() { stop() }()
	idle, err := rssMB(p.pid())
	if err != nil {
		return nil, err
	}
	idleAnon, _ := rssAnonMB(p.pid())
	q, err := fillBacklog(ctx, t, n, size)
	if err != nil {
		return nil, err
	}
	full, _ := rssMB(p.pid())
	fullAnon, _ := rssAnonMB(p.pid())
	// A restart loads the index alone: what stays resident per message.
	t.close()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	_ = p.cmd.Wait()
	if p, err = e.startFiladProcessIn(p.dir, "FILA_STORAGE__SYNC_WRITES=false"); err != nil {
		return nil, err
	}
	if t, err = newFiladTarget(p.addr); err != nil {
		return nil, err
	}
	stop = func() { t.close(); p.close() }
	if err := awaitDepth(ctx, t, q, n); err != nil {
		return nil, err
	}
	restarted, _ := rssMB(p.pid())
	restartedAnon, _ := rssAnonMB(p.pid())
	note := fmt.Sprintf("%d × %d B; RSS (anonymous) idle %.0f (%.0f) MB, enqueued %.0f (%.0f) MB, restarted %.0f (%.0f) MB",
		n, size, idle, idleAnon, full, fullAnon, restarted, restartedAnon)
	label := fmt.Sprintf("%d KiB", size>>10)
	return []result{
		{Workload: "backlog RSS per message enqueued, " + label, Target: targetNoSync, Value: perMessage(full, idle, n), Unit: "B/msg", Note: note},
		{Workload: "backlog RSS per message after a restart, " + label, Target: targetNoSync, Value: perMessage(restarted, idle, n), Unit: "B/msg", Note: note},
		{Workload: "backlog anonymous RSS per message after a restart, " + label, Target: targetNoSync, Value: perMessage(restartedAnon, idleAnon, n), Unit: "B/msg",
			Note: "what is not badger's mmapped files"},
	}, nil
}

func (e *bench) backlogRestart(ctx context.Context, n int) ([]result, error) {
	p, t, _, err := e.startFiladTarget()
	if err != nil {
		return nil, err
	}
	q, err := fillBacklog(ctx, t, n, 1024)
	if err != nil {
		t.close()
		p.close()
		return nil, err
	}
	t.close()
	p.kill9()
	start := time.Now()
	if p, err = e.startFiladProcessIn(p.dir); err != nil {
		return nil, err
	}
	defer p.close()
	if t, err = newFiladTarget(p.addr); err != nil {
		return nil, err
	}
	defer t.close()
	if err := awaitDepth(ctx, t, q, n); err != nil {
		return nil, err
	}
	took := time.Since(start)
	rss, _ := rssMB(p.pid())
	note := fmt.Sprintf("%d × 1 KiB, sync_writes=true; load average %s", n, loadAverage())
	return []result{
		{Workload: "backlog restart after kill -9 → full depth served", Target: targetSync, Value: took.Seconds(), Unit: "s", Note: note},
		{Workload: "backlog RSS at full depth after the restart", Target: targetSync, Value: rss, Unit: "MB", Note: note},
	}, nil
}

// backlogDrain fills a queue with n × 1 KiB, then drains it with the
// batched lifecycle's consumers (4, MaxInFlight 256), with a message
// cache of 8 MiB (the backlog is over ten times that) and of 2 GiB (it
// all fits).
func (e *bench) backlogDrain(ctx context.Context, n int) ([]result, error) {
	var out []result
	for _, mib := range []int{8, 2048} {
		p, t, stop, err := e.startFiladTarget(fmt.Sprintf("FILA_STORAGE__MESSAGE_CACHE_MIB=%d", mib), "FILA_TELEMETRY__PROMETHEUS_LISTEN_ADDR=127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		q, err := fillBacklog(ctx, t, n, 1024)
		if err != nil {
			stop()
			return nil, err
		}
		start := time.Now()
		err = consumeBatched(ctx, t, q, 4, n)(true)
		took := time.Since(start)
		rss, _ := rssMB(p.pid())
		reads, p99, herr := histogramQuantile(p.metricsURL, "fila_storage_read_duration_seconds", q, 0.99)
		stop()
		if err != nil {
			return nil, err
		}
		if herr != nil {
			return nil, fmt.Errorf("fila.storage.read.duration: %w", herr)
		}
		r := rate(fmt.Sprintf("backlog drain, message cache %d MiB", mib), n, took)
		r.Target, r.Note = targetSync, fmt.Sprintf("%d × 1 KiB queued first; RSS at the end %.0f MB; %d store reads", n, rss, reads)
		out = append(out, r, result{Workload: fmt.Sprintf("backlog drain store read p99, message cache %d MiB", mib), Target: targetSync,
			Value: p99 * 1000, Unit: "ms", Note: fmt.Sprintf("fila.storage.read.duration: the upper bound of the bucket holding the 99th percentile of %d reads (each a dispatch round's misses)", reads)})
	}
	return out, nil
}

// rssPeak samples pid's RSS every 100 ms until stop is called, which
// returns the largest samples.
func rssPeak(pid int) (stop func() rssPeaks) {
	done, peak := make(chan struct{}), make(chan rssPeaks, 1)
	go func() {
		var top rssPeaks
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			if rss, err := rssMB(pid); err == nil {
				top.total = max(top.total, rss)
			}
			if anon, err := rssAnonMB(pid); err == nil {
				top.anon = max(top.anon, anon)
			}
			select {
			case <-done:
				peak <- top
				return
			case <-tick.C:
			}
		}
	}()
	return func() rssPeaks { close(done); return <-peak }
}

// rssPeaks are the highest resident set sampled, in MB, whole and its
// anonymous part (what the memory alarm judges: the rest is file pages of
// badger's mmapped value log and tables, the kernel's to reclaim).
type rssPeaks struct{ total, anon float64 }

// hugeBacklog enqueues n × 1 KiB into one queue (sync_writes=true), kills
// filad with SIGKILL, restarts it until it serves at full depth, and
// drains the queue with the batched lifecycle's consumers, sampling RSS
// throughout (issue 26: 10M × 1 KiB under 2.5 GB).
func (e *bench) hugeBacklog(ctx context.Context, n int) ([]result, error) {
	p, t, _, err := e.startFiladTarget()
	if err != nil {
		return nil, err
	}
	peak := rssPeak(p.pid())
	start := time.Now()
	q, err := fillBacklog(ctx, t, n, 1024)
	enqueued, enqueuePeak := time.Since(start), peak()
	t.close()
	if err != nil {
		p.close()
		return nil, err
	}
	p.kill9()
	start = time.Now()
	if p, err = e.startFiladProcessIn(p.dir); err != nil {
		return nil, err
	}
	defer p.close()
	peak = rssPeak(p.pid())
	if t, err = newFiladTarget(p.addr); err != nil {
		peak()
		return nil, err
	}
	defer t.close()
	err = awaitDepth(ctx, t, q, n)
	restarted, restartPeak := time.Since(start), peak()
	if err != nil {
		return nil, err
	}
	peak = rssPeak(p.pid())
	start = time.Now()
	err = consumeBatched(ctx, t, q, 4, n)(true)
	drained, drainPeak := time.Since(start), peak()
	if err != nil {
		return nil, err
	}
	st, err := t.admin.GetStats(ctx, &filav1.GetStatsRequest{Queue: q})
	if err != nil {
		return nil, err
	}
	if left := st.GetDepth() + st.GetInFlight() + st.GetDelayed(); left != 0 {
		return nil, fmt.Errorf("queue %s: %d messages left after the drain", q, left)
	}
	note := fmt.Sprintf("%d × 1 KiB, sync_writes=true; load average %s", n, loadAverage())
	label := fmt.Sprintf("%dM × 1 KiB", n/1_000_000)
	if n < 1_000_000 {
		label = fmt.Sprintf("%dk × 1 KiB", n/1000)
	}
	enq := rate("huge backlog enqueue, "+label, n, enqueued)
	enq.Target, enq.Note = targetSync, note
	drain := rate("huge backlog drain after the restart, "+label, n, drained)
	drain.Target, drain.Note = targetSync, note
	peaks := func(phase string, p rssPeaks) []result {
		return []result{
			{Workload: "huge backlog peak RSS while " + phase + ", " + label, Target: targetSync, Value: p.total, Unit: "MB", Note: note},
			{Workload: "huge backlog peak anonymous RSS while " + phase + ", " + label, Target: targetSync, Value: p.anon, Unit: "MB", Note: note},
		}
	}
	out := append([]result{enq}, peaks("enqueuing", enqueuePeak)...)
	out = append(out, result{Workload: "huge backlog restart after kill -9 → full depth, " + label, Target: targetSync, Value: restarted.Seconds(), Unit: "s", Note: note})
	out = append(out, peaks("restarting", restartPeak)...)
	return append(append(out, drain), peaks("draining", drainPeak)...), nil
}

// histogramQuantile scrapes url (Prometheus text) for the histogram name
// of queue and returns its count and the upper bound of the bucket that
// holds quantile q (0 when it has no measurement).
func histogramQuantile(url, name, queue string, q float64) (count uint64, bound float64, err error) {
	if url == "" {
		return 0, 0, fmt.Errorf("filad serves no metrics")
	}
	resp, err := http.Get(url)
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	type bucket struct {
		le    float64
		count uint64
	}
	var buckets []bucket
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"_bucket{") || !strings.Contains(line, `queue_id="`+queue+`"`) {
			continue
		}
		_, rest, _ := strings.Cut(line, `le="`)
		le, rest, _ := strings.Cut(rest, `"`)
		fields := strings.Fields(rest[strings.LastIndex(rest, "}")+1:])
		if len(fields) == 0 {
			return 0, 0, fmt.Errorf("bucket line %q", line)
		}
		b := bucket{le: math.Inf(1)}
		if le != "+Inf" {
			if b.le, err = strconv.ParseFloat(le, 64); err != nil {
				return 0, 0, fmt.Errorf("bucket line %q: %w", line, err)
			}
		}
		c, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, 0, fmt.Errorf("bucket line %q: %w", line, err)
		}
		b.count = uint64(c)
		buckets = append(buckets, b)
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	sort.Slice(buckets, func(i, j int) bool { return buckets[i].le < buckets[j].le })
	if len(buckets) == 0 {
		return 0, 0, nil
	}
	count = buckets[len(buckets)-1].count // cumulative: +Inf holds them all
	if count == 0 {
		return 0, 0, nil
	}
	for _, b := range buckets {
		if float64(b.count) >= q*float64(count) {
			return count, b.le, nil
		}
	}
	return count, math.Inf(1), nil
}
