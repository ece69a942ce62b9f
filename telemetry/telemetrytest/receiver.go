package telemetrytest

import (
	"context"
	"net"
	"sync"
	"testing"

	collmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	colltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
)

// Receiver is an in-process OTLP/gRPC collector: it implements the official
// MetricsService and TraceService and keeps what it is sent.
type Receiver struct {
	collmetrics.UnimplementedMetricsServiceServer

	lis  net.Listener
	srv  *grpc.Server
	done chan struct{}

	mu      sync.Mutex
	metrics []*metricspb.ResourceMetrics
	spans   []*tracepb.ResourceSpans
	exports int
}

// NewReceiver starts a receiver on 127.0.0.1:0, stopped when the test ends.
func NewReceiver(t testing.TB) *Receiver {
	t.Helper()
	r, err := StartReceiver("127.0.0.1:0")
	if err != nil {
		t.Fatalf("receiver: %v", err)
	}
	t.Cleanup(r.Stop)
	return r
}

// StartReceiver starts a receiver on addr; the caller stops it. Benchmarks
// and outage tests use it directly (a stopped receiver can be started again
// on the same address).
func StartReceiver(addr string) (*Receiver, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	r := &Receiver{lis: lis, srv: grpc.NewServer(), done: make(chan struct{})}
	collmetrics.RegisterMetricsServiceServer(r.srv, r)
	colltrace.RegisterTraceServiceServer(r.srv, traceService{r: r})
	go func() {
		defer close(r.done)
		_ = r.srv.Serve(lis)
	}()
	return r, nil
}

// Addr is the receiver's host:port.
func (r *Receiver) Addr() string { return r.lis.Addr().String() }

// Stop stops the receiver; it is safe to call twice.
func (r *Receiver) Stop() {
	r.srv.Stop()
	<-r.done
}

// Export implements the MetricsService.
func (r *Receiver) Export(_ context.Context, req *collmetrics.ExportMetricsServiceRequest) (*collmetrics.ExportMetricsServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.metrics = append(r.metrics, req.GetResourceMetrics()...)
	r.exports++
	return &collmetrics.ExportMetricsServiceResponse{}, nil
}

// traceService adapts the TraceService's Export, whose name collides with
// the MetricsService's.
type traceService struct {
	colltrace.UnimplementedTraceServiceServer
	r *Receiver
}

func (t traceService) Export(_ context.Context, req *colltrace.ExportTraceServiceRequest) (*colltrace.ExportTraceServiceResponse, error) {
	t.r.mu.Lock()
	defer t.r.mu.Unlock()
	t.r.spans = append(t.r.spans, req.GetResourceSpans()...)
	t.r.exports++
	return &colltrace.ExportTraceServiceResponse{}, nil
}

// Metrics returns every ResourceMetrics received so far.
func (r *Receiver) Metrics() []*metricspb.ResourceMetrics {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*metricspb.ResourceMetrics(nil), r.metrics...)
}

// Spans returns every span received so far.
func (r *Receiver) Spans() []*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*tracepb.Span
	for _, rs := range r.spans {
		for _, ss := range rs.GetScopeSpans() {
			out = append(out, ss.GetSpans()...)
		}
	}
	return out
}

// ResourceSpans returns every ResourceSpans received so far.
func (r *Receiver) ResourceSpans() []*tracepb.ResourceSpans {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*tracepb.ResourceSpans(nil), r.spans...)
}

// LatestInt returns the value of the most recent data point of metric name
// whose attribute queue_id is queue, and whether there was one.
func (r *Receiver) LatestInt(name, queue string) (int64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var v int64
	found := false
	for _, rm := range r.metrics {
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				if m.GetName() != name {
					continue
				}
				points := m.GetSum().GetDataPoints()
				if g := m.GetGauge(); g != nil {
					points = g.GetDataPoints()
				}
				for _, p := range points {
					for _, kv := range p.GetAttributes() {
						if kv.GetKey() == "queue_id" && kv.GetValue().GetStringValue() == queue {
							v, found = p.GetAsInt(), true
						}
					}
				}
			}
		}
	}
	return v, found
}
