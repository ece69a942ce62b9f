package gateway

import (
	"context"
	"fmt"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/actors"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// refusingService answers every Enqueue and Consume with err, as the
// handlers do: through toStatus.
type refusingService struct {
	filav1.UnimplementedFilaServiceServer
	err error
}

func (s refusingService) Enqueue(context.Context, *filav1.EnqueueRequest) (*filav1.EnqueueResponse, error) {
	return nil, toStatus(s.err)
}

func (s refusingService) Consume(*filav1.ConsumeRequest, filav1.FilaService_ConsumeServer) error {
	return toStatus(s.err)
}

// serveRefusing serves refusingService{err} on loopback with the gateway's
// server options and returns a client of it.
func serveRefusing(t *testing.T, err error) filav1.FilaServiceClient {
	t.Helper()
	lis, lerr := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, lerr)
	g := grpc.NewServer(ServerOptions()...)
	filav1.RegisterFilaServiceServer(g, refusingService{err: err})
	served := make(chan error, 1)
	go func() { served <- g.Serve(lis) }()
	t.Cleanup(func() {
		g.Stop()
		require.NoError(t, <-served)
	})
	conn, cerr := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, cerr)
	t.Cleanup(func() { _ = conn.Close() })
	return filav1.NewFilaServiceClient(conn)
}

// TestNotLeaderStatus: a call refused by a node that does not lead its queue
// ends UNAVAILABLE, and when the leader is known its client address is in
// the x-fila-leader-addr trailer, where Fila's clients read it, for a unary
// call and for a lease stream alike.
func TestNotLeaderStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		err      error
		wantAddr string // "" for no hint
	}{
		{"leader known", &actors.NotLeaderError{Queue: "orders", LeaderAddr: "10.0.0.7:5555"}, "10.0.0.7:5555"},
		{"leader known, wrapped", fmt.Errorf("forwarding: %w", &actors.NotLeaderError{Queue: "orders", LeaderAddr: "[::1]:5555"}), "[::1]:5555"},
		{"leader unknown", &actors.NotLeaderError{Queue: "orders"}, ""},
		{"sentinel", actors.ErrNotLeader, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.ErrorIs(t, tt.err, actors.ErrNotLeader)
			cli := serveRefusing(t, tt.err)
			ctx := t.Context()
			check := func(err error, trailer metadata.MD) {
				t.Helper()
				require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
				require.Contains(t, status.Convert(err).Message(), actors.ErrNotLeader.Error())
				if tt.wantAddr == "" {
					require.Empty(t, trailer.Get(LeaderHintMetadata))
					return
				}
				require.Equal(t, []string{tt.wantAddr}, trailer.Get(LeaderHintMetadata))
			}

			var trailer metadata.MD
			_, err := cli.Enqueue(ctx, &filav1.EnqueueRequest{Queue: "orders"}, grpc.Trailer(&trailer))
			check(err, trailer)

			stream, err := cli.Consume(ctx, &filav1.ConsumeRequest{Queue: "orders"})
			require.NoError(t, err)
			_, err = stream.Recv()
			check(err, stream.Trailer())
		})
	}
}

// TestToStatusNotLeader: the mapping itself, for the codes a batch item
// gets (itemStatus keeps the code and the message, not the trailer).
func TestToStatusNotLeader(t *testing.T) {
	t.Parallel()
	err := toStatus(&actors.NotLeaderError{Queue: "orders", LeaderAddr: "10.0.0.7:5555"})
	require.Equal(t, codes.Unavailable, status.Code(err))
	require.Equal(t, `not the leader of the queue "orders"; its leader is at 10.0.0.7:5555`, status.Convert(err).Message())
	st := itemStatus(&actors.NotLeaderError{Queue: "orders"})
	require.Equal(t, int32(codes.Unavailable), st.GetCode())
	require.Equal(t, `not the leader of the queue "orders"; its leader is not known yet`, st.GetMessage())
}
