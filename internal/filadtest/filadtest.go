// Package filadtest starts filad in-process for tests: a real gRPC server
// on loopback and a real badger directory, stopped when the test ends.
//
// Start gives one broker. A cluster harness (StartCluster(t, n)) is meant to
// sit beside it: it would fill one Options per node and hold the Brokers,
// stopping and restarting each one on its own directory and address.
package filadtest

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fila-dev/filad/config"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/server"
)

// Config is the configuration an in-process filad starts from: the
// defaults, listening on 127.0.0.1:0 (a free port), storing in dataDir,
// with a 1 MiB disk reserve. It needs no *testing.T, so that programs
// (filabench) start filad the way the tests do.
func Config(dataDir string) config.Config {
	cfg := config.Defaults()
	cfg.Server.ListenAddr = "127.0.0.1:0"
	cfg.Storage.DataDir = dataDir
	// The reserve is a file of that size allocated in the data directory
	// (server/reserve.go). The default, 128 MiB, per broker and with tests
	// run in parallel, fills a CI disk; 1 MiB still exercises it.
	cfg.Limits.DiskReserveBytes = 1 << 20
	return cfg
}

// Serve starts filad with cfg and opts, logging nowhere unless
// opts.Logger is set. It is server.Start for callers without a
// *testing.T; the caller shuts the server down.
func Serve(ctx context.Context, cfg config.Config, opts server.Options) (*server.Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return server.Start(ctx, cfg, opts)
}

// Options says how Start configures a broker. The zero value is a broker
// with the defaults of Config on a fresh t.TempDir().
type Options struct {
	// Config, when set, changes the configuration after Config's defaults
	// are applied (and after DataDir is set).
	Config func(*config.Config)
	// Server is passed to server.Start; its Logger defaults to one that
	// discards. A Listener is used for the first start only: Restart
	// listens again on the address it had.
	Server server.Options
	// DataDir is badger's directory. Defaults to a new t.TempDir(); set it
	// to start on a directory another broker used.
	DataDir string
}

// Broker is one filad started by Start. Its fields are what the broker
// was started with and are not changed by the caller; Server changes on
// Restart.
type Broker struct {
	// Server is the running filad.
	Server *server.Server
	// Config is the configuration it runs with, defaults filled in.
	Config config.Config
	// Conn is a plaintext connection without credentials to Addr, made
	// lazily (a broker serving TLS or requiring a key refuses its calls,
	// but does not notice it). It survives Restart, reconnecting.
	Conn *grpc.ClientConn
	// Service and Admin are clients on Conn.
	Service filav1.FilaServiceClient
	Admin   filav1.FilaAdminClient

	opts Options
}

// Start starts filad with opts and stops it when t's test ends, failing
// the test if the start or the stop fails.
func Start(t testing.TB, opts Options) *Broker {
	t.Helper()
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	cfg := Config(opts.DataDir)
	if opts.Config != nil {
		opts.Config(&cfg)
	}
	b := &Broker{Config: cfg, opts: opts}
	b.start(t, opts.Server)
	// Registered before the connection's cleanup, so it runs after it:
	// the client goes first, as a real one would.
	t.Cleanup(func() {
		if err := b.Server.Shutdown(context.Background()); err != nil {
			t.Errorf("filadtest: shutdown: %v", err)
		}
	})
	conn, err := grpc.NewClient(b.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("filadtest: dial %s: %v", b.Addr(), err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	b.Conn, b.Service, b.Admin = conn, filav1.NewFilaServiceClient(conn), filav1.NewFilaAdminClient(conn)
	// The address actually served, so that Restart comes back on it.
	b.Config.Server.ListenAddr = b.Addr()
	return b
}

func (b *Broker) start(t testing.TB, opts server.Options) {
	t.Helper()
	srv, err := Serve(context.Background(), b.Config, opts)
	if err != nil {
		t.Fatalf("filadtest: start filad on %s: %v", b.Config.Storage.DataDir, err)
	}
	b.Server = srv
}

// Addr is the host:port filad serves.
func (b *Broker) Addr() string { return b.Server.Addr().String() }

// DataDir is badger's directory: it outlives Stop and Restart.
func (b *Broker) DataDir() string { return b.Config.Storage.DataDir }

// Stop shuts filad down gracefully and fails t if that fails. Stopping a
// stopped broker does nothing.
func (b *Broker) Stop(t testing.TB) {
	t.Helper()
	if err := b.Server.Shutdown(context.Background()); err != nil {
		t.Fatalf("filadtest: shutdown: %v", err)
	}
}

// Restart stops filad, if it is running, and starts it again on the same
// data directory, address and configuration, as a restarted process
// would. Conn, Service and Admin reconnect to it.
func (b *Broker) Restart(t testing.TB) {
	t.Helper()
	b.Stop(t)
	opts := b.opts.Server
	opts.Listener = nil // closed by the shutdown; listen on the address again
	b.start(t, opts)
}
