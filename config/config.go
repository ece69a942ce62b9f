// Package config loads filad's configuration: defaults, then fila.toml, then
// FILA_<SECTION>__<KEY> environment variables, each overriding the one
// before. Unknown keys and invalid values are errors that name the key.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/toml/v2"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/structs"
	"github.com/knadh/koanf/v2"
)

// Config is filad's whole configuration.
type Config struct {
	Server    Server    `koanf:"server"`
	Storage   Storage   `koanf:"storage"`
	Scheduler Scheduler `koanf:"scheduler"`
	// Telemetry is nil when the [telemetry] section is absent: then no
	// exporter is created and no connection is attempted.
	Telemetry *Telemetry `koanf:"telemetry"`
}

// Server configures the gRPC listener and request limits.
type Server struct {
	// ListenAddr is the gRPC address. Defaults to "127.0.0.1:5555".
	ListenAddr string `koanf:"listen_addr"`
	// MaxMessageBytes is the largest payload Enqueue accepts. Defaults to 1 MiB.
	MaxMessageBytes int `koanf:"max_message_bytes"`
	// ShutdownTimeoutMS bounds how long unary calls in flight may take to
	// finish on shutdown. Defaults to 10000.
	ShutdownTimeoutMS int `koanf:"shutdown_timeout_ms"`
	// MaxStreamsPerConn bounds the concurrent calls (lease streams included)
	// on one client connection; more wait for a free slot. Defaults to 1000.
	MaxStreamsPerConn int `koanf:"max_streams_per_conn"`
	// MaxQueueMailbox is the backlog of requests a queue actor may have
	// before Enqueue is refused with RESOURCE_EXHAUSTED. Defaults to 100000.
	MaxQueueMailbox int `koanf:"max_queue_mailbox"`
	// KeepaliveMinTimeMS is the shortest interval between client keepalive
	// pings the server tolerates; a client pinging faster is disconnected
	// (GOAWAY too_many_pings). Defaults to 10000.
	KeepaliveMinTimeMS int `koanf:"keepalive_min_time_ms"`
}

// Storage configures badger.
type Storage struct {
	// DataDir is badger's directory. Defaults to "data".
	DataDir string `koanf:"data_dir"`
	// SyncWrites fsyncs each group commit before Enqueue, Ack and Nack
	// reply. With false, an answered write survives a crash of filad but not
	// of the machine. Defaults to true.
	SyncWrites bool `koanf:"sync_writes"`
}

// Scheduler configures DRR.
type Scheduler struct {
	// Quantum is the DRR credit per unit of weight per round, in messages.
	// Defaults to 1.
	Quantum int `koanf:"quantum"`
}

// Telemetry configures OpenTelemetry export.
type Telemetry struct {
	// OTLPEndpoint is the collector: "http://host:4317" (plaintext),
	// "https://host:4317" (TLS) or "host:4317" (plaintext). Defaults to
	// "http://localhost:4317".
	OTLPEndpoint string `koanf:"otlp_endpoint"`
	// ServiceName is the service.name resource attribute. Defaults to "fila".
	ServiceName string `koanf:"service_name"`
	// MetricsIntervalMS is the metric export period. Defaults to 10000.
	MetricsIntervalMS int `koanf:"metrics_interval_ms"`
	// TraceSampleRatio samples requests that arrive without a trace; a
	// sampled incoming traceparent is always honoured. Defaults to
	// TraceSampleRatioDefault.
	TraceSampleRatio float64 `koanf:"trace_sample_ratio"`
}

// ShutdownTimeout is ShutdownTimeoutMS as a duration.
func (s Server) ShutdownTimeout() time.Duration {
	return time.Duration(s.ShutdownTimeoutMS) * time.Millisecond
}

// MetricsInterval is MetricsIntervalMS as a duration.
func (t Telemetry) MetricsInterval() time.Duration {
	return time.Duration(t.MetricsIntervalMS) * time.Millisecond
}

// Defaults returns the configuration used when nothing is set.
func Defaults() Config {
	return Config{
		Server: Server{
			ListenAddr: "127.0.0.1:5555", MaxMessageBytes: 1 << 20, ShutdownTimeoutMS: 10000,
			MaxStreamsPerConn: 1000, MaxQueueMailbox: 100_000, KeepaliveMinTimeMS: 10_000,
		},
		Storage:   Storage{DataDir: "data", SyncWrites: true},
		Scheduler: Scheduler{Quantum: 1},
	}
}

// TraceSampleRatioDefault samples 1% of the requests that arrive without a
// trace. Tracing every message costs about a third of lifecycle throughput
// (see the README's benchmark), far over the 3% budget; producers that
// trace still get every one of their traces, because a sampled incoming
// traceparent is always honoured.
const TraceSampleRatioDefault = 0.01

// TelemetryDefaults are the values of keys missing from a present [telemetry].
func TelemetryDefaults() Telemetry {
	return Telemetry{OTLPEndpoint: "http://localhost:4317", ServiceName: "fila", MetricsIntervalMS: 10000, TraceSampleRatio: TraceSampleRatioDefault}
}

// EnvPrefix starts every environment override.
const EnvPrefix = "FILA_"

// Load reads path (skipped when empty, or when it is the default "fila.toml"
// and does not exist), applies the environment from environ (os.Environ when
// nil), and validates the result.
func Load(path string, environ func() []string) (Config, error) {
	k := koanf.New(".")
	if path != "" {
		if _, err := os.Stat(path); err == nil || path != "fila.toml" {
			if err := k.Load(file.Provider(path), toml.Parser()); err != nil {
				return Config{}, fmt.Errorf("config: %s: %w", path, err)
			}
		}
	}
	err := k.Load(env.Provider(".", env.Opt{
		Prefix:      EnvPrefix,
		EnvironFunc: environ,
		TransformFunc: func(key, v string) (string, any) {
			// FILA_SERVER__LISTEN_ADDR → server.listen_addr
			key = strings.ToLower(strings.TrimPrefix(key, EnvPrefix))
			return strings.ReplaceAll(key, "__", "."), v
		},
	}), nil)
	if err != nil {
		return Config{}, fmt.Errorf("config: environment: %w", err)
	}
	if err := checkKeys(k); err != nil {
		return Config{}, err
	}
	hasTelemetry := k.Exists("telemetry")
	// Defaults go underneath what was loaded.
	base := defaultsKoanf(hasTelemetry)
	if err := base.Merge(k); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	var cfg Config
	err = base.UnmarshalWithConf("", &cfg, koanf.UnmarshalConf{
		DecoderConfig: &mapstructure.DecoderConfig{
			Result:           &cfg,
			WeaklyTypedInput: true, // environment values are strings
			ErrorUnused:      true,
			TagName:          "koanf",
		},
	})
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// defaultsKoanf holds the defaults as koanf keys; with telemetry, the
// [telemetry] keys too. The accepted keys are exactly these.
func defaultsKoanf(withTelemetry bool) *koanf.Koanf {
	def := Defaults()
	if withTelemetry {
		t := TelemetryDefaults()
		def.Telemetry = &t
	}
	k := koanf.New(".")
	// Loading our own struct of plain fields cannot fail.
	_ = k.Load(structs.Provider(def, "koanf"), nil)
	return k
}

// Keys lists every key filad accepts, sorted.
func Keys() []string { return defaultsKoanf(true).Keys() }

func checkKeys(k *koanf.Koanf) error {
	known := Keys()
	var unknown []string
	for _, key := range k.Keys() {
		// An empty [telemetry] table has no leaf keys but still enables telemetry.
		if key == "telemetry" {
			continue
		}
		if !slices.Contains(known, key) {
			unknown = append(unknown, key)
		}
	}
	if len(unknown) > 0 {
		return fmt.Errorf("config: unknown key %s (known keys: %s)", strings.Join(unknown, ", "), strings.Join(known, ", "))
	}
	return nil
}

// Validate checks every value and names the first bad key.
func (c Config) Validate() error {
	var errs []error
	bad := func(key string, v any, why string) {
		errs = append(errs, fmt.Errorf("config: %s = %v: %s", key, v, why))
	}
	if _, _, err := net.SplitHostPort(c.Server.ListenAddr); err != nil {
		bad("server.listen_addr", c.Server.ListenAddr, "must be host:port")
	}
	if c.Server.MaxMessageBytes < 1 || c.Server.MaxMessageBytes > 64<<20 {
		bad("server.max_message_bytes", c.Server.MaxMessageBytes, "must be from 1 to 67108864")
	}
	if c.Server.ShutdownTimeoutMS < 0 {
		bad("server.shutdown_timeout_ms", c.Server.ShutdownTimeoutMS, "must not be negative")
	}
	if c.Server.MaxStreamsPerConn < 1 {
		bad("server.max_streams_per_conn", c.Server.MaxStreamsPerConn, "must be at least 1")
	}
	if c.Server.MaxQueueMailbox < 1 {
		bad("server.max_queue_mailbox", c.Server.MaxQueueMailbox, "must be at least 1")
	}
	if c.Server.KeepaliveMinTimeMS < 0 {
		bad("server.keepalive_min_time_ms", c.Server.KeepaliveMinTimeMS, "must not be negative")
	}
	if c.Storage.DataDir == "" {
		bad("storage.data_dir", `""`, "must not be empty")
	}
	if c.Scheduler.Quantum < 1 || c.Scheduler.Quantum > 1_000_000 {
		bad("scheduler.quantum", c.Scheduler.Quantum, "must be from 1 to 1000000")
	}
	if t := c.Telemetry; t != nil {
		if _, err := ParseEndpoint(t.OTLPEndpoint); err != nil {
			bad("telemetry.otlp_endpoint", t.OTLPEndpoint, err.Error())
		}
		if t.ServiceName == "" {
			bad("telemetry.service_name", `""`, "must not be empty")
		}
		if t.MetricsIntervalMS < 1 {
			bad("telemetry.metrics_interval_ms", t.MetricsIntervalMS, "must be at least 1")
		}
		if t.TraceSampleRatio < 0 || t.TraceSampleRatio > 1 {
			bad("telemetry.trace_sample_ratio", t.TraceSampleRatio, "must be from 0 to 1")
		}
	}
	return errors.Join(errs...)
}

// Endpoint is a parsed otlp_endpoint.
type Endpoint struct {
	// HostPort is the address to dial.
	HostPort string
	// Insecure is true for plaintext (http:// or no scheme).
	Insecure bool
}

// ParseEndpoint accepts "http://host:port", "https://host:port" and "host:port".
func ParseEndpoint(s string) (Endpoint, error) {
	if !strings.Contains(s, "://") {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return Endpoint{}, errors.New("must be http://host:port, https://host:port or host:port")
		}
		return Endpoint{HostPort: s, Insecure: true}, nil
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || (u.Path != "" && u.Path != "/") {
		return Endpoint{}, errors.New("must be http://host:port, https://host:port or host:port")
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "4317")
	}
	return Endpoint{HostPort: host, Insecure: u.Scheme == "http"}, nil
}
