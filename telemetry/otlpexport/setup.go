// Package otlpexport builds filad's OTLP/gRPC trace and metric pipeline
// from config. Only server (and so cmd/filad) links it: the core packages
// record through the OpenTelemetry API and never see an exporter.
package otlpexport

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	runtimemetrics "go.opentelemetry.io/contrib/instrumentation/runtime"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"

	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/telemetry"
)

// Limits that keep memory bounded while a collector is away.
const (
	// SpanQueueSize bounds the spans waiting for export; beyond it spans are
	// dropped, never buffered without end.
	SpanQueueSize = 4096
	// CardinalityLimit bounds the series per metric instrument; series past it
	// fold into one overflow series.
	CardinalityLimit = 2000
	// ExportTimeoutDefault bounds one export attempt, retries included.
	ExportTimeoutDefault = 10 * time.Second
)

// Handle is a running telemetry pipeline, or a disabled one.
type Handle struct {
	// TracerProvider and MeterProvider are the providers in use: the SDK's
	// when exporting, no-op ones when disabled.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// Enabled is true when exporters were created.
	Enabled bool
	// PrometheusAddr is where /metrics is served, when it is.
	PrometheusAddr net.Addr
	// Series holds the queues' histograms and counters, which every reader
	// exports beside the SDK's instruments; nil when disabled.
	Series   *telemetry.SeriesSet
	shutdown []func(context.Context) error
	flush    []func(context.Context) error
}

// Shutdown flushes what is buffered and stops the exporters, bounded by ctx.
// It is a no-op on a disabled handle.
func (h *Handle) Shutdown(ctx context.Context) error {
	var errs []error
	for _, f := range h.flush {
		errs = append(errs, f(ctx))
	}
	for _, f := range h.shutdown {
		errs = append(errs, f(ctx))
	}
	return errors.Join(errs...)
}

// Disabled returns a handle whose providers are no-ops: the hot path pays
// next to nothing, and nothing is dialled.
func Disabled() *Handle {
	return &Handle{TracerProvider: tracenoop.NewTracerProvider(), MeterProvider: metricnoop.NewMeterProvider()}
}

// SetupOptions are the parts of Setup that tests replace.
type SetupOptions struct {
	// Logger receives the one warning per outage. Defaults to slog.Default().
	Logger *slog.Logger
	// Getenv reads OTEL_SDK_DISABLED; defaults to os.Getenv.
	Getenv func(string) string
	// ExportTimeout bounds one export attempt, retries included. Defaults
	// to ExportTimeoutDefault.
	ExportTimeout time.Duration
	// DataDir is the store's directory: service.instance.id is derived
	// from it (InstanceID). Empty: a random id per process.
	DataDir string
	// NodeID is the cluster node's id (cluster.node_id), put on the
	// resource as fila.node.id, so that every span and series says which
	// node it is from; 0 (a single node) puts none.
	NodeID uint64
}

// Setup builds the OTLP/gRPC pipeline that cfg describes and installs it,
// with the W3C TraceContext and Baggage propagators, as the global
// providers. With cfg nil or OTEL_SDK_DISABLED=true it creates no exporter
// and returns Disabled(). It fails only on a configuration error; a
// collector that is down costs one WARN, and export resumes when it returns.
func Setup(ctx context.Context, cfg *config.Telemetry, opts SetupOptions) (*Handle, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	exportTimeout := cmp.Or(opts.ExportTimeout, ExportTimeoutDefault)
	telemetry.SetPropagators()
	if disabled, _ := strconv.ParseBool(getenv("OTEL_SDK_DISABLED")); cfg == nil || disabled {
		return Disabled(), nil
	}
	res, err := newResource(ctx, cfg.ServiceName, opts.DataDir, opts.NodeID)
	if err != nil {
		return nil, err
	}
	// The SDK reports export failures here too, which the exporters' wrappers
	// have already counted; anything else it reports is for DEBUG.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Debug("opentelemetry", slog.Any("error", err))
	}))
	h := &Handle{Enabled: true, TracerProvider: tracenoop.NewTracerProvider(), Series: telemetry.NewSeriesSet()}
	var readers []sdkmetric.Reader
	var warner *outageWarner
	if cfg.OTLPEndpoint != "" {
		warner = &outageWarner{log: log}
		tp, reader, err := otlpPipeline(ctx, cfg, res, warner, exportTimeout, h.Series)
		if err != nil {
			return nil, err
		}
		h.TracerProvider = tp
		h.flush = append(h.flush, tp.ForceFlush)
		h.shutdown = append(h.shutdown, tp.Shutdown)
		readers = append(readers, reader)
	}
	if cfg.PrometheusListenAddr != "" {
		reader, addr, stop, err := servePrometheus(cfg.PrometheusListenAddr, h.Series)
		if err != nil {
			_ = h.Shutdown(ctx)
			return nil, err
		}
		h.PrometheusAddr = addr
		h.shutdown = append(h.shutdown, stop)
		readers = append(readers, reader)
		log.Info("serving metrics for Prometheus", slog.String("address", "http://"+addr.String()+"/metrics"))
	}
	mp := NewMeterProvider(res, readers...)
	// Shut down first: it collects a last time through the readers, which
	// the Prometheus server's stop (after it) no longer needs.
	h.flush = append(h.flush, mp.ForceFlush)
	h.shutdown = append([]func(context.Context) error{mp.Shutdown}, h.shutdown...)
	h.MeterProvider = mp
	if err := runtimemetrics.Start(runtimemetrics.WithMeterProvider(mp)); err != nil {
		_ = h.Shutdown(ctx)
		return nil, fmt.Errorf("telemetry: go runtime metrics: %w", err)
	}
	if warner != nil {
		if err := warner.register(mp); err != nil {
			_ = h.Shutdown(ctx)
			return nil, err
		}
	}
	otel.SetTracerProvider(h.TracerProvider)
	otel.SetMeterProvider(mp)
	return h, nil
}

// newResource is filad's resource: service.name, service.version, a
// service.instance.id stable across restarts of the same data directory,
// host.name, the SDK's attributes and, on a cluster node (nodeID > 0),
// fila.node.id; OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME, read last,
// win.
func newResource(ctx context.Context, serviceName, dataDir string, nodeID uint64) (*resource.Resource, error) {
	host, _ := os.Hostname()
	attrs := []attribute.KeyValue{semconv.ServiceName(serviceName), semconv.ServiceVersion(telemetry.Version),
		semconv.ServiceInstanceID(InstanceID(host, dataDir))}
	if nodeID > 0 {
		attrs = append(attrs, NodeIDAttr(nodeID))
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attrs...),
		resource.WithHost(),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(), // OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
	)
	if err != nil && res == nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	return res, nil
}

// NodeIDAttr is the fila.node.id resource attribute of a cluster node: an
// int64 (node ids are 1..2^63, config checks it).
func NodeIDAttr(nodeID uint64) attribute.KeyValue {
	return attribute.Int64(telemetry.AttrNodeID, int64(nodeID))
}

// instanceNamespace is the UUIDv5 namespace of filad's instance ids.
var instanceNamespace = uuid.MustParse("6f1a8f52-3c1e-4d0b-9a57-5e0f1d2c7b21")

// InstanceID is service.instance.id for the filad on host whose store is
// dataDir: a UUIDv5 of both, as the semantic conventions suggest, so a
// restart keeps its series (a new id per process left the old instance's
// series in the collector's Prometheus exporter for 5 minutes, doubling
// every summed panel), while two filads on one host, which cannot share a
// data directory, keep theirs apart. An empty dataDir gives a random id.
func InstanceID(host, dataDir string) string {
	if dataDir == "" {
		return uuid.NewString()
	}
	if abs, err := filepath.Abs(dataDir); err == nil {
		dataDir = abs
	}
	return uuid.NewSHA1(instanceNamespace, []byte(host+"\x00"+filepath.Clean(dataDir))).String()
}

// otlpPipeline builds the OTLP/gRPC trace provider and metric reader for
// cfg.OTLPEndpoint; w turns export failures into one WARN per outage.
func otlpPipeline(ctx context.Context, cfg *config.Telemetry, res *resource.Resource, w *outageWarner, exportTimeout time.Duration, series *telemetry.SeriesSet) (*sdktrace.TracerProvider, sdkmetric.Reader, error) {
	ep, err := config.ParseEndpoint(cfg.OTLPEndpoint)
	if err != nil {
		return nil, nil, fmt.Errorf("telemetry: otlp_endpoint: %w", err)
	}
	var creds credentials.TransportCredentials
	if !ep.Insecure {
		creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	}
	retry := otlptracegrpc.RetryConfig{Enabled: true, InitialInterval: min(500*time.Millisecond, exportTimeout/4), MaxInterval: 2 * time.Second, MaxElapsedTime: exportTimeout}
	// gRPC's reconnect backoff grows to 120 s by default: after a long
	// collector outage, exports would resume up to two minutes after the
	// collector is back. Capped at 5 s, they resume within seconds, at the
	// cost of a dial attempt every 5 s while it is away.
	reconnect := grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
		BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second,
	}, MinConnectTimeout: 5 * time.Second})
	traceOpts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(ep.HostPort), otlptracegrpc.WithRetry(retry), otlptracegrpc.WithTimeout(exportTimeout),
		otlptracegrpc.WithDialOption(reconnect)}
	metricOpts := []otlpmetricgrpc.Option{otlpmetricgrpc.WithEndpoint(ep.HostPort), otlpmetricgrpc.WithRetry(otlpmetricgrpc.RetryConfig(retry)), otlpmetricgrpc.WithTimeout(exportTimeout),
		otlpmetricgrpc.WithDialOption(reconnect)}
	if ep.Insecure {
		traceOpts = append(traceOpts, otlptracegrpc.WithInsecure())
		metricOpts = append(metricOpts, otlpmetricgrpc.WithInsecure())
	} else {
		traceOpts = append(traceOpts, otlptracegrpc.WithTLSCredentials(creds))
		metricOpts = append(metricOpts, otlpmetricgrpc.WithTLSCredentials(creds))
	}
	spanExp, err := otlptracegrpc.New(ctx, traceOpts...)
	if err != nil {
		return nil, nil, fmt.Errorf("telemetry: trace exporter: %w", err)
	}
	metricExp, err := otlpmetricgrpc.New(ctx, metricOpts...)
	if err != nil {
		return nil, nil, fmt.Errorf("telemetry: metric exporter: %w", err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.TraceSampleRatio))),
		sdktrace.WithBatcher(&warnSpans{spanExp, w},
			sdktrace.WithMaxQueueSize(SpanQueueSize),
			sdktrace.WithExportTimeout(exportTimeout)),
	)
	reader := sdkmetric.NewPeriodicReader(&warnMetrics{metricExp, w},
		sdkmetric.WithInterval(cfg.MetricsInterval()),
		sdkmetric.WithTimeout(exportTimeout),
		sdkmetric.WithProducer(SeriesProducer(series)))
	return tp, reader, nil
}

// servePrometheus serves /metrics at addr through the OpenTelemetry
// Prometheus exporter, on a registry of its own (no process or Go
// collectors of client_golang: the runtime metrics come through OTel).
func servePrometheus(addr string, series *telemetry.SeriesSet) (sdkmetric.Reader, net.Addr, func(context.Context) error, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithProducer(SeriesProducer(series)))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("telemetry: prometheus_listen_addr: %w", err)
	}
	mux := http.NewServeMux()
	// OpenMetrics when the scraper asks for it (Prometheus does, with
	// exemplar storage on): the text format has no exemplars.
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	return exp, lis.Addr(), srv.Shutdown, nil
}

// NewMeterProvider is the meter provider filad exports from: bounded in
// series per instrument, so a flood of queue names cannot grow it without
// end, and with RPCView.
func NewMeterProvider(res *resource.Resource, readers ...sdkmetric.Reader) *sdkmetric.MeterProvider {
	opts := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithCardinalityLimit(CardinalityLimit), sdkmetric.WithView(RPCView)}
	for _, r := range readers {
		opts = append(opts, sdkmetric.WithReader(r))
	}
	return sdkmetric.NewMeterProvider(opts...)
}

// RPCBuckets are the bucket bounds, in seconds, of otelgrpc's
// rpc.server.call.duration. otelgrpc's own start at 5 ms, and filad answers
// most calls in well under a millisecond: every call would sit in the
// first bucket.
var RPCBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// RPCView gives otelgrpc's call duration RPCBuckets.
var RPCView = sdkmetric.NewView(
	sdkmetric.Instrument{Name: telemetry.RPCDuration.Name, Scope: instrumentation.Scope{Name: otelgrpc.ScopeName}},
	sdkmetric.Stream{Aggregation: sdkmetric.AggregationExplicitBucketHistogram{Boundaries: RPCBuckets}},
)

// outageWarner logs one WARN when exports start failing and one INFO when
// an export succeeds again, instead of one line per failed export. A
// failure soon after recovering (a trace batch that was already in flight
// when the collector came back, say) is the same outage ending: it is
// logged at DEBUG only.
type outageWarner struct {
	log *slog.Logger
	// failures counts failed exports per signal (traces, metrics), for
	// fila.telemetry.export.failures: an alert can see what the WARN says.
	failures   [2]atomic.Int64
	mu         sync.Mutex
	down       bool      // the latest export failed
	warned     bool      // this outage got its WARN
	lastResume time.Time // when exports last recovered
}

// outageGrace is how soon after recovering a failure is not a new outage.
const outageGrace = 30 * time.Second

func (w *outageWarner) result(signal string, err error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.failures[signalIndex(signal)].Add(1)
		w.log.Debug("telemetry export failed", slog.String("signal", signal), slog.Any("error", err))
		if !w.down {
			w.down = true
			w.warned = w.lastResume.IsZero() || time.Since(w.lastResume) > outageGrace
			if w.warned {
				w.log.Warn("telemetry export failing; filad serves on and keeps retrying", slog.String("signal", signal), slog.Any("error", err))
			}
		}
		return err
	}
	if w.down {
		w.down = false
		w.lastResume = time.Now()
		if w.warned {
			w.log.Info("telemetry export resumed")
		}
	}
	return nil
}

// exportSignals are the signals fila.telemetry.export.failures counts.
var exportSignals = [2]string{"traces", "metrics"}

func signalIndex(signal string) int {
	if signal == exportSignals[1] {
		return 1
	}
	return 0
}

// register creates fila.telemetry.export.failures on mp.
func (w *outageWarner) register(mp metric.MeterProvider) error {
	spec := telemetry.ExportFailures
	m := mp.Meter(telemetry.ScopeName, metric.WithInstrumentationVersion(telemetry.Version))
	c, err := m.Int64ObservableCounter(spec.Name, metric.WithUnit(spec.Unit), metric.WithDescription(spec.Description))
	if err != nil {
		return fmt.Errorf("telemetry: %s: %w", spec.Name, err)
	}
	var sets [2]metric.ObserveOption
	for i, s := range exportSignals {
		sets[i] = metric.WithAttributes(attribute.String("signal", s))
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for i := range exportSignals {
			o.ObserveInt64(c, w.failures[i].Load(), sets[i])
		}
		return nil
	}, c)
	return err
}

type warnSpans struct {
	sdktrace.SpanExporter
	w *outageWarner
}

func (e *warnSpans) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	return e.w.result("traces", e.SpanExporter.ExportSpans(ctx, spans))
}

type warnMetrics struct {
	sdkmetric.Exporter
	w *outageWarner
}

func (e *warnMetrics) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	return e.w.result("metrics", e.Exporter.Export(ctx, rm))
}
