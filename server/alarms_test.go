package server_test

import (
	"bytes"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/grpc/codes"

	"github.com/fila-dev/filad/config"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/server"
	"github.com/fila-dev/filad/telemetry"
	"github.com/fila-dev/filad/telemetry/telemetrytest"
)

// TestDiskAlarmRefusesEnqueueAndLetsConsumersDrain: a data directory with
// less free space than limits.min_free_disk_bytes raises the disk alarm:
// Enqueue gets RESOURCE_EXHAUSTED naming the limit, while Lease and Ack go
// on, so consumers can drain.
func TestDiskAlarmRefusesEnqueueAndLetsConsumersDrain(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	before := setup(t, setupOpts{dataDir: dir})
	before.createQueue(t, "q", nil)
	id := before.enqueue(t, "q", nil, []byte("kept"))
	require.NoError(t, before.srv.Shutdown(t.Context()))

	logs := &logCapture{}
	h := telemetrytest.New(t)
	b := setup(t, setupOpts{dataDir: dir,
		cfg:  func(c *config.Config) { c.Limits.MinFreeDiskBytes = 1 << 60 }, // more than any disk has
		opts: server.Options{Logger: slog.New(logs), TracerProvider: h.TracerProvider, MeterProvider: h.MeterProvider},
	})
	_, err := b.svc.Enqueue(ctxT(t), &filav1.EnqueueRequest{Queue: "q", Payload: []byte("refused")})
	requireCode(t, err, codes.ResourceExhausted)
	require.ErrorContains(t, err, "disk alarm")
	require.ErrorContains(t, err, "limits.min_free_disk_bytes")
	require.Equal(t, 1, logs.count(slog.LevelWarn, "resource alarm raised"), "one WARN for the episode")
	h.AssertGauge(t, telemetry.AlarmActive.Name, []attribute.KeyValue{attribute.String(telemetry.AttrAlarm, "disk")}, 1)
	h.AssertGauge(t, telemetry.AlarmActive.Name, []attribute.KeyValue{attribute.String(telemetry.AttrAlarm, "memory")}, 0)

	stream, _ := b.lease(t, "q")
	m := recvN(t, stream, 1)[0]
	require.Equal(t, id, m.GetId())
	_, err = b.svc.Ack(ctxT(t), &filav1.AckRequest{Queue: "q", MessageId: id, LeaseId: m.GetLeaseId()})
	require.NoError(t, err, "acks go on under the alarm")
	b.requireEmpty(t, "q")
}

// TestMemoryAlarmBoundsAFlood floods a queue that nobody consumes with
// 64 KiB messages until the memory alarm refuses them, then checks that
// resident memory stayed under the limit plus the margin the README
// documents (what arrives within one check interval, plus the Go runtime's
// slack): 64 MiB.
//
// Not parallel: resident memory is the whole test process's, so no other
// test may run beside it.
func TestMemoryAlarmBoundsAFlood(t *testing.T) {
	const margin = 64 << 20
	limit := rss(t) + 128<<20
	b := setup(t, setupOpts{cfg: func(c *config.Config) {
		c.Limits.MaxMemoryBytes = limit
		c.Limits.CheckIntervalMS = 20
		c.Storage.SyncWrites = false
	}})
	b.createQueue(t, "flood", nil)
	payload := bytes.Repeat([]byte("x"), 64<<10)
	var peak int64
	refused := false
	for i := 0; i < 100_000 && !refused; i++ {
		_, err := b.svc.Enqueue(ctxT(t), &filav1.EnqueueRequest{Queue: "flood", Payload: payload})
		switch {
		case err == nil:
		case strings.Contains(err.Error(), "memory alarm"):
			requireCode(t, err, codes.ResourceExhausted)
			require.ErrorContains(t, err, "limits.max_memory_bytes")
			refused = true
		default:
			t.Fatalf("enqueue %d: %v", i, err)
		}
		if i%50 == 0 {
			peak = max(peak, rss(t))
		}
	}
	require.True(t, refused, "the alarm tripped")
	peak = max(peak, rss(t))
	t.Logf("limit %d MB, peak resident %d MB", limit>>20, peak>>20)
	require.Less(t, peak, limit+margin, "anonymous resident memory stayed under the limit plus the margin")
	_, err := b.svc.Enqueue(ctxT(t), &filav1.EnqueueRequest{Queue: "flood"})
	requireCode(t, err, codes.ResourceExhausted)
}

// rss is the test process's anonymous resident memory (resident less
// file pages), what the memory alarm judges.
func rss(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/statm")
	require.NoError(t, err)
	f := strings.Fields(string(b))
	resident, err := strconv.ParseInt(f[1], 10, 64)
	require.NoError(t, err)
	shared, err := strconv.ParseInt(f[2], 10, 64)
	require.NoError(t, err)
	return (resident - shared) * int64(os.Getpagesize())
}
