package gateway_test

import (
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fila-dev/filad/actors"
	"github.com/fila-dev/filad/gateway"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/scripting"
	"github.com/fila-dev/filad/storage"
)

// BenchmarkUnaryRoundTrip measures what the gateway adds to a unary call
// between a gRPC client and a queue actor, over loopback, on the memory
// store (no fsync): Enqueue writes, GetStats only reads the queue. It
// reports the process's CPU per call beside the wall time, which a busy
// machine disturbs less.
func BenchmarkUnaryRoundTrip(b *testing.B) {
	conn := startGateway(b, storage.NewMemory(), nil)
	svc, admin := filav1.NewFilaServiceClient(conn), filav1.NewFilaAdminClient(conn)
	_, err := admin.CreateQueue(b.Context(), &filav1.CreateQueueRequest{Name: "bench"})
	require.NoError(b, err)

	calls := []struct {
		name string
		call func() error
	}{
		{"Enqueue", func() error {
			_, err := svc.Enqueue(b.Context(), &filav1.EnqueueRequest{Queue: "bench", Payload: make([]byte, 1024)})
			return err
		}},
		{"GetStats", func() error {
			_, err := admin.GetStats(b.Context(), &filav1.GetStatsRequest{Queue: "bench"})
			return err
		}},
	}
	for _, c := range calls {
		b.Run(c.name, func(b *testing.B) {
			b.SetParallelism(4) // 4 × GOMAXPROCS callers at once
			before := processCPU(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := c.call(); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64((processCPU(b)-before).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

// processCPU is the user + system CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	require.NoError(b, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startGateway serves a gateway over loopback on an actor system of store
// (in a cluster's mode when place is not nil) and returns a client
// connection to it.
func startGateway(tb testing.TB, store storage.Store, place actors.Placement) *grpc.ClientConn {
	sys, err := actors.Start(actors.Options{Store: store, Placement: place, Quantum: 1, RequestTimeout: 10 * time.Second,
		DefaultQueue: actors.QueueConfig{VisibilityTimeout: time.Minute, FairnessKeyHeader: "k"},
		Lua:          scripting.Limits{Timeout: time.Second, BreakerThreshold: 3},
		ConfigStore:  actors.RuntimeConfigLimits{MaxKeys: 10, MaxBytes: 1 << 20, MaxAPIKeys: 10}})
	require.NoError(tb, err)
	tb.Cleanup(sys.Stop)
	gw, err := gateway.New(gateway.Options{System: sys, MaxMessageBytes: 1 << 20, MaxMailbox: 1 << 20,
		DefaultMaxInFlight: 10, MaxBatchItems: 1000, MaxBatchBytes: 4 << 20})
	require.NoError(tb, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	g := grpc.NewServer(gateway.ServerOptions()...)
	gw.Register(g)
	go func() { _ = g.Serve(lis) }()
	tb.Cleanup(func() { g.Stop(); gw.Close() })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = conn.Close() })
	return conn
}
