package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/fila-dev/filad/internal/ports"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/gateway"
	"github.com/fila-dev/filad/protocol"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/server"
	"github.com/fila-dev/filad/telemetry/telemetrytest"
)

// proxyPartitions spreads the queues over enough partitions that they
// are led by more than one node but on the unluckiest elections.
const proxyPartitions = 8

// placedQueues creates n queues through the meta leader and returns each
// one's leader (a node index), as the internal ports answer it.
func placedQueues(t *testing.T, tr *trio, n int) map[string]int {
	t.Helper()
	leaders := map[string]int{}
	for i := range n {
		q := fmt.Sprint("q", i)
		createQueue(t, tr, q)
		leaders[q] = leaderOf(t, tr, q)
	}
	return leaders
}

// leaderOf is the index of the node that serves queue now.
func leaderOf(t *testing.T, tr *trio, queue string) int {
	t.Helper()
	return untilServed(t, tr, -1, func(conn *grpc.ClientConn, md *metadata.MD) error {
		_, err := filav1.NewFilaAdminClient(conn).GetStats(ctxT(t), &filav1.GetStatsRequest{Queue: queue}, grpc.Trailer(md))
		if status.Code(err) == codes.NotFound {
			return status.Error(codes.Unavailable, "not applied here yet")
		}
		return err
	})
}

// spread picks a follower f and two queues led by two other nodes than
// each other, a led elsewhere than f (b is f's own when the leaders are
// only two). It skips the test when one node leads every queue.
func spread(t *testing.T, leaders map[string]int) (f int, a, b string) {
	t.Helper()
	for f := range 3 {
		for qa, la := range leaders {
			for qb, lb := range leaders {
				if la != f && lb != f && la != lb {
					return f, qa, qb
				}
			}
		}
	}
	for qa, la := range leaders {
		for qb, lb := range leaders {
			if la != lb {
				return lb, qa, qb
			}
		}
	}
	t.Skipf("one node leads all %d partitions (elections on a busy machine): no batch can span two leaders", proxyPartitions)
	return 0, "", ""
}

// A client that knows only a follower, with a raw gRPC client that
// follows no hint: its unary calls are served through the follower
// (enqueue, ack, a batch over queues of different leaders merged in item
// order), in one trace that runs through the follower's proxy span to
// the leader; its Consume is refused with the leader's address; and a
// call to a leader that stopped answering ends with the caller's
// deadline.
func TestFollowerProxiesToTheLeader(t *testing.T) {
	hs := make([]*telemetrytest.Harness, 3)
	for i := range hs {
		hs[i] = telemetrytest.New(t)
	}
	controls := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	tr := startTrio(t, trioOptions{relays: true,
		cfg: func(i int, c *config.Config) {
			c.Cluster.Partitions = proxyPartitions
			c.Cluster.FaultControlAddr = controls[i]
		},
		opts: func(i int) server.Options {
			return server.Options{TracerProvider: hs[i].TracerProvider, MeterProvider: hs[i].MeterProvider}
		}})
	leaders := placedQueues(t, tr, 2*proxyPartitions)
	f, qa, qb := spread(t, leaders)
	conn := dialAddr(t, tr.addrs[f])
	svc, admin := filav1.NewFilaServiceClient(conn), filav1.NewFilaAdminClient(conn)
	ctx := clusterCtx(t)

	// Produce through the follower, in a trace of the test's own.
	clientTP := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = clientTP.Shutdown(context.Background()) })
	spanCtx, clientSpan := clientTP.Tracer("test").Start(ctx, "produce")
	md := metadata.MD{}
	propagation.TraceContext{}.Inject(spanCtx, gateway.MetadataCarrier(md))
	before := tr.srvs[f].Forwarded().Load()
	_, err := svc.Enqueue(metadata.NewOutgoingContext(ctx, md), &filav1.EnqueueRequest{Queue: qa, Payload: []byte("one")})
	clientSpan.End()
	require.NoError(t, err, "enqueue to %s (led by node %d) through node %d", qa, leaders[qa]+1, f+1)
	require.Greater(t, tr.srvs[f].Forwarded().Load(), before, "the follower counted the forwarded call")
	requireProxiedTrace(t, hs, f, clientSpan.SpanContext())

	// Consume is not proxied: the follower names the leader.
	var trailer metadata.MD
	stream, err := svc.Consume(ctx, &filav1.ConsumeRequest{Queue: qa}, grpc.Trailer(&trailer))
	require.NoError(t, err)
	_, err = stream.Recv()
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	hint := trailer.Get(gateway.LeaderHintMetadata)
	require.Len(t, hint, 1)
	require.Contains(t, tr.addrs, hint[0])
	require.NotEqual(t, tr.addrs[f], hint[0])

	// Lease at the leader, ack through the follower.
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err = filav1.NewFilaServiceClient(dialAddr(t, hint[0])).Consume(lctx, &filav1.ConsumeRequest{Queue: qa})
	require.NoError(t, err)
	resp, err := stream.Recv()
	require.NoError(t, err)
	m := resp.GetMessage()
	require.Equal(t, "one", string(m.GetPayload()))
	_, err = svc.Ack(ctx, &filav1.AckRequest{Queue: qa, MessageId: m.GetId(), LeaseId: m.GetLeaseId()})
	require.NoError(t, err, "ack through the follower")
	cancel()
	st, err := admin.GetStats(ctx, &filav1.GetStatsRequest{Queue: qa})
	require.NoError(t, err)
	require.Zero(t, st.GetDepth()+st.GetInFlight(), "the ack was done at the leader")

	// A batch over both queues, items interleaved, comes back in item order.
	var items []*filav1.EnqueueRequest
	for i := range 10 {
		items = append(items, &filav1.EnqueueRequest{Queue: []string{qa, qb}[i%2], Payload: []byte(fmt.Sprint("item-", i))})
	}
	br, err := svc.EnqueueBatch(ctx, &filav1.EnqueueBatchRequest{Messages: items})
	require.NoError(t, err)
	require.Len(t, br.GetResults(), len(items))
	stored := map[string]string{} // id → queue/payload, as each leader holds it
	for _, q := range []string{qa, qb} {
		page, err := admin.Peek(ctx, &filav1.PeekRequest{Queue: q, IncludePayload: true})
		require.NoError(t, err)
		for _, pm := range page.GetMessages() {
			stored[pm.GetId()] = q + "/" + string(pm.GetPayload())
		}
	}
	var leases []*filav1.AckRequest
	for i, r := range br.GetResults() {
		require.NotEmpty(t, r.GetMessageId(), "item %d: %v", i, r.GetError())
		require.Equal(t, items[i].GetQueue()+"/"+string(items[i].GetPayload()), stored[r.GetMessageId()], "item %d's result is its own", i)
		leases = append(leases, &filav1.AckRequest{Queue: items[i].GetQueue(), MessageId: r.GetMessageId()})
	}
	// A settle batch over both queues: each item is answered, in order
	// (unleased messages: NOT_FOUND from each queue's leader).
	ab, err := svc.AckBatch(ctx, &filav1.AckBatchRequest{Acks: leases})
	require.NoError(t, err)
	require.Len(t, ab.GetResults(), len(leases))
	for i, r := range ab.GetResults() {
		require.Equal(t, codes.NotFound, codes.Code(r.GetCode()), "item %d: %s", i, r.GetMessage())
	}

	// A link cut by the fault rules drops forwarded calls too.
	l := leaderOf(t, tr, qa)
	if l != f {
		faultControl(t, controls[f], fmt.Sprintf("/cut?peer=%d&dir=out", l+1))
		_, err = svc.Enqueue(ctx, &filav1.EnqueueRequest{Queue: qa, Payload: []byte("cut")})
		faultControl(t, controls[f], "/heal")
		if status.Code(err) != codes.OK || leaderOf(t, tr, qa) == l { // not a call that went to a new leader
			require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
			require.ErrorContains(t, err, "cut")
		}
	}

	// A leader that stops answering: the proxied call ends with its
	// caller's deadline, or UNAVAILABLE, and does not hang.
	requireDeadlinePassesThrough(t, tr, f, qa, svc)
}

// freeAddr is a loopback address free now (a test-only race for the port).
func freeAddr(t *testing.T) string {
	t.Helper()
	// Below the ephemeral range: a port from :0 could be given to an
	// outgoing connection between this check and the node's listen.
	addr, err := ports.Free(map[string]bool{})
	require.NoError(t, err)
	return addr
}

// faultControl posts to a node's fault control port.
func faultControl(t *testing.T, addr, path string) {
	t.Helper()
	resp, err := http.Post("http://"+addr+path, "text/plain", nil)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode, path)
}

// requireProxiedTrace finds the trace of the call under client: the
// follower's server span, its "fila.proxy Enqueue" child naming the
// target node, and that node's server span, a child of the proxy span.
func requireProxiedTrace(t *testing.T, hs []*telemetrytest.Harness, f int, client trace.SpanContext) {
	t.Helper()
	const method = "fila.v1.FilaService/Enqueue"
	find := func(h *telemetrytest.Harness, name string, parent trace.SpanID) sdktrace.ReadOnlySpan {
		for _, s := range h.Recorder.Ended() {
			if s.Name() == name && s.SpanContext().TraceID() == client.TraceID() && s.Parent().SpanID() == parent {
				return s
			}
		}
		return nil
	}
	var proxy, leader sdktrace.ReadOnlySpan
	require.Eventually(t, func() bool {
		server := find(hs[f], method, client.SpanID())
		if server == nil {
			return false
		}
		if proxy = find(hs[f], "fila.proxy Enqueue", server.SpanContext().SpanID()); proxy == nil {
			return false
		}
		for _, kv := range proxy.Attributes() {
			if kv.Key == "fila.node.target" {
				target := int(kv.Value.AsInt64()) - 1
				require.NotEqual(t, f, target)
				leader = find(hs[target], method, proxy.SpanContext().SpanID())
			}
		}
		return leader != nil
	}, waitFor, 10*time.Millisecond, "client -> follower (proxy span) -> leader, in one trace")
	for _, kv := range proxy.Attributes() {
		require.NotContains(t, []string{"messaging.message.body.size", "fila.payload"}, string(kv.Key))
	}
}

// requireDeadlinePassesThrough pauses the relay in front of queue's
// leader and calls through follower f with a short deadline. A busy
// machine may move the leadership meanwhile (the call then succeeds
// elsewhere): it tries again, a few times.
func requireDeadlinePassesThrough(t *testing.T, tr *trio, f int, queue string, svc filav1.FilaServiceClient) {
	t.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		l := leaderOf(t, tr, queue)
		if l == f {
			continue
		}
		tr.relays[l].setPaused(true)
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		start := time.Now()
		_, err := svc.Enqueue(ctx, &filav1.EnqueueRequest{Queue: queue, Payload: []byte("late")})
		took := time.Since(start)
		cancel()
		tr.relays[l].setPaused(false)
		if err == nil {
			continue
		}
		t.Logf("a call to paused node %d through node %d: %s after %v", l+1, f+1, status.Code(err), took.Round(time.Millisecond))
		require.Contains(t, []codes.Code{codes.DeadlineExceeded, codes.Unavailable}, status.Code(err), "%v", err)
		require.Less(t, took, 10*time.Second, "the call ended with its deadline, not the server's bound")
		return
	}
	t.Fatal("the leader kept moving: no call reached a paused leader")
}

// A forwarded call keeps its caller's identity: a key with rights on one
// queue is served there through a follower (the leader accepts the key
// the follower names), refused on another, and the leader itself checks
// the key a forwarded call names.
func TestProxyKeepsTheCallersKey(t *testing.T) {
	tr := startTrio(t, trioOptions{cfg: func(_ int, c *config.Config) {
		c.Cluster.Partitions = proxyPartitions
		c.Auth = config.Auth{Mode: "on", BootstrapKey: bootstrapKey}
	}})
	leaders := placedQueues(t, tr, 2*proxyPartitions)
	f, qa, qb := spread(t, leaders)
	conn := dialAddr(t, tr.addrs[f])
	svc, admin := filav1.NewFilaServiceClient(conn), filav1.NewFilaAdminClient(conn)

	// Made through the follower, by the bootstrap key: proxied to the
	// meta group's leader.
	created, err := admin.CreateApiKey(withKey(bootstrapKey), &filav1.CreateApiKeyRequest{Name: "a-only",
		Permissions: []*filav1.Permission{{QueuePattern: qa, Actions: []string{"produce"}}}})
	require.NoError(t, err)
	key := created.GetKey()
	enqueue := func(q string) error {
		ctx, cancel := context.WithTimeout(withKey(key), waitFor)
		defer cancel()
		_, err := svc.Enqueue(ctx, &filav1.EnqueueRequest{Queue: q, Payload: []byte("p")})
		return err
	}
	// Every node learns the key from the meta group, in its own time.
	deadline := time.Now().Add(waitFor)
	for err = enqueue(qa); status.Code(err) == codes.Unauthenticated && time.Now().Before(deadline); err = enqueue(qa) {
		time.Sleep(10 * time.Millisecond) // polls until the key is applied on both nodes
	}
	require.NoError(t, err, "the key's own queue %s (led by node %d) through node %d", qa, leaders[qa]+1, f+1)
	require.Equal(t, codes.PermissionDenied, status.Code(enqueue(qb)), "another queue, through the follower")

	// At the leader of qa, a forwarded call is checked against the key it
	// names: none, or one without the right, is refused.
	l := leaderOf(t, tr, qa)
	internal := filav1.NewFilaServiceClient(dialAddr(t, tr.internal[l]))
	call := func(kv ...string) error {
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), kv...), waitFor)
		defer cancel()
		_, err := internal.Enqueue(ctx, &filav1.EnqueueRequest{Queue: qa, Payload: []byte("p")})
		return err
	}
	forwardedBy := strconv.Itoa(f + 1)
	require.NoError(t, call(gateway.ForwardedMetadata, forwardedBy, gateway.ForwardedKeyMetadata, "a-only"))
	require.Equal(t, codes.Unauthenticated, status.Code(call(gateway.ForwardedMetadata, forwardedBy)), "no key named")
	require.Equal(t, codes.Unauthenticated, status.Code(call(gateway.ForwardedMetadata, forwardedBy, gateway.ForwardedKeyMetadata, "nobody")))
	require.Equal(t, codes.PermissionDenied, status.Code(call(gateway.ForwardedKeyMetadata, "a-only")), "not marked forwarded")
	_, err = internal.Enqueue(metadata.AppendToOutgoingContext(ctxT(t), gateway.ForwardedMetadata, forwardedBy, gateway.ForwardedKeyMetadata, "a-only"),
		&filav1.EnqueueRequest{Queue: qb, Payload: []byte("p")})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "the leader checks the rights of the key named: %v", err)
}

// A key revoked through another node ends the key's streams here too: the
// revoke runs at the meta group's leader, and the stream's node learns of
// it when it applies the meta group.
func TestARevokeThroughAnotherNodeEndsTheStream(t *testing.T) {
	tr := startTrio(t, trioOptions{cfg: func(_ int, c *config.Config) {
		c.Cluster.Partitions = proxyPartitions
		c.Auth = config.Auth{Mode: "on", BootstrapKey: bootstrapKey}
	}})
	leaders := placedQueues(t, tr, 2*proxyPartitions)
	meta := untilServed(t, tr, -1, func(conn *grpc.ClientConn, md *metadata.MD) error {
		_, err := filav1.NewFilaAdminClient(conn).CreateQueue(ctxT(t), &filav1.CreateQueueRequest{Name: "probe"}, grpc.Trailer(md))
		if status.Code(err) == codes.AlreadyExists {
			return nil
		}
		return err
	})
	queue := ""
	for q, l := range leaders {
		if l != meta {
			queue = q
		}
	}
	require.NotEmpty(t, queue, "every partition led by the meta leader, node %d", meta+1)
	l := leaders[queue]
	leaderAdmin := filav1.NewFilaAdminClient(dialAddr(t, tr.addrs[l]))
	created, err := leaderAdmin.CreateApiKey(withKey(bootstrapKey), &filav1.CreateApiKeyRequest{Name: "consumer",
		Permissions: []*filav1.Permission{{QueuePattern: queue, Actions: []string{"consume"}}}})
	require.NoError(t, err)
	svc := filav1.NewFilaServiceClient(dialAddr(t, tr.addrs[l]))
	_, err = svc.Enqueue(withKey(bootstrapKey), &filav1.EnqueueRequest{Queue: queue, Payload: []byte("p")})
	require.NoError(t, err)

	// The stream at the queue's leader, once it delivers (so it is open
	// and its queue checked); the key reaches that node in its own time.
	ctx, cancel := context.WithTimeout(withKey(created.GetKey()), waitFor)
	defer cancel()
	var stream grpc.ServerStreamingClient[filav1.ConsumeResponse]
	deadline := time.Now().Add(waitFor)
	for {
		stream, err = svc.Consume(ctx, &filav1.ConsumeRequest{Queue: queue})
		require.NoError(t, err)
		if _, err = stream.Recv(); status.Code(err) != codes.Unauthenticated || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // polls until the key is applied at the leader
	}
	require.NoError(t, err, "the stream at node %d", l+1)

	_, err = filav1.NewFilaAdminClient(dialAddr(t, tr.addrs[meta])).RevokeApiKey(withKey(bootstrapKey), &filav1.RevokeApiKeyRequest{Name: "consumer"})
	require.NoError(t, err, "the revoke at the meta leader, node %d", meta+1)
	_, err = stream.Recv()
	require.Equal(t, codes.Unauthenticated, status.Code(err), "the stream at node %d after a revoke at node %d: %v", l+1, meta+1, err)
}

// A client that follows hints asks for them (protocol.RedirectMetadata):
// a follower then refuses with the leader's address instead of proxying,
// and without the key it proxies.
func TestAClientThatFollowsHintsIsRedirectedNotProxied(t *testing.T) {
	tr := startTrio(t, trioOptions{cfg: func(_ int, c *config.Config) { c.Cluster.Partitions = proxyPartitions }})
	leaders := placedQueues(t, tr, proxyPartitions)
	var queue string
	for q := range leaders {
		queue = q
	}
	l := leaders[queue]
	f := (l + 1) % 3
	svc := filav1.NewFilaServiceClient(dialAddr(t, tr.addrs[f]))
	var trailer metadata.MD
	_, err := svc.Enqueue(metadata.AppendToOutgoingContext(ctxT(t), protocol.RedirectMetadata, "1"),
		&filav1.EnqueueRequest{Queue: queue, Payload: []byte("p")}, grpc.Trailer(&trailer))
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.Equal(t, []string{tr.addrs[l]}, trailer.Get(protocol.LeaderAddrMetadata), "the hint names the leader, node %d", l+1)
	_, err = svc.Enqueue(ctxT(t), &filav1.EnqueueRequest{Queue: queue, Payload: []byte("p")})
	require.NoError(t, err, "proxied without the key")
}
