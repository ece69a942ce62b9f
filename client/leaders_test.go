package client_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/client"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// fakeNode answers as a cluster node: one that leads nothing refuses
// with the leader's address; the leader serves.
type fakeNode struct {
	filav1.UnimplementedFilaServiceServer
	leaderAddr string // "": this node leads
	enqueues   atomic.Int64
	consumes   atomic.Int64
}

func (n *fakeNode) refuse(set func(metadata.MD)) error {
	if n.leaderAddr != "-" {
		set(metadata.Pairs(client.LeaderAddrKey, n.leaderAddr))
	}
	return status.Error(codes.Unavailable, "not the leader of the queue")
}

func (n *fakeNode) Enqueue(ctx context.Context, _ *filav1.EnqueueRequest) (*filav1.EnqueueResponse, error) {
	n.enqueues.Add(1)
	if n.leaderAddr != "" {
		return nil, n.refuse(func(md metadata.MD) { _ = grpc.SetTrailer(ctx, md) })
	}
	return &filav1.EnqueueResponse{MessageId: "m1"}, nil
}

func (n *fakeNode) Consume(_ *filav1.ConsumeRequest, s filav1.FilaService_ConsumeServer) error {
	n.consumes.Add(1)
	if n.leaderAddr != "" {
		return n.refuse(s.SetTrailer)
	}
	return s.Send(&filav1.ConsumeResponse{Message: &filav1.Message{Id: "m1"}})
}

func serveFake(t *testing.T, n *fakeNode) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	filav1.RegisterFilaServiceServer(srv, n)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func TestClientFollowsTheLeader(t *testing.T) {
	leader := &fakeNode{}
	leaderAddr := serveFake(t, leader)
	follower := &fakeNode{leaderAddr: leaderAddr}
	c, err := client.Dial(serveFake(t, follower), client.Options{})
	require.NoError(t, err)
	defer c.Close()
	ctx := t.Context()

	id, err := c.Enqueue(ctx, "orders", nil, []byte("p"))
	require.NoError(t, err)
	require.Equal(t, "m1", id)
	_, err = c.Enqueue(ctx, "orders", nil, []byte("p"))
	require.NoError(t, err)
	require.EqualValues(t, 1, follower.enqueues.Load(), "the second enqueue went straight to the leader")
	require.EqualValues(t, 2, leader.enqueues.Load())

	s, err := c.Lease(ctx, "orders", 0)
	require.NoError(t, err)
	m, err := s.Next()
	require.NoError(t, err, "the stream was opened again at the leader")
	require.Equal(t, "m1", m.GetId())
	require.EqualValues(t, 1, follower.consumes.Load())
	require.EqualValues(t, 1, leader.consumes.Load())
}

// A refusal that names no leader, or a failure at a leader that names no
// other, is the caller's: it may have been done.
func TestClientDoesNotRetryWithoutAHint(t *testing.T) {
	lost := &fakeNode{leaderAddr: "-"} // refuses, naming no one
	c, err := client.Dial(serveFake(t, lost), client.Options{})
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Enqueue(t.Context(), "orders", nil, []byte("p"))
	require.Equal(t, codes.Unavailable, status.Code(err))
	require.EqualValues(t, 1, lost.enqueues.Load(), "no retry")
}
