package clustertest

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/fila-dev/filad/client"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// TestHarnessLifecycle drives one node through every operation the nemesis
// uses and checks each did what it says: a paused node answers nothing
// until resumed, a killed one refuses, a restarted one serves the same
// data on the same address, Stop ends it, and the test's end kills what
// is left.
func TestHarnessLifecycle(t *testing.T) {
	var pid int
	t.Run("lifecycle", func(t *testing.T) {
		c := Start(t, Options{Nodes: 1})
		n := c.Nodes[0]
		dial := func() *client.Client {
			cl, err := client.Dial(n.Addr, client.Options{DialOptions: []grpc.DialOption{FastReconnect()}})
			require.NoError(t, err)
			t.Cleanup(func() { _ = cl.Close() })
			return cl
		}
		cl := dial()
		call := func(timeout time.Duration, f func(context.Context) error) error {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			return f(ctx)
		}
		require.NoError(t, call(OpTimeout, func(ctx context.Context) error { return cl.CreateQueue(ctx, "h", client.QueueConfig{}) }))
		enqueue := func(ctx context.Context) error { _, err := cl.Enqueue(ctx, "h", nil, []byte("x")); return err }
		require.NoError(t, call(OpTimeout, enqueue))

		require.NoError(t, n.Pause())
		require.True(t, n.Paused())
		// A stopped process cannot answer, however long the deadline: this
		// one only keeps the test short.
		err := call(300*time.Millisecond, enqueue)
		require.Equal(t, Unknown, OutcomeOf(err), "%v", err)
		require.NoError(t, n.Resume())
		require.NoError(t, call(OpTimeout, enqueue))

		before := n.Pid()
		n.Kill()
		require.ErrorIs(t, syscall.Kill(before, 0), syscall.ESRCH, "SIGKILL left the process")
		err = call(OpTimeout, enqueue)
		require.Equal(t, Unknown, OutcomeOf(err), "%v", err)

		addr := n.Addr
		require.NoError(t, n.Restart())
		require.Equal(t, addr, n.Addr)
		require.NotEqual(t, before, n.Pid())
		// A new connection: the old one may still be in its redial backoff,
		// and a call fails fast there.
		cl = dial()
		var st *filav1.GetStatsResponse
		require.NoError(t, call(OpTimeout, func(ctx context.Context) error { var err error; st, err = cl.Stats(ctx, "h"); return err }))
		// Two enqueues were answered; the one sent into the pause was not,
		// and (its request in the socket) may have been stored on resume.
		require.Contains(t, []uint64{2, 3}, st.GetDepth(), "two acknowledged enqueues, one unknown, and a restart")

		restarted := n.Pid()
		require.NoError(t, n.Pause())
		require.NoError(t, n.Stop(), "Stop resumes a paused node and waits for its exit")
		require.ErrorIs(t, syscall.Kill(restarted, 0), syscall.ESRCH)
		require.NoError(t, n.Restart())
		pid = n.Pid()
	})
	require.NotZero(t, pid)
	err := syscall.Kill(pid, 0)
	require.True(t, errors.Is(err, syscall.ESRCH), "the node outlived its test: %v", err)
}
