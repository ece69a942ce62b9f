package raftlog_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: a node's
// driver or a badger DB not closed.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
