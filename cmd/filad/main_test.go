package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

var filadBin string

// TestMain builds filad once, so the tests can run it as a real process and
// kill it with SIGKILL.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "filad-bin")
	if err != nil {
		panic(err)
	}
	filadBin = filepath.Join(dir, "filad")
	if out, err := exec.Command("go", "build", "-o", filadBin, ".").CombinedOutput(); err != nil {
		panic(fmt.Sprintf("build filad: %v\n%s", err, out))
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	// Every subprocess and its readers must be gone once the tests end.
	if err := goleak.Find(); code == 0 && err != nil {
		fmt.Fprintln(os.Stderr, "goleak:", err)
		code = 1
	}
	os.Exit(code)
}

// proc is a filad subprocess.
type proc struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
	mu   sync.Mutex
	logs []string // its stderr lines
}

// logged reports whether a line of its log contains s.
func (p *proc) logged(s string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.logs {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// startFilad runs filad on dataDir with a free port and waits until it logs
// that it serves.
func startFilad(t *testing.T, dataDir string, env ...string) *proc {
	t.Helper()
	cmd := exec.Command(filadBin, "--config", "", "--data-dir", dataDir)
	cmd.Env = append(os.Environ(), append([]string{"FILA_SERVER__LISTEN_ADDR=127.0.0.1:0", "FILA_LIMITS__DISK_RESERVE_BYTES=1048576"}, env...)...)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	p := &proc{cmd: cmd, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.logs = append(p.logs, sc.Text())
			p.mu.Unlock()
			var line struct {
				Msg        string `json:"msg"`
				ListenAddr string `json:"listen_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "filad serving" {
				addr <- line.ListenAddr
			}
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			p.mu.Lock()
			defer p.mu.Unlock()
			var keep []string // the log's JSON lines and its first lines
			for i, l := range p.logs {
				if strings.HasPrefix(l, "{") || i < 12 {
					keep = append(keep, l)
				}
			}
			t.Logf("filad's log:\n%s", strings.Join(keep[max(0, len(keep)-40):], "\n"))
			if crash := crashReport(p.logs); len(crash) > 0 {
				t.Logf("filad's crash, with the stack of the goroutine that crashed:\n%s", strings.Join(crash, "\n"))
			}
		}
	})
	select {
	case p.addr = <-addr:
	case <-p.done:
		t.Fatal("filad exited before serving")
	case <-time.After(20 * time.Second):
		t.Fatal("filad did not start serving")
	}
	return p
}

// crashReport is the part of a Go runtime crash report in logs that says
// what failed: from its "panic:" or "fatal error:" line to the end of the
// first goroutine's stack, which is the one that crashed; the other
// goroutines are left out.
func crashReport(logs []string) []string {
	for i, l := range logs {
		if !strings.HasPrefix(l, "panic:") && !strings.HasPrefix(l, "fatal error:") && !strings.HasPrefix(l, "unexpected fault address") {
			continue
		}
		end, inStack := i, false
		for end < len(logs) {
			if strings.HasPrefix(logs[end], "goroutine ") {
				inStack = true
			} else if inStack && logs[end] == "" {
				break
			}
			end++
		}
		return logs[i:end]
	}
	return nil
}

func (p *proc) kill9(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Kill()) // SIGKILL: no shutdown code runs
	<-p.done
}

type client struct {
	svc   filav1.FilaServiceClient
	admin filav1.FilaAdminClient
}

func connect(t *testing.T, addr string) client {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return client{filav1.NewFilaServiceClient(conn), filav1.NewFilaAdminClient(conn)}
}

func TestCrashRecoveryAfterKill9(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dataDir := t.TempDir()
	const vt = 2 * time.Second

	p := startFilad(t, dataDir)
	c := connect(t, p.addr)
	_, err := c.admin.CreateQueue(ctx, &filav1.CreateQueueRequest{Name: "crash", Config: &filav1.QueueConfig{VisibilityTimeoutMs: uint64(vt / time.Millisecond)}})
	require.NoError(t, err)

	// 30 messages go to a consumer, which acks 20 and leaves 10 leased.
	streamCtx, closeStream := context.WithCancel(ctx)
	stream, err := c.svc.Consume(streamCtx, &filav1.ConsumeRequest{Queue: "crash"})
	require.NoError(t, err)
	enqueueN(t, ctx, c, 30)
	acked, leased := map[string]bool{}, map[string]time.Time{}
	for i := range 30 {
		resp, err := stream.Recv()
		require.NoError(t, err)
		m := resp.GetMessage()
		if i < 20 {
			_, err = c.svc.Ack(ctx, &filav1.AckRequest{Queue: "crash", MessageId: m.GetId()})
			require.NoError(t, err)
			acked[m.GetId()] = true
		} else {
			leased[m.GetId()] = m.GetTimestamps().GetLeasedAt().AsTime()
		}
	}
	closeStream()
	require.Eventually(t, func() bool {
		st, err := c.admin.GetStats(ctx, &filav1.GetStatsRequest{Queue: "crash"})
		return err == nil && st.GetActiveConsumers() == 0
	}, 10*time.Second, 5*time.Millisecond)
	// 70 more stay ready.
	ready := map[string]bool{}
	for _, id := range enqueueN(t, ctx, c, 70) {
		ready[id] = true
	}
	p.kill9(t)

	p = startFilad(t, dataDir)
	c = connect(t, p.addr)
	st, err := c.admin.GetStats(ctx, &filav1.GetStatsRequest{Queue: "crash"})
	require.NoError(t, err)
	require.EqualValues(t, 80, st.GetDepth()+st.GetInFlight(), "every unacked message is back")

	stream, err = c.svc.Consume(ctx, &filav1.ConsumeRequest{Queue: "crash"})
	require.NoError(t, err)
	seen := map[string]bool{}
	for len(seen) < 80 {
		resp, err := stream.Recv()
		require.NoError(t, err)
		m := resp.GetMessage()
		id := m.GetId()
		require.False(t, acked[id], "acked message %s came back", id)
		require.False(t, seen[id], "message %s delivered twice", id)
		seen[id] = true
		if leasedAt, ok := leased[id]; ok {
			// The lease survived the crash: no redelivery before it expired.
			require.False(t, time.Now().Before(leasedAt.Add(vt-time.Millisecond)), "lease of %s kept until it expired", id)
			require.EqualValues(t, 1, m.GetMetadata().GetAttemptCount())
		} else {
			require.True(t, ready[id], "unknown message %s", id)
			require.Zero(t, m.GetMetadata().GetAttemptCount())
		}
		_, err = c.svc.Ack(ctx, &filav1.AckRequest{Queue: "crash", MessageId: id})
		require.NoError(t, err)
	}
	st, err = c.admin.GetStats(ctx, &filav1.GetStatsRequest{Queue: "crash"})
	require.NoError(t, err)
	require.Zero(t, st.GetDepth()+st.GetInFlight())
}

func enqueueN(t *testing.T, ctx context.Context, c client, n int) []string {
	t.Helper()
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			resp, err := c.svc.Enqueue(ctx, &filav1.EnqueueRequest{Queue: "crash", Payload: fmt.Appendf(nil, "m%d", i)})
			if err != nil {
				t.Errorf("enqueue: %v", err)
				return
			}
			ids[i] = resp.GetMessageId()
		})
	}
	wg.Wait()
	return ids
}

func TestGracefulShutdownOnSIGTERM(t *testing.T) {
	dataDir := t.TempDir()
	p := startFilad(t, dataDir)
	c := connect(t, p.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := c.admin.CreateQueue(ctx, &filav1.CreateQueueRequest{Name: "q"})
	require.NoError(t, err)
	pid, err := os.ReadFile(filepath.Join(dataDir, PidFile))
	require.NoError(t, err, "the pid file names this filad")
	require.Equal(t, fmt.Sprintf("%d\n", p.cmd.Process.Pid), string(pid))
	require.NoError(t, p.cmd.Process.Signal(os.Interrupt))
	<-p.done
	require.Equal(t, 0, p.cmd.ProcessState.ExitCode(), "exit 0 after a graceful stop")
	require.NoFileExists(t, filepath.Join(dataDir, PidFile), "removed on a graceful stop")

	// The queue survives the restart.
	p = startFilad(t, dataDir)
	c = connect(t, p.addr)
	_, err = c.admin.GetStats(ctx, &filav1.GetStatsRequest{Queue: "q"})
	require.NoError(t, err)
}

func TestBadConfigFailsNamingTheKey(t *testing.T) {
	tests := []struct{ env, want string }{
		{"FILA_SERVER__MAX_MESSAGE_BYTES=abc", "FILA_SERVER__MAX_MESSAGE_BYTES (server.max_message_bytes)"},
		{"FILA_SERVER__BOGUS=1", "unknown key FILA_SERVER__BOGUS (server.bogus)"},
		{"FILA_TELEMETRY__OTLP_ENDPOINT=ftp://x", "telemetry.otlp_endpoint"},
	}
	for _, tt := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := exec.CommandContext(ctx, filadBin, "--config", "", "--data-dir", t.TempDir())
		cmd.Env = append(os.Environ(), tt.env)
		out, err := cmd.CombinedOutput()
		cancel()
		require.Error(t, err, tt.env)
		require.Equal(t, 1, cmd.ProcessState.ExitCode(), tt.env)
		require.Contains(t, string(out), tt.want, tt.env)
	}
}

func TestNewcomerEnvironmentDoesNotStopFilad(t *testing.T) {
	// FILA_ADDR is the CLI's variable and FILA_LOG_LEVEL the legacy name of
	// log.level: neither may be read as an unknown config key.
	// FILA_SERVER_LISTEN_ADDR (one underscore) is ignored, and said to be.
	p := startFilad(t, t.TempDir(), "FILA_ADDR=127.0.0.1:5555", "FILA_LOG_LEVEL=debug", "FILA_SERVER_LISTEN_ADDR=127.0.0.1:1")
	c := connect(t, p.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.admin.ListQueues(ctx, &filav1.ListQueuesRequest{})
	require.NoError(t, err)
	require.True(t, p.logged("FILA_SERVER_LISTEN_ADDR is ignored: filad reads FILA_SERVER__LISTEN_ADDR"), "a WARN names it")
	require.False(t, p.logged("FILA_ADDR is ignored"), "the CLI's variable is not filad's")
}

// TestHealthProbe: `filad health` (the image's HEALTHCHECK) says SERVING of
// a running filad.
func TestHealthProbe(t *testing.T) {
	t.Parallel()
	p := startFilad(t, t.TempDir())
	out, err := exec.Command(filadBin, "health", "--addr", p.addr).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Equal(t, "SERVING\n", string(out))
}

func TestCommandLine(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = busy.Close() })
	tests := []struct {
		name     string
		args     []string
		env      []string
		wantCode int
		stdout   string
		stderr   string
		never    string
		once     string // in stderr exactly once
	}{
		{name: "version", args: []string{"--version"}, stdout: "filad 0.1.0-dev (commit "},
		{name: "version as a word", args: []string{"version"}, stdout: "filad 0.1.0-dev (commit "},
		{name: "an unknown word does not start a server", args: []string{"serve"}, wantCode: 2, stderr: `unexpected argument "serve"`, never: "filad serving"},
		{name: "restore needs a data directory", args: []string{"restore", "/dev/null"}, wantCode: 2, stderr: "usage: filad restore FILE --data-dir DIR"},
		{name: "restore refuses what is not a backup", args: []string{"restore", "/dev/null", "--data-dir", t.TempDir()}, wantCode: 1, stderr: "not a filad backup"},
		{name: "health of nothing listening", args: []string{"health", "--addr", "127.0.0.1:1", "--timeout", "1s"}, wantCode: 1, stderr: "health of 127.0.0.1:1"},
		{name: "an unknown flag is a bad command line", args: []string{"--no-such-flag"}, wantCode: 2, stderr: "usage: filad [--config FILE]", once: "flag provided but not defined: -no-such-flag", never: "filad serving"},
		{name: "an unknown health flag is a bad command line", args: []string{"health", "--port", "1"}, wantCode: 2, stderr: "flag provided but not defined: -port"},
		{name: "a bad config is a failure, not a usage error", args: []string{"--config", "", "--data-dir", t.TempDir()}, env: []string{"FILA_SERVER__LISTEN_ADDR=not an address"}, wantCode: 1, stderr: "listen_addr", never: "filad serving"},
		{name: "help exits 0 with usage", args: []string{"--help"}, stdout: "filad restore FILE --data-dir DIR", never: "-data-dir"},
		{name: "help of a command", args: []string{"health", "-h"}, stdout: "-tls-ca"},
		{name: "empty data dir is refused", args: []string{"--config", "", "--data-dir", ""}, wantCode: 2, stderr: "--data-dir: must not be empty"},
		{
			name: "failed start does not claim to have stopped", args: []string{"--config", "", "--data-dir", t.TempDir()},
			env: []string{"FILA_SERVER__LISTEN_ADDR=" + busy.Addr().String()}, wantCode: 1,
			stderr: "address already in use", never: "filad stopped",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(filadBin, tt.args...)
			cmd.Env = append(os.Environ(), tt.env...)
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				code = exit.ExitCode()
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, tt.wantCode, code, "stderr: %s", stderr.String())
			require.Contains(t, stdout.String(), tt.stdout)
			require.Contains(t, stderr.String(), tt.stderr)
			if tt.never != "" {
				require.NotContains(t, stderr.String(), tt.never)
			}
			if tt.once != "" {
				require.Equal(t, 1, strings.Count(stderr.String(), tt.once), "stderr: %s", stderr.String())
			}
		})
	}
}
