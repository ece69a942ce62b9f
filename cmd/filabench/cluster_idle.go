package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// clusterIdle is what an idle cluster costs (issue 25's "idle cost"): n
// nodes, many queues (each with its DLQ), no traffic, each node's CPU over
// a window as a share of one core (from /proc/<pid>/stat, so the load of
// other processes does not count), and the bytes it wrote through write
// calls meanwhile (/proc/<pid>/io wchar: sockets and files, so an upper
// bound of its heartbeat traffic; an idle node writes almost nothing to
// disk).
func (e *bench) clusterIdle(ctx context.Context, nodes int) ([]result, error) {
	queues, window := 1000, 60*time.Second
	if e.f.short {
		queues, window = 20, 2*time.Second
	}
	c, err := e.startCluster(nodes, false)
	if err != nil {
		return nil, err
	}
	defer c.close()
	t, err := newFiladTarget(c.nodes[0].addr)
	if err != nil {
		return nil, err
	}
	defer t.close()
	for i := range queues {
		if err := createRetried(ctx, t.client.Admin(), fmt.Sprintf("idle-%04d", i)); err != nil {
			return nil, fmt.Errorf("create queue %d of %d: %w", i+1, queues, err)
		}
	}
	// Every node has applied every queue (2 per create: the queue and its
	// DLQ) before the window opens.
	for _, n := range c.nodes {
		if err := awaitQueueCount(ctx, n.addr, 2*queues); err != nil {
			return nil, err
		}
	}
	type sample struct {
		cpu    time.Duration
		writes int64
	}
	read := func() ([]sample, error) {
		out := make([]sample, len(c.nodes))
		for i, n := range c.nodes {
			pid := n.cmd.Process.Pid
			cpu, err := processCPU(pid)
			if err != nil {
				return nil, err
			}
			w, err := writtenBytes(pid)
			if err != nil {
				return nil, err
			}
			out[i] = sample{cpu, w}
		}
		return out, nil
	}
	load := loadAverage()
	before, err := read()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(window): // the measurement's window, nothing awaited
	}
	after, err := read()
	if err != nil {
		return nil, err
	}
	took := time.Since(start)
	note := fmt.Sprintf("%d queues + their DLQs, no traffic, %v window; load average %s → %s", queues, window, load, loadAverage())
	var res []result
	for i, n := range c.nodes {
		w := fmt.Sprintf("cluster idle (%d nodes): node %d", nodes, n.id)
		share := 100 * float64(after[i].cpu-before[i].cpu) / float64(took)
		kib := float64(after[i].writes-before[i].writes) / 1024 / took.Seconds()
		res = append(res,
			result{Workload: w, Target: targetSync, Value: share, Unit: "% of one core", Note: note + "; target < 3"},
			result{Workload: w, Target: targetSync, Value: kib, Unit: "KiB/s written", Note: "write calls, sockets and files: bounds its heartbeat traffic"})
	}
	return res, nil
}

// createRetried creates queue, again while the meta group's leader is
// refusing or unknown (UNAVAILABLE: an election, or a leader balance move
// in the cluster's first seconds), for up to clusterStartTimeout. A retry
// that finds the queue (an earlier try's outcome was unknown) is done.
func createRetried(ctx context.Context, admin filav1.FilaAdminClient, queue string) error {
	deadline := time.Now().Add(clusterStartTimeout)
	for retried := false; ; retried = true {
		_, err := admin.CreateQueue(ctx, &filav1.CreateQueueRequest{Name: queue})
		switch {
		case err == nil, retried && status.Code(err) == codes.AlreadyExists:
			return nil
		case status.Code(err) != codes.Unavailable || time.Now().After(deadline):
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond): // the election or move is under way
		}
	}
}

// awaitQueueCount waits until the node at addr lists want queues.
func awaitQueueCount(ctx context.Context, addr string, want int) error {
	t, err := newFiladTarget(addr)
	if err != nil {
		return err
	}
	defer t.close()
	ctx, cancel := context.WithTimeout(ctx, clusterStartTimeout)
	defer cancel()
	for {
		resp, err := t.admin.ListQueues(ctx, &filav1.ListQueuesRequest{})
		if err == nil && len(resp.GetQueues()) >= want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s lists %d of %d queues: %w", addr, len(resp.GetQueues()), want, ctx.Err())
		case <-time.After(100 * time.Millisecond): // polls the node's answer
		}
	}
}

// writtenBytes is wchar of pid: the bytes its write calls passed, to
// sockets and files alike.
func writtenBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("no wchar for pid %d", pid)
}
