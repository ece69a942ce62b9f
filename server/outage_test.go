package server_test

import (
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/server"
	"github.com/fila-dev/filad/telemetry"
	"github.com/fila-dev/filad/telemetry/telemetrytest"
)

// TestCollectorOutage stops the OTLP receiver while filad works, then starts
// it again on the same address: filad serves throughout, warns once, keeps
// its memory bounded, and its exports resume with cumulative counters that
// still count everything. Not parallel, so the heap figures are its own.
func TestCollectorOutage(t *testing.T) {
	recv, err := telemetrytest.StartReceiver("127.0.0.1:0")
	require.NoError(t, err)
	addr := recv.Addr()
	logs := &logCapture{}
	b := setup(t, setupOpts{
		opts: server.Options{Logger: slog.New(logs), ExportTimeout: 300 * time.Millisecond},
		cfg:  exportTo(addr, 100), // every span sampled: the most there is to buffer
	})
	b.createQueue(t, "out", nil)
	counted := func(r *telemetrytest.Receiver, want int64) func() bool {
		return func() bool {
			v, ok := r.LatestInt(telemetry.MetricEnqueued, "out")
			return ok && v == want
		}
	}

	work(t, b, 500)
	eventually(t, counted(recv, 500), "exported before the outage")
	before := heapAfterGC()

	recv.Stop()
	work(t, b, 3000) // the broker serves on
	eventually(t, func() bool { return logs.count(slog.LevelWarn, "telemetry export failing") == 1 }, "one warning")
	during := heapAfterGC()

	recv, err = telemetrytest.StartReceiver(addr)
	require.NoError(t, err)
	defer recv.Stop()
	eventually(t, counted(recv, 3500), "exports resume; the counter is cumulative and counted the outage")
	eventually(t, func() bool { return logs.count(slog.LevelInfo, "telemetry export resumed") == 1 }, "resumption logged")
	after := heapAfterGC()

	require.Equal(t, 1, logs.count(slog.LevelWarn, "telemetry export failing"), "one WARN for the whole outage")
	t.Logf("collector outage: heap %.1f MB before, %.1f MB during (3000 messages, every span sampled), %.1f MB after",
		mb(before), mb(during), mb(after))
	require.Less(t, mb(during), mb(before)+64, "memory stays bounded while the collector is away")
}

// work enqueues n messages and consumes and acks them all.
func work(t *testing.T, b *bundle, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for p := range 8 {
		wg.Go(func() {
			for i := p; i < n; i += 8 {
				_, err := b.svc.Enqueue(bgCtx(), &filav1.EnqueueRequest{Queue: "out", Payload: make([]byte, 512)})
				assertNoErr(t, err)
			}
		})
	}
	stream, cancel := b.lease(t, "out")
	defer cancel()
	for range n {
		m := recvN(t, stream, 1)[0]
		_, err := b.svc.Ack(ctxT(t), &filav1.AckRequest{Queue: "out", MessageId: m.GetId()})
		require.NoError(t, err)
	}
	wg.Wait()
}
