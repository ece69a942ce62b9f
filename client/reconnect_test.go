package client_test

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/client"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// scriptedNode answers its n-th Consume (from 1) as streams(n, stream)
// says, and acks everything.
type scriptedNode struct {
	filav1.UnimplementedFilaServiceServer
	consumes atomic.Int64
	streams  func(n int64, s filav1.FilaService_ConsumeServer) error
}

func (n *scriptedNode) Consume(_ *filav1.ConsumeRequest, s filav1.FilaService_ConsumeServer) error {
	return n.streams(n.consumes.Add(1), s)
}

func (n *scriptedNode) Ack(context.Context, *filav1.AckRequest) (*filav1.AckResponse, error) {
	return &filav1.AckResponse{}, nil
}

func serveOn(t *testing.T, lis net.Listener, n filav1.FilaServiceServer) *grpc.Server {
	t.Helper()
	srv := grpc.NewServer()
	filav1.RegisterFilaServiceServer(srv, n)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return srv
}

func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	return lis
}

// send sends one message, then the stream ends with end (nil: it stays
// open until the consumer goes).
func send(s filav1.FilaService_ConsumeServer, id string, end error) error {
	if err := s.Send(&filav1.ConsumeResponse{Message: &filav1.Message{Id: id}}); err != nil {
		return err
	}
	if end != nil {
		return end
	}
	<-s.Context().Done()
	return nil
}

// unavailable is a node's refusal or stream end, naming the leader when
// leader is not "".
func unavailable(s grpc.ServerStream, leader string) error {
	if leader != "" {
		s.SetTrailer(metadata.Pairs(client.LeaderAddrKey, leader))
	}
	return status.Error(codes.Unavailable, "not the leader of the queue")
}

// consumeUntil runs Consume until the handler has seen every id of want,
// and returns the ids seen in order and Consume's result.
func consumeUntil(t *testing.T, c *client.Client, opts client.ConsumeOptions, want ...string) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var mu sync.Mutex
	var seen []string
	err := c.Consume(ctx, "orders", opts, func(_ context.Context, m *filav1.Message) error {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, m.GetId())
		if len(seen) == len(want) {
			cancel()
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	return seen, err
}

// A stream that the queue's leader ends when it steps down, naming its
// successor, is opened again there, within the same Consume.
func TestConsumeFollowsTheLeaderAfterItsStreamEnds(t *testing.T) {
	next := &scriptedNode{streams: func(_ int64, s filav1.FilaService_ConsumeServer) error { return send(s, "m2", nil) }}
	nextLis := listen(t, "127.0.0.1:0")
	serveOn(t, nextLis, next)
	first := &scriptedNode{streams: func(n int64, s filav1.FilaService_ConsumeServer) error {
		if n > 1 {
			return unavailable(s, nextLis.Addr().String())
		}
		return send(s, "m1", unavailable(s, nextLis.Addr().String()))
	}}
	firstLis := listen(t, "127.0.0.1:0")
	serveOn(t, firstLis, first)
	c, err := client.Dial(firstLis.Addr().String(), client.Options{})
	require.NoError(t, err)
	defer c.Close()

	seen, err := consumeUntil(t, c, client.ConsumeOptions{}, "m1", "m2")
	require.NoError(t, err, "Consume ends only with its context")
	require.Equal(t, []string{"m1", "m2"}, seen)
	require.EqualValues(t, 1, first.consumes.Load(), "the hint was followed without asking the old leader again")
	require.EqualValues(t, 1, next.consumes.Load())
}

// A node that goes away and comes back on its address (a restart, or a
// graceful stop that ends the stream UNAVAILABLE naming no one) is asked
// again, with a backoff, until it serves.
func TestConsumeReconnectsAcrossARestart(t *testing.T) {
	lis := listen(t, "127.0.0.1:0")
	addr := lis.Addr().String()
	var srv *grpc.Server
	restarted := make(chan struct{})
	before := &scriptedNode{streams: func(_ int64, s filav1.FilaService_ConsumeServer) error {
		// As filad's graceful stop: its streams end UNAVAILABLE naming no
		// one, then the whole node goes.
		defer func() { go func() { srv.GracefulStop(); close(restarted) }() }()
		return send(s, "m1", unavailable(s, ""))
	}}
	srv = serveOn(t, lis, before)
	after := &scriptedNode{streams: func(_ int64, s filav1.FilaService_ConsumeServer) error { return send(s, "m2", nil) }}
	go func() {
		<-restarted
		again, err := net.Listen("tcp", addr) // the same address, as a restarted node
		if err != nil {
			t.Errorf("listening again on %s: %v", addr, err)
			return
		}
		serveOn(t, again, after)
	}()
	c, err := client.Dial(addr, client.Options{})
	require.NoError(t, err)
	defer c.Close()

	seen, err := consumeUntil(t, c, client.ConsumeOptions{}, "m1", "m2")
	require.NoError(t, err)
	require.Equal(t, []string{"m1", "m2"}, seen)
	require.EqualValues(t, 1, before.consumes.Load())
	require.EqualValues(t, 1, after.consumes.Load())
}

// What is not an outage is Consume's answer at once; an outage that
// outlasts the window is too; and a negative window never reconnects.
func TestConsumeGivesUp(t *testing.T) {
	for _, tc := range []struct {
		name      string
		reconnect time.Duration
		end       error
		code      codes.Code
		retried   bool
	}{
		{name: "not found is an answer", end: status.Error(codes.NotFound, "queue orders does not exist"), code: codes.NotFound},
		{name: "permission denied is an answer", end: status.Error(codes.PermissionDenied, "key may not consume orders"), code: codes.PermissionDenied},
		{name: "an outage past the window", reconnect: 300 * time.Millisecond, end: status.Error(codes.Unavailable, "no leader"), code: codes.Unavailable, retried: true},
		{name: "a negative window", reconnect: -1, end: status.Error(codes.Unavailable, "no leader"), code: codes.Unavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &scriptedNode{streams: func(int64, filav1.FilaService_ConsumeServer) error { return tc.end }}
			lis := listen(t, "127.0.0.1:0")
			serveOn(t, lis, n)
			c, err := client.Dial(lis.Addr().String(), client.Options{})
			require.NoError(t, err)
			defer c.Close()
			err = c.Consume(t.Context(), "orders", client.ConsumeOptions{Reconnect: tc.reconnect}, func(context.Context, *filav1.Message) error { return nil })
			require.Equal(t, tc.code, status.Code(err), "%v", err)
			if tc.retried {
				require.Greater(t, n.consumes.Load(), int64(1), "the outage was retried before giving up")
			} else {
				require.EqualValues(t, 1, n.consumes.Load(), "no retry")
			}
		})
	}
}
