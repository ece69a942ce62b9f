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

	"github.com/fila-dev/filad/auth"
	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/gateway"
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

// trio is a three-member cluster in one process.
type trio struct {
	addrs    []string // the client addresses
	internal []string // the internal addresses the members line names
	srvs     []*server.Server
	relays   []*relay // with trioOptions.relays: in front of each internal port
}

type trioOptions struct {
	// cfg changes node i's config (0-based), after the cluster's settings.
	cfg func(i int, c *config.Config)
	// opts are node i's server options (its Listener is the harness's).
	opts func(i int) server.Options
	// relays puts a pausable relay in front of every internal port.
	relays bool
}

// startTrio starts a three-member cluster in one process: client and
// internal listeners picked first, so that every node's members line
// names them all, and the nodes started together (none is ready before
// its groups have leaders, which takes two of them).
func startTrio(t *testing.T, o trioOptions) *trio {
	t.Helper()
	const n = 3
	tr := &trio{srvs: make([]*server.Server, n)}
	clients := make([]net.Listener, n)
	listen := make([]string, n)
	var members []string
	for i := range n {
		var err error
		clients[i], err = net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		listen[i] = l.Addr().String()
		require.NoError(t, l.Close()) // free for the node; a test-only race for the port
		named := listen[i]
		if o.relays {
			r := startRelay(t, listen[i])
			tr.relays = append(tr.relays, r)
			named = r.addr()
		}
		tr.internal = append(tr.internal, named)
		tr.addrs = append(tr.addrs, clients[i].Addr().String())
		members = append(members, fmt.Sprintf("%d=%s@%s", i+1, named, tr.addrs[i]))
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		cfg := filadtest.Config(t.TempDir())
		cfg.Cluster = config.Defaults().Cluster
		cfg.Cluster.Enabled, cfg.Cluster.NodeID = true, uint64(i+1)
		cfg.Cluster.InternalListenAddr, cfg.Cluster.Members = listen[i], strings.Join(members, ",")
		cfg.Cluster.Partitions = 4
		if o.cfg != nil {
			o.cfg(i, &cfg)
		}
		var opts server.Options
		if o.opts != nil {
			opts = o.opts(i)
		}
		opts.Listener = clients[i]
		wg.Go(func() {
			tr.srvs[i], errs[i] = filadtest.Serve(context.Background(), cfg, opts)
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, s := range tr.srvs {
			if s != nil {
				_ = s.Shutdown(context.Background())
			}
		}
	})
	for i, err := range errs {
		require.NoError(t, err, "node %d", i+1)
	}
	return tr
}

// untilServed calls call on each node in turn until one answers it
// without UNAVAILABLE (the others do not lead what it needs, or not yet),
// and returns that node's index. It calls the internal ports, as a
// forwarded call (with the bootstrap key's name, which a node with auth
// on wants), since a node never forwards those: on the client port every
// node would serve the call, by proxy. A refusal must name a leader the
// test knows, or none.
func untilServed(t *testing.T, tr *trio, skip int, call func(conn *grpc.ClientConn, md *metadata.MD) error) int {
	t.Helper()
	conns := make([]*grpc.ClientConn, len(tr.internal))
	for i, a := range tr.internal {
		conns[i] = dialAddr(t, a, grpc.WithUnaryInterceptor(asForwarded))
	}
	deadline := time.Now().Add(waitFor)
	for time.Now().Before(deadline) {
		for i, conn := range conns {
			if i == skip || tr.srvs[i] == nil {
				continue
			}
			var md metadata.MD
			err := call(conn, &md)
			if err == nil {
				return i
			}
			require.Equal(t, codes.Unavailable, status.Code(err), "node %d: %v", i+1, err)
			if hint := md.Get(gateway.LeaderHintMetadata); len(hint) > 0 {
				require.Contains(t, tr.addrs, hint[0], "the leader hint names a member's client address")
			}
		}
		time.Sleep(10 * time.Millisecond) // polls the nodes; the outcome is their answers
	}
	t.Fatal("no node served the call")
	return -1
}

// asForwarded marks a test's call to an internal port as forwarded (by
// no node), by the bootstrap key.
func asForwarded(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	ctx = metadata.AppendToOutgoingContext(ctx, gateway.ForwardedMetadata, "0", gateway.ForwardedKeyMetadata, auth.BootstrapName)
	return invoker(ctx, method, req, reply, cc, opts...)
}

// Three real nodes in one process: a queue created at the meta leader is
// served by its partition's leader; when that node stops, another takes
// the partition over, and every acknowledged message is still there.
func TestThreeNodeClusterFailsOver(t *testing.T) {
	tr := startTrio(t, trioOptions{})
	addrs, srvs := tr.addrs, tr.srvs
	ctx := ctxT(t)
	untilServed(t, tr, -1, func(conn *grpc.ClientConn, md *metadata.MD) error {
		_, err := filav1.NewFilaAdminClient(conn).CreateQueue(ctx, &filav1.CreateQueueRequest{Name: "orders"}, grpc.Trailer(md))
		if status.Code(err) == codes.AlreadyExists {
			return nil // a retry of a create whose answer was lost
		}
		return err
	})
	enqueue := func(skip int, payload string) int {
		return untilServed(t, tr, skip, func(conn *grpc.ClientConn, md *metadata.MD) error {
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

func dialAddr(t testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}
