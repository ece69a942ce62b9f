// Package server assembles filad from its parts (storage, telemetry, the
// actor tree and the gRPC gateway) and takes them down again in the order
// SPEC §3 fixes. cmd/filad is a thin main around it, and the end-to-end tests
// start it in-process on 127.0.0.1:0.
package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/fila-dev/filad/actors"
	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/gateway"
	"github.com/fila-dev/filad/scripting"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry"
	"github.com/fila-dev/filad/telemetry/otlpexport"
)

// Options are what an embedding program or a test supplies beyond Config.
type Options struct {
	// Logger defaults to slog.Default(). Records logged with a traced
	// context get trace_id and span_id added.
	Logger *slog.Logger
	// ExportTimeout bounds one telemetry export attempt, retries included;
	// see otlpexport.SetupOptions.
	ExportTimeout time.Duration
	// TracerProvider and MeterProvider, when both set, replace the pipeline
	// Config.Telemetry would build (the test harness injects its own here).
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// Listener, when set, is served instead of listening on
	// Config.Server.ListenAddr.
	Listener net.Listener
	// InternalListener, when set, is the cluster's internal port instead
	// of listening on Config.Cluster.InternalListenAddr (which the
	// members line must still name): a harness that picks the members'
	// ports first keeps them, so no other process can take one meanwhile.
	InternalListener net.Listener
	// Store, when set, is used instead of opening badger in
	// Config.Storage.DataDir (which is then not read). It stays the
	// caller's to close, after Shutdown.
	Store storage.Store
	// LeaderRefresh is how often a cluster node asks a member who leads
	// each partition it holds no replica of (cluster.DefaultLeaderRefresh
	// when 0). A test sets it long to see a forward find the leader alone.
	LeaderRefresh time.Duration
	// Owned, when set, is called once the data directory is this filad's
	// (its store is open, which locks it) and before it serves: the place
	// for what must exist by the time a client or an operator sees it
	// serving, such as the pid file.
	Owned func()
}

// Server is a running filad.
type Server struct {
	cfg       config.Config
	log       *slog.Logger
	store     storage.Store
	ownStore  bool         // opened here, so closed here
	node      *clusterNode // with [cluster] enabled: the replica under store
	telemetry *otlpexport.Handle
	system    *actors.System
	gateway   *gateway.Server
	grpc      *grpc.Server
	alarms    *gateway.Alarms
	monitor   *resourceMonitor
	tls       *tlsFiles // nil: plaintext
	lis       net.Listener
	served    chan error
	serving   bool // Start got as far as serving
	// profiling serves the runtime profiles (profiling.go); nil when off.
	profiling     *http.Server
	profilingAddr net.Addr

	stopOnce sync.Once
	stopErr  error
}

// Start opens storage, recovers every queue, and serves gRPC. On error,
// whatever had started is stopped again. The steps run in this order
// because each needs the ones before it: telemetry's providers feed
// storage's and the actors' instruments, the actors recover from the
// store, the gateway calls the actors, and serving comes last. Shutdown
// takes them down in reverse (teardown).
func Start(ctx context.Context, cfg config.Config, opts Options) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Records logged inside a traced operation carry trace_id and span_id.
	log := slog.New(telemetry.LogHandler{Handler: cmp.Or(opts.Logger, slog.Default()).Handler()})
	s := &Server{cfg: cfg, log: log, served: make(chan error, 1)}
	if cfg.Auth.WeakBootstrapKey() {
		s.log.Warn(fmt.Sprintf("auth.bootstrap_key is shorter than %d characters: easier to guess; replace it with real keys soon", config.GoodBootstrapKeyLen))
	}
	defer func() {
		if err != nil {
			s.teardown(context.Background())
		}
	}()

	s.startTelemetry(ctx, opts)
	if err = s.startProfiling(); err != nil {
		return nil, err
	}
	if cfg.Server.TLS.Enabled() {
		peerCA, members, join := "", map[uint64]string(nil), []string(nil)
		if cfg.Cluster.Enabled {
			ms, _ := cfg.Cluster.ParseMembers() // valid: cfg.Validate checked it
			peerCA, members, join = cfg.Cluster.TLSCAFile, internalAddrs(ms), cfg.Cluster.JoinAddrs()
			if len(join) > 0 {
				members = map[uint64]string{cfg.Cluster.NodeID: cfg.Cluster.InternalListenAddr}
			}
		}
		if s.tls, err = loadTLS(cfg.Server.TLS, peerCA, members, join...); err != nil {
			return nil, err
		}
	}
	reserve, err := s.openStorage(ctx, opts)
	if err != nil {
		return nil, err
	}
	if opts.Owned != nil {
		opts.Owned()
	}
	if err = s.startActors(opts); err != nil {
		return nil, err
	}
	if err = s.startResources(reserve); err != nil {
		return nil, err
	}
	authz, err := s.startGateway()
	if err != nil {
		return nil, err
	}
	if err = s.newGRPC(authz); err != nil {
		return nil, err
	}
	if err = s.serve(opts); err != nil {
		return nil, err
	}
	if s.node != nil {
		s.node.register(cmp.Or(cfg.Cluster.AdvertiseClientAddr, s.lis.Addr().String()), s.log)
	}
	s.log.Info("filad serving", slog.String("listen_addr", s.lis.Addr().String()),
		slog.String("data_dir", cfg.Storage.DataDir), slog.Bool("sync_writes", cfg.Storage.SyncWrites),
		slog.Bool("telemetry", s.telemetry.Enabled), slog.Bool("tls", s.tls != nil), slog.Bool("auth", authz != nil))
	return s, nil
}

// startTelemetry sets s.telemetry: the caller's providers, the pipeline
// Config.Telemetry describes, or, when that cannot be set up, none. A
// telemetry set-up error never stops the broker.
func (s *Server) startTelemetry(ctx context.Context, opts Options) {
	if opts.TracerProvider != nil && opts.MeterProvider != nil {
		telemetry.SetPropagators()
		s.telemetry = &otlpexport.Handle{TracerProvider: opts.TracerProvider, MeterProvider: opts.MeterProvider}
		return
	}
	var err error
	setup := otlpexport.SetupOptions{Logger: s.log, ExportTimeout: opts.ExportTimeout, DataDir: s.cfg.Storage.DataDir}
	if s.cfg.Cluster.Enabled {
		setup.NodeID = s.cfg.Cluster.NodeID
	}
	if s.telemetry, err = otlpexport.Setup(ctx, s.cfg.Telemetry, setup); err != nil {
		s.log.Warn("telemetry disabled: set-up failed", slog.Any("error", err))
		s.telemetry = otlpexport.Disabled()
	}
}

// openStorage sets s.store: the caller's, or badger opened in the data
// directory behind its disk reserve, which it returns (nil with the
// caller's store).
func (s *Server) openStorage(ctx context.Context, opts Options) (*diskReserve, error) {
	if s.store = opts.Store; s.store != nil {
		return nil, nil
	}
	reserve, err := openDiskReserve(s.cfg.Storage.DataDir, s.cfg.Limits.DiskReserveBytes)
	if err != nil {
		return nil, err
	}
	if s.cfg.Cluster.Enabled {
		if s.node, err = openCluster(ctx, s.cfg, opts, s.tls, s.telemetry, s.log); err != nil {
			return reserve, err
		}
		s.store, s.ownStore = s.node.replica.Store, true
		return reserve, nil
	}
	if err := refuseClusterDir(s.cfg.Storage.DataDir); err != nil {
		return reserve, err
	}
	commitItems, err := telemetry.NewCommitItems(s.telemetry.MeterProvider)
	if err != nil {
		return reserve, err
	}
	if s.store, err = storage.Open(storage.Options{Dir: s.cfg.Storage.DataDir, SyncWrites: s.cfg.Storage.SyncWrites, Logger: s.log,
		OnCommit: commitItems}); err != nil {
		return reserve, err
	}
	s.ownStore = true
	return reserve, nil
}

// startActors starts the actor system on s.store, which recovers every
// queue, with the instruments it records into.
func (s *Server) startActors(opts Options) (err error) {
	cfg := s.cfg
	board := &telemetry.Board{}
	if _, err = telemetry.RegisterInstruments(s.telemetry.MeterProvider, board); err != nil {
		return err
	}
	var placement actors.Placement // nil: every queue here
	if s.node != nil {
		placement = s.node.placement
	}
	if s.system, err = actors.Start(actors.Options{
		Store:          s.store,
		Placement:      placement,
		Quantum:        int64(cfg.Scheduler.Quantum),
		RequestTimeout: cfg.Server.RequestTimeout(),
		DefaultQueue: actors.QueueConfig{
			VisibilityTimeout: cfg.Queues.DefaultVisibilityTimeout(),
			FairnessKeyHeader: cfg.Queues.DefaultFairnessKeyHeader,
		},
		Board:             board,
		FairnessKeys:      fairnessKeys(cfg, opts),
		MessageCacheBytes: int64(cfg.Storage.MessageCacheMiB) << 20,
		ConfigStore: actors.RuntimeConfigLimits{
			MaxKeys: cfg.Limits.MaxConfigKeys, MaxBytes: cfg.Limits.MaxConfigBytes, MaxAPIKeys: cfg.Limits.MaxAPIKeys,
		},
		Lua: scripting.Limits{
			Timeout:          time.Duration(cfg.Lua.DefaultTimeoutMS) * time.Millisecond,
			MemoryBytes:      cfg.Lua.DefaultMemoryLimitBytes,
			BreakerThreshold: cfg.Lua.CircuitBreakerThreshold,
			BreakerCooldown:  time.Duration(cfg.Lua.CircuitBreakerCooldownMS) * time.Millisecond,
		},
		TracerProvider: s.telemetry.TracerProvider,
		MeterProvider:  s.telemetry.MeterProvider,
		Series:         s.telemetry.Series,
		Logger:         s.log,
	}); err != nil {
		return err
	}
	if s.node != nil {
		s.node.attach(s.system)
	}
	_, err = telemetry.RegisterThrottleTokens(s.telemetry.MeterProvider, func() map[string]float64 {
		out := map[string]float64{}
		for _, st := range s.system.Throttles().Stats(time.Now()) {
			out[st.Key] = st.Tokens
		}
		return out
	})
	return err
}

// startResources starts watching the process and the disk: their gauges,
// and the resource monitor that raises the alarms the gateway refuses
// writes on. reserve is the disk reserve the monitor gives up when the
// disk fills (nil: none).
func (s *Server) startResources(reserve *diskReserve) (err error) {
	if _, err = telemetry.RegisterProcess(s.telemetry.MeterProvider, readProcess); err != nil {
		return err
	}
	if s.ownStore {
		skip := ""
		if reserve != nil {
			skip = reserve.path
		}
		if _, err = telemetry.RegisterStorage(s.telemetry.MeterProvider, s.cfg.Limits.MinFreeDiskBytes, func() telemetry.StorageReading {
			return readStorage(s.cfg.Storage.DataDir, skip)
		}); err != nil {
			return err
		}
	}
	s.alarms = &gateway.Alarms{}
	s.monitor = startResourceMonitor(s.cfg, s.alarms, reserve, s.log)
	_, err = telemetry.RegisterAlarms(s.telemetry.MeterProvider, gateway.AlarmNames[:], func(i int) bool {
		return s.alarms.Raised(gateway.Alarm(i))
	})
	return err
}

// startGateway makes s.gateway, the fila.v1 services over the actors, and
// returns the authorizer its calls go through (nil when auth is off).
func (s *Server) startGateway() (authz *gateway.Authorizer, err error) {
	cfg := s.cfg
	if cfg.Auth.Required(config.IsLoopback(cfg.Server.ListenAddr)) {
		if authz, err = gateway.NewAuthorizer(s.system, gateway.AuthOptions{
			Bootstrap: cfg.Auth.BootstrapKey, EndUser: cfg.Auth.EndUserID, MeterProvider: s.telemetry.MeterProvider, Logger: s.log,
		}); err != nil {
			return nil, err
		}
	}
	var peers gateway.Peers // nil: no proxy, a single node
	var leaders gateway.Leaders
	if s.node != nil {
		peers, leaders = s.node.peers, s.node.placement
	}
	s.gateway, err = gateway.New(gateway.Options{
		Peers:              peers,
		Leaders:            leaders,
		NodeID:             cfg.Cluster.NodeID,
		OnForward:          s.ClusterMetrics().Forwarded,
		ForwardTimeout:     cfg.Server.RequestTimeout(),
		TracerProvider:     s.telemetry.TracerProvider,
		Auth:               authz,
		Alarms:             s.alarms,
		System:             s.system,
		MaxMessageBytes:    cfg.Server.MaxMessageBytes,
		MaxMailbox:         int64(cfg.Server.MaxQueueMailbox),
		DefaultMaxInFlight: cfg.Server.DefaultMaxInFlight,
		MaxBatchItems:      cfg.Server.MaxBatchItems,
		MaxBatchBytes:      cfg.Server.MaxBatchBytes,
		Backup:             backupOf(s.store),
		Cluster:            s.clusterView(),
		Logger:             s.log,
	})
	if err == nil && s.node != nil {
		s.node.internal.Bind(s.gateway)
	}
	return authz, err
}

// clusterView is the gateway's view of the cluster: nil on a single node.
func (s *Server) clusterView() gateway.ClusterView {
	if s.node == nil {
		return nil
	}
	return clusterStatus{Placement: s.node.placement, replica: s.node.replica, self: s.cfg.Cluster.NodeID, nodes: s.node.replica.Nodes,
		driver: s.node.replica.Driver, partitions: s.cfg.Cluster.Partitions,
		tick: s.cfg.Cluster.Tick(), electionTicks: s.cfg.Cluster.ElectionTicks}
}

// ClusterMetrics are the cluster node's instruments (fila.raft.*,
// fila.cluster.*): the proxy counts its forwarded calls there
// (ClusterMetrics.Forwarded). nil on a single node; a nil *ClusterMetrics
// records nothing.
func (s *Server) ClusterMetrics() *telemetry.ClusterMetrics {
	if s.node == nil {
		return nil
	}
	return s.node.metrics
}

// newGRPC makes s.grpc, the transport (TLS when configured, authz's
// interceptors when set, filad's limits) with the gateway registered on
// it. It serves nothing yet.
func (s *Server) newGRPC(authz *gateway.Authorizer) (err error) {
	cfg := s.cfg
	transport := []grpc.ServerOption{}
	if s.tls != nil {
		transport = append(transport, grpc.Creds(credentials.NewTLS(s.tls.serverConfig())))
	} else if !config.IsLoopback(cfg.Server.ListenAddr) {
		s.log.Warn("serving plaintext on a non-loopback address: anyone who reaches it can read and change every queue; set [server.tls] (docs/security.md)",
			slog.String("listen_addr", cfg.Server.ListenAddr))
	}
	if authz != nil {
		transport = append(transport, grpc.ChainUnaryInterceptor(authz.Unary), grpc.ChainStreamInterceptor(authz.Stream))
	}
	if s.node != nil {
		// After the authorizer: a forwarded call carries its key.
		transport = append(transport, grpc.ChainUnaryInterceptor(s.gateway.ProxyUnary))
	}
	s.grpc = grpc.NewServer(append(append(gateway.ServerOptions(), transport...),
		// otelgrpc's spans and its rpc.server.call.duration, with the
		// same attributes (rpc.system.name, the full rpc.method,
		// rpc.response.status_code), so metrics and spans join; its
		// buckets are filad's (telemetry.RPCBuckets, a view).
		grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(s.telemetry.TracerProvider),
			otelgrpc.WithMeterProvider(s.telemetry.MeterProvider),
			otelgrpc.WithPropagators(otel.GetTextMapPropagator()),
			// Probes and tooling, not traffic: no spans.
			otelgrpc.WithFilter(filters.None(filters.HealthCheck(), filters.ServicePrefix("grpc.reflection."))),
		)),
		grpc.MaxRecvMsgSize(RecvLimit(cfg.Server)),
		// Metadata is buffered whole before any handler runs: bound it.
		grpc.MaxHeaderListSize(uint32(cfg.Server.MaxHeaderListBytes)),
		// grpc's default is 120 s, and GracefulStop waits for connections
		// still in their handshake: an idle TCP connection held SIGTERM up
		// for two minutes.
		grpc.ConnectionTimeout(min(cfg.Server.HandshakeTimeout(), max(cfg.Server.ShutdownTimeout(), time.Second))),
		grpc.MaxConcurrentStreams(uint32(cfg.Server.MaxStreamsPerConn)),
		// Long-lived workers keep their grown stacks; a goroutine per call
		// would grow (copy) its stack on every RPC.
		grpc.NumStreamWorkers(uint32(4*runtime.GOMAXPROCS(0))),
		// Clients may keep idle connections alive, but not ping faster than this.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             time.Duration(cfg.Server.KeepaliveMinTimeMS) * time.Millisecond,
			PermitWithoutStream: true,
		}),
	)...)
	s.gateway.Register(s.grpc)
	return nil
}

// serve listens (or takes the caller's listener) and serves s.grpc on it
// in the background; Served reports its end.
func (s *Server) serve(opts Options) error {
	if s.lis = opts.Listener; s.lis == nil {
		var err error
		if s.lis, err = net.Listen("tcp", s.cfg.Server.ListenAddr); err != nil {
			return fmt.Errorf("server: listen %s: %w", s.cfg.Server.ListenAddr, err)
		}
	}
	go func() { s.served <- s.grpc.Serve(s.lis) }()
	s.serving = true
	return nil
}

// RecvLimit is the largest request the gRPC transport reads: the largest
// single message (payload and headers) or batch, plus as much again as the
// larger limit (at least 8 MiB), so that an oversized payload or batch is
// refused by filad's own check, INVALID_ARGUMENT naming the setting, and
// only a request past this limit gets grpc's RESOURCE_EXHAUSTED.
func RecvLimit(s config.Server) int {
	headers := gateway.MaxHeaders * (gateway.MaxHeaderKeyBytes + gateway.MaxHeaderValueBytes)
	largest := max(s.MaxMessageBytes+headers, s.MaxBatchBytes)
	return largest + max(largest, 8<<20)
}

// fairnessKeys is the per-queue cap of per-fairness-key series: the
// config's when telemetry is on, the default when the caller brings its own
// providers, 0 (off) when nothing is exported.
func fairnessKeys(cfg config.Config, opts Options) int {
	switch {
	case cfg.Telemetry != nil:
		return cfg.Telemetry.FairnessKeys
	case opts.MeterProvider != nil:
		return config.TelemetryDefaults().FairnessKeys
	}
	return 0
}

// ReloadTLS reads the TLS certificate, key and client CAs again: new
// handshakes use them, open connections keep what they had. On an error
// (a file missing or bad) the old ones stay in use. Without [server.tls]
// it does nothing.
func (s *Server) ReloadTLS() error {
	if s.tls == nil {
		return nil
	}
	return s.tls.reload()
}

// PrometheusAddr is where /metrics is served for Prometheus, or nil when
// telemetry.prometheus_listen_addr is not set.
func (s *Server) PrometheusAddr() net.Addr { return s.telemetry.PrometheusAddr }

// Forwarded counts the calls this node forwarded to the leader of what
// they needed (a cluster's proxy); it stays 0 on a single node.
func (s *Server) Forwarded() *gateway.ForwardCounter { return s.gateway.Forwarded() }

// Addr is the address being served.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// Served reports the gRPC server's exit; it fires only if serving fails.
func (s *Server) Served() <-chan error { return s.served }

// Shutdown stops filad gracefully: stop accepting, end lease streams with
// UNAVAILABLE, let unary calls finish (bounded by server.shutdown_timeout_ms),
// stop the actors, flush telemetry, close badger. It is safe to call twice.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() { s.stopErr = s.teardown(ctx) })
	return s.stopErr
}

func (s *Server) teardown(ctx context.Context) error {
	var errs []error
	if s.node != nil {
		s.node.handOff(ctx, s.log)
	}
	if s.grpc != nil {
		s.gateway.BeginShutdown(ctx)
		done := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(s.cfg.Server.ShutdownTimeout()):
			s.log.Warn("shutdown timeout passed; cancelling calls in flight")
			s.grpc.Stop()
			<-done
		}
	}
	if s.gateway != nil {
		s.gateway.Close()
	}
	if s.monitor != nil {
		s.monitor.close()
	}
	if s.node != nil {
		s.node.system.Store(nil) // the driver tells a stopping broker nothing more
	}
	if s.system != nil {
		s.system.Stop()
	}
	if s.telemetry != nil {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := s.telemetry.Shutdown(tctx); err != nil {
			// Not a failure of the broker: what was buffered is lost, nothing else.
			s.log.Info("telemetry not fully flushed at shutdown", slog.Any("error", err))
		}
		cancel()
	}
	if s.profiling != nil {
		_ = s.profiling.Close() // a profile being taken ends with it
	}
	if s.store != nil && s.ownStore {
		errs = append(errs, s.store.Close())
	}
	if s.node != nil {
		errs = append(errs, s.node.close())
	}
	if s.serving {
		// A start that failed never served: its error says why, and
		// "stopped" would suggest it had been running.
		s.log.Info("filad stopped")
	}
	return errors.Join(errs...)
}

// backupOf is store's Backup, if it has one (the badger store does; a
// test's in-memory store does not).
func backupOf(store storage.Store) func(io.Writer) error {
	if b, ok := store.(interface{ Backup(io.Writer) error }); ok {
		return b.Backup
	}
	return nil
}
