package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

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
	s, err := b.svc.Lease(ctx, &filav1.LeaseRequest{Queue: "lim"})
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
	s, err := b.svc.Lease(ctxT(t), &filav1.LeaseRequest{Queue: "mif", MaxInFlight: 10001})
	require.NoError(t, err)
	_, err = s.Recv()
	requireCode(t, err, codes.InvalidArgument)
	require.ErrorContains(t, err, "max_in_flight: 10001 is over the limit of 10000")
}
