package server_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/fila-dev/filad/actors"
	"github.com/fila-dev/filad/config"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

func TestMaxStreamsPerConnection(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{cfg: func(c *config.Config) { c.Server.MaxStreamsPerConn = 2 }})
	b.createQueue(t, "lim", nil)
	// Stats come over a second connection: the first one's slots are the test.
	admin := filav1.NewFilaAdminClient(dial(t, b.srv.Addr()))
	consumers := func() uint32 {
		st, err := admin.GetStats(ctxT(t), &filav1.GetStatsRequest{Queue: "lim"})
		require.NoError(t, err)
		return st.GetActiveConsumers()
	}
	_, cancelFirst := b.lease(t, "lim")
	b.lease(t, "lim")
	eventually(t, func() bool { return consumers() == 2 }, "two streams")

	// A third stream on the same connection gets no slot; it waits (here
	// until its deadline) while the other two are open.
	ctx, cancel := context.WithTimeout(ctxT(t), 300*time.Millisecond)
	defer cancel()
	s, err := b.svc.Consume(ctx, &filav1.ConsumeRequest{Queue: "lim"})
	if err == nil {
		_, err = s.Recv()
	}
	requireCode(t, err, codes.DeadlineExceeded)

	// Once one closes, a new stream gets its slot.
	cancelFirst()
	eventually(t, func() bool { return consumers() == 1 }, "first closed")
	b.lease(t, "lim")
	eventually(t, func() bool { return consumers() == 2 }, "new stream served")
}

func TestMaxInFlightLimit(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.createQueue(t, "mif", nil)
	s, err := b.svc.Consume(ctxT(t), &filav1.ConsumeRequest{Queue: "mif", MaxInFlight: 10001})
	require.NoError(t, err)
	_, err = s.Recv()
	requireCode(t, err, codes.InvalidArgument)
	require.ErrorContains(t, err, "max_in_flight: 10001 is over the limit of 10000")
}

// TestOversizedMetadataIsRefused: 200 streams carrying 15 MiB of metadata
// each took RSS to 3.1 GB before server.max_header_list_bytes existed.
func TestOversizedMetadataIsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.createQueue(t, "q", nil)
	// The client's own limit must not stop the call before the server's does.
	conn := dial(t, b.srv.Addr(), grpc.WithMaxHeaderListSize(64<<20))
	svc := filav1.NewFilaServiceClient(conn)
	ctx := metadata.AppendToOutgoingContext(ctxT(t), "x-big", strings.Repeat("m", 256<<10))
	_, err := svc.Enqueue(ctx, &filav1.EnqueueRequest{Queue: "q"})
	require.Error(t, err, "256 KiB of metadata is over the 64 KiB default")
	_, err = svc.Enqueue(metadata.AppendToOutgoingContext(ctxT(t), "x-small", "ok"), &filav1.EnqueueRequest{Queue: "q"})
	require.NoError(t, err, "the server still serves")
	require.EqualValues(t, 1, b.stats(t, "q").GetDepth(), "only the small call enqueued")
}

// TestShutdownIsNotHeldByAHandshake: an idle TCP connection that never
// speaks HTTP/2 held SIGTERM for 119 s (grpc's 120 s connection timeout).
func TestShutdownIsNotHeldByAHandshake(t *testing.T) {
	t.Parallel()
	srv := setup(t, setupOpts{cfg: func(c *config.Config) { c.Server.ShutdownTimeoutMS = 500 }}).srv
	idle, err := net.Dial("tcp", srv.Addr().String())
	require.NoError(t, err)
	defer idle.Close()
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(context.Background()) }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second): // far below 119 s, far above the 1 s bound
		t.Fatal("shutdown held by a connection that never finished its handshake")
	}
}

// TestStreamsThatNeverReadHoldAHandful: 200 streams that never read held
// 19,874 of 20,000 messages until their leases expired, up to max_in_flight
// each. Now a stream that stops reading holds at most its delivery buffer
// plus what gRPC's transport took before Send blocked (grpc-go's 64 KiB
// write quota plus the client's 64 KiB flow-control window: about 128 KiB
// of messages), and a reading consumer gets the rest.
func TestStreamsThatNeverReadHoldAHandful(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{cfg: func(c *config.Config) { c.Storage.SyncWrites = false }})
	b.createQueue(t, "stall", nil)
	const stuck, n, size = 20, 2000, 16 << 10
	for range stuck {
		b.lease(t, "stall") // opened, never read
	}
	payload := make([]byte, size)
	for range n {
		b.enqueue(t, "stall", nil, payload)
	}
	reader := filav1.NewFilaServiceClient(dial(t, b.srv.Addr()))
	stream, err := reader.Consume(ctxT(t), &filav1.ConsumeRequest{Queue: "stall", MaxInFlight: n})
	require.NoError(t, err)
	perStream := actors.DeliveryBuffer + 2*(128<<10)/size // buffer + transport, with slack
	got := recvN(t, stream, n-stuck*perStream)
	st := b.stats(t, "stall")
	held := int(st.GetInFlight()) - len(got)
	t.Logf("%d streams that never read hold %d messages of %d (%d each at most)", stuck, held, n, perStream)
	require.LessOrEqual(t, held, stuck*perStream)
}
