package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/client"
	"github.com/fila-dev/filad/cluster/raftlog"
	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/internal/ports"
	"github.com/fila-dev/filad/protocol"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// The cluster workloads (-cluster N): the batched lifecycle with
// sync_writes=true on a cluster of N filad processes (every group has
// every node as a replica, so RF = N) and on a one-node cluster, each
// against single-node filad (a subprocess too) in alternating rounds; and
// the failover time after kill -9 of a partition leader.
func clusterWorkloads(nodes int) []workload {
	return []workload{
		{fmt.Sprintf("cluster RF%d lifecycle batched", nodes), func(ctx context.Context, e *bench) ([]result, error) {
			return e.clusterThroughput(ctx, nodes, e.f.rounds)
		}},
		{fmt.Sprintf("cluster RF%d failover", nodes), func(ctx context.Context, e *bench) ([]result, error) {
			return e.clusterFailover(ctx, nodes, e.f.failovers)
		}},
		{fmt.Sprintf("cluster RF%d idle", nodes), func(ctx context.Context, e *bench) ([]result, error) {
			return e.clusterIdle(ctx, nodes)
		}},
		{fmt.Sprintf("cluster RF%d catch-up", nodes), func(ctx context.Context, e *bench) ([]result, error) {
			return e.clusterCatchup(ctx, nodes)
		}},
	}
}

// clusterStartTimeout bounds a node's start (it serves once its groups
// have leaders, which takes a majority up); it only turns a node that
// never serves into an error.
const clusterStartTimeout = 60 * time.Second

// clusterNode is one filad process of a cluster filabench runs. Its
// ports and data directory stay across restarts.
type clusterNode struct {
	id                      int
	addr, internal, metrics string // metrics: Prometheus, "" for none
	dataDir, logPath        string
	bin                     string
	env                     []string
	cmd                     *exec.Cmd
	exited                  chan struct{}
}

// benchCluster is N clusterNodes in one temporary directory.
type benchCluster struct {
	dir   string
	nodes []*clusterNode
}

// startCluster starts n filad processes in one cluster on loopback, with
// sync_writes=true, and returns once every one serves. withMetrics also
// serves each node's Prometheus endpoint (and so turns its telemetry on).
func (e *bench) startCluster(n int, withMetrics bool) (*benchCluster, error) {
	bin, err := e.filadBinary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "filabench-cluster")
	if err != nil {
		return nil, err
	}
	c := &benchCluster{dir: dir}
	for range n {
		if _, err := c.addNode(bin, withMetrics); err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
	}
	members := membersEnv(c.nodes)
	for _, node := range c.nodes {
		node.setEnv(members)
	}
	// All at once: no node serves before a majority is up.
	errs := make(chan error, n)
	for _, node := range c.nodes {
		go func() { errs <- node.start() }()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		c.close()
		return nil, first
	}
	return c, nil
}

// addNode appends to c a node with the next id, its own loopback ports
// (a Prometheus one too if withMetrics) and data directory; it is not
// started, and has no environment yet (setEnv).
func (c *benchCluster) addNode(bin string, withMetrics bool) (*clusterNode, error) {
	taken := map[string]bool{}
	id := 1
	for _, o := range c.nodes {
		taken[o.addr], taken[o.internal], taken[o.metrics] = true, true, true
		id = o.id + 1
	}
	dir := filepath.Join(c.dir, fmt.Sprintf("n%d", id))
	n := &clusterNode{id: id, bin: bin, dataDir: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "filad.log")}
	var err error
	if n.addr, err = ports.Free(taken); err == nil {
		n.internal, err = ports.Free(taken)
	}
	if err == nil && withMetrics {
		n.metrics, err = ports.Free(taken)
	}
	if err != nil {
		return nil, err
	}
	c.nodes = append(c.nodes, n)
	return n, nil
}

// setEnv gives n its cluster configuration: how it finds the cluster
// (membersEnv's initial members, or a join address), its id and
// addresses, sync_writes=true, and its Prometheus endpoint if it has one.
func (n *clusterNode) setEnv(finds string) {
	n.env = []string{finds,
		"FILA_CLUSTER__ENABLED=true",
		fmt.Sprintf("FILA_CLUSTER__NODE_ID=%d", n.id),
		"FILA_CLUSTER__INTERNAL_LISTEN_ADDR=" + n.internal,
		"FILA_SERVER__LISTEN_ADDR=" + n.addr,
		"FILA_STORAGE__SYNC_WRITES=true",
	}
	if n.metrics != "" {
		n.env = append(n.env, "FILA_TELEMETRY__OTLP_ENDPOINT=", "FILA_TELEMETRY__PROMETHEUS_LISTEN_ADDR="+n.metrics)
	}
}

// membersEnv is the membership every node is given: ids and internal
// addresses; each node registers its client address (its
// server.listen_addr) in the meta group itself.
func membersEnv(nodes []*clusterNode) string {
	var m []string
	for _, n := range nodes {
		m = append(m, fmt.Sprintf("%d=%s", n.id, n.internal))
	}
	return "FILA_CLUSTER__INITIAL_MEMBERS=" + strings.Join(m, ",")
}

// start runs the node's process and waits until it logs "filad serving"
// (it listens only once ready), or exits.
func (n *clusterNode) start() error {
	if err := os.MkdirAll(filepath.Dir(n.logPath), 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(n.bin, "--config", "", "--data-dir", n.dataDir)
	cmd.Env = append(os.Environ(), n.env...)
	cmd.Stdout = logf
	stderr, err := cmd.StderrPipe()
	if err != nil {
		_ = logf.Close()
		return err
	}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return fmt.Errorf("cluster node %d: %w", n.id, err)
	}
	serving, exited := make(chan struct{}), make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		said := false
		for sc.Scan() {
			_, _ = logf.Write(append(sc.Bytes(), '\n'))
			var line struct{ Msg string }
			if !said && json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "filad serving" {
				said = true
				close(serving)
			}
		}
		_, _ = io.Copy(logf, stderr)
		_ = cmd.Wait() // after the last read of the pipe, as exec requires
		_ = logf.Close()
		close(exited)
	}()
	n.cmd, n.exited = cmd, exited
	select {
	case <-serving:
		return nil
	case <-exited:
		return fmt.Errorf("cluster node %d exited before serving:\n%s", n.id, logTail(n.logPath, 15))
	case <-time.After(clusterStartTimeout):
		n.kill()
		return fmt.Errorf("cluster node %d not serving after %v:\n%s", n.id, clusterStartTimeout, logTail(n.logPath, 15))
	}
}

// kill sends SIGKILL and waits until the process is reaped.
func (n *clusterNode) kill() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	<-n.exited
}

// stop sends SIGTERM and waits until the process is reaped.
func (n *clusterNode) stop() error {
	if n.cmd == nil {
		return nil
	}
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-n.exited:
		return nil
	case <-time.After(30 * time.Second):
		n.kill()
		return fmt.Errorf("cluster node %d did not stop within 30 s of SIGTERM", n.id)
	}
}

func (c *benchCluster) close() {
	for _, n := range c.nodes {
		n.kill()
	}
	_ = os.RemoveAll(c.dir)
}

// node is the node serving clients at addr, nil if none.
func (c *benchCluster) node(addr string) *clusterNode {
	for _, n := range c.nodes {
		if n.addr == addr {
			return n
		}
	}
	return nil
}

// logTail is the last lines of a node's log (filad logs no payloads).
func logTail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}

// leaderOf asks the node conn is dialed at which node leads queue: an
// Ack of a message id that no queue holds is refused by a node not
// leading the queue with UNAVAILABLE and the leader's client address
// (x-fila-leader-addr), and answered by the leader itself as not leased.
// (GetStats will not do: it may be answered where the queue is not led.)
// A node that does not know yet (no leader, or the queue's record not
// applied there yet) is asked again, for up to 30 s.
func leaderOf(ctx context.Context, conn *grpc.ClientConn, queue string) (string, error) {
	svc := filav1.NewFilaServiceClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var trailer metadata.MD
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		// Asked for the hint, not to proxy: the node answering is the one
		// asked only when it leads.
		cctx = metadata.AppendToOutgoingContext(cctx, protocol.RedirectMetadata, "1")
		_, err := svc.Ack(cctx, &filav1.AckRequest{Queue: queue, MessageId: "00000000-0000-7000-8000-000000000000"}, grpc.Trailer(&trailer))
		cancel()
		if status.Code(err) == codes.NotFound && strings.Contains(status.Convert(err).Message(), "not leased") {
			return conn.Target(), nil
		}
		if v := trailer.Get(client.LeaderAddrKey); status.Code(err) == codes.Unavailable && len(v) > 0 {
			return v[0], nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", fmt.Errorf("leader of %s: %w", queue, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// clusterThroughput runs the batched lifecycle (1,024 Producer callers,
// 4 consumers, 1 KiB, sync_writes=true) on single-node filad, a one-node
// cluster and an N-node cluster, each in its own processes, in rounds
// whose order alternates, and reports the medians of each round's ratios
// to single-node; then one more N-node run with Prometheus on for the
// raft entries per log append on the queue's leader.
func (e *bench) clusterThroughput(ctx context.Context, nodes, rounds int) ([]result, error) {
	rounds = max(rounds, 1)
	kib := make([]byte, 1024)
	lifecycle := func(t *filadTarget) (result, error) {
		return t.lifecycleBatchedThroughput(ctx, 1024, 4, e.f.messages, kib)
	}
	single := func() (result, error) {
		_, t, stop, err := e.startFiladTarget("FILA_STORAGE__SYNC_WRITES=true")
		if err != nil {
			return result{}, err
		}
		defer stop()
		return lifecycle(t)
	}
	onCluster := func(n int) (result, error) {
		c, err := e.startCluster(n, false)
		if err != nil {
			return result{}, err
		}
		defer c.close()
		t, err := newFiladTarget(c.nodes[0].addr)
		if err != nil {
			return result{}, err
		}
		defer t.close()
		t.follow = true
		return lifecycle(t)
	}
	type variant struct {
		target string
		run    func() (result, error)
	}
	variants := []variant{{targetSync + " single node", single}, {targetSync + " cluster of 1", func() (result, error) { return onCluster(1) }}}
	if nodes > 1 {
		variants = append(variants, variant{fmt.Sprintf("%s cluster of %d (RF %d)", targetSync, nodes, nodes), func() (result, error) { return onCluster(nodes) }})
	}
	var out []result
	ratios := make([][]float64, len(variants))
	loads := []string{loadAverage()}
	for r := range rounds {
		order := make([]int, len(variants))
		for i := range order {
			order[i] = i
		}
		if r%2 == 1 {
			slices.Reverse(order)
		}
		got := make([]result, len(variants))
		for _, i := range order {
			res, err := variants[i].run()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", variants[i].target, err)
			}
			res.Target, res.Note = variants[i].target, fmt.Sprintf("round %d", r+1)
			got[i] = res
		}
		for i := range variants {
			ratios[i] = append(ratios[i], got[i].Value/got[0].Value)
		}
		out = append(out, got...)
		loads = append(loads, loadAverage())
	}
	note := fmt.Sprintf("median of %d alternating rounds, lifecycle batched 4C 1KiB, sync_writes=true, each in its own processes; load average %s", rounds, strings.Join(loads, " → "))
	for i, v := range variants[1:] {
		rs := ratios[i+1]
		slices.Sort(rs)
		target := "≥ 0.85"
		if i == 1 {
			target = "≥ 0.35"
		}
		out = append(out, result{Workload: strings.TrimPrefix(v.target, targetSync+" ") + " / single node", Target: targetSync,
			Value: rs[len(rs)/2], Unit: "ratio", Note: note + "; target " + target})
	}
	if nodes > 1 {
		r, err := e.clusterEntriesPerAppend(ctx, nodes, lifecycle)
		if err != nil {
			return nil, err
		}
		out = append(out, r...)
	}
	return out, nil
}

// entriesPerAppend is the Prometheus histogram the driver exports for
// the raft entries each log append (one fsync) carries (when it does).
const entriesPerAppend = "fila_raft_entries_per_append"

// clusterEntriesPerAppend runs the lifecycle once more on an N-node
// cluster and reports the raft entries per log append (one fsync) on the
// queue's leader, two ways:
//   - from the driver's own histogram on Prometheus, when this filad
//     exports it;
//   - measured from outside, when perf is installed: each append ends
//     in one badger DB.Sync, which is two msync calls (the memtable's WAL
//     and the value log, both mmapped; nothing else in a cluster node
//     calls msync), counted with perf on the syscall's tracepoint over the
//     run; and the entries appended are the last indexes of every group
//     in the leader's raft log after the run (read with cluster/raftlog
//     once the nodes have stopped), less those of a cluster that started
//     and created one queue. The start-up's appends before perf attached
//     are not counted, and the queue's creation's are: both small.
func (e *bench) clusterEntriesPerAppend(ctx context.Context, nodes int, lifecycle func(*filadTarget) (result, error)) ([]result, error) {
	perf, perfErr := exec.LookPath("perf")
	var baseline uint64
	if perfErr == nil {
		var err error
		if baseline, err = e.baselineEntries(ctx, nodes); err != nil {
			return nil, err
		}
	}
	c, err := e.startCluster(nodes, true)
	if err != nil {
		return nil, err
	}
	defer c.close()
	var counters []*msyncCounter
	if perfErr == nil {
		for _, n := range c.nodes {
			m, err := countMsyncs(perf, n.cmd.Process.Pid, filepath.Join(c.dir, fmt.Sprintf("perf-n%d.csv", n.id)))
			if err != nil {
				return nil, err
			}
			defer m.stop()
			counters = append(counters, m)
		}
	}
	t, err := newFiladTarget(c.nodes[0].addr)
	if err != nil {
		return nil, err
	}
	defer t.close()
	t.follow = true
	before := map[string][2]float64{}
	for _, n := range c.nodes {
		before[n.addr], _ = scrapeHistogram(ctx, n.metrics, entriesPerAppend)
	}
	r, err := lifecycle(t)
	if err != nil {
		return nil, err
	}
	// The run's queue is the target's last; its leader is where the
	// batches went.
	leader, err := leaderOf(ctx, t.conn, fmt.Sprintf("bench-%d", t.seq.Load()))
	if err != nil {
		return nil, err
	}
	n := c.node(leader)
	if n == nil {
		return nil, fmt.Errorf("leader %s is no node of the cluster", leader)
	}
	r.Target = fmt.Sprintf("%s cluster of %d (RF %d), telemetry on", targetSync, nodes, nodes)
	out := []result{r}
	var notes []string
	if after, err := scrapeHistogram(ctx, n.metrics, entriesPerAppend); err != nil {
		notes = append(notes, fmt.Sprintf("histogram: %v", err))
	} else if sum, count := after[0]-before[leader][0], after[1]-before[leader][1]; count > 0 {
		out = append(out, result{Workload: "raft entries per log append (fsync) on the queue's leader, driver's histogram", Target: r.Target, Value: sum / count, Unit: "entries",
			Note: fmt.Sprintf("%.0f appends, %s sum/count over the run; target ≥ 5", count, entriesPerAppend)})
	}
	if perfErr != nil {
		notes = append(notes, "perf not installed: no outside measurement")
	} else {
		msyncs, err := counters[n.id-1].stop()
		if err != nil {
			return nil, err
		}
		if err := n.stop(); err != nil {
			return nil, err
		}
		entries, err := raftEntries(n.dataDir)
		if err != nil {
			return nil, err
		}
		if appends := float64(msyncs) / 2; appends > 0 && entries > baseline {
			out = append(out, result{Workload: "raft entries per log append (fsync) on the queue's leader, from outside", Target: r.Target,
				Value: float64(entries-baseline) / appends, Unit: "entries",
				Note: fmt.Sprintf("%d entries in its log less %d at start-up; %d msync calls (perf) = %.0f DB.Syncs; target ≥ 5", entries, baseline, msyncs, appends)})
		}
	}
	if len(notes) > 0 {
		out[0].Note = "entries per append: " + strings.Join(notes, "; ")
	}
	return out, nil
}

// baselineEntries is the raft entries node 1 of a fresh cluster holds
// after it started and one queue was created.
func (e *bench) baselineEntries(ctx context.Context, nodes int) (uint64, error) {
	c, err := e.startCluster(nodes, false)
	if err != nil {
		return 0, err
	}
	defer c.close()
	t, err := newFiladTarget(c.nodes[0].addr)
	if err != nil {
		return 0, err
	}
	defer t.close()
	t.follow = true
	q, err := t.newQueue(ctx)
	if err != nil {
		return 0, err
	}
	if _, err := t.leaderFor(ctx, q); err != nil {
		return 0, err
	}
	t.close()
	if err := c.nodes[0].stop(); err != nil {
		return 0, err
	}
	return raftEntries(c.nodes[0].dataDir)
}

// raftEntries sums the last index of every group's raft log in a
// stopped node's data directory (the log is never compacted yet, so that
// is every entry it appended).
func raftEntries(dataDir string) (uint64, error) {
	db, err := badger.Open(badger.DefaultOptions(dataDir).WithLogger(nil))
	if err != nil {
		return 0, err
	}
	defer db.Close()
	logs := raftlog.New(db)
	var sum uint64
	for g := uint64(0); g <= uint64(config.Defaults().Cluster.Partitions); g++ {
		l, err := logs.Log(g)
		if err != nil {
			return 0, err
		}
		last, err := l.LastIndex()
		if err != nil {
			return 0, err
		}
		sum += last
	}
	return sum, nil
}

// msyncCounter is perf counting a process's msync calls.
type msyncCounter struct {
	cmd  *exec.Cmd
	out  string
	done bool
	n    uint64
	err  error
}

func countMsyncs(perf string, pid int, out string) (*msyncCounter, error) {
	cmd := exec.Command(perf, "stat", "-x,", "-e", "syscalls:sys_enter_msync", "-p", strconv.Itoa(pid), "-o", out)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf: %w", err)
	}
	return &msyncCounter{cmd: cmd, out: out}, nil
}

// stop ends perf (SIGINT makes it write its counts) and returns the count.
func (m *msyncCounter) stop() (uint64, error) {
	if m.done {
		return m.n, m.err
	}
	m.done = true
	_ = m.cmd.Process.Signal(os.Interrupt)
	_ = m.cmd.Wait()
	b, err := os.ReadFile(m.out)
	if err != nil {
		m.err = fmt.Errorf("perf: %w", err)
		return 0, m.err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Split(line, ","); len(f) > 2 && strings.Contains(line, "sys_enter_msync") {
			if m.n, err = strconv.ParseUint(f[0], 10, 64); err != nil {
				m.err = fmt.Errorf("perf: %q: %w (is the tracepoint readable? run as root)", line, err)
			}
			return m.n, m.err
		}
	}
	m.err = fmt.Errorf("perf wrote no msync count:\n%s", b)
	return 0, m.err
}

// scrapeHistogram reads a Prometheus histogram's _sum and _count from
// addr's /metrics, summed over its label sets.
func scrapeHistogram(ctx context.Context, addr, name string) ([2]float64, error) {
	var v [2]float64
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return v, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	return parseHistogram(resp.Body, name)
}

// parseHistogram finds name's _sum and _count samples (any unit suffix
// the exporter adds before them, any labels) in Prometheus text.
func parseHistogram(r io.Reader, name string) ([2]float64, error) {
	var v [2]float64
	found := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		metric, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		metric, _, _ = strings.Cut(metric, "{")
		i := -1
		switch {
		case strings.HasSuffix(metric, "_sum"):
			i = 0
		case strings.HasSuffix(metric, "_count"):
			i = 1
		default:
			continue
		}
		value, _, _ = strings.Cut(value, " ") // a timestamp may follow
		f, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return v, fmt.Errorf("%s: %q: %w", name, line, err)
		}
		v[i] += f
		found = true
	}
	if err := sc.Err(); err != nil {
		return v, err
	}
	if !found {
		return v, fmt.Errorf("this filad exports no %s", name)
	}
	return v, nil
}

// clusterFailover measures, k times, from kill -9 of the node leading a
// queue's partition to the first Enqueue to that queue that succeeds
// through a surviving node (a client dialed there, which knew the old
// leader and follows the new one's hint), and to the first delivery to a
// consumer that opens its stream through a survivor just after the kill.
// The queue holds -cluster-backlog 1 KiB messages (the new leader loads
// their index before it serves); the killed node is started again after
// each kill.
func (e *bench) clusterFailover(ctx context.Context, nodes, k int) ([]result, error) {
	if nodes < 3 || k < 1 {
		fmt.Fprintf(e.out, "  (no failover: it needs -cluster 3 or more, a kill of one of fewer leaves no majority, and -failovers 1 or more)\n")
		return nil, nil
	}
	b, err := e.startBacklog(ctx, nodes)
	if err != nil {
		return nil, err
	}
	defer b.close()
	c, q, backlog, payload := b.c, b.q, b.n, b.payload
	var enqueued, delivered []time.Duration
	loads := []string{loadAverage()}
	for i := range k {
		f, err := c.failoverOnce(ctx, q, payload)
		if err != nil {
			return nil, fmt.Errorf("failover %d: %w", i+1, err)
		}
		enqueued, delivered = append(enqueued, f.enqueued), append(delivered, f.delivered)
		fmt.Fprintf(e.out, "  failover %d: killed node %d, first enqueue after %v, first delivery after %v\n",
			i+1, f.killed.id, f.enqueued.Round(time.Millisecond), f.delivered.Round(time.Millisecond))
		if err := f.killed.start(); err != nil {
			return nil, err
		}
		loads = append(loads, loadAverage())
	}
	note := fmt.Sprintf("%d kills, queue of %d × 1 KiB; load average %s", k, backlog, strings.Join(loads, " → "))
	w := fmt.Sprintf("failover: kill -9 of the partition leader → first Enqueue ok through a survivor (%d nodes)", nodes)
	wd := fmt.Sprintf("failover: kill -9 of the partition leader → first delivery through a survivor (%d nodes)", nodes)
	return append(spread(w, note+"; target p50 ≤ 2000, max ≤ 5000 (5,000 messages), ≤ 30000 (1M)", enqueued),
		spread(wd, note+"; target ≤ 30000 (1M)", delivered)...), nil
}

// spread is the p50 and the max of times, in ms, as results of w.
func spread(w, note string, times []time.Duration) []result {
	times = slices.Sorted(slices.Values(times))
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return []result{
		{Workload: w, Target: targetSync, Value: ms(times[(len(times)-1)/2]), Unit: "ms p50", Note: note},
		{Workload: w, Target: targetSync, Value: ms(times[len(times)-1]), Unit: "ms max", Note: note},
	}
}

// clusterBacklog is the message count of the failover and catch-up
// workloads' queue.
func (e *bench) clusterBacklog() int {
	if e.f.short {
		return 300
	}
	return e.f.clusterBacklog
}

// backlogCluster is a cluster with one queue q holding n messages of
// payload, and a client target t dialed at its first node that follows
// leader hints.
type backlogCluster struct {
	c       *benchCluster
	t       *filadTarget
	q       string
	n       int
	payload []byte
}

// startBacklog starts a cluster of nodes and fills a new queue with
// -cluster-backlog 1 KiB messages at its leader.
func (e *bench) startBacklog(ctx context.Context, nodes int) (*backlogCluster, error) {
	c, err := e.startCluster(nodes, false)
	if err != nil {
		return nil, err
	}
	b := &backlogCluster{c: c, n: e.clusterBacklog(), payload: make([]byte, 1024)}
	if b.t, err = newFiladTarget(c.nodes[0].addr); err == nil {
		b.t.follow = true
		if b.q, err = b.t.newQueue(ctx); err == nil {
			err = e.fillAtLeader(ctx, b.t, b.q, b.n, b.payload)
		}
	}
	if err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

func (b *backlogCluster) close() {
	if b.t != nil {
		b.t.close()
	}
	b.c.close()
}

// fillAtLeader enqueues n messages of payload into q at its leader
// (batched), reporting the rate once it is a large fill.
func (e *bench) fillAtLeader(ctx context.Context, t *filadTarget, q string, n int, payload []byte) error {
	lt, err := t.leaderFor(ctx, q)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := lt.produceBatched(ctx, q, 256, n, payload); err != nil {
		return fmt.Errorf("filling the backlog: %w", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		fmt.Fprintf(e.out, "  backlog of %d filled in %v (%.0f msg/s)\n", n, d.Round(time.Second), float64(n)/d.Seconds())
	}
	return nil
}

// failover is what one failoverOnce measured.
type failover struct {
	killed              *clusterNode
	enqueued, delivered time.Duration // from the kill
}

// failoverOnce kills q's leader and measures the time until an Enqueue
// through another node succeeds, and until a consumer whose stream opens
// through another node at the kill receives a message.
func (c *benchCluster) failoverOnce(ctx context.Context, q string, payload []byte) (failover, error) {
	probe, err := newFiladTarget(c.nodes[0].addr)
	if err != nil {
		return failover{}, err
	}
	addr, err := leaderOf(ctx, probe.conn, q)
	probe.close()
	if err != nil {
		return failover{}, err
	}
	leader := c.node(addr)
	if leader == nil {
		return failover{}, fmt.Errorf("leader %s is no node of the cluster", addr)
	}
	var survivor *clusterNode
	for _, n := range c.nodes {
		if n != leader {
			survivor = n
			break
		}
	}
	cl, err := client.Dial(survivor.addr, client.Options{TracerProvider: tracenoop.NewTracerProvider(), MeterProvider: metricnoop.NewMeterProvider()})
	if err != nil {
		return failover{}, err
	}
	defer cl.Close()
	// The client learns the leader first, as one in use would have.
	if _, err := cl.Enqueue(ctx, q, nil, payload); err != nil {
		return failover{}, fmt.Errorf("enqueue before the kill: %w", err)
	}
	_ = leader.cmd.Process.Kill()
	start := time.Now()
	<-leader.exited
	f := failover{killed: leader}
	delivered := make(chan error, 1)
	go func() {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		err := cl.Consume(cctx, q, client.ConsumeOptions{MaxInFlight: 1, Reconnect: time.Minute}, func(context.Context, *filav1.Message) error {
			if f.delivered == 0 {
				f.delivered = time.Since(start)
			}
			cancel()
			return nil
		})
		if err == nil && f.delivered == 0 {
			err = errors.New("no delivery within a minute of the kill")
		}
		delivered <- err
	}()
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := cl.Enqueue(actx, q, nil, payload)
		timedOut := actx.Err() != nil
		cancel()
		if err == nil {
			f.enqueued = time.Since(start)
			break
		}
		if ctx.Err() != nil || time.Since(start) > time.Minute {
			return failover{}, fmt.Errorf("no enqueue succeeded within a minute of the kill: %w", err)
		}
		if !timedOut {
			// A refusal answered at once (connection refused, no leader
			// yet): do not spin on it.
			time.Sleep(20 * time.Millisecond)
		}
	}
	if err := <-delivered; err != nil {
		return failover{}, fmt.Errorf("consume after the kill: %w", err)
	}
	return f, nil
}
