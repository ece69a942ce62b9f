package server_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: every
// server, stream and client must be stopped by the test that started it.
//
// protoactor's dead-letter throttle starts a goroutine that ends by itself
// a second after the first dead letter of a burst (a message to an actor
// that has stopped: a queue that moved to another cluster node, say); it
// is a timer, not a leak.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"))
}
