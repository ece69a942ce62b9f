package server_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

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

// threeNodes starts a three-member cluster in one process: client and
// internal listeners picked first, so that every node's members line
// names them all, and the nodes started together (none is ready before
// its groups have leaders, which takes two of them).
func threeNodes(t *testing.T) (addrs []string, srvs []*server.Server) {
	t.Helper()
	return threeNodesWith(t, nil)
}

// threeNodesWith is threeNodes with each node's config and options
// amended by with (i: the node's index; its id is i+1), when not nil.
func threeNodesWith(t *testing.T, with func(i int, cfg *config.Config, opts *server.Options)) (addrs []string, srvs []*server.Server) {
	t.Helper()
	const n = 3
	clients := make([]net.Listener, n)
	internal := make([]string, n)
	var members []string
	for i := range n {
		var err error
		clients[i], err = net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		internal[i] = l.Addr().String()
		require.NoError(t, l.Close()) // free for the node; a test-only race for the port
		addrs = append(addrs, clients[i].Addr().String())
		members = append(members, fmt.Sprintf("%d=%s@%s", i+1, internal[i], addrs[i]))
	}
	srvs = make([]*server.Server, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		cfg := filadtest.Config(t.TempDir())
		cfg.Cluster = config.Defaults().Cluster
		cfg.Cluster.Enabled, cfg.Cluster.NodeID = true, uint64(i+1)
		cfg.Cluster.InternalListenAddr, cfg.Cluster.Members = internal[i], strings.Join(members, ",")
		cfg.Cluster.Partitions = 4
		opts := server.Options{Listener: clients[i]}
		if with != nil {
			with(i, &cfg, &opts)
		}
		wg.Go(func() {
			srvs[i], errs[i] = filadtest.Serve(context.Background(), cfg, opts)
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, s := range srvs {
			if s != nil {
				_ = s.Shutdown(context.Background())
			}
		}
	})
	for i, err := range errs {
		require.NoError(t, err, "node %d", i+1)
	}
	return addrs, srvs
}

// untilServed calls call on each node in turn until one answers it
// without UNAVAILABLE (the others do not lead what it needs, or not yet),
// and returns that node's index. A refusal must name a leader the test
// knows, or none.
func untilServed(t *testing.T, addrs []string, skip int, call func(conn *grpc.ClientConn, md *metadata.MD) error) int {
	t.Helper()
	conns := make([]*grpc.ClientConn, len(addrs))
	for i, a := range addrs {
		conns[i] = dialAddr(t, a)
	}
	deadline := time.Now().Add(waitFor)
	for time.Now().Before(deadline) {
		for i, conn := range conns {
			if i == skip {
				continue
			}
			var md metadata.MD
			err := call(conn, &md)
			if err == nil {
				return i
			}
			require.Equal(t, codes.Unavailable, status.Code(err), "node %d: %v", i+1, err)
			if hint := md.Get("x-fila-leader-addr"); len(hint) > 0 {
				require.Contains(t, addrs, hint[0], "the leader hint names a member's client address")
			}
		}
		time.Sleep(10 * time.Millisecond) // polls the nodes; the outcome is their answers
	}
	t.Fatal("no node served the call")
	return -1
}

// Three real nodes in one process: a queue created at the meta leader is
// served by its partition's leader; when that node stops, another takes
// the partition over, and every acknowledged message is still there.
func TestThreeNodeClusterFailsOver(t *testing.T) {
	addrs, srvs := threeNodes(t)
	ctx := ctxT(t)
	untilServed(t, addrs, -1, func(conn *grpc.ClientConn, md *metadata.MD) error {
		_, err := filav1.NewFilaAdminClient(conn).CreateQueue(ctx, &filav1.CreateQueueRequest{Name: "orders"}, grpc.Trailer(md))
		if status.Code(err) == codes.AlreadyExists {
			return nil // a retry of a create whose answer was lost
		}
		return err
	})
	enqueue := func(skip int, payload string) int {
		return untilServed(t, addrs, skip, func(conn *grpc.ClientConn, md *metadata.MD) error {
			_, err := filav1.NewFilaServiceClient(conn).Enqueue(ctx, &filav1.EnqueueRequest{Queue: "orders", Payload: []byte(payload)}, grpc.Trailer(md))
			if status.Code(err) == codes.NotFound {
				return status.Error(codes.Unavailable, "not applied here yet") // the create is on its way through the log
			}
			return err
		})
	}
	leader := enqueue(-1, "m0")
	for i := 1; i < 10; i++ {
		// A busy machine can elect another leader meanwhile: the one shut
		// down is the last that served.
		leader = enqueue(-1, fmt.Sprint("m", i))
	}
	require.NoError(t, srvs[leader].Shutdown(context.Background()))
	srvs[leader] = nil
	next := enqueue(leader, "after")
	require.NotEqual(t, leader, next)

	stream, err := filav1.NewFilaServiceClient(dialAddr(t, addrs[next])).Consume(ctx, &filav1.ConsumeRequest{Queue: "orders"})
	require.NoError(t, err)
	got := map[string]bool{}
	for len(got) < 11 {
		resp, err := stream.Recv()
		require.NoError(t, err, "after %d messages", len(got))
		got[string(resp.GetMessage().GetPayload())] = true
	}
	for i := range 10 {
		require.True(t, got[fmt.Sprint("m", i)], "m%d acknowledged before the failover", i)
	}
	require.True(t, got["after"])
}

func dialAddr(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}
