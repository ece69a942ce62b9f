package client_test

import (
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fila-dev/filad/client"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// deadAddr is a loopback address nothing listens on (a test-only race
// for the port, as every test that frees one has).
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// A client given seeds connects to the first that answers: with the
// first seed down, it dials the second, and its calls are served there.
func TestDialTriesSeedsInOrder(t *testing.T) {
	t.Parallel()
	live := startBroker(t, nil)
	c, err := client.Dial("", client.Options{Seeds: []string{deadAddr(t), live}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	ctx := ctxT(t)
	require.NoError(t, c.CreateQueue(ctx, "seeded", client.QueueConfig{}))
	_, err = c.Enqueue(ctx, "seeded", nil, []byte("p"))
	require.NoError(t, err)

	// None answering is an error at Dial that names them.
	dead := deadAddr(t)
	_, err = client.Dial(dead, client.Options{Seeds: []string{deadAddr(t)}})
	require.ErrorContains(t, err, "no seed answered")
	require.ErrorContains(t, err, dead)
}

// Without seeds Dial stays lazy: a down address is not an error until a
// call is made.
func TestDialWithoutSeedsIsLazy(t *testing.T) {
	t.Parallel()
	c, err := client.Dial(deadAddr(t), client.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	_, err = c.Admin().ListQueues(ctxT(t), &filav1.ListQueuesRequest{})
	require.Error(t, err)
}
