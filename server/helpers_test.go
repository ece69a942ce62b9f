package server_test

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/internal/filadtest"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/server"
	"github.com/fila-dev/filad/telemetry/telemetrytest"
)

// waitFor bounds every wait in these tests; nothing here should take long.
const waitFor = 20 * time.Second

// bundle is one in-process filad with a client.
type bundle struct {
	srv   *server.Server
	svc   filav1.FilaServiceClient
	admin filav1.FilaAdminClient
	conn  *grpc.ClientConn
	cfg   config.Config
}

type setupOpts struct {
	cfg     func(*config.Config)
	opts    server.Options
	dataDir string
}

// unhurriedScriptMS is the hook calls' time limit (lua.default_timeout_ms)
// in these tests unless one sets its own: most are about what a script
// does, and an ordinary call, microseconds on an idle machine, can outlast
// the 10 ms default on a busy one under -race and fall back to the
// queue's defaults. A test about the time limit sets it back with
// defaultScriptTime.
const unhurriedScriptMS = 60_000

// defaultScriptTime restores filad's own lua.default_timeout_ms, for a test
// about the time limit (only scripts that never finish reach it there).
func defaultScriptTime(c *config.Config) {
	c.Lua.DefaultTimeoutMS = config.Defaults().Lua.DefaultTimeoutMS
}

// setup starts filad on 127.0.0.1:0 with badger in a temp dir (so.dataDir
// when set) and hook calls limited to unhurriedScriptMS (so.cfg may change
// both), and stops it when the test ends.
func setup(t testing.TB, so setupOpts) *bundle {
	t.Helper()
	cfg := func(c *config.Config) {
		c.Lua.DefaultTimeoutMS = unhurriedScriptMS
		if so.cfg != nil {
			so.cfg(c)
		}
	}
	b := filadtest.Start(t, filadtest.Options{Config: cfg, Server: so.opts, DataDir: so.dataDir})
	return &bundle{srv: b.Server, svc: b.Service, admin: b.Admin, conn: b.Conn, cfg: b.Config}
}

func dial(t testing.TB, addr net.Addr, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr.String(), append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// clusterCtx bounds a whole cluster test: several phases (start-up,
// elections, a failover), each awaited within waitFor of its own, so the
// test as a whole gets a bound of several: one waitFor over every phase
// would fail on a busy machine although each phase kept its bound.
func clusterCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 6*waitFor)
	t.Cleanup(cancel)
	return ctx
}

func (b *bundle) createQueue(t testing.TB, name string, cfg *filav1.QueueConfig) {
	t.Helper()
	_, err := b.admin.CreateQueue(ctxT(t), &filav1.CreateQueueRequest{Name: name, Config: cfg})
	require.NoError(t, err)
}

func (b *bundle) enqueue(t *testing.T, queue string, headers map[string]string, payload []byte) string {
	t.Helper()
	resp, err := b.svc.Enqueue(ctxT(t), &filav1.EnqueueRequest{Queue: queue, Headers: headers, Payload: payload})
	require.NoError(t, err)
	return resp.GetMessageId()
}

func (b *bundle) stats(t *testing.T, queue string) *filav1.GetStatsResponse {
	t.Helper()
	st, err := b.admin.GetStats(ctxT(t), &filav1.GetStatsRequest{Queue: queue})
	require.NoError(t, err)
	return st
}

// setVisibilityTimeout makes queue's next leases last ms. A test whose
// first lease must expire and whose next must not (a late settle, a
// redelivery) gives the first a short timeout and the next a long one, so
// that the test's own calls cannot outlast the lease they need.
func (b *bundle) setVisibilityTimeout(t *testing.T, queue string, ms uint64) {
	t.Helper()
	_, err := b.admin.UpdateQueue(ctxT(t), &filav1.UpdateQueueRequest{Name: queue,
		Config:     &filav1.QueueConfig{VisibilityTimeoutMs: ms},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"visibility_timeout_ms"}}})
	require.NoError(t, err)
}

// requireEmpty fails unless queue has nothing ready and nothing leased.
func (b *bundle) requireEmpty(t *testing.T, queue string) {
	t.Helper()
	st := b.stats(t, queue)
	require.Zero(t, st.GetDepth(), "depth of %s", queue)
	require.Zero(t, st.GetInFlight(), "in flight in %s", queue)
}

// lease opens a consumer stream; cancel ends it. The stream has no
// deadline of its own (a test may take thousands of messages from it on a
// slow machine): recvN bounds each wait instead.
func (b *bundle) lease(t *testing.T, queue string) (filav1.FilaService_ConsumeClient, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	stream, err := b.svc.Consume(ctx, &filav1.ConsumeRequest{Queue: queue})
	require.NoError(t, err)
	return stream, cancel
}

// recvN receives n messages, waiting at most waitFor for each.
func recvN(t *testing.T, stream filav1.FilaService_ConsumeClient, n int) []*filav1.Message {
	t.Helper()
	type received struct {
		resp *filav1.ConsumeResponse
		err  error
	}
	out := make([]*filav1.Message, 0, n)
	for len(out) < n {
		got := make(chan received, 1) // the goroutine ends when the stream does, at the latest
		go func() {
			resp, err := stream.Recv()
			got <- received{resp, err}
		}()
		select {
		case r := <-got:
			require.NoError(t, r.err, "after %d of %d messages", len(out), n)
			out = append(out, r.resp.GetMessage())
		case <-time.After(waitFor):
			t.Fatalf("no message within %v, after %d of %d", waitFor, len(out), n)
		}
	}
	return out
}

func requireCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, want.String(), status.Code(err).String(), "error: %v", err)
}

// eventually polls cond until it holds, with a deadline: for state that
// changes asynchronously (published gauges, expiries), never a fixed sleep.
func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	require.Eventually(t, cond, waitFor, 5*time.Millisecond, what)
}

// bgCtx is for calls inside helpers that have no *testing.T; the server's
// own request timeout bounds them.
func bgCtx() context.Context { return context.Background() }

// logCapture is a slog handler that keeps every record, for tests that
// await a log line or check that something is never logged.
type logCapture struct {
	level   slog.Level // lowest level kept; the zero value is INFO
	mu      sync.Mutex
	records []slog.Record
	attrs   []slog.Attr
}

func (c *logCapture) Enabled(_ context.Context, l slog.Level) bool { return l >= c.level }

func (c *logCapture) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	r = r.Clone()
	r.AddAttrs(c.attrs...)
	c.records = append(c.records, r)
	return nil
}

func (c *logCapture) WithAttrs(as []slog.Attr) slog.Handler {
	// Shares the record list; attributes are copied per handler.
	return &logCaptureView{c, append(slices.Clone(c.attrs), as...)}
}

func (c *logCapture) WithGroup(string) slog.Handler { return c }

// count returns how many records at level have msg containing substr.
func (c *logCapture) count(level slog.Level, substr string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.records {
		if r.Level == level && strings.Contains(r.Message, substr) {
			n++
		}
	}
	return n
}

// find returns the first record at level whose message contains substr.
func (c *logCapture) find(level slog.Level, substr string) *slog.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.records {
		if r.Level == level && strings.Contains(r.Message, substr) {
			return &r
		}
	}
	return nil
}

func (c *logCapture) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.records)
}

// text renders every record with its attributes, for leak checks.
func (c *logCapture) text() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var sb strings.Builder
	for _, r := range c.records {
		sb.WriteString(r.Message)
		r.Attrs(func(a slog.Attr) bool {
			sb.WriteString(" " + a.String())
			return true
		})
		sb.WriteString("\n")
	}
	return sb.String()
}

type logCaptureView struct {
	c     *logCapture
	attrs []slog.Attr
}

func (v *logCaptureView) Enabled(ctx context.Context, l slog.Level) bool { return v.c.Enabled(ctx, l) }
func (v *logCaptureView) Handle(ctx context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(v.attrs...)
	return v.c.Handle(ctx, r)
}
func (v *logCaptureView) WithAttrs(as []slog.Attr) slog.Handler {
	return &logCaptureView{v.c, append(slices.Clone(v.attrs), as...)}
}
func (v *logCaptureView) WithGroup(string) slog.Handler { return v }

// eventuallyTrue polls cond until it holds, failing with its last word
// after waitFor.
func eventuallyTrue(t *testing.T, cond func() (bool, string)) {
	t.Helper()
	telemetrytest.Await(t, waitFor, cond)
}
