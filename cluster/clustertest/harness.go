// Package clustertest is a Jepsen-style checker for filad: a harness that
// runs real filad processes on loopback and breaks them (SIGKILL and
// restart, SIGSTOP and SIGCONT), a recorder of what clients saw, and a
// checker that decides from that history alone whether the broker lost,
// resurrected or invented a message, and whether the per-message history
// is linearizable (porcupine). It was written before the cluster so that
// the cluster is held to it from its first commit; today it runs against
// one process (docs/cluster-checker.md).
package clustertest

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/fila-dev/filad/internal/ports"
)

// StartTimeout bounds how long a node may take to serve after it is
// started. It only turns a node that never comes up into a test failure;
// it decides no checker outcome.
const StartTimeout = 60 * time.Second

var build struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// Filad builds cmd/filad once per test binary (go build, not go run, so
// SIGKILL hits filad itself and not a go tool parent) and returns the
// binary's path. Main removes it when the tests end.
func Filad() (string, error) {
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "clustertest-filad")
		if build.err != nil {
			return
		}
		build.bin = filepath.Join(build.dir, "filad")
		out, err := exec.Command("go", "build", "-o", build.bin, "github.com/fila-dev/filad/cmd/filad").CombinedOutput()
		if err != nil {
			build.err = fmt.Errorf("clustertest: go build filad: %v\n%s", err, out)
		}
	})
	return build.bin, build.err
}

// Main runs the tests of a package that uses the harness and removes the
// filad it built: call it from TestMain as os.Exit(clustertest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if build.dir != "" {
		_ = os.RemoveAll(build.dir)
	}
	return code
}

// Options configures a Cluster.
type Options struct {
	// Nodes is how many filad processes to run. Defaults to 1.
	Nodes int
	// Env returns extra environment variables (FILA_<SECTION>__<KEY>=...) for
	// node i (0-based), given every node's addresses (a cluster's
	// initial_members needs them all); they come after the harness's own,
	// so they win. Defaults to none.
	Env func(i int, nodes []*Node) []string
}

// Cluster is N filad processes, each on its own loopback port and data
// directory. Every process is killed when the test ends, pass or fail.
type Cluster struct {
	Nodes []*Node
	// Leader, when set, names the index of the node leading what the
	// workload uses (a fault with AtLeader hits it); ok false when no
	// node says.
	Leader func(ctx context.Context) (index int, ok bool)

	// root, taken and bin are where Add puts a node, the ports kept, and
	// the filad every node runs.
	root  string
	taken map[string]bool
	bin   string
}

// Node is one filad process: its address and data directory stay the same
// across restarts, so a restart is the same node coming back.
type Node struct {
	// Index is the node's position in Cluster.Nodes.
	Index int
	// Addr is the client address, 127.0.0.1:<port>.
	Addr string
	// InternalAddr is a second free loopback port kept for the node, for a
	// cluster's internal listener (cluster.internal_listen_addr); a single
	// node does not use it.
	InternalAddr string
	// ControlAddr is a third port kept for the node, for a cluster's fault
	// rules (cluster.fault_control_addr), which Isolate and Heal drive.
	ControlAddr string
	dataDir     string
	logPath     string
	env         []string
	bin         string

	// isolated: Isolate cut it off and Rejoin has not healed it (a
	// restart heals it too: the rules live in the process).
	isolated bool

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been reaped
	paused bool
}

// Start builds filad if needed and starts opts.Nodes processes with
// sync_writes on, waiting until each answers its gRPC health check with
// SERVING.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	bin, err := Filad()
	if err != nil {
		t.Fatal(err)
	}
	n := max(opts.Nodes, 1)
	c := &Cluster{root: t.TempDir(), taken: map[string]bool{}, bin: bin}
	for range n {
		c.newNode(t)
	}
	for i, node := range c.Nodes {
		if opts.Env != nil {
			node.env = append(node.env, opts.Env(i, c.Nodes)...)
		}
	}
	t.Cleanup(func() {
		for _, node := range c.Nodes {
			node.kill()
		}
		if t.Failed() {
			for _, node := range c.Nodes {
				t.Logf("node %d log (last lines):\n%s", node.Index+1, node.logTail(200))
			}
		}
	})
	// All at once: a cluster's node serves only once its groups have
	// leaders, which takes a majority of the nodes up.
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, node := range c.Nodes {
		wg.Go(func() { errs[i] = node.start() })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// newNode appends a node with its own ports and directory, and the
// harness's own environment, to c.Nodes.
func (c *Cluster) newNode(t testing.TB) *Node {
	t.Helper()
	i := len(c.Nodes)
	dir := filepath.Join(c.root, fmt.Sprintf("n%d", i+1))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	node := &Node{Index: i, Addr: freeAddr(t, c.taken), InternalAddr: freeAddr(t, c.taken), ControlAddr: freeAddr(t, c.taken),
		dataDir: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "filad.log"), bin: c.bin}
	node.env = []string{
		"FILA_SERVER__LISTEN_ADDR=" + node.Addr,
		"FILA_STORAGE__SYNC_WRITES=true",
		// The default reserve preallocates 128 MiB per node; a
		// test machine's tmpfs need not hold that N times.
		"FILA_LIMITS__DISK_RESERVE_BYTES=1048576",
		"FILA_LIMITS__MIN_FREE_DISK_BYTES=1048576",
		"FILA_LOG__LEVEL=info",
	}
	c.Nodes = append(c.Nodes, node)
	return node
}

// Add starts one more node, with env's variables (given the new node,
// which is the last of c.Nodes by then): a node joining the running
// cluster (cluster.join) is one. It waits until the node serves, and the
// test's end kills it as the others.
func (c *Cluster) Add(t testing.TB, env func(n *Node) []string) (*Node, error) {
	t.Helper()
	node := c.newNode(t)
	node.env = append(node.env, env(node)...)
	return node, node.start()
}

// freeAddr is ports.Free, failing t when there is none.
func freeAddr(t testing.TB, taken map[string]bool) string {
	t.Helper()
	addr, err := ports.Free(taken)
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// start runs the process and waits until it serves or exits.
func (n *Node) start() error {
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child holds its own descriptor
	cmd := exec.Command(n.bin, "--config", "", "--data-dir", n.dataDir)
	cmd.Env = append(os.Environ(), n.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("clustertest: start node %d: %w", n.Index+1, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	n.mu.Lock()
	n.cmd, n.exited, n.paused = cmd, exited, false
	n.mu.Unlock()
	return n.awaitServing(exited)
}

// awaitServing waits on the gRPC health Watch stream, which reports
// SERVING when the broker has loaded its queues, or until the process
// exits: no polling interval to tune.
func (n *Node) awaitServing(exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	go func() {
		select {
		case <-exited:
			cancel()
		case <-ctx.Done():
		}
	}()
	conn, err := grpc.NewClient(n.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()), FastReconnect())
	if err != nil {
		return err
	}
	defer conn.Close()
	for ctx.Err() == nil {
		// WaitForReady: the port may not be listening yet.
		w, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		for err == nil {
			var resp *healthpb.HealthCheckResponse
			if resp, err = w.Recv(); err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
				return nil
			}
		}
		pause(ctx) // the stream broke: watch again while ctx lasts
	}
	select {
	case <-exited:
		return fmt.Errorf("clustertest: node %d exited before serving:\n%s", n.Index+1, n.logTail(20))
	default:
		return fmt.Errorf("clustertest: node %d not serving after %v:\n%s", n.Index+1, StartTimeout, n.logTail(20))
	}
}

// Kill sends SIGKILL (no shutdown code runs) and waits until the process
// is gone. Killing a stopped or paused node is allowed.
func (n *Node) Kill() { n.kill() }

func (n *Node) kill() {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.paused = false
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// Restart starts the node again on the same data directory and port
// (killing it first if it runs) and waits until it serves.
func (n *Node) Restart() error {
	n.kill()
	return n.start()
}

// Pause stops the process with SIGSTOP: its sockets stay open and its
// clients' calls hang, as on a machine that froze. It returns once every
// thread of the process is stopped: the signal is delivered
// asynchronously, and on a busy machine a thread can go on serving a call
// for a while after kill(2) returned.
func (n *Node) Pause() error {
	if err := n.signal(syscall.SIGSTOP, true); err != nil {
		return err
	}
	pid := n.Pid()
	for deadline := time.Now().Add(time.Minute); ; {
		stopped, err := allThreadsStopped(pid)
		if err != nil || stopped {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("clustertest: node %d: not stopped a minute after SIGSTOP", n.Index+1)
		}
		time.Sleep(time.Millisecond) // polling /proc: no event says a thread stopped
	}
}

// allThreadsStopped reports whether every thread of pid is in state T
// (stopped by a signal), from /proc/<pid>/task/*/stat.
func allThreadsStopped(pid int) (bool, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(tasks) == 0 {
		return false, fmt.Errorf("clustertest: threads of %d: %v", pid, err)
	}
	for _, path := range tasks {
		b, err := os.ReadFile(path)
		if err != nil {
			return false, err
		}
		// The state follows the command name, which is in parentheses
		// (and may hold some itself).
		i := strings.LastIndex(string(b), ") ")
		if i < 0 || !strings.HasPrefix(string(b[i+2:]), "T") && !strings.HasPrefix(string(b[i+2:]), "t") {
			return false, nil
		}
	}
	return true, nil
}

// Resume continues a paused process with SIGCONT.
func (n *Node) Resume() error { return n.signal(syscall.SIGCONT, false) }

func (n *Node) signal(sig syscall.Signal, paused bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return fmt.Errorf("clustertest: node %d is not running", n.Index+1)
	}
	if err := n.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("clustertest: node %d: %v: %w", n.Index+1, sig, err)
	}
	n.paused = paused
	return nil
}

// Pid is the process id of the node's current process, 0 before it first
// starts.
func (n *Node) Pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// DataDir is the node's data directory. Change it only while the node is
// down (after Kill or Stop): a test may wipe it, or put back an older
// copy to stand in for a disk that lost writes.
func (n *Node) DataDir() string { return n.dataDir }

// Paused reports whether the node was paused and not resumed since.
func (n *Node) Paused() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.paused
}

// Stop shuts the node down with SIGTERM (resuming it first if paused) and
// waits until it has exited.
func (n *Node) Stop() error {
	n.mu.Lock()
	cmd, exited, paused := n.cmd, n.exited, n.paused
	n.mu.Unlock()
	if cmd == nil {
		return nil
	}
	if paused {
		if err := n.Resume(); err != nil {
			return err
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	<-exited
	return nil
}

// Heal resumes every paused node, so that the drain sees the whole
// cluster.
func (c *Cluster) Heal() error {
	for _, n := range c.Nodes {
		if n.Paused() {
			if err := n.Resume(); err != nil {
				return err
			}
		}
		if n.isolated {
			if err := c.Rejoin(n); err != nil {
				return err
			}
		}
	}
	return nil
}

// Isolate cuts node n's raft links to and from every other node (its
// clients still reach it): the node's own fault rules, over its control
// address, which a cluster's Env must have set (FILA_CLUSTER__FAULT_CONTROL_ADDR).
func (c *Cluster) Isolate(n *Node) error {
	var others []string
	for _, o := range c.Nodes {
		if o != n {
			others = append(others, strconv.Itoa(o.Index+1))
		}
	}
	if err := n.control(http.MethodPut, `{"drop": [`+strings.Join(others, ", ")+`]}`); err != nil {
		return err
	}
	n.isolated = true
	return nil
}

// Rejoin removes node n's fault rules.
func (c *Cluster) Rejoin(n *Node) error {
	if err := n.control(http.MethodDelete, ""); err != nil {
		return err
	}
	n.isolated = false
	return nil
}

// control sends method /faults with body to the node's fault control
// handler (cluster.fault_control_addr).
func (n *Node) control(method, body string) error {
	req, err := http.NewRequest(method, "http://"+n.ControlAddr+"/faults", strings.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("clustertest: node %d fault control: %w", n.Index+1, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("clustertest: node %d fault control %s /faults: %s", n.Index+1, method, resp.Status)
	}
	return nil
}

// logTail is the last lines of the node's log, for a failing test's
// output. The log holds no payloads: filad never logs them.
func (n *Node) logTail(lines int) string {
	f, err := os.Open(n.logPath)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var all []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		all = append(all, sc.Text())
	}
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}
