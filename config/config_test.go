package config

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func writeTOML(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fila.toml")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
	return p
}

func noEnv() []string { return nil }

func TestLoadDefaultsWithoutFile(t *testing.T) {
	t.Parallel()
	cfg, err := Load("", noEnv)
	require.NoError(t, err)
	require.Equal(t, Defaults(), cfg)
	require.Nil(t, cfg.Telemetry)
}

func TestLoad(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		toml    string
		env     []string
		check   func(t *testing.T, c Config)
		wantErr string
	}{
		{
			name: "file values override defaults",
			toml: "[server]\nlisten_addr = \"127.0.0.1:7000\"\n[storage]\nsync_writes = false\n",
			check: func(t *testing.T, c Config) {
				require.Equal(t, "127.0.0.1:7000", c.Server.ListenAddr)
				require.False(t, c.Storage.SyncWrites)
				require.Equal(t, 1<<20, c.Server.MaxMessageBytes)
			},
		},
		{
			name: "env overrides file",
			toml: "[server]\nlisten_addr = \"127.0.0.1:7000\"\n",
			env:  []string{"FILA_SERVER__LISTEN_ADDR=127.0.0.1:7001", "FILA_SCHEDULER__QUANTUM=5"},
			check: func(t *testing.T, c Config) {
				require.Equal(t, "127.0.0.1:7001", c.Server.ListenAddr)
				require.Equal(t, 5, c.Scheduler.Quantum)
			},
		},
		{
			name: "telemetry section gets defaults",
			toml: "[telemetry]\notlp_endpoint = \"collector:4317\"\n",
			check: func(t *testing.T, c Config) {
				require.NotNil(t, c.Telemetry)
				require.Equal(t, "collector:4317", c.Telemetry.OTLPEndpoint)
				require.Equal(t, "fila", c.Telemetry.ServiceName)
				require.Equal(t, 10000, c.Telemetry.MetricsIntervalMS)
				require.Equal(t, TraceSampleRatioDefault, c.Telemetry.TraceSampleRatio)
			},
		},
		{
			name: "telemetry from env alone enables it",
			env:  []string{"FILA_TELEMETRY__OTLP_ENDPOINT=http://c:4317"},
			check: func(t *testing.T, c Config) {
				require.NotNil(t, c.Telemetry)
				require.Equal(t, "http://c:4317", c.Telemetry.OTLPEndpoint)
			},
		},
		{
			name:  "empty telemetry section enables telemetry with defaults",
			toml:  "[telemetry]\n",
			check: func(t *testing.T, c Config) { require.Equal(t, TelemetryDefaults(), *c.Telemetry) },
		},
		{name: "unknown key in file names file and line", toml: "[server]\n\nlisten_adr = \"x:1\"\n", wantErr: "fila.toml:3: server.listen_adr"},
		{name: "unknown section", toml: "[bogus]\nx = 1\n", wantErr: "fila.toml:2: bogus.x"},
		{name: "unknown env key names the variable", env: []string{"FILA_SERVER__PORT=1"}, wantErr: "unknown key FILA_SERVER__PORT (server.port)"},
		{name: "wrong type names file and line", toml: "[server]\nmax_message_bytes = \"big\"\n", wantErr: "fila.toml:2: server.max_message_bytes"},
		{name: "wrong type from env names the variable", env: []string{"FILA_STORAGE__SYNC_WRITES=maybe"}, wantErr: "FILA_STORAGE__SYNC_WRITES (storage.sync_writes)"},
		{name: "zero quantum", toml: "[scheduler]\nquantum = 0\n", wantErr: "fila.toml:2: scheduler.quantum = 0"},
		{name: "bad listen addr", env: []string{"FILA_SERVER__LISTEN_ADDR=nowhere"}, wantErr: "FILA_SERVER__LISTEN_ADDR (server.listen_addr) = nowhere"},
		{name: "bad endpoint", toml: "[telemetry]\notlp_endpoint = \"ftp://x\"\n", wantErr: "telemetry.otlp_endpoint"},
		{name: "bad ratio", toml: "[telemetry]\ntrace_sample_ratio = 2.0\n", wantErr: "telemetry.trace_sample_ratio"},
		{name: "message limit", toml: "[server]\nmax_message_bytes = -1\n", wantErr: "server.max_message_bytes = -1"},
		{name: "TOML syntax error has a line", toml: "[server]\nlisten_addr = \n", wantErr: "fila.toml:2:"},
		{name: "bad log level", env: []string{"FILA_LOG__LEVEL=loud"}, wantErr: "FILA_LOG__LEVEL (log.level) = loud: must be debug"},
		{name: "profiles on loopback", env: []string{"FILA_SERVER__PPROF_LISTEN_ADDR=127.0.0.1:6060"}, check: func(t *testing.T, c Config) {
			require.Equal(t, "127.0.0.1:6060", c.Server.PprofListenAddr)
		}},
		{name: "profiles on every interface", env: []string{"FILA_SERVER__PPROF_LISTEN_ADDR=0.0.0.0:6060"},
			wantErr: "FILA_SERVER__PPROF_LISTEN_ADDR (server.pprof_listen_addr) = 0.0.0.0:6060: must be a loopback host:port"},
		{
			name: "cluster initial members from the file, a list",
			toml: "[cluster]\nenabled = true\nnode_id = 2\ninternal_listen_addr = \"127.0.0.1:7556\"\ninitial_members = [\"1=127.0.0.1:7555\", \"2=127.0.0.1:7556\", \"3=127.0.0.1:7557\"]\n",
			check: func(t *testing.T, c Config) {
				m, err := c.Cluster.ParseMembers()
				require.NoError(t, err)
				require.Equal(t, []Member{{1, "127.0.0.1:7555"}, {2, "127.0.0.1:7556"}, {3, "127.0.0.1:7557"}}, m)
				require.Equal(t, 3, c.Cluster.ReplicationFactor)
				require.Equal(t, []string{"127.0.0.1"}, c.Cluster.MemberHosts())
			},
		},
		{
			name: "cluster initial members from the environment, comma-separated",
			env: []string{"FILA_CLUSTER__ENABLED=true", "FILA_CLUSTER__NODE_ID=1", "FILA_CLUSTER__INTERNAL_LISTEN_ADDR=127.0.0.1:7555",
				"FILA_CLUSTER__INITIAL_MEMBERS=1=127.0.0.1:7555,2=127.0.0.1:7556", "FILA_CLUSTER__ADVERTISE_CLIENT_ADDR=filad-1.internal:5555"},
			check: func(t *testing.T, c Config) {
				m, err := c.Cluster.ParseMembers()
				require.NoError(t, err)
				require.Equal(t, []Member{{1, "127.0.0.1:7555"}, {2, "127.0.0.1:7556"}}, m)
				require.Equal(t, "filad-1.internal:5555", c.Cluster.AdvertiseClientAddr)
			},
		},
		{
			name:  "a replication factor below the members",
			env:   []string{"FILA_CLUSTER__ENABLED=true", "FILA_CLUSTER__NODE_ID=1", "FILA_CLUSTER__INTERNAL_LISTEN_ADDR=127.0.0.1:7555", "FILA_CLUSTER__INITIAL_MEMBERS=1=a:1,2=b:1,3=c:1", "FILA_CLUSTER__REPLICATION_FACTOR=2"},
			check: func(t *testing.T, c Config) { require.Equal(t, 2, c.Cluster.ReplicationFactor) },
		},
		{
			name:    "a replication factor of 0",
			env:     []string{"FILA_CLUSTER__ENABLED=true", "FILA_CLUSTER__NODE_ID=1", "FILA_CLUSTER__INTERNAL_LISTEN_ADDR=127.0.0.1:7555", "FILA_CLUSTER__INITIAL_MEMBERS=1=a:1,2=b:1,3=c:1", "FILA_CLUSTER__REPLICATION_FACTOR=0"},
			wantErr: "FILA_CLUSTER__REPLICATION_FACTOR (cluster.replication_factor) = 0: must be at least 1",
		},
		{
			name:    "a node not among the initial members",
			env:     []string{"FILA_CLUSTER__ENABLED=true", "FILA_CLUSTER__NODE_ID=4", "FILA_CLUSTER__INTERNAL_LISTEN_ADDR=127.0.0.1:7555", "FILA_CLUSTER__INITIAL_MEMBERS=1=a:1,2=b:1"},
			wantErr: "cluster.node_id) = 4: must be the id of one of cluster.initial_members",
		},
		{
			name:    "a cluster node listening on every interface must advertise a client address",
			env:     []string{"FILA_CLUSTER__ENABLED=true", "FILA_CLUSTER__NODE_ID=1", "FILA_CLUSTER__INTERNAL_LISTEN_ADDR=127.0.0.1:7555", "FILA_CLUSTER__INITIAL_MEMBERS=1=a:1,2=b:1", "FILA_SERVER__LISTEN_ADDR=0.0.0.0:5555"},
			wantErr: "cluster.advertise_client_addr",
		},
		{
			name:    "an advertised client address must name a host",
			env:     []string{"FILA_CLUSTER__ENABLED=true", "FILA_CLUSTER__NODE_ID=1", "FILA_CLUSTER__INTERNAL_LISTEN_ADDR=127.0.0.1:7555", "FILA_CLUSTER__INITIAL_MEMBERS=1=a:1", "FILA_CLUSTER__ADVERTISE_CLIENT_ADDR=:5555"},
			wantErr: "must be host:port with a host clients can reach",
		},
		{
			name:    "a cluster with TLS needs the members' CA",
			env:     []string{"FILA_CLUSTER__ENABLED=true", "FILA_CLUSTER__NODE_ID=1", "FILA_CLUSTER__INTERNAL_LISTEN_ADDR=127.0.0.1:7555", "FILA_CLUSTER__INITIAL_MEMBERS=1=127.0.0.1:7555", "FILA_SERVER__TLS__CERT_FILE=c.pem", "FILA_SERVER__TLS__KEY_FILE=k.pem"},
			wantErr: "cluster.tls_ca_file",
		},
		{
			name:    "a member without its address",
			toml:    "[cluster]\nenabled = true\nnode_id = 1\ninternal_listen_addr = \"127.0.0.1:7555\"\ninitial_members = [\"1\"]\n",
			wantErr: "cluster.initial_members",
		},
		{
			name:  "other FILA_ variables are not config",
			env:   []string{"FILA_ADDR=127.0.0.1:5555", "FILA_SOMETHING=1", "FILADELPHIA=2"},
			check: func(t *testing.T, c Config) { require.Equal(t, Defaults(), c) },
		},
		{
			name:  "FILA_LOG_LEVEL is the legacy name of log.level",
			env:   []string{"FILA_LOG_LEVEL=debug"},
			check: func(t *testing.T, c Config) { require.Equal(t, slog.LevelDebug, c.Log.SlogLevel()) },
		},
		{
			name:  "FILA_LOG__LEVEL wins over the legacy name",
			env:   []string{"FILA_LOG__LEVEL=warn", "FILA_LOG_LEVEL=debug"},
			check: func(t *testing.T, c Config) { require.Equal(t, "warn", c.Log.Level) },
		},
		{
			name:  "the legacy name loses in either order",
			env:   []string{"FILA_LOG_LEVEL=debug", "FILA_LOG__LEVEL=warn"},
			check: func(t *testing.T, c Config) { require.Equal(t, "warn", c.Log.Level) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := ""
			if tt.toml != "" {
				path = writeTOML(t, tt.toml)
			}
			cfg, err := Load(path, func() []string { return tt.env })
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			tt.check(t, cfg)
		})
	}
}

func TestLoadMissingExplicitFile(t *testing.T) {
	t.Parallel()
	_, err := Load(filepath.Join(t.TempDir(), "absent.toml"), noEnv)
	require.ErrorContains(t, err, "absent.toml")
}

func TestParseEndpoint(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in       string
		want     Endpoint
		wantFail bool
	}{
		{in: "http://localhost:4317", want: Endpoint{HostPort: "localhost:4317", Insecure: true}},
		{in: "https://otel.example:4317", want: Endpoint{HostPort: "otel.example:4317"}},
		{in: "collector:4317", want: Endpoint{HostPort: "collector:4317", Insecure: true}},
		{in: "http://collector", want: Endpoint{HostPort: "collector:4317", Insecure: true}},
		{in: "collector", wantFail: true},
		{in: "grpc://collector:4317", wantFail: true},
		{in: "http://collector:4317/v1/traces", wantFail: true},
	}
	for _, tt := range tests {
		got, err := ParseEndpoint(tt.in)
		if tt.wantFail {
			require.Error(t, err, tt.in)
			continue
		}
		require.NoError(t, err, tt.in)
		require.Equal(t, tt.want, got, tt.in)
	}
}

func TestTLSValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		tls  TLS
		want string
	}{
		{"cert without key", TLS{CertFile: "c.pem", MinVersion: "1.2"}, "server.tls.key_file"},
		{"client CA without TLS", TLS{ClientCAFile: "ca.pem", MinVersion: "1.2"}, "server.tls.client_ca_file"},
		{"old version", TLS{CertFile: "c.pem", KeyFile: "k.pem", MinVersion: "1.0"}, "server.tls.min_version"},
		{"mTLS", TLS{CertFile: "c.pem", KeyFile: "k.pem", ClientCAFile: "ca.pem", MinVersion: "1.3"}, ""},
	}
	for _, tt := range tests {
		c := Defaults()
		c.Server.TLS = tt.tls
		err := c.Validate()
		if tt.want == "" {
			require.NoError(t, err, tt.name)
			continue
		}
		require.ErrorContains(t, err, tt.want, tt.name)
	}
}

// TestEachBadValueIsReportedOnce: Validate names every bad key, each once
// (issue 19, Deliver 8: on 44452e1 the four lua.* keys were checked twice,
// so a bad one was reported twice), with its range. The lua.* cases check
// only that a range is given: their bounds are the scripting limits' own.
func TestEachBadValueIsReportedOnce(t *testing.T) {
	t.Parallel()
	tests := []struct {
		key, want string
		set       func(*Config)
	}{
		{"lua.default_timeout_ms", "must be", func(c *Config) { c.Lua.DefaultTimeoutMS = 0 }},
		{"lua.default_memory_limit_bytes", "must be", func(c *Config) { c.Lua.DefaultMemoryLimitBytes = 1 }},
		{"lua.circuit_breaker_threshold", "must be", func(c *Config) { c.Lua.CircuitBreakerThreshold = 0 }},
		{"lua.circuit_breaker_cooldown_ms", "must be", func(c *Config) { c.Lua.CircuitBreakerCooldownMS = -1 }},
		{"limits.max_config_keys", "from 1 to 1000000", func(c *Config) { c.Limits.MaxConfigKeys = 0 }},
		{"limits.max_config_bytes", "from 1048576 to 1073741824", func(c *Config) { c.Limits.MaxConfigBytes = 4096 }},
		{"limits.max_api_keys", "from 1 to 100000", func(c *Config) { c.Limits.MaxAPIKeys = 100_001 }},
	}
	for _, tt := range tests {
		c := Defaults()
		tt.set(&c)
		err := c.Validate()
		require.ErrorContains(t, err, tt.want, tt.key)
		require.Equal(t, 1, strings.Count(err.Error(), "config: "+tt.key+" ="), "%s: %v", tt.key, err)
	}
}

func TestUnknownKeysSuggestTheNearest(t *testing.T) {
	tests := []struct{ name, toml, want, never string }{
		{"a typo", "[server]\nlisten_adr = \"x:1\"\n", "did you mean server.listen_addr?", "known keys"},
		{"a typo in another section", "[limits]\nmax_memory_byte = 1\n", "did you mean limits.max_memory_bytes?", ""},
		{"nothing near: the section's keys", "[server]\nport = 1\n", "([server] has server.default_max_in_flight, server.handshake_timeout_ms", "limits."},
		{"an unknown section", "[nowhere]\nx = 1\n", "README.md, Configuration, lists every key", "server.listen_addr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "fila.toml")
			require.NoError(t, os.WriteFile(path, []byte(tt.toml), 0o600))
			_, err := Load(path, func() []string { return nil })
			require.ErrorContains(t, err, tt.want)
			if tt.never != "" {
				require.NotContains(t, err.Error(), tt.never)
			}
		})
	}
}

func TestEnvWarningsNameSingleUnderscoreKeys(t *testing.T) {
	got := EnvWarnings([]string{
		"FILA_SERVER_LISTEN_ADDR=0.0.0.0:5555", "FILA_STORAGE_SYNC_WRITES=false", // filad's keys, one underscore
		"FILA_SERVER__LISTEN_ADDR=x", "FILA_ADDR=host:1", "FILA_API_KEY=secret", "FILA_LOG_LEVEL=debug", "HOME=/root", // fine
	})
	require.Len(t, got, 2, "%v", got)
	require.Contains(t, got[0], "FILA_SERVER_LISTEN_ADDR is ignored: filad reads FILA_SERVER__LISTEN_ADDR for server.listen_addr")
	require.Contains(t, got[1], "FILA_STORAGE__SYNC_WRITES")
	for _, w := range got {
		require.NotContains(t, w, "0.0.0.0", "a value is never repeated")
	}
}

// TestBootstrapKeyLength: Fila's clients bring 16- to 31-character keys
// (their test suites use 24), so 16 is the minimum (issue 20, Deliver 3; it
// was 32) and under 32 is only weak, which the server logs as a WARN.
func TestBootstrapKeyLength(t *testing.T) {
	t.Parallel()
	tests := []struct {
		key        string
		valid      bool
		weak       bool
		constraint string
	}{
		{"", true, false, ""},
		{strings.Repeat("k", 15), false, true, "at least 16 characters"},
		{"test-bootstrap-key-12345", true, true, ""},
		{strings.Repeat("k", 31), true, true, ""},
		{strings.Repeat("k", 32), true, false, ""},
	}
	for _, tt := range tests {
		c := Defaults()
		c.Auth.BootstrapKey = tt.key
		err := c.Validate()
		if tt.valid {
			require.NoError(t, err, "%d characters", len(tt.key))
		} else {
			require.ErrorContains(t, err, "auth.bootstrap_key", "%d characters", len(tt.key))
			require.ErrorContains(t, err, tt.constraint)
			require.NotContains(t, err.Error(), tt.key, "the key is never shown")
		}
		require.Equal(t, tt.weak, c.Auth.WeakBootstrapKey(), "%d characters", len(tt.key))
	}
}

// TestABadLuaValueFromAFileIsReportedOnce: Load, like Validate, names a bad
// lua.* value once, with the file it came from (the checks ran twice on
// 44452e1; TestEachBadValueIsReportedOnce covers Validate).
func TestABadLuaValueFromAFileIsReportedOnce(t *testing.T) {
	t.Parallel()
	tests := []struct{ key, toml string }{
		{"lua.default_timeout_ms", "default_timeout_ms = 0"},
		{"lua.default_memory_limit_bytes", "default_memory_limit_bytes = 1"},
		{"lua.circuit_breaker_threshold", "circuit_breaker_threshold = 0"},
		{"lua.circuit_breaker_cooldown_ms", "circuit_breaker_cooldown_ms = -1"},
	}
	for _, tt := range tests {
		path := filepath.Join(t.TempDir(), "fila.toml")
		require.NoError(t, os.WriteFile(path, []byte("[lua]\n"+tt.toml+"\n"), 0o600))
		_, err := Load(path, func() []string { return nil })
		require.Error(t, err, tt.key)
		require.Equal(t, 1, strings.Count(err.Error(), tt.key), "%s: %v", tt.key, err)
		require.ErrorContains(t, err, "fila.toml", tt.key)
	}
}
