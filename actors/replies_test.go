package actors

import (
	"context"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/require"
)

func replyTo(r *replies, id uint32, msg any) {
	r.SendUserMessage(&actor.PID{Id: repliesID, RequestId: id}, msg)
}

// TestRepliesReachOnlyTheirRequest: a reply goes to the request its PID
// numbers, unwrapped; a reply to a request that gave up is dropped and
// never reaches a later request, though their channels are reused.
func TestRepliesReachOnlyTheirRequest(t *testing.T) {
	ctx := context.Background()
	r := newReplies()

	id, ch := r.await()
	replyTo(r, id, &actor.MessageEnvelope{Message: "first"})
	res, err := r.wait(ctx, id, ch, time.Hour)
	require.NoError(t, err)
	require.Equal(t, "first", res, "the envelope's message")

	late, ch := r.await()
	_, err = r.wait(ctx, late, ch, time.Nanosecond)
	require.ErrorIs(t, err, actor.ErrTimeout)
	replyTo(r, late, "too late") // dropped: nobody waits
	replyTo(r, 12345, "unknown") // dropped too

	id, ch = r.await()
	require.NotEqual(t, late, id)
	replyTo(r, id, "second")
	res, err = r.wait(ctx, id, ch, time.Hour)
	require.NoError(t, err)
	require.Equal(t, "second", res, "not the reply that came too late")

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	id, ch = r.await()
	_, err = r.wait(cancelled, id, ch, time.Hour)
	require.ErrorIs(t, err, context.Canceled)
	_, waiting := r.claim(id)
	require.False(t, waiting, "a request that gave up is off the list")
}

// TestRepliesSkipANumberStillWaitedFor: request numbers wrap, and one
// still waiting is not given out again.
func TestRepliesSkipANumberStillWaitedFor(t *testing.T) {
	r := newReplies()
	r.next.Store(^uint32(0) - 1)
	held, heldCh := r.await() // 2³²-1, waits throughout
	r.next.Store(held - 1)
	id, ch := r.await()
	require.Equal(t, held+1, id, "the held number is skipped (wrapping to 0)")

	replyTo(r, held, "held")
	replyTo(r, id, "next")
	for _, c := range []struct {
		id   uint32
		ch   chan any
		want string
	}{{held, heldCh, "held"}, {id, ch, "next"}} {
		res, err := r.wait(context.Background(), c.id, c.ch, time.Hour)
		require.NoError(t, err)
		require.Equal(t, c.want, res)
	}
}
