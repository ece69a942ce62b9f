package gateway

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

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
