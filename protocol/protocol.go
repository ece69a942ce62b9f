// Package protocol names the limits of fila's message protocol that more
// than one package enforces, so that each is written once: the queue actor
// checks a producer's headers against them, and the Lua hooks' results are
// held to the same bounds; and the metadata keys both the server and the
// client read. It imports nothing of filad's, so any package
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

// gRPC metadata keys of a cluster's routing.
const (
	// LeaderAddrMetadata is the trailer of an UNAVAILABLE refusal that
	// names the client address of the node leading the queue (Fila's
	// convention): nothing was done, and the call may go there.
	LeaderAddrMetadata = "x-fila-leader-addr"
	// RedirectMetadata, sent by a client that follows leader hints (any
	// value), asks a node not leading the call's queue to refuse it with
	// LeaderAddrMetadata rather than proxy it, so that the client learns
	// the leader and its next calls go there directly. A refusal that
	// would carry no address (the leader's not known here yet) and batches
	// naming several queues are proxied regardless.
	RedirectMetadata = "x-fila-redirect"
)
