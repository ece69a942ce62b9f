package filadtest_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/internal/filadtest"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestStartServesOnLoopbackWithASmallReserve: the broker answers on its
// client, on 127.0.0.1, and its disk reserve is the harness's 1 MiB, not
// the 128 MiB default that parallel tests would multiply.
func TestStartServesOnLoopbackWithASmallReserve(t *testing.T) {
	t.Parallel()
	b := filadtest.Start(t, filadtest.Options{})
	_, err := b.Admin.CreateQueue(ctxT(t), &filav1.CreateQueueRequest{Name: "q"})
	require.NoError(t, err)
	require.Contains(t, b.Addr(), "127.0.0.1:")
	st, err := os.Stat(filepath.Join(b.DataDir(), server.ReserveFile))
	require.NoError(t, err)
	require.EqualValues(t, 1<<20, st.Size())
}

// TestRestartKeepsDataAndAddress: a restarted broker comes back on the
// same address with what was stored, and the old connection reaches it.
func TestRestartKeepsDataAndAddress(t *testing.T) {
	t.Parallel()
	b := filadtest.Start(t, filadtest.Options{})
	_, err := b.Admin.CreateQueue(ctxT(t), &filav1.CreateQueueRequest{Name: "q"})
	require.NoError(t, err)
	_, err = b.Service.Enqueue(ctxT(t), &filav1.EnqueueRequest{Queue: "q", Payload: []byte("kept")})
	require.NoError(t, err)
	addr, first := b.Addr(), b.Server

	b.Restart(t)
	require.NotSame(t, first, b.Server, "a new server")
	require.Equal(t, addr, b.Addr())
	st, err := b.Admin.GetStats(ctxT(t), &filav1.GetStatsRequest{Queue: "q"})
	require.NoError(t, err)
	require.EqualValues(t, 1, st.GetDepth(), "the message survived the restart")
}

// TestOptionsReachTheServer: Config changes what filad runs with, and
// DataDir puts a second broker on the first one's directory.
func TestOptionsReachTheServer(t *testing.T) {
	t.Parallel()
	first := filadtest.Start(t, filadtest.Options{})
	_, err := first.Admin.CreateQueue(ctxT(t), &filav1.CreateQueueRequest{Name: "q"})
	require.NoError(t, err)
	first.Stop(t)

	b := filadtest.Start(t, filadtest.Options{DataDir: first.DataDir(), Config: func(c *config.Config) { c.Server.MaxBatchItems = 2 }})
	require.Equal(t, 2, b.Config.Server.MaxBatchItems)
	_, err = b.Service.EnqueueBatch(ctxT(t), &filav1.EnqueueBatchRequest{Messages: []*filav1.EnqueueRequest{{Queue: "q"}, {Queue: "q"}, {Queue: "q"}}})
	require.ErrorContains(t, err, "server.max_batch_items", "the limit set through Config applies")
	_, err = b.Admin.GetStats(ctxT(t), &filav1.GetStatsRequest{Queue: "q"})
	require.NoError(t, err, "the queue made on the shared directory is there")
}
