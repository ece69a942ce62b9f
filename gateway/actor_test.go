package gateway

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/actors"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/scripting"
	"github.com/fila-dev/filad/storage"
)

func TestTranslateRefusesOverloadedQueue(t *testing.T) {
	t.Parallel()
	sys, err := actors.Start(actors.Options{Store: storage.NewMemory(), Quantum: 1, RequestTimeout: 10 * time.Second,
		DefaultQueue: actors.QueueConfig{VisibilityTimeout: time.Minute, FairnessKeyHeader: "k"},
		Lua:          scripting.Limits{Timeout: time.Second, BreakerThreshold: 3},
		ConfigStore:  actors.RuntimeConfigLimits{MaxKeys: 10, MaxBytes: 1 << 20, MaxAPIKeys: 10}})
	require.NoError(t, err)
	t.Cleanup(sys.Stop)
	_, err = sys.Ask(context.Background(), sys.Broker(), nil, &actors.CreateQueue{Config: actors.QueueConfig{Name: "busy", VisibilityTimeout: time.Second}})
	require.NoError(t, err)
	ref := sys.Directory().Lookup("busy")
	require.NotNil(t, ref)

	// A limit of 0 refuses whatever the depth; one far above what an idle
	// queue holds (at most its own start-up reading) admits.
	g := &translator{dir: sys.Directory(), maxPayload: 1024, maxMailbox: 0}
	_, _, err = g.translate(&call{req: &filav1.EnqueueRequest{Queue: "busy"}})
	require.ErrorIs(t, err, actors.ErrOverloaded)
	require.ErrorContains(t, err, "requests waiting (limit 0)")
	require.Contains(t, toStatus(err).Error(), "ResourceExhausted")

	g.maxMailbox = 100
	pid, msg, err := g.translate(&call{req: &filav1.EnqueueRequest{Queue: "busy"}})
	require.NoError(t, err)
	require.Equal(t, ref.PID, pid)
	require.IsType(t, &actors.Enqueue{}, msg)
}

// TestTargetTurnsPanicIntoError: a bug in translating one request (here a
// translator without a directory) fails that request with an error naming
// the request type, which toStatus makes INTERNAL, and leaves the caller's
// goroutine running.
func TestTargetTurnsPanicIntoError(t *testing.T) {
	t.Parallel()
	g := &translator{log: slog.New(slog.DiscardHandler)}
	pid, msg, err := g.target(&call{req: &filav1.EnqueueRequest{Queue: "q"}})
	require.Nil(t, pid)
	require.Nil(t, msg)
	require.EqualError(t, err, "gateway: internal error translating *filav1.EnqueueRequest")
	require.Equal(t, codes.Internal, status.Code(toStatus(err)))
}
