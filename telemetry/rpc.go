package telemetry

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// RPCDuration is the semantic conventions' RPC server duration, for unary
// calls (a Lease stream lasts as long as its consumer: its duration says
// nothing).
var RPCDuration = MetricSpec{Name: "rpc.server.call.duration", Unit: "s", Description: "Duration of unary RPCs filad served."}

// CallDuration returns a unary interceptor recording RPCDuration on mp
// with rpc.system, rpc.service, rpc.method and rpc.grpc.status_code. Its
// attribute sets are made once per method and code, so a call costs two
// clock reads and one histogram record.
func CallDuration(mp metric.MeterProvider) (grpc.UnaryServerInterceptor, error) {
	h, err := mp.Meter(ScopeName, metric.WithInstrumentationVersion(Version)).Float64Histogram(RPCDuration.Name,
		metric.WithUnit(RPCDuration.Unit), metric.WithDescription(RPCDuration.Description),
		metric.WithExplicitBucketBoundaries(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
	if err != nil {
		return nil, fmt.Errorf("telemetry: %s: %w", RPCDuration.Name, err)
	}
	type callKey struct {
		method string
		code   codes.Code
	}
	var sets sync.Map // callKey → metric.MeasurementOption
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		code := status.Code(err)
		key := callKey{info.FullMethod, code}
		set, ok := sets.Load(key)
		if !ok {
			service, method, _ := strings.Cut(strings.TrimPrefix(info.FullMethod, "/"), "/")
			set, _ = sets.LoadOrStore(key, metric.WithAttributeSet(attribute.NewSet(
				attribute.String("rpc.system", "grpc"), attribute.String("rpc.service", service),
				attribute.String("rpc.method", method), attribute.Int("rpc.grpc.status_code", int(code)))))
		}
		h.Record(ctx, time.Since(start).Seconds(), set.(metric.MeasurementOption))
		return resp, err
	}, nil
}
