package gateway

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/actors"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// Every unary method of the services the proxy forwards has a reply type
// it can make; a stream has none (it is never forwarded).
func TestEveryUnaryMethodHasAReply(t *testing.T) {
	for _, sd := range []grpc.ServiceDesc{filav1.FilaService_ServiceDesc, filav1.FilaAdmin_ServiceDesc} {
		for _, m := range sd.Methods {
			reply, err := newReply("/" + sd.ServiceName + "/" + m.MethodName)
			require.NoError(t, err, m.MethodName)
			require.NotNil(t, reply, m.MethodName)
		}
		for _, st := range sd.Streams {
			_, err := newReply("/" + sd.ServiceName + "/" + st.StreamName)
			require.Error(t, err, st.StreamName)
		}
	}
	_, err := newReply("/fila.v1.FilaService/NoSuchMethod")
	require.Error(t, err)
}

// A refusal is forwarded to the node it names only when nothing was
// done: never for a write whose outcome is unknown, nor one that names no
// node.
func TestOnlyAPlainRefusalNamesANodeToForwardTo(t *testing.T) {
	nodeOf := func(err error) uint64 {
		var h *leaderHint
		if !errors.As(toStatus(err), &h) {
			return 0
		}
		return h.node
	}
	require.EqualValues(t, 2, nodeOf(&actors.NotLeaderError{Queue: "q", LeaderAddr: "a:1", LeaderNode: 2}))
	require.EqualValues(t, 2, nodeOf(&actors.NotLeaderError{Queue: "q", LeaderNode: 2}), "no client address: still forwarded")
	require.Zero(t, nodeOf(fmt.Errorf("%w (%w)", &actors.NotLeaderError{Queue: "q", LeaderAddr: "a:1", LeaderNode: 2}, actors.ErrOutcomeUnknown)))
	require.Zero(t, nodeOf(&actors.NotLeaderError{Queue: "q", LeaderAddr: "a:1"}))
	require.Nil(t, hintOf(toStatus(&actors.NotLeaderError{Queue: "q", LeaderNode: 2})), "no address, no trailer")
}

// leadersLog records what a Server's learn told its Leaders.
type leadersLog []string

func (l *leadersLog) Led(queue string, node uint64) {
	*l = append(*l, fmt.Sprintf("led %s %d", queue, node))
}
func (l *leadersLog) Missed(queue string, node uint64) {
	*l = append(*l, fmt.Sprintf("missed %s %d", queue, node))
}

// What a forward of a call for a queue to node 2 showed reaches Leaders:
// the leader a refusal names, a node that did not answer, or the node
// that served; a refusal naming this node is a stale view there; a call
// for no queue teaches nothing.
func TestAForwardTeachesWhoLeads(t *testing.T) {
	refusal := func(queue string, leader uint64) error {
		return toStatus(&actors.NotLeaderError{Queue: queue, LeaderNode: leader, LeaderAddr: "a:1"})
	}
	for _, tc := range []struct {
		name  string
		queue string
		err   error
		want  []string
	}{
		{"served", "orders", nil, []string{"led orders 2"}},
		{"refused for its own reasons", "orders", status.Error(codes.InvalidArgument, "payload: too big"), []string{"led orders 2"}},
		{"another named", "orders", refusal("orders", 3), []string{"led orders 3"}},
		// This node forwarded because it does not lead: node 2's view is
		// stale, and so is the guess of node 2; the next replica is tried.
		{"this node named", "orders", refusal("orders", 1), []string{"missed orders 2"}},
		{"unreachable", "orders", status.Error(codes.Unavailable, "connection refused"), []string{"missed orders 2"}},
		{"too slow", "orders", status.Error(codes.DeadlineExceeded, "deadline"), []string{"missed orders 2"}},
		{"no queue", "", refusal("", 3), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got leadersLog
			s := &Server{opts: Options{NodeID: 1, Leaders: &got}}
			s.learn(tc.queue, 2, tc.err)
			require.Equal(t, tc.want, []string(got))
		})
	}
}
