package gateway

import (
	"context"
	"errors"
	"syscall"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/actors"
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
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Error(code, err.Error())
}
