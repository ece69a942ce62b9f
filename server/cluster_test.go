package server_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/internal/filadtest"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/server"
)

// oneNodeCluster turns the cluster on with this node its only member.
func oneNodeCluster(c *config.Config) {
	c.Cluster.Enabled, c.Cluster.NodeID = true, 1
	c.Cluster.InternalListenAddr, c.Cluster.Members = "127.0.0.1:0", "1=127.0.0.1:0"
}

// With the cluster on, every write goes through the raft log: a message
// enqueued, leased and acked behaves as on a single node, and what was
// not acked is there after a restart, replayed from the log.
func TestOneNodeClusterServesAndRecovers(t *testing.T) {
	t.Parallel()
	b := filadtest.Start(t, filadtest.Options{Config: oneNodeCluster})
	ctx := ctxT(t)
	_, err := b.Admin.CreateQueue(ctx, &filav1.CreateQueueRequest{Name: "orders"})
	require.NoError(t, err)
	for range 5 {
		r, err := b.Service.Enqueue(ctx, &filav1.EnqueueRequest{Queue: "orders", Payload: []byte("p")})
		require.NoError(t, err)
		require.NotEmpty(t, r.GetMessageId())
	}
	bb := &bundle{svc: b.Service, admin: b.Admin}
	stream, cancel := bb.lease(t, "orders")
	msgs := recvN(t, stream, 2)
	for _, m := range msgs {
		_, err := b.Service.Ack(ctx, &filav1.AckRequest{Queue: "orders", MessageId: m.GetId()})
		require.NoError(t, err)
	}
	cancel()

	b.Restart(t)
	st, err := b.Admin.GetStats(ctx, &filav1.GetStatsRequest{Queue: "orders"})
	require.NoError(t, err)
	require.EqualValues(t, 3, st.GetDepth()+st.GetInFlight(), "5 enqueued, 2 acked")
}

// A data directory is a single node's store or a cluster node's replica,
// and each refuses to open as the other.
func TestClusterAndSingleNodeDirectoriesDoNotMix(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		first, second func(*config.Config)
		refusal       string
	}{
		{"a single node's store as a cluster node", nil, oneNodeCluster, "holds a single node's store"},
		{"a cluster node's replica as a single node", oneNodeCluster, nil, "start it with [cluster] enabled"},
		{"another node's replica", oneNodeCluster, func(c *config.Config) { oneNodeCluster(c); c.Cluster.NodeID, c.Cluster.Members = 2, "2=127.0.0.1:0" }, `belongs to node "1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := filadtest.Start(t, filadtest.Options{Config: tc.first})
			dir := b.DataDir()
			b.Stop(t)
			cfg := filadtest.Config(dir)
			if tc.second != nil {
				tc.second(&cfg)
			}
			srv, err := server.Start(context.Background(), cfg, server.Options{})
			if err == nil {
				_ = srv.Shutdown(context.Background())
			}
			require.ErrorContains(t, err, tc.refusal)
		})
	}
}
