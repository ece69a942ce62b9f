// Package config loads filad's configuration: defaults, then fila.toml, then
// FILA_<SECTION>__<KEY> environment variables, each overriding the one
// before. Unknown keys and invalid values are errors that name where the
// value came from: the environment variable, or the file and line.
//
// Defaults live here and nowhere else: every other package receives values
// and never re-defaults them.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/toml/v2"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/providers/structs"
	"github.com/knadh/koanf/v2"
	gotoml "github.com/pelletier/go-toml/v2"
)

// Config is filad's whole configuration.
type Config struct {
	Server    Server    `koanf:"server"`
	Storage   Storage   `koanf:"storage"`
	Scheduler Scheduler `koanf:"scheduler"`
	Queues    Queues    `koanf:"queues"`
	Limits    Limits    `koanf:"limits"`
	Log       Log       `koanf:"log"`
	Lua       Lua       `koanf:"lua"`
	Auth      Auth      `koanf:"auth"`
	// Telemetry is nil when the [telemetry] section is absent: then no
	// exporter is created and no connection is attempted.
	Telemetry *Telemetry `koanf:"telemetry"`
	// Cluster replicates the store over raft; off by default.
	Cluster Cluster `koanf:"cluster"`
}

// Cluster configures replication over raft (docs/architecture.md, "Where
// the cluster plugs in"). With Enabled false, the default, filad is one
// node: no raft, no internal port, nothing else here is read.
type Cluster struct {
	// Enabled turns the cluster on. The data directory then holds the raft
	// log beside the store; a directory written with the cluster on does
	// not open with it off, nor the other way round.
	Enabled bool `koanf:"enabled"`
	// NodeID is this node's id among Members (> 0).
	NodeID uint64 `koanf:"node_id"`
	// InternalListenAddr is where the other nodes reach this one (raft
	// messages); never the client port, never exposed to clients.
	InternalListenAddr string `koanf:"internal_listen_addr"`
	// InitialMembers are the voters of a new cluster, each "id=host:port"
	// (its internal address), this node included, the same list on every
	// node. As an environment variable, comma-separated. Read when the
	// cluster is created; a node restarted with its data directory rejoins
	// by itself.
	InitialMembers []string `koanf:"initial_members"`
	// Join, instead of InitialMembers, makes a new node join a running
	// cluster: the internal addresses of any of its members (host:port; as
	// an environment variable, comma-separated). The node starts its groups
	// empty, asks a member to record it in the meta group, and the groups'
	// leaders add it, as a learner first (docs/cluster.md, "Adding a
	// node"). Read only while its data directory holds no membership; a
	// node restarted on its data directory rejoins by itself.
	Join []string `koanf:"join"`
	// ReplicationFactor is the number of replicas of each partition
	// (default 3). With more members, each partition is on the
	// replication_factor members that rendezvous hashing ranks first for
	// it (docs/cluster.md, "Replication factor"), and the meta group on
	// every member; with as many members or fewer, every member holds
	// every partition. Every member must be given the same value.
	ReplicationFactor int `koanf:"replication_factor"`
	// AdvertiseClientAddr is the client address this node registers in the
	// meta group, which other nodes name to clients as a leader's; by
	// default server.listen_addr. Set it when clients reach the node by
	// another name.
	AdvertiseClientAddr string `koanf:"advertise_client_addr"`
	// Partitions is the number of partition groups, fixed when the
	// cluster is created.
	Partitions int `koanf:"partitions"`
	// TickMS is one raft tick; ElectionTicks and HeartbeatTicks count them.
	TickMS         int `koanf:"tick_ms"`
	ElectionTicks  int `koanf:"election_ticks"`
	HeartbeatTicks int `koanf:"heartbeat_ticks"`
	// TLSCAFile is the CA that signed the members' certificates, required
	// with [server.tls] on: the internal port is then mutual TLS, each
	// node presenting its server.tls certificate (which needs both the
	// serverAuth and clientAuth extended key usages, and a name of its
	// host in initial_members) and checking its peer's the same way. Give
	// the members a CA of their own: not the clients' CA, whose client
	// certificates must not reach the internal port.
	TLSCAFile string `koanf:"tls_ca_file"`
	// SnapshotEntries is how many applied entries a group's raft log holds
	// beyond the tail it keeps (SnapshotEntries/2) before it is compacted;
	// a follower behind the compacted log catches up by a snapshot.
	// Defaults to 10000.
	SnapshotEntries int `koanf:"snapshot_entries"`
	// SnapshotRateMiB bounds the MiB per second a node sends in snapshots.
	// Defaults to 64.
	SnapshotRateMiB int `koanf:"snapshot_rate_mib"`
	// LeaderBalance moves partition and meta leaderships back towards an
	// even spread over the members after a failover (docs/cluster.md,
	// "Leader balance"): each node hands a group it leads, one at a time,
	// to a caught-up voter leading at least two fewer, while it leads more
	// than its share. Defaults to true.
	LeaderBalance bool `koanf:"leader_balance"`
	// LeaderBalanceIntervalMS is the pause between two moves of one node
	// (and between its looks when there is nothing to move). Defaults to
	// 5000.
	LeaderBalanceIntervalMS int `koanf:"leader_balance_interval_ms"`
	// FaultControlAddr, for tests only, serves the transport's fault rules
	// (cut links) over HTTP on a loopback address; "" serves none.
	FaultControlAddr string `koanf:"fault_control_addr"`
}

// Member is one voter of Cluster.InitialMembers.
type Member struct {
	ID uint64
	// Addr is the internal address.
	Addr string
}

// ParseMembers reads InitialMembers; an element may hold several members,
// comma-separated (as the environment variable does). The config check
// has refused what it cannot read.
func (c Cluster) ParseMembers() ([]Member, error) {
	var out []Member
	seen := map[uint64]bool{}
	for _, part := range strings.Split(strings.Join(c.InitialMembers, ","), ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		id, addr, ok := strings.Cut(part, "=")
		n, err := strconv.ParseUint(id, 10, 64)
		if !ok || err != nil || n == 0 {
			return nil, fmt.Errorf("member %q: want id=host:port with an id > 0", part)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("member %q: address must be host:port (the internal address)", part)
		}
		if seen[n] {
			return nil, fmt.Errorf("member id %d appears twice", n)
		}
		seen[n] = true
		out = append(out, Member{ID: n, Addr: addr})
	}
	return out, nil
}

// JoinAddrs reads Join; an element may hold several addresses,
// comma-separated (as the environment variable does).
func (c Cluster) JoinAddrs() []string {
	var out []string
	for _, part := range strings.Split(strings.Join(c.Join, ","), ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// namesHost reports whether addr is host:port with a host that is not
// empty or unspecified (0.0.0.0, ::): one a client elsewhere can dial.
func namesHost(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsUnspecified()
}

// DialableAddr reports why addr cannot be dialed from elsewhere: it must
// be host:port with a host that is not empty or unspecified and a port
// in 1..65535 (an address given for a member, not one to listen on).
func DialableAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if !namesHost(addr) {
		return fmt.Errorf("%q names no host another machine can dial (empty, 0.0.0.0 or ::)", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q: port %q is not 1..65535", addr, port)
	}
	return nil
}

// MemberHosts are the hosts of the initial members' internal addresses,
// which a member's certificate must name.
func (c Cluster) MemberHosts() []string {
	members, _ := c.ParseMembers()
	var hosts []string
	for _, m := range members {
		if h, _, err := net.SplitHostPort(m.Addr); err == nil && !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

// LeaderBalanceInterval is LeaderBalanceIntervalMS as a duration.
func (c Cluster) LeaderBalanceInterval() time.Duration {
	return time.Duration(c.LeaderBalanceIntervalMS) * time.Millisecond
}

// Tick is TickMS as a duration.
func (c Cluster) Tick() time.Duration { return time.Duration(c.TickMS) * time.Millisecond }

// ElectionTimeout is how long a group goes without a leader before its
// followers elect one (raft adds a random part of up to as much again).
// What paces itself by the cluster's timing and not by raft's ticks (the
// membership controller, a join's retries) counts in it, so that a
// longer tick does not slow them.
func (c Cluster) ElectionTimeout() time.Duration { return time.Duration(c.ElectionTicks) * c.Tick() }

// Server configures the gRPC listener and request limits.
type Server struct {
	// ListenAddr is the gRPC address. Defaults to "127.0.0.1:5555".
	ListenAddr string `koanf:"listen_addr"`
	// PprofListenAddr, when set, serves Go's runtime profiles at
	// http://<addr>/debug/pprof/ (CPU, heap, allocations, goroutines,
	// block, mutex, execution trace). It must be a loopback address.
	// Defaults to "" (off). In [server], not [telemetry], because naming
	// the telemetry section turns OTLP export on.
	PprofListenAddr string `koanf:"pprof_listen_addr"`
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
	// DefaultMaxInFlight is a lease stream's max_in_flight when the request
	// leaves it 0: the most messages leased to the stream and not yet acked
	// or nacked. Defaults to 256.
	DefaultMaxInFlight int `koanf:"default_max_in_flight"`
	// RequestTimeoutMS bounds every wait on an actor's reply; a storage
	// commit that takes longer is answered UNAVAILABLE. Purge, Redrive and
	// DeleteQueue run in steps and are bounded by their caller's deadline
	// instead. Defaults to 30000.
	RequestTimeoutMS int `koanf:"request_timeout_ms"`
	// MaxHeaderListBytes bounds the gRPC metadata (HTTP/2 header list) of one
	// call; a bigger one is refused before it is buffered. Defaults to 65536.
	MaxHeaderListBytes int `koanf:"max_header_list_bytes"`
	// MaxBatchItems is the most items one EnqueueBatch, AckBatch or
	// NackBatch may carry. Defaults to 1000.
	MaxBatchItems int `koanf:"max_batch_items"`
	// MaxBatchBytes is the most payload and header bytes one EnqueueBatch
	// may carry. Defaults to 16 MiB.
	MaxBatchBytes int `koanf:"max_batch_bytes"`
	// HandshakeTimeoutMS bounds a new connection's TLS and HTTP/2 handshake;
	// a connection that does not finish it is closed. It also bounds how
	// long shutdown waits for such a connection. Defaults to 5000.
	HandshakeTimeoutMS int `koanf:"handshake_timeout_ms"`
	// TLS turns on TLS (and with a client CA, mTLS) for the gRPC listener.
	TLS TLS `koanf:"tls"`
}

// Queues holds the values a CreateQueue that leaves them unset gets.
type Queues struct {
	// DefaultVisibilityTimeoutMS is a lease's length. Defaults to 30000.
	DefaultVisibilityTimeoutMS int `koanf:"default_visibility_timeout_ms"`
	// DefaultFairnessKeyHeader names the header whose value is a message's
	// fairness key. Defaults to "fila-fairness-key".
	DefaultFairnessKeyHeader string `koanf:"default_fairness_key_header"`
}

// Limits are the broker-wide resource alarms (past either, Enqueue is
// refused with RESOURCE_EXHAUSTED while consumers go on draining) and the
// bounds of the runtime config store (past one, the write that would cross
// it is refused with RESOURCE_EXHAUSTED naming it).
type Limits struct {
	// MinFreeDiskBytes raises the disk alarm when the data directory's file
	// system has less free space than this. Defaults to 256 MiB.
	MinFreeDiskBytes int64 `koanf:"min_free_disk_bytes"`
	// MaxMemoryBytes raises the memory alarm when filad's anonymous
	// resident memory (resident less file pages) reaches it; cmd/filad also sets GOMEMLIMIT to it (unless GOMEMLIMIT is
	// set). 0 means 60% of the machine's memory (its cgroup limit when one
	// is set). Defaults to 0.
	MaxMemoryBytes int64 `koanf:"max_memory_bytes"`
	// DiskReserveBytes is space filad holds in an allocated file in the
	// data directory and gives up when the disk is all but full, so its
	// store can finish writing (badger dies with SIGBUS writing to a full
	// file system). filad does not start when the reserve is missing and
	// cannot be made. 0 turns it off. Defaults to 128 MiB.
	DiskReserveBytes int64 `koanf:"disk_reserve_bytes"`
	// CheckIntervalMS is how often disk and memory are measured. Defaults to 1000.
	CheckIntervalMS int `koanf:"check_interval_ms"`
	// MaxConfigKeys bounds the runtime config store's entries (SetConfig),
	// API keys not counted. Defaults to 10000.
	MaxConfigKeys int `koanf:"max_config_keys"`
	// MaxConfigBytes bounds the bytes of those entries' keys and values
	// together: what the store holds in memory. Defaults to 16 MiB.
	MaxConfigBytes int `koanf:"max_config_bytes"`
	// MaxAPIKeys bounds the API keys (CreateApiKey), which have this budget
	// of their own in the store. Defaults to 1000.
	MaxAPIKeys int `koanf:"max_api_keys"`
}

// CheckInterval is CheckIntervalMS as a duration.
func (l Limits) CheckInterval() time.Duration {
	return time.Duration(l.CheckIntervalMS) * time.Millisecond
}

// Auth configures API keys ([auth]; docs/security.md).
type Auth struct {
	// Mode is "auto" (keys required unless the listener is loopback only),
	// "on" or "off". Defaults to "auto".
	Mode string `koanf:"mode"`
	// BootstrapKey is the secret of a key with every permission, for the
	// first start (create real keys with it, then drop it). Prefer
	// FILA_AUTH__BOOTSTRAP_KEY to a file. Defaults to "" (none).
	BootstrapKey string `koanf:"bootstrap_key"`
	// EndUserID puts enduser.id = the key's name on the call's span.
	EndUserID bool `koanf:"enduser_id"`
}

// The bootstrap key's length: at least MinBootstrapKeyLen characters (Fila's
// clients bring keys that short), and below GoodBootstrapKeyLen the server
// logs a WARN (Auth.WeakBootstrapKey).
const (
	MinBootstrapKeyLen  = 16
	GoodBootstrapKeyLen = 32
)

// WeakBootstrapKey reports whether the bootstrap key is set but shorter
// than GoodBootstrapKeyLen.
func (a Auth) WeakBootstrapKey() bool {
	return a.BootstrapKey != "" && len(a.BootstrapKey) < GoodBootstrapKeyLen
}

// Required reports whether calls need a key on listenAddr.
func (a Auth) Required(loopback bool) bool {
	return a.Mode == "on" || (a.Mode == "auto" && !loopback)
}

// TLS configures the listener's transport security ([server.tls]).
type TLS struct {
	// CertFile and KeyFile are the server's PEM certificate (chain) and
	// key; both empty: plaintext. They are read again on SIGHUP.
	CertFile string `koanf:"cert_file"`
	KeyFile  string `koanf:"key_file"`
	// ClientCAFile, when set, turns on mTLS: clients must present a
	// certificate signed by one of its CAs.
	ClientCAFile string `koanf:"client_ca_file"`
	// MinVersion is "1.2" (the default) or "1.3".
	MinVersion string `koanf:"min_version"`
}

// Enabled reports whether TLS is configured.
func (t TLS) Enabled() bool { return t.CertFile != "" }

// Lua bounds the queues' policy scripts (docs/scripting.md).
type Lua struct {
	// DefaultTimeoutMS bounds one hook call. Defaults to 10.
	DefaultTimeoutMS int `koanf:"default_timeout_ms"`
	// DefaultMemoryLimitBytes bounds what one hook call may allocate:
	// every string it makes, and 128 bytes for every VM instruction (an
	// upper bound of what one allocates otherwise); the Lua stack takes at
	// most a quarter of it. Defaults to 8 MiB.
	DefaultMemoryLimitBytes int `koanf:"default_memory_limit_bytes"`
	// CircuitBreakerThreshold failures in a row bypass a script for
	// CircuitBreakerCooldownMS. Defaults to 3 and 10000.
	CircuitBreakerThreshold  int `koanf:"circuit_breaker_threshold"`
	CircuitBreakerCooldownMS int `koanf:"circuit_breaker_cooldown_ms"`
}

// Log configures filad's own logging.
type Log struct {
	// Level is debug, info, warn or error. Defaults to "info".
	Level string `koanf:"level"`
}

// Storage configures badger.
type Storage struct {
	// DataDir is badger's directory. Defaults to "data".
	DataDir string `koanf:"data_dir"`
	// SyncWrites fsyncs each group commit before Enqueue, Ack and Nack
	// reply. With false, an answered write survives a crash of filad but not
	// of the machine. Defaults to true.
	SyncWrites bool `koanf:"sync_writes"`
	// MessageCacheMiB bounds, in MiB, the cache of message headers and
	// payloads the queues deliver from: a queue keeps an index entry per
	// message in memory, and a message the cache does not hold is read
	// from disk when it is delivered (docs/architecture.md). 0 caches
	// nothing. Defaults to 64.
	MessageCacheMiB int `koanf:"message_cache_mib"`
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
	// "https://host:4317" (TLS) or "host:4317" (plaintext); "" exports no
	// OTLP (and records no traces). Defaults to "http://localhost:4317".
	OTLPEndpoint string `koanf:"otlp_endpoint"`
	// PrometheusListenAddr, when set, serves the metrics at
	// http://<addr>/metrics for Prometheus to scrape, beside OTLP or
	// instead of it. Defaults to "" (off).
	PrometheusListenAddr string `koanf:"prometheus_listen_addr"`
	// FairnessKeys is how many fairness keys per queue get series of their
	// own in fila.fairness.* (the first ones delivered; later ones are
	// summed as "(other)"). 0 turns the per-key series off. Defaults to 20.
	FairnessKeys int `koanf:"fairness_keys"`
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

// HandshakeTimeout is HandshakeTimeoutMS as a duration.
func (s Server) HandshakeTimeout() time.Duration {
	return time.Duration(s.HandshakeTimeoutMS) * time.Millisecond
}

// RequestTimeout is RequestTimeoutMS as a duration.
func (s Server) RequestTimeout() time.Duration {
	return time.Duration(s.RequestTimeoutMS) * time.Millisecond
}

// DefaultVisibilityTimeout is DefaultVisibilityTimeoutMS as a duration.
func (q Queues) DefaultVisibilityTimeout() time.Duration {
	return time.Duration(q.DefaultVisibilityTimeoutMS) * time.Millisecond
}

// SlogLevel is Level as a slog.Level; Validate has checked it parses.
func (l Log) SlogLevel() slog.Level {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(l.Level))
	return lv
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
			DefaultMaxInFlight: 256, RequestTimeoutMS: 30_000,
			MaxHeaderListBytes: 64 << 10, HandshakeTimeoutMS: 5000,
			MaxBatchItems: 1000, MaxBatchBytes: 16 << 20,
			TLS: TLS{MinVersion: "1.2"},
		},
		Storage:   Storage{DataDir: "data", SyncWrites: true, MessageCacheMiB: 64},
		Scheduler: Scheduler{Quantum: 1},
		Queues:    Queues{DefaultVisibilityTimeoutMS: 30_000, DefaultFairnessKeyHeader: "fila-fairness-key"},
		Limits:    Limits{MinFreeDiskBytes: 256 << 20, DiskReserveBytes: 128 << 20, CheckIntervalMS: 1000, MaxConfigKeys: 10_000, MaxConfigBytes: 16 << 20, MaxAPIKeys: 1000},
		Auth:      Auth{Mode: "auto"},
		Lua:       Lua{DefaultTimeoutMS: 10, DefaultMemoryLimitBytes: 8 << 20, CircuitBreakerThreshold: 3, CircuitBreakerCooldownMS: 10_000},
		Log:       Log{Level: "info"},
		Cluster: Cluster{ReplicationFactor: 3, Partitions: 16, TickMS: 200, ElectionTicks: 5, HeartbeatTicks: 1, SnapshotEntries: 10_000, SnapshotRateMiB: 64,
			LeaderBalance: true, LeaderBalanceIntervalMS: 5000},
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
	return Telemetry{OTLPEndpoint: "http://localhost:4317", ServiceName: "fila", MetricsIntervalMS: 10000, TraceSampleRatio: TraceSampleRatioDefault,
		FairnessKeys: 20}
}

// EnvPrefix starts every environment override. Only FILA_<SECTION>__<KEY>
// (a double underscore between section and key) is read as config; other
// FILA_* names belong to other tools (the CLI's FILA_ADDR, say) and are
// ignored.
const EnvPrefix = "FILA_"

// legacyEnv maps environment names of earlier releases to their keys.
var legacyEnv = map[string]string{"FILA_LOG_LEVEL": "log.level"}

// sources remembers where each loaded key came from, so that an error can
// name the environment variable, or the file and line, to fix.
type sources struct {
	file  string
	data  []byte
	env   map[string]string // key → variable
	loads map[string]bool   // keys the file set
}

func (s *sources) describe(key string) string {
	if v, ok := s.env[key]; ok {
		return fmt.Sprintf("%s (%s)", v, key)
	}
	if s.loads[key] {
		if line := keyLine(s.data, key); line > 0 {
			return fmt.Sprintf("%s:%d: %s", s.file, line, key)
		}
		return s.file + ": " + key
	}
	return key
}

// Load reads path (skipped when empty, or when it is the default "fila.toml"
// and does not exist), applies the environment from environ (os.Environ when
// nil), and validates the result.
func Load(path string, environ func() []string) (Config, error) {
	if environ == nil {
		environ = os.Environ
	}
	src := &sources{file: path, env: map[string]string{}, loads: map[string]bool{}}
	k := koanf.New(".")
	if path != "" {
		data, err := os.ReadFile(path)
		switch {
		case err == nil:
			src.data = data
			if err := k.Load(rawbytes.Provider(data), toml.Parser()); err != nil {
				return Config{}, tomlError(path, err)
			}
			for _, key := range k.Keys() {
				src.loads[key] = true
			}
		case errors.Is(err, fs.ErrNotExist) && path == "fila.toml":
			// The default path is optional; an explicit one is not.
		default:
			return Config{}, fmt.Errorf("config: %w", err)
		}
	}
	envKeys := map[string]any{}
	for _, kv := range environ() {
		name, value, _ := strings.Cut(kv, "=")
		key, ok := legacyEnv[name]
		if !ok {
			rest, isOurs := strings.CutPrefix(name, EnvPrefix)
			if !isOurs || !strings.Contains(rest, "__") {
				continue
			}
			// FILA_SERVER__LISTEN_ADDR → server.listen_addr
			key = strings.ReplaceAll(strings.ToLower(rest), "__", ".")
		}
		if _, dup := src.env[key]; dup && legacyEnv[name] != "" {
			continue // the current name wins over the legacy one
		}
		envKeys[key] = value
		src.env[key] = name
	}
	if err := k.Load(confmap.Provider(envKeys, "."), nil); err != nil {
		return Config{}, fmt.Errorf("config: environment: %w", err)
	}
	if err := checkKeys(k, src); err != nil {
		return Config{}, err
	}
	hasTelemetry := k.Exists("telemetry")
	// Defaults go underneath what was loaded.
	base := defaultsKoanf(hasTelemetry)
	if err := base.Merge(k); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	var cfg Config
	err := base.UnmarshalWithConf("", &cfg, koanf.UnmarshalConf{
		DecoderConfig: &mapstructure.DecoderConfig{
			Result:           &cfg,
			WeaklyTypedInput: true, // environment values are strings
			ErrorUnused:      true,
			TagName:          "koanf",
		},
	})
	if err != nil {
		return Config{}, decodeError(err, src)
	}
	if errs := cfg.check(); len(errs) > 0 {
		return Config{}, joinFieldErrors(errs, src)
	}
	return cfg, nil
}

// tomlError names the file, line and column of a TOML syntax error.
func tomlError(path string, err error) error {
	var de *gotoml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		return fmt.Errorf("config: %s:%d:%d: %s", path, row, col, de.Error())
	}
	return fmt.Errorf("config: %s: %w", path, err)
}

// decodeError names the source of each value that has the wrong type.
func decodeError(err error, src *sources) error {
	var errs []error
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, inner := range j.Unwrap() {
				walk(inner)
			}
			return
		}
		var de *mapstructure.DecodeError
		if errors.As(e, &de) {
			errs = append(errs, fmt.Errorf("config: %s: %w", src.describe(de.Name()), de.Unwrap()))
			return
		}
		errs = append(errs, fmt.Errorf("config: %w", e))
	}
	walk(err)
	return errors.Join(errs...)
}

// keyLine is the 1-based line of the file that sets key, or 0: it follows
// [table] headers and matches "name =" lines, which is all fila.toml uses.
func keyLine(data []byte, key string) int {
	table := ""
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			table = strings.Trim(line, "[] ")
			continue
		}
		name, _, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		full := strings.Trim(strings.TrimSpace(name), `"`)
		if table != "" {
			full = table + "." + full
		}
		if full == key {
			return i + 1
		}
	}
	return 0
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

func checkKeys(k *koanf.Koanf, src *sources) error {
	known := Keys()
	var unknown []string
	for _, key := range k.Keys() {
		// An empty [telemetry] table has no leaf keys but still enables telemetry.
		if key == "telemetry" {
			continue
		}
		if !slices.Contains(known, key) {
			unknown = append(unknown, src.describe(key))
		}
	}
	if len(unknown) > 0 {
		return fmt.Errorf("config: unknown key %s%s", strings.Join(unknown, ", "), suggest(unknownKeys(k, known), known))
	}
	return nil
}

func unknownKeys(k *koanf.Koanf, known []string) []string {
	var out []string
	for _, key := range k.Keys() {
		if key != "telemetry" && !slices.Contains(known, key) {
			out = append(out, key)
		}
	}
	return out
}

// suggest is what follows an unknown-key error: "did you mean" the nearest
// known key of each, where one is near, else the keys of its section.
func suggest(unknown, known []string) string {
	var near []string
	for _, key := range unknown {
		if best, ok := nearest(key, known); ok {
			near = append(near, best)
		}
	}
	if len(near) == len(unknown) {
		return "; did you mean " + strings.Join(near, ", ") + "?"
	}
	section, _, _ := strings.Cut(unknown[0], ".")
	var same []string
	for _, k := range known {
		if strings.HasPrefix(k, section+".") {
			same = append(same, k)
		}
	}
	if len(same) > 0 {
		return " ([" + section + "] has " + strings.Join(same, ", ") + ")"
	}
	return " (README.md, Configuration, lists every key)"
}

// nearest is the known key closest to key by edit distance, if it is close
// enough to be a typo: at most a third of the key's length, and 3.
func nearest(key string, known []string) (string, bool) {
	best, dist := "", min(3, len(key)/3)+1
	for _, k := range known {
		if d := editDistance(key, k); d < dist {
			best, dist = k, d
		}
	}
	return best, best != ""
}

// editDistance is the Levenshtein distance of a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			sub := prev[j-1]
			if a[i-1] != b[j-1] {
				sub++
			}
			cur[j] = min(sub, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// EnvWarnings names the FILA_ variables of environ that look like one of
// filad's keys written with a single underscore between section and key
// (FILA_SERVER_LISTEN_ADDR for FILA_SERVER__LISTEN_ADDR): they are ignored,
// and a start that silently ignored them would mislead. Other FILA_ names
// (the CLI's FILA_ADDR, FILA_API_KEY) are not filad's and are not named.
func EnvWarnings(environ []string) []string {
	known := Keys()
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		rest, ok := strings.CutPrefix(name, EnvPrefix)
		if !ok || strings.Contains(rest, "__") || legacyEnv[name] != "" {
			continue
		}
		lower := strings.ToLower(rest)
		for i := range len(lower) {
			if lower[i] != '_' {
				continue
			}
			if key := lower[:i] + "." + lower[i+1:]; slices.Contains(known, key) {
				out = append(out, fmt.Sprintf("%s is ignored: filad reads %s%s__%s for %s (two underscores between section and key)",
					name, EnvPrefix, rest[:i], rest[i+1:], key))
				break
			}
		}
	}
	return out
}

// fieldError is one bad value, by key.
type fieldError struct {
	key   string
	value any
	why   string
}

func joinFieldErrors(fes []fieldError, src *sources) error {
	errs := make([]error, len(fes))
	for i, fe := range fes {
		errs[i] = fmt.Errorf("config: %s = %v: %s", src.describe(fe.key), fe.value, fe.why)
	}
	return errors.Join(errs...)
}

// Validate checks every value and names each bad key.
func (c Config) Validate() error {
	return joinFieldErrors(c.check(), &sources{})
}

func (c Config) check() []fieldError {
	var errs []fieldError
	bad := func(key string, v any, why string) {
		errs = append(errs, fieldError{key, v, why})
	}
	atLeast := func(key string, v, lo int) {
		if v < lo {
			bad(key, v, fmt.Sprintf("must be at least %d", lo))
		}
	}
	if _, _, err := net.SplitHostPort(c.Server.ListenAddr); err != nil {
		bad("server.listen_addr", c.Server.ListenAddr, "must be host:port")
	}
	if a := c.Server.PprofListenAddr; a != "" && !IsLoopback(a) {
		bad("server.pprof_listen_addr", a, "must be a loopback host:port (profiles are for this machine)")
	}
	if c.Server.MaxMessageBytes < 1 || c.Server.MaxMessageBytes > MaxMessageBytesLimit {
		bad("server.max_message_bytes", c.Server.MaxMessageBytes, fmt.Sprintf("must be from 1 to %d", MaxMessageBytesLimit))
	}
	atLeast("server.shutdown_timeout_ms", c.Server.ShutdownTimeoutMS, 0)
	atLeast("server.max_streams_per_conn", c.Server.MaxStreamsPerConn, 1)
	atLeast("server.max_queue_mailbox", c.Server.MaxQueueMailbox, 1)
	atLeast("server.keepalive_min_time_ms", c.Server.KeepaliveMinTimeMS, 0)
	atLeast("server.request_timeout_ms", c.Server.RequestTimeoutMS, 1)
	atLeast("server.max_header_list_bytes", c.Server.MaxHeaderListBytes, 1024)
	atLeast("server.handshake_timeout_ms", c.Server.HandshakeTimeoutMS, 1)
	if c.Server.MaxBatchItems < 1 || c.Server.MaxBatchItems > 100_000 {
		bad("server.max_batch_items", c.Server.MaxBatchItems, "must be from 1 to 100000")
	}
	if c.Server.MaxBatchBytes < 1 || c.Server.MaxBatchBytes > 256<<20 {
		bad("server.max_batch_bytes", c.Server.MaxBatchBytes, "must be from 1 to 268435456")
	}
	if c.Server.DefaultMaxInFlight < 1 || c.Server.DefaultMaxInFlight > MaxInFlightLimit {
		bad("server.default_max_in_flight", c.Server.DefaultMaxInFlight, fmt.Sprintf("must be from 1 to %d", MaxInFlightLimit))
	}
	if c.Storage.MessageCacheMiB < 0 || c.Storage.MessageCacheMiB > 1<<20 {
		bad("storage.message_cache_mib", c.Storage.MessageCacheMiB, "must be from 0 to 1048576")
	}
	if c.Storage.DataDir == "" {
		bad("storage.data_dir", `""`, "must not be empty")
	}
	if c.Scheduler.Quantum < 1 || c.Scheduler.Quantum > 1_000_000 {
		bad("scheduler.quantum", c.Scheduler.Quantum, "must be from 1 to 1000000")
	}
	if ms := c.Queues.DefaultVisibilityTimeoutMS; ms < MinVisibilityTimeoutMS || ms > MaxVisibilityTimeoutMS {
		bad("queues.default_visibility_timeout_ms", ms, fmt.Sprintf("must be from %d to %d", MinVisibilityTimeoutMS, MaxVisibilityTimeoutMS))
	}
	if h := c.Queues.DefaultFairnessKeyHeader; h == "" || len(h) > MaxHeaderKeyBytes {
		bad("queues.default_fairness_key_header", h, fmt.Sprintf("must be 1 to %d bytes", MaxHeaderKeyBytes))
	}
	if c.Limits.MinFreeDiskBytes < 0 {
		bad("limits.min_free_disk_bytes", c.Limits.MinFreeDiskBytes, "must not be negative")
	}
	if c.Limits.MaxMemoryBytes < 0 {
		bad("limits.max_memory_bytes", c.Limits.MaxMemoryBytes, "must not be negative (0: 60% of the machine)")
	}
	atLeast("limits.check_interval_ms", c.Limits.CheckIntervalMS, 10)
	within := func(key string, v, lo, hi int) {
		if v < lo || v > hi {
			bad(key, v, fmt.Sprintf("must be from %d to %d", lo, hi))
		}
	}
	within("limits.max_config_keys", c.Limits.MaxConfigKeys, 1, MaxConfigKeysLimit)
	within("limits.max_config_bytes", c.Limits.MaxConfigBytes, MinConfigBytes, MaxConfigBytesLimit)
	within("limits.max_api_keys", c.Limits.MaxAPIKeys, 1, MaxAPIKeysLimit)
	atLeast("lua.default_timeout_ms", c.Lua.DefaultTimeoutMS, 1)
	atLeast("lua.default_memory_limit_bytes", c.Lua.DefaultMemoryLimitBytes, 64<<10)
	atLeast("lua.circuit_breaker_threshold", c.Lua.CircuitBreakerThreshold, 1)
	atLeast("lua.circuit_breaker_cooldown_ms", c.Lua.CircuitBreakerCooldownMS, 0)
	if t := c.Server.TLS; (t.CertFile == "") != (t.KeyFile == "") {
		bad("server.tls.key_file", t.KeyFile, "cert_file and key_file go together")
	} else if t.ClientCAFile != "" && !t.Enabled() {
		bad("server.tls.client_ca_file", t.ClientCAFile, "needs cert_file and key_file (mTLS is TLS with client certificates)")
	}
	if m := c.Auth.Mode; m != "auto" && m != "on" && m != "off" {
		bad("auth.mode", m, `must be "auto", "on" or "off"`)
	}
	if k := c.Auth.BootstrapKey; k != "" && len(k) < MinBootstrapKeyLen {
		bad("auth.bootstrap_key", "(hidden)", fmt.Sprintf("must be at least %d characters, better %d (use the output of: head -c 32 /dev/urandom | base64)",
			MinBootstrapKeyLen, GoodBootstrapKeyLen))
	}
	if v := c.Server.TLS.MinVersion; v != "1.2" && v != "1.3" {
		bad("server.tls.min_version", v, `must be "1.2" or "1.3"`)
	}
	if c.Limits.DiskReserveBytes < 0 {
		bad("limits.disk_reserve_bytes", c.Limits.DiskReserveBytes, "must not be negative (0: no reserve)")
	}
	errs = append(errs, c.Cluster.check()...)
	if cc := c.Cluster; cc.Enabled && cc.AdvertiseClientAddr == "" && !namesHost(c.Server.ListenAddr) {
		if members, _ := cc.ParseMembers(); len(members) > 1 || len(cc.JoinAddrs()) > 0 {
			bad("cluster.advertise_client_addr", "", fmt.Sprintf("must be set: server.listen_addr %q names no host, and the other nodes name this node's client address to clients", c.Server.ListenAddr))
		}
	}
	if c.Cluster.Enabled && c.Server.TLS.Enabled() && c.Cluster.TLSCAFile == "" {
		bad("cluster.tls_ca_file", "", "must name the CA of the members' certificates: with server.tls on, the internal port is mutual TLS")
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(c.Log.Level)); err != nil {
		bad("log.level", c.Log.Level, "must be debug, info, warn or error")
	}
	if t := c.Telemetry; t != nil {
		if _, err := ParseEndpoint(t.OTLPEndpoint); t.OTLPEndpoint != "" && err != nil {
			bad("telemetry.otlp_endpoint", t.OTLPEndpoint, err.Error())
		}
		if t.FairnessKeys < 0 || t.FairnessKeys > 1000 {
			bad("telemetry.fairness_keys", t.FairnessKeys, "must be from 0 to 1000")
		}
		if _, _, err := net.SplitHostPort(t.PrometheusListenAddr); t.PrometheusListenAddr != "" && err != nil {
			bad("telemetry.prometheus_listen_addr", t.PrometheusListenAddr, "must be host:port")
		}
		if t.ServiceName == "" {
			bad("telemetry.service_name", `""`, "must not be empty")
		}
		atLeast("telemetry.metrics_interval_ms", t.MetricsIntervalMS, 1)
		if t.TraceSampleRatio < 0 || t.TraceSampleRatio > 1 {
			bad("telemetry.trace_sample_ratio", t.TraceSampleRatio, "must be from 0 to 1")
		}
	}
	return errs
}

// Hard limits on configurable values, and the request limits of SPEC §4
// that config values must respect.
const (
	// MaxMessageBytesLimit is the largest server.max_message_bytes.
	MaxMessageBytesLimit = 64 << 20
	// MaxInFlightLimit is the largest max_in_flight a lease stream may have.
	MaxInFlightLimit = 10_000
	// MinVisibilityTimeoutMS and MaxVisibilityTimeoutMS bound a queue's
	// visibility timeout.
	MinVisibilityTimeoutMS = 10
	MaxVisibilityTimeoutMS = 12 * 60 * 60 * 1000
	// MaxHeaderKeyBytes is the longest header name.
	MaxHeaderKeyBytes = 256
	// MinConfigBytes and MaxConfigBytesLimit bound limits.max_config_bytes:
	// at least room for 16 of the largest values (64 KiB), at most 1 GiB.
	MinConfigBytes      = 1 << 20
	MaxConfigBytesLimit = 1 << 30
	// MaxConfigKeysLimit is the largest limits.max_config_keys.
	MaxConfigKeysLimit = 1_000_000
	// MaxAPIKeysLimit is the largest limits.max_api_keys.
	MaxAPIKeysLimit = 100_000
)

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

// check validates the [cluster] section when it is enabled.
func (c Cluster) check() []fieldError {
	if !c.Enabled {
		return nil
	}
	var errs []fieldError
	bad := func(key string, v any, why string) { errs = append(errs, fieldError{key, v, why}) }
	if _, _, err := net.SplitHostPort(c.InternalListenAddr); err != nil {
		bad("cluster.internal_listen_addr", c.InternalListenAddr, "must be host:port")
	}
	members, err := c.ParseMembers()
	join := c.JoinAddrs()
	for _, a := range join {
		if _, _, err := net.SplitHostPort(a); err != nil {
			bad("cluster.join", a, "must be host:port (a member's internal address)")
		}
	}
	switch {
	case err != nil:
		bad("cluster.initial_members", c.InitialMembers, err.Error())
	case len(join) > 0 && len(members) > 0:
		bad("cluster.join", c.Join, "set cluster.join (a node joining a running cluster) or cluster.initial_members (the members of a new one), not both")
	case len(join) > 0 && !namesHost(c.InternalListenAddr):
		bad("cluster.internal_listen_addr", c.InternalListenAddr, "a joining node records it as the address the members reach it at: it must name a host (not 0.0.0.0 or ::)")
	case len(join) > 0 && c.NodeID == 0:
		bad("cluster.node_id", c.NodeID, "must be > 0: the joining node's id, never one the cluster had")
	case len(join) > 0:
	case len(members) == 0:
		bad("cluster.initial_members", c.InitialMembers, "must name this node at least (id=host:port)")
	case !slices.ContainsFunc(members, func(m Member) bool { return m.ID == c.NodeID }):
		bad("cluster.node_id", c.NodeID, "must be the id of one of cluster.initial_members")
	}
	if c.ReplicationFactor < 1 {
		bad("cluster.replication_factor", c.ReplicationFactor, "must be at least 1")
	}
	if a := c.AdvertiseClientAddr; a != "" && !namesHost(a) {
		bad("cluster.advertise_client_addr", a, "must be host:port with a host clients can reach (not 0.0.0.0 or ::)")
	}
	if c.Partitions < 1 || c.Partitions > 1024 {
		bad("cluster.partitions", c.Partitions, "must be from 1 to 1024")
	}
	if c.TickMS < 1 || c.TickMS > 10_000 {
		bad("cluster.tick_ms", c.TickMS, "must be from 1 to 10000")
	}
	if c.HeartbeatTicks < 1 || c.ElectionTicks <= c.HeartbeatTicks {
		bad("cluster.election_ticks", c.ElectionTicks, fmt.Sprintf("must be more than cluster.heartbeat_ticks (%d), which must be at least 1", c.HeartbeatTicks))
	}
	if c.SnapshotEntries < 2 || c.SnapshotEntries > 10_000_000 {
		bad("cluster.snapshot_entries", c.SnapshotEntries, "must be from 2 to 10000000")
	}
	if c.SnapshotRateMiB < 1 || c.SnapshotRateMiB > 10_240 {
		bad("cluster.snapshot_rate_mib", c.SnapshotRateMiB, "must be from 1 to 10240")
	}
	if c.LeaderBalanceIntervalMS < 100 || c.LeaderBalanceIntervalMS > 3_600_000 {
		bad("cluster.leader_balance_interval_ms", c.LeaderBalanceIntervalMS, "must be from 100 to 3600000")
	}
	if a := c.FaultControlAddr; a != "" {
		if !IsLoopback(a) {
			bad("cluster.fault_control_addr", a, "must be a loopback host:port (it is for tests)")
		}
	}
	return errs
}

// IsLoopback reports whether a listen address (host:port) can only be
// reached from this machine; a malformed one, or every interface, cannot.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
