package clustertest

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/fila-dev/filad/client"
)

// TestRealRunCatchesALostWrite is the checker failing a real filad end to
// end: the node's data directory is put back to a copy taken before some
// acks and enqueues were answered, as a disk that lied about fsync would.
// The acked messages come back (resurrected) and the later enqueues are
// gone (lost), and the checker must say so, naming them.
func TestRealRunCatchesALostWrite(t *testing.T) {
	c := Start(t, Options{Nodes: 1})
	n := c.Nodes[0]
	dial := func() *client.Client {
		cl, err := client.Dial(n.Addr, client.Options{DialOptions: []grpc.DialOption{FastReconnect()}})
		require.NoError(t, err)
		t.Cleanup(func() { _ = cl.Close() })
		return cl
	}
	cl := dial()
	const queue = "rollback"
	ctx, cancel := context.WithTimeout(context.Background(), OpTimeout)
	defer cancel()
	require.NoError(t, cl.CreateQueue(ctx, queue, client.QueueConfig{VisibilityTimeoutMS: 1000}))
	h := NewHistory()
	const before, after = 10, 5
	Produce(ctx, cl, h, queue, 0, "before", before, nil)

	// The copy: the state with the first enqueues and nothing else.
	n.Kill()
	snapshot := filepath.Join(t.TempDir(), "snapshot")
	require.NoError(t, os.CopyFS(snapshot, os.DirFS(n.DataDir())))
	require.NoError(t, n.Restart())
	cl = dial()

	// Every message acked (the broker holds none), then more enqueued that
	// nobody consumes.
	consumeCtx, stop := context.WithCancel(context.Background())
	var consumers sync.WaitGroup
	consumers.Go(func() { Consume(consumeCtx, cl, h, queue, 10, rand.New(rand.NewPCG(1, 2)), 1.0) })
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), OpTimeout)
		defer cancel()
		st, err := cl.Stats(ctx, queue)
		return err == nil && st.GetDepth()+st.GetInFlight()+st.GetDelayed() == 0
	}, DrainTimeout, 10*time.Millisecond)
	stop()
	consumers.Wait()
	Produce(context.Background(), cl, h, queue, 0, "after", after, nil)

	// The lost writes: back to the copy.
	n.Kill()
	require.NoError(t, os.RemoveAll(n.DataDir()))
	require.NoError(t, os.CopyFS(n.DataDir(), os.DirFS(snapshot)))
	require.NoError(t, n.Restart())
	cl = dial()

	require.NoError(t, Drain(context.Background(), cl, h, queue, 100))
	// What the checker must name: every message acked ok (the copy has it
	// ready again), every later enqueue answered ok (the copy lacks it).
	var acked, stored []string
	for _, op := range h.Ops() {
		switch {
		case op.Kind == Ack && op.Outcome == OK:
			acked = append(acked, op.ID)
		case op.Kind == Enqueue && op.Outcome == OK && strings.HasPrefix(op.ID, "after"):
			stored = append(stored, op.ID)
		}
	}
	require.NotEmpty(t, acked)
	require.NotEmpty(t, stored)
	r := Check(h.Ops())
	t.Logf("checker: %s", r)
	require.False(t, r.OK())
	require.ElementsMatch(t, acked, r.Resurrected, "%s", r)
	require.ElementsMatch(t, stored, r.Lost, "%s", r)
	require.ElementsMatch(t, append(acked, stored...), r.NotLinearizable, "%s", r)
	require.Empty(t, r.Phantoms)
}
