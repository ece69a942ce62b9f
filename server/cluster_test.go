package server_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/stretchr/testify/require"

	"github.com/fila-dev/filad/auth"
	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/gateway"
	"github.com/fila-dev/filad/internal/filadtest"
	"github.com/fila-dev/filad/internal/testpki"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/server"
)

// oneNodeCluster turns the cluster on with this node its only member.
func oneNodeCluster(c *config.Config) {
	c.Cluster.Enabled, c.Cluster.NodeID = true, 1
	c.Cluster.InternalListenAddr, c.Cluster.InitialMembers = "127.0.0.1:0", []string{"1=127.0.0.1:0"}
}

// With the cluster on, every write goes through the raft log: a message
// enqueued, leased and acked behaves as on a single node, and what was
// not acked is there after a restart, replayed from the log.
func TestOneNodeClusterServesAndRecovers(t *testing.T) {
	t.Parallel()
	b := filadtest.Start(t, filadtest.Options{Config: oneNodeCluster})
	ctx := clusterCtx(t)
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
		{"another node's replica", oneNodeCluster, func(c *config.Config) {
			oneNodeCluster(c)
			c.Cluster.NodeID, c.Cluster.InitialMembers = 2, []string{"2=127.0.0.1:0"}
		}, `belongs to node "1"`},
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
	// spread puts node i's ports on 127.0.0.(i+1) (trioHost), so that
	// each member has a host of its own.
	spread bool
}

// trioHost is node i's host: 127.0.0.1 for all, or one each when spread.
func trioHost(i int, spread bool) string {
	if spread {
		return fmt.Sprintf("127.0.0.%d", i+1)
	}
	return "127.0.0.1"
}

// startTrio starts a three-member cluster in one process: client and
// internal listeners picked first, so that every node's members line
// names them all, and the nodes started together (none is ready before
// its groups have leaders, which takes two of them).
func startTrio(t *testing.T, o trioOptions) *trio {
	t.Helper()
	const n = 3
	tr := &trio{srvs: make([]*server.Server, n)}
	clients, internals := make([]net.Listener, n), make([]net.Listener, n)
	listen := make([]string, n)
	var members []string
	for i := range n {
		var err error
		host := trioHost(i, o.spread)
		clients[i], err = net.Listen("tcp", host+":0")
		require.NoError(t, err)
		// Held, and handed to the node: a port freed for it could be
		// taken by a parallel test before it listens.
		internals[i], err = net.Listen("tcp", host+":0")
		require.NoError(t, err)
		listen[i] = internals[i].Addr().String()
		named := listen[i]
		if o.relays {
			r := startRelay(t, listen[i])
			tr.relays = append(tr.relays, r)
			named = r.addr()
		}
		tr.internal = append(tr.internal, named)
		tr.addrs = append(tr.addrs, clients[i].Addr().String())
		members = append(members, fmt.Sprintf("%d=%s", i+1, named))
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		cfg := filadtest.Config(t.TempDir())
		cfg.Cluster = config.Defaults().Cluster
		cfg.Cluster.Enabled, cfg.Cluster.NodeID = true, uint64(i+1)
		cfg.Cluster.InternalListenAddr, cfg.Cluster.InitialMembers = listen[i], members
		cfg.Cluster.Partitions = 4
		if o.cfg != nil {
			o.cfg(i, &cfg)
		}
		var opts server.Options
		if o.opts != nil {
			opts = o.opts(i)
		}
		opts.Listener, opts.InternalListener = clients[i], internals[i]
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

// createQueue creates q through the meta leader and returns its index.
func createQueue(t *testing.T, tr *trio, q string) int {
	t.Helper()
	return untilServed(t, tr, -1, func(conn *grpc.ClientConn, md *metadata.MD) error {
		_, err := filav1.NewFilaAdminClient(conn).CreateQueue(ctxT(t), &filav1.CreateQueueRequest{Name: q}, grpc.Trailer(md))
		if status.Code(err) == codes.AlreadyExists {
			return nil // a retry of a create whose answer was lost
		}
		return err
	})
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
	ctx := clusterCtx(t)
	createQueue(t, tr, "orders")
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

// With [server.tls] on, the internal port is mutual TLS: three nodes with
// certificates of one CA form a cluster and serve, and the internal port
// refuses a plaintext caller and one whose certificate another CA signed.
func TestClusterInternalPortIsMutualTLS(t *testing.T) {
	dir := t.TempDir()
	root, stranger := testpki.NewCA(t, "filad members CA"), testpki.NewCA(t, "another CA")
	caFile := writeFile(t, dir, "ca.pem", root.PEM)
	tr := startTrio(t, trioOptions{cfg: func(i int, c *config.Config) {
		cert, key := root.IssueNode(t, fmt.Sprint("node-", i+1), int64(100+i))
		c.Server.TLS = config.TLS{CertFile: writeFile(t, dir, fmt.Sprint(i, ".pem"), cert), KeyFile: writeFile(t, dir, fmt.Sprint(i, ".key"), key), MinVersion: "1.2"}
		c.Cluster.TLSCAFile = caFile
	}})
	addrs, internal := tr.addrs, tr.internal
	ctx := clusterCtx(t)
	conns := make([]*grpc.ClientConn, len(addrs))
	for i, a := range addrs {
		conn, err := grpc.NewClient(a, grpc.WithTransportCredentials(credentials.NewTLS(root.ClientConfig(t, nil, nil))))
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		conns[i] = conn
	}
	// Through each node's client port: what another node leads is
	// forwarded to it over the internal port, so this crosses it.
	for i, conn := range conns {
		require.Eventually(t, func() bool {
			_, err := filav1.NewFilaAdminClient(conn).CreateQueue(ctx, &filav1.CreateQueueRequest{Name: fmt.Sprint("secure", i)})
			return err == nil || status.Code(err) == codes.AlreadyExists
		}, waitFor, 10*time.Millisecond, "CreateQueue through node %d", i+1)
		require.Eventually(t, func() bool {
			_, err := filav1.NewFilaServiceClient(conn).Enqueue(ctx, &filav1.EnqueueRequest{Queue: fmt.Sprint("secure", i), Payload: []byte("x")})
			return err == nil
		}, waitFor, 10*time.Millisecond, "Enqueue through node %d", i+1)
	}
	require.Positive(t, tr.srvs[0].Forwarded().Load()+tr.srvs[1].Forwarded().Load()+tr.srvs[2].Forwarded().Load(), "some call crossed the internal port")

	strangeCert, strangeKey := stranger.IssueNode(t, "intruder", 7)
	memberCert, memberKey := root.IssueNode(t, "node-4", 8)
	for _, tc := range []struct {
		name   string
		cfg    *tls.Config // nil: plaintext
		served bool
	}{
		{"a member's certificate", root.ClientConfig(t, memberCert, memberKey), true}, // the control: the probe can succeed
		{"plaintext", nil, false},
		{"another CA's certificate", root.ClientConfig(t, strangeCert, strangeKey), false},
		{"no certificate", root.ClientConfig(t, nil, nil), false},
	} {
		c, err := net.Dial("tcp", internal[0])
		require.NoError(t, err)
		if tc.cfg != nil {
			tc.cfg.NextProtos, tc.cfg.ServerName = []string{"h2"}, "127.0.0.1"
			c = tls.Client(c, tc.cfg)
		}
		err = speaksHTTP2(c)
		require.Equal(t, tc.served, err == nil, "%s at the internal port: %v", tc.name, err)
	}
}

// speaksHTTP2 sends an HTTP/2 client preface on c and reports whether a
// SETTINGS frame comes back (nil): the internal port served the caller.
// A refusal is an error: a TLS alert, a closed connection or garbage.
func speaksHTTP2(c net.Conn) error {
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(waitFor)); err != nil {
		return err
	}
	if _, err := c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")); err != nil {
		return err
	}
	head := make([]byte, 9)
	if _, err := io.ReadFull(c, head); err != nil {
		return err
	}
	if head[3] != 0x4 {
		return fmt.Errorf("frame type %d, not SETTINGS", head[3])
	}
	return nil
}

// Leases replicate as data: messages leased from a partition leader that
// then stops are acked through the new leader with their lease tokens,
// and after that nothing of them is left to deliver again.
func TestLeasesAckedThroughTheNewLeaderAreNotRedelivered(t *testing.T) {
	tr := startTrio(t, trioOptions{})
	addrs, srvs := tr.addrs, tr.srvs
	ctx := clusterCtx(t)
	untilServed(t, tr, -1, func(conn *grpc.ClientConn, md *metadata.MD) error {
		// Leases long enough that none expires before the test acks it.
		_, err := filav1.NewFilaAdminClient(conn).CreateQueue(ctx, &filav1.CreateQueueRequest{Name: "jobs",
			Config: &filav1.QueueConfig{VisibilityTimeoutMs: 600_000}}, grpc.Trailer(md))
		if status.Code(err) == codes.AlreadyExists {
			return nil
		}
		return err
	})
	notYet := func(err error) error {
		if status.Code(err) == codes.NotFound {
			return status.Error(codes.Unavailable, "not applied here yet") // the create is on its way through the log
		}
		return err
	}
	const n = 5
	leader := -1
	for i := range n {
		leader = untilServed(t, tr, -1, func(conn *grpc.ClientConn, md *metadata.MD) error {
			_, err := filav1.NewFilaServiceClient(conn).Enqueue(ctx, &filav1.EnqueueRequest{Queue: "jobs", Payload: fmt.Appendf(nil, "j%d", i)}, grpc.Trailer(md))
			return notYet(err)
		})
	}
	streamCtx, stopStream := context.WithCancel(ctx)
	stream, err := filav1.NewFilaServiceClient(dialAddr(t, addrs[leader])).Consume(streamCtx, &filav1.ConsumeRequest{Queue: "jobs"})
	require.NoError(t, err)
	var leased []*filav1.Message
	for len(leased) < n {
		resp, err := stream.Recv()
		require.NoError(t, err, "the leader's stream, after %d messages", len(leased))
		leased = append(leased, resp.GetMessage())
	}
	stopStream()
	require.NoError(t, srvs[leader].Shutdown(context.Background()))
	srvs[leader] = nil

	for _, m := range leased {
		require.NotEmpty(t, m.GetLeaseId())
		untilServed(t, tr, leader, func(conn *grpc.ClientConn, md *metadata.MD) error {
			_, err := filav1.NewFilaServiceClient(conn).Ack(ctx, &filav1.AckRequest{Queue: "jobs", MessageId: m.GetId(), LeaseId: m.GetLeaseId()}, grpc.Trailer(md))
			return err // a lease the new leader did not know would be FAILED_PRECONDITION, and fail here
		})
	}
	untilServed(t, tr, leader, func(conn *grpc.ClientConn, md *metadata.MD) error {
		st, err := filav1.NewFilaAdminClient(conn).GetStats(ctx, &filav1.GetStatsRequest{Queue: "jobs"}, grpc.Trailer(md))
		if err != nil {
			return err
		}
		require.Zero(t, st.GetDepth()+st.GetInFlight()+st.GetDelayed(), "acked messages left in the queue: %+v", st)
		return nil
	})
}

// A queue created through one node is found at once through every other:
// a node that has not applied the definition yet catches up with the
// meta group (a read index) before it answers NOT_FOUND.
func TestAQueueCreatedThroughOneNodeIsFoundAtOnceOnTheOthers(t *testing.T) {
	tr := startTrio(t, trioOptions{})
	ctx := clusterCtx(t)
	conns := make([]*grpc.ClientConn, len(tr.addrs))
	for i, a := range tr.addrs {
		conns[i] = dialAddr(t, a)
	}
	// The first create waits out the cluster's start (leaders being
	// elected); the test is in the ones after it.
	require.Eventually(t, func() bool {
		_, err := filav1.NewFilaAdminClient(conns[0]).CreateQueue(ctx, &filav1.CreateQueueRequest{Name: "warmup"})
		return err == nil
	}, waitFor, 10*time.Millisecond)
	for i := range 30 {
		name := fmt.Sprint("q", i)
		// An election of the meta group meanwhile refuses a create
		// UNAVAILABLE; a retry of one that was done finds it there.
		eventuallyTrue(t, func() (bool, string) {
			_, err := filav1.NewFilaAdminClient(conns[i%3]).CreateQueue(ctx, &filav1.CreateQueueRequest{Name: name})
			if code := status.Code(err); code != codes.Unavailable {
				require.Contains(t, []codes.Code{codes.OK, codes.AlreadyExists}, code, "create %s: %v", name, err)
				return true, ""
			}
			return false, fmt.Sprintf("create %s: %v", name, err)
		})
		for _, other := range []int{(i + 1) % 3, (i + 2) % 3} {
			_, err := filav1.NewFilaServiceClient(conns[other]).Enqueue(ctx, &filav1.EnqueueRequest{Queue: name, Payload: []byte("x")})
			require.NotEqual(t, codes.NotFound, status.Code(err), "queue %s created through node %d, enqueued through node %d: %v", name, i%3+1, other+1, err)
		}
	}
}
