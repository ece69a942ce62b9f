package clustertest

import (
	"context"
	"errors"
	"fmt"
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

// TestHarnessStartsNNodes: each node its own address, internal address
// and data directory, and Env's settings reach only the node they are for.
func TestHarnessStartsNNodes(t *testing.T) {
	vt := func(i int) uint64 { return uint64(1000 * (i + 1)) }
	c := Start(t, Options{Nodes: 2, Env: func(i int, nodes []*Node) []string {
		require.Len(t, nodes, 2, "Env sees every node")
		return []string{fmt.Sprintf("FILA_QUEUES__DEFAULT_VISIBILITY_TIMEOUT_MS=%d", vt(i))}
	}})
	addrs := map[string]bool{}
	for i, n := range c.Nodes {
		addrs[n.Addr], addrs[n.InternalAddr] = true, true
		require.NotEqual(t, c.Nodes[1-i].DataDir(), n.DataDir())
		cl, err := client.Dial(n.Addr, client.Options{})
		require.NoError(t, err)
		t.Cleanup(func() { _ = cl.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), OpTimeout)
		defer cancel()
		require.NoError(t, cl.CreateQueue(ctx, "q", client.QueueConfig{}))
		st, err := cl.Stats(ctx, "q")
		require.NoError(t, err)
		require.Equal(t, vt(i), st.GetConfig().GetVisibilityTimeoutMs(), "node %d got its own Env", i+1)
	}
	require.Len(t, addrs, 4, "every address distinct")
}
