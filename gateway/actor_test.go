package gateway

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fila-dev/filad/actors"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

func TestTranslateRefusesOverloadedQueue(t *testing.T) {
	t.Parallel()
	dir := &actors.Directory{}
	ref := actors.NewQueueRefForTest(dir, "busy", 10)
	g := &gatewayActor{dir: dir, maxPayload: 1024, maxMailbox: 10}
	_, _, err := g.translate(&call{req: &filav1.EnqueueRequest{Queue: "busy"}})
	require.ErrorIs(t, err, actors.ErrOverloaded)
	require.ErrorContains(t, err, "queue busy has 10 requests waiting (limit 10)")
	require.Contains(t, toStatus(err).Error(), "ResourceExhausted")

	g.maxMailbox = 11
	pid, msg, err := g.translate(&call{req: &filav1.EnqueueRequest{Queue: "busy"}})
	require.NoError(t, err)
	require.Equal(t, ref.PID, pid)
	require.IsType(t, &actors.Enqueue{}, msg)
}
