package gateway

import (
	"context"
	"errors"
	"strconv"
	"syscall"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/actors"
	"github.com/fila-dev/filad/protocol"
)

// toStatus maps an error from validation or the actors to its gRPC status.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	var inv *invalidError
	code := codes.Internal
	switch {
	case errors.As(err, &inv), errors.Is(err, actors.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, actors.ErrNotFound), errors.Is(err, actors.ErrNotLeased):
		code = codes.NotFound
	case errors.Is(err, actors.ErrLeaseExpired), errors.Is(err, actors.ErrFailedPrecondition):
		code = codes.FailedPrecondition
	case errors.Is(err, actors.ErrNotAttempted):
		code = codes.Aborted
	case errors.Is(err, actors.ErrExists):
		code = codes.AlreadyExists
	case errors.Is(err, actors.ErrOverloaded), errors.Is(err, actors.ErrLimit), errors.Is(err, syscall.ENOSPC):
		// A full disk is a resource running out, not a broken broker: the
		// client may retry once the operator has made room.
		code = codes.ResourceExhausted
	case errors.Is(err, actors.ErrShuttingDown), errors.Is(err, actor.ErrTimeout):
		code = codes.Unavailable
	case errors.Is(err, actors.ErrNotLeader):
		// Retryable, at the leader: a client that finds LeaderHintMetadata
		// on the response goes there.
		var nl *actors.NotLeaderError
		if errors.As(err, &nl) && (nl.LeaderAddr != "" || nl.LeaderNode != 0) {
			h := &leaderHint{st: status.New(codes.Unavailable, err.Error()), addr: nl.LeaderAddr, queue: nl.Queue}
			// A write that may have been done is never made again
			// elsewhere (the proxy only forwards a plain refusal).
			if !errors.Is(err, actors.ErrOutcomeUnknown) {
				h.node = nl.LeaderNode
			}
			return h
		}
		code = codes.Unavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Error(code, err.Error())
}

// LeaderHintMetadata is the response metadata key naming the client address
// of the queue's leader on an UNAVAILABLE from a node that is not the
// leader (actors.NotLeaderError). It is Fila's convention: Fila's server
// puts it in the metadata of its error status, which gRPC sends as
// trailers, and Fila's clients read it from the trailers of the failed call
// or stream (docs/decisions.md).
const LeaderHintMetadata = protocol.LeaderAddrMetadata

// leaderHint is the UNAVAILABLE status of a NotLeaderError that knows the
// leader, keeping the leader's address for the interceptors that put it
// in the call's trailers.
type leaderHint struct {
	st   *status.Status
	addr string // "" when not known: no trailer
	// node is the leader's node id when the call may be forwarded there
	// (proxy.go), 0 when not.
	node uint64
	// queue is the queue the refused call named ("" for a broker command).
	queue string
}

func (h *leaderHint) Error() string { return h.st.Err().Error() }

// GRPCStatus makes gRPC (and status.FromError) see the status.
func (h *leaderHint) GRPCStatus() *status.Status { return h.st }

// hintOf is the trailer metadata a handler's error asks for: the leader's
// address of a leaderHint, nil for any other error.
func hintOf(err error) metadata.MD {
	var h *leaderHint
	if !errors.As(err, &h) || h.addr == "" {
		return nil
	}
	return metadata.Pairs(LeaderHintMetadata, h.addr)
}

// internalHintOf is hintOf for a forwarded call's refusal, answered on
// the internal port: with the leader's node id too when the call may be
// made there (nothing was done here), for the forwarding node to retry.
func internalHintOf(err error) metadata.MD {
	md := hintOf(err)
	var h *leaderHint
	if md != nil && errors.As(err, &h) && h.node != 0 {
		md.Set(leaderNodeMetadata, strconv.FormatUint(h.node, 10))
	}
	return md
}

// leaderNodeMetadata names, in the trailers of a forwarded call's plain
// refusal (internal port only), the node the forwarding node may retry it
// at once.
const leaderNodeMetadata = "x-fila-leader-node"

// leaderHintUnary puts a refused call's leader address in its trailers.
func leaderHintUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if md := hintOf(err); md != nil {
		_ = grpc.SetTrailer(ctx, md) // fails only when the call is already over
	}
	return resp, err
}

// leaderHintStream puts a refused stream's leader address in its trailers.
func leaderHintStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	err := handler(srv, ss)
	if md := hintOf(err); md != nil {
		ss.SetTrailer(md)
	}
	return err
}
