package server_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: every
// server, stream and client must be stopped by the test that started it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
