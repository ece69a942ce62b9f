package client

import (
	"context"
	"errors"

	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// cleanStreamEnd wraps otelgrpc's client handler so that a Consume stream
// its caller cancelled is not an ERROR span. otelgrpc marks every client
// call that ends other than OK as an error, CANCELLED included, and
// cancelling is how a consumer stops: every clean shutdown left an ERROR
// span. Such a span keeps rpc.response.status_code CANCELLED (it is what
// happened); its status is set OK just before otelgrpc ends it, and OK is
// final (the API ignores the ERROR that follows). A stream cancelled by
// anything but its own context, or ended with any other code, is left to
// otelgrpc.
type cleanStreamEnd struct{ stats.Handler }

// consumeCall marks the context of a Consume call.
type consumeCall struct{}

// TagRPC tags the call as otelgrpc does, and marks Consume calls.
func (h cleanStreamEnd) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	ctx = h.Handler.TagRPC(ctx, info)
	if info.FullMethodName == filav1.FilaService_Consume_FullMethodName {
		ctx = context.WithValue(ctx, consumeCall{}, true)
	}
	return ctx
}

// HandleRPC marks a cancelled Consume stream's span OK, then hands the
// event to otelgrpc.
func (h cleanStreamEnd) HandleRPC(ctx context.Context, rs stats.RPCStats) {
	if end, ok := rs.(*stats.End); ok && ctx.Value(consumeCall{}) != nil &&
		status.Code(end.Error) == codes.Canceled && errors.Is(ctx.Err(), context.Canceled) {
		trace.SpanFromContext(ctx).SetStatus(otelcodes.Ok, "")
	}
	h.Handler.HandleRPC(ctx, rs)
}
