// Package protocol names the limits of fila's message protocol that more
// than one package enforces, so that each is written once: the queue actor
// checks a producer's headers against them, and the Lua hooks' results are
// held to the same bounds. It imports nothing of filad's, so any package
// may use it.
package protocol

import "time"

const (
	// MaxWeight is the largest weight a message may carry: the fila-weight
	// header's, and the weight on_enqueue may return.
	MaxWeight = 1000
	// MaxDelay is the longest a message may be held back: fila-delay-ms,
	// every retry backoff, and the delay_ms on_failure may return.
	MaxDelay = 24 * time.Hour
)
