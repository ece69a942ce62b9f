package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/internal/filadtest"
	"github.com/fila-dev/filad/internal/testpki"
	"github.com/fila-dev/filad/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startBroker starts filad on loopback with a fresh data directory, its
// config changed by each of with, and returns its address.
func startBroker(t *testing.T, with ...func(*config.Config)) string {
	t.Helper()
	return filadtest.Start(t, filadtest.Options{Config: func(c *config.Config) {
		for _, f := range with {
			f(c)
		}
	}}).Addr()
}

type result struct {
	code           int
	stdout, stderr string
}

// fila runs the CLI in-process with FILA_ADDR=addr and the given stdin.
func fila(t *testing.T, addr, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	env := map[string]string{"FILA_ADDR": addr}
	code := run(ctx, args, strings.NewReader(stdin), &out, &errOut, func(k string) string { return env[k] })
	return result{code, out.String(), errOut.String()}
}

func TestQueueCommands(t *testing.T) {
	t.Parallel()
	addr := startBroker(t)
	r := fila(t, addr, "", "queue", "create", "orders", "--visibility-timeout-ms", "5000")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "created queue orders\n", r.stdout)

	for _, key := range []string{"a", "a", "b"} {
		r = fila(t, addr, "", "enqueue", "orders", "-H", "fila-fairness-key="+key, "-H", "fila-weight=2", "hello")
		require.Equal(t, 0, r.code, r.stderr)
		require.Len(t, strings.TrimSpace(r.stdout), 36, "prints the message id")
	}

	r = fila(t, addr, "", "queue", "list")
	require.Equal(t, 0, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 3)
	require.Equal(t, []string{"QUEUE", "DEPTH", "IN", "FLIGHT", "DELAYED", "CONSUMERS"}, strings.Fields(lines[0]))
	require.Equal(t, "orders", strings.Fields(lines[1])[0])
	require.Equal(t, "orders.dlq", strings.Fields(lines[2])[0], "created with its dead-letter queue")

	r = fila(t, addr, "", "queue", "stats", "orders")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "queue orders: depth 3, in flight 0, delayed 0, consumers 0, fairness keys 2, quantum 1")
	require.Contains(t, r.stdout, "config: visibility timeout 5000 ms, max attempts 0, dead letter true")
	require.Regexp(t, `(?m)^FAIRNESS KEY\s+PENDING\s+WEIGHT\s+DEFICIT$`, r.stdout)
	require.Regexp(t, `(?m)^a\s+2\s+2\s+0$`, r.stdout)
	require.Regexp(t, `(?m)^b\s+1\s+2\s+0$`, r.stdout)

	r = fila(t, addr, "", "queue", "delete", "orders")
	require.Equal(t, 0, r.code, r.stderr)
	r = fila(t, addr, "", "queue", "stats", "orders")
	require.Equal(t, 1, r.code)
	require.Equal(t, "fila: queue not found: \"orders\" (NOT_FOUND)\n", r.stderr)
}

func TestEnqueueAndConsume(t *testing.T) {
	t.Parallel()
	addr := startBroker(t)
	require.Zero(t, fila(t, addr, "", "queue", "create", "q").code)
	id1 := strings.TrimSpace(fila(t, addr, "", "enqueue", "q", "-H", "fila-fairness-key=k1", "first").stdout)
	id2 := strings.TrimSpace(fila(t, addr, "from stdin", "enqueue", "q").stdout)

	// Text output: id, fairness key, attempt, size; --nack sends them back.
	r := fila(t, addr, "", "consume", "q", "--count", "2", "--nack")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, id1+"  key=k1  attempt=0  5 bytes  \"first\"\n"+id2+"  key=default  attempt=0  10 bytes  \"from stdin\"\n", r.stdout)

	// Nacked: redelivered with attempt 1, now as JSON, and acked.
	r = fila(t, addr, "", "consume", "q", "--count", "2", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	var got []jsonMessage
	for dec.More() {
		var m jsonMessage
		require.NoError(t, dec.Decode(&m))
		got = append(got, m)
	}
	require.Len(t, got, 2)
	require.Equal(t, id1, got[0].ID)
	require.EqualValues(t, 1, got[0].AttemptCount)
	require.Equal(t, "k1", got[0].FairnessKey)
	require.Equal(t, "q", got[0].Queue)
	payload, err := base64.StdEncoding.DecodeString(got[1].PayloadB64)
	require.NoError(t, err)
	require.Equal(t, "from stdin", string(payload))

	r = fila(t, addr, "", "queue", "stats", "q")
	require.Contains(t, r.stdout, "depth 0, in flight 0", "acked, and nothing else was leased")
}

// TestFailureCommands: the CLI tour of a poison message, from max attempts
// to the DLQ, a peek, a redrive, and purge and config.
func TestFailureCommands(t *testing.T) {
	t.Parallel()
	addr := startBroker(t)
	ok := func(stdin string, args ...string) string {
		t.Helper()
		r := fila(t, addr, stdin, args...)
		require.Equal(t, 0, r.code, "%v: %s", args, r.stderr)
		return r.stdout
	}
	ok("", "queue", "create", "jobs", "--max-attempts", "2")
	require.Contains(t, ok("", "queue", "update", "jobs", "--retry-initial-ms", "1", "--retry-multiplier", "1"),
		"max attempts 2, dead letter true, max depth 0, max bytes 0, retry backoff 1 ms × 1 up to 1ms (initial × multiplier^9)")
	id := strings.TrimSpace(ok("", "enqueue", "jobs", "-H", "job=resize", "poison"))
	for range 2 {
		ok("", "consume", "jobs", "--count", "1", "--nack")
	}
	require.Contains(t, ok("", "queue", "stats", "jobs.dlq"), "depth 1")
	peek := ok("", "queue", "peek", "jobs.dlq", "--payload")
	require.Regexp(t, id+`\s+0\s+6\s+now\s+fila-dlq-attempts="2" fila-dlq-error="nacked by fila consume --nack" fila-dlq-reason="nack" fila-dlq-source-queue="jobs" job="resize"`, peek)
	require.Contains(t, peek, `"poison"`)
	require.Equal(t, "redrove 1 message(s) from jobs.dlq to jobs\n", ok("", "queue", "redrive", "jobs.dlq", "--count", "5"))
	require.Contains(t, ok("", "queue", "stats", "jobs"), "depth 1")

	r := fila(t, addr, "no\n", "queue", "purge", "jobs")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "not confirmed; nothing deleted")
	require.Contains(t, ok("", "queue", "stats", "jobs"), "depth 1")
	require.Contains(t, ok("yes\n", "queue", "purge", "jobs"), "purged 1 message(s) from jobs")
	require.Contains(t, ok("", "queue", "stats", "jobs"), "depth 0")

	ok("", "config", "set", "rate.a", "10")
	ok("", "config", "set", "rate.b", "20")
	require.Equal(t, "10\n", ok("", "config", "get", "rate.a"))
	require.Equal(t, "rate.a=10\nrate.b=20\n", ok("", "config", "list", "rate."))
	ok("", "config", "set", "rate.a", "")
	require.Equal(t, "rate.b=20\n", ok("", "config", "list"))
	require.Equal(t, "\n", ok("", "config", "get", "rate.a"), "unset reads as empty, as in Fila")

	script := filepath.Join(t.TempDir(), "tenant.lua")
	require.NoError(t, os.WriteFile(script, []byte(`function on_enqueue(msg) return { fairness_key = msg.headers["tenant"] } end`), 0o644))
	require.Contains(t, ok("", "queue", "update", "jobs", "--on-enqueue-script", "@"+script), "updated queue jobs")
	ok("", "enqueue", "jobs", "-H", "tenant=acme", "x")
	require.Contains(t, ok("", "queue", "stats", "jobs"), "acme")
	r = fila(t, addr, "", "queue", "update", "jobs", "--on-enqueue-script", "function on_enqueue(")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "config.on_enqueue_script")

	ok("", "throttle", "set", "provider:aws", "200,50")
	require.Regexp(t, `(?m)^provider:aws\s+200,50$`, ok("", "throttle", "list"))
	require.Regexp(t, `(?m)^provider:aws\s+50\.0\s+200\s+50$`, ok("", "queue", "stats", "jobs"), "stats shows the buckets")
	for _, cmd := range []string{"throttle", "config", "key", "queue"} {
		require.Contains(t, ok("", cmd, "--help"), "usage: fila "+cmd)
	}
	r = fila(t, addr, "", "throttle", "set", "x", "fast")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "must be a number from 0.001 to 1e+09")
	ok("", "throttle", "rm", "provider:aws")
	require.NotContains(t, ok("", "throttle", "list"), "provider:aws")
}

func TestErrors(t *testing.T) {
	t.Parallel()
	addr := startBroker(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := lis.Addr().String()
	require.NoError(t, lis.Close())

	tests := []struct {
		name   string
		addr   string
		args   []string
		code   int
		stderr string
	}{
		{"unknown queue", addr, []string{"enqueue", "nope", "x"}, 1, `fila: queue not found: "nope" (NOT_FOUND)`},
		{"bad header syntax", addr, []string{"enqueue", "q", "-H", "novalue", "x"}, 2, `header "novalue": want key=value`},
		{"bad queue name", addr, []string{"queue", "create", "a b"}, 1, "(INVALID_ARGUMENT)"},
		{"no command", addr, nil, 2, "usage:"},
		{"unknown command", addr, []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"missing argument", addr, []string{"queue", "stats"}, 2, "takes 1 argument(s), got 0"},
		{"ack and nack", addr, []string{"consume", "q", "--ack", "--nack"}, 2, "exclude each other"},
		{"unreachable", dead, []string{"queue", "list"}, 1, "filad is not reachable"},
		{"--addr wins over FILA_ADDR", dead, []string{"--addr", addr, "queue", "list"}, 0, ""},
	}
	for _, tt := range tests {
		r := fila(t, tt.addr, "", tt.args...)
		require.Equal(t, tt.code, r.code, "%s: %s", tt.name, r.stderr)
		require.Contains(t, r.stderr, tt.stderr, tt.name)
		if tt.code != 0 {
			require.Empty(t, r.stdout, tt.name)
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		args   []string
		stdout string
	}{
		{"--help", []string{"--help"}, "usage:\n  fila [--addr host:port]"},
		{"-h", []string{"-h"}, "fila consume QUEUE"},
		{"help", []string{"help"}, "fila enqueue QUEUE"},
		{"--version", []string{"--version"}, "fila " + telemetry.Version},
		{"consume --help", []string{"consume", "--help"}, "usage: fila consume QUEUE [--count N]"},
		{"consume --help lists flags", []string{"consume", "--help"}, "-count int"},
		{"enqueue -h", []string{"enqueue", "-h"}, "header key=value (repeatable)"},
		{"queue create --help", []string{"queue", "create", "--help"}, "-visibility-timeout-ms"},
	}
	for _, tt := range tests {
		// No broker: help and version never dial.
		r := fila(t, "127.0.0.1:1", "", tt.args...)
		require.Equal(t, 0, r.code, "%s: %s", tt.name, r.stderr)
		require.Contains(t, r.stdout, tt.stdout, tt.name)
		require.Empty(t, r.stderr, tt.name)
	}
	r := fila(t, "127.0.0.1:1", "", "consume", "--bogus")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, "usage: fila consume", "a bad flag shows the command's usage")
}

// consumeAll consumes n messages of queue as JSON (acking them) and
// returns their payloads and ids in delivery order.
func consumeAll(t *testing.T, addr, queue string, n int) (payloads, ids []string) {
	t.Helper()
	r := fila(t, addr, "", "consume", queue, "--count", fmt.Sprint(n), "--json")
	require.Equal(t, 0, r.code, r.stderr)
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	for dec.More() {
		var m jsonMessage
		require.NoError(t, dec.Decode(&m))
		payload, err := base64.StdEncoding.DecodeString(m.PayloadB64)
		require.NoError(t, err)
		payloads = append(payloads, string(payload))
		ids = append(ids, m.ID)
	}
	return payloads, ids
}

// TestEnqueueLines: --lines keeps input order in the queue (issue 22, Why 3)
// and prints each stored line's id in that order, with a final count.
func TestEnqueueLines(t *testing.T) {
	t.Parallel()
	var in strings.Builder
	var want []string
	const n = 1500 // more than one batch
	for i := range n {
		want = append(want, fmt.Sprintf("line-%d", i))
		fmt.Fprintln(&in, want[i])
	}
	tests := []struct {
		name string
		with func(*config.Config)
	}{
		{"defaults", func(*config.Config) {}},
		// A filad with a lower batch limit refuses fila's batches whole;
		// fila sends them in halves, still in order.
		{"max_batch_items 300", func(c *config.Config) { c.Server.MaxBatchItems = 300 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			addr := startBroker(t, tt.with)
			require.Equal(t, 0, fila(t, addr, "", "queue", "create", "bulk").code)
			r := fila(t, addr, in.String(), "enqueue", "bulk", "--lines", "-H", "src=cli")
			require.Equal(t, 0, r.code, r.stderr)
			ids := strings.Fields(r.stdout)
			payloads, got := consumeAll(t, addr, "bulk", n)
			require.Equal(t, want, payloads, "delivered in input order")
			require.Equal(t, ids, got, "the i-th id printed is the i-th line's")
			require.Regexp(t, `^1500 enqueued in \d+\.\d s\n$`, r.stderr, "a final count, always")
		})
	}
	addr := startBroker(t)
	r := fila(t, addr, "x\n", "enqueue", "nope", "--lines")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "line 1: queue not found")
	require.Contains(t, r.stderr, "0 enqueued in")
}

// TestEnqueueLinesStopsAtFailure: a refused line ends the load; every line
// before it is stored and its id printed, none after it is stored, and the
// error names the line (issue 22, Why 4).
func TestEnqueueLinesStopsAtFailure(t *testing.T) {
	t.Parallel()
	addr := startBroker(t)
	big := strings.Repeat("x", 2<<20) // over server.max_message_bytes
	tests := []struct {
		name   string
		create []string
		lines  []string
		stored int
		reason string
	}{
		// The gateway refuses the line, and would store a later one.
		{"too large", nil, []string{"small", big, "after"}, 1, "line 2: "},
		// The queue refuses the line (max_bytes), and a later, smaller one
		// would fit.
		{"queue full", []string{"--max-bytes", "10"}, []string{"aaaa", "bbbbbbbbbb", "c"}, 1, "line 2: "},
		{"first line", []string{"--max-bytes", "3"}, []string{"aaaa", "b"}, 0, "line 1: "},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := fmt.Sprintf("stop%d", i)
			require.Zero(t, fila(t, addr, "", append([]string{"queue", "create", q}, tt.create...)...).code)
			r := fila(t, addr, strings.Join(tt.lines, "\n")+"\n", "enqueue", q, "--lines")
			require.Equal(t, 1, r.code, r.stderr)
			require.Contains(t, r.stderr, tt.reason)
			require.Contains(t, r.stderr, fmt.Sprintf("%d enqueued in", tt.stored))
			require.Contains(t, r.stderr, fmt.Sprintf("rerun from there (tail -n +%d FILE", tt.stored+1))
			ids := strings.Fields(r.stdout)
			require.Len(t, ids, tt.stored)
			require.Contains(t, fila(t, addr, "", "queue", "stats", q).stdout, fmt.Sprintf("depth %d,", tt.stored), "nothing after the failing line")
			if tt.stored > 0 {
				payloads, got := consumeAll(t, addr, q, tt.stored)
				require.Equal(t, tt.lines[:tt.stored], payloads)
				require.Equal(t, ids, got)
			}
		})
	}
}

// TestTLSFlags: with --tls-ca (and a client certificate for mTLS) the CLI
// talks to a filad on TLS; without them it cannot.
func TestTLSFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	root := testpki.NewCA(t, "fila CLI test CA")
	cert, key := root.Issue(t, "filad", 2, true, time.Now().Add(time.Hour))
	clientCert, clientKey := root.Issue(t, "operator", 3, false, time.Now().Add(time.Hour))
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, data, 0o600))
		return p
	}
	addr := startBroker(t, func(c *config.Config) {
		c.Server.TLS = config.TLS{CertFile: write("s.pem", cert), KeyFile: write("s.key", key), ClientCAFile: write("ca.pem", root.PEM), MinVersion: "1.2"}
	})

	r := fila(t, addr, "", "--tls-ca", write("root.pem", root.PEM), "--tls-cert", write("c.pem", clientCert), "--tls-key", write("c.key", clientKey), "queue", "create", "secure")
	require.Equal(t, 0, r.code, r.stderr)
	r = fila(t, addr, "", "--tls-ca", filepath.Join(dir, "root.pem"), "queue", "list")
	require.Equal(t, 1, r.code, "mTLS wants a client certificate")
	r = fila(t, addr, "", "queue", "list")
	require.Equal(t, 1, r.code, "plaintext is refused")
	require.Contains(t, r.stderr, "(if filad serves TLS there, connect with --tls-ca FILE)", "the hint names TLS")
	plain := startBroker(t)
	r = fila(t, plain, "", "--tls-ca", filepath.Join(dir, "root.pem"), "queue", "list")
	require.Equal(t, 1, r.code, "TLS to a plaintext filad")
	require.Contains(t, r.stderr, "filad there does not serve TLS: leave out --tls-ca", r.stderr)
	r = fila(t, addr, "", "--tls-cert", filepath.Join(dir, "c.pem"), "queue", "list")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "need --tls-ca")
}

// TestKeyCommands: the team tour — a bootstrap key makes a producer-only
// and a consumer-only key; each can do its part and nothing else; a
// revoked key stops working.
func TestKeyCommands(t *testing.T) {
	t.Parallel()
	const boot = "bootstrap-secret-for-the-cli-test-0123456789"
	addr := startBroker(t, func(c *config.Config) { c.Auth = config.Auth{Mode: "on", BootstrapKey: boot} })
	run := func(key string, args ...string) result {
		return fila(t, addr, "", append([]string{"--api-key", key}, args...)...)
	}
	require.Zero(t, run(boot, "queue", "create", "orders").code)
	r := run(boot, "key", "create", "producer", "--allow", "orders=produce")
	require.Equal(t, 0, r.code, r.stderr)
	producer := strings.TrimSpace(r.stdout)
	require.Contains(t, r.stderr, "shown this once")
	r = run(boot, "key", "create", "consumer", "--allow", "orders=consume", "--expires", "1h")
	require.Equal(t, 0, r.code, r.stderr)
	consumer := strings.TrimSpace(r.stdout)

	require.Zero(t, run(producer, "enqueue", "orders", "hello").code)
	r = run(producer, "consume", "orders", "--count", "1")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "(PERMISSION_DENIED)")
	r = run(consumer, "consume", "orders", "--count", "1")
	require.Equal(t, 0, r.code, r.stderr)
	r = run(consumer, "enqueue", "orders", "x")
	require.Contains(t, r.stderr, `produce on queue "orders" is not allowed`)

	// Fila's model: a key made with no rights and granted them by key_id.
	r = run(boot, "key", "create", "later")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "with no permissions: it can do nothing until `fila key set-acl", "a key with no rights is allowed, and said so")
	later := strings.TrimSpace(r.stdout)
	id := regexp.MustCompile(`key_id ([0-9a-f-]{36})`).FindStringSubmatch(r.stderr)
	require.Len(t, id, 2, r.stderr)
	require.Contains(t, run(later, "enqueue", "orders", "x").stderr, "(PERMISSION_DENIED)")
	r = run(boot, "key", "set-acl", id[1], "--allow", "orders=produce,consume")
	require.Equal(t, 0, r.code, r.stderr)
	require.Zero(t, run(later, "enqueue", "orders", "x").code)
	r = run(boot, "key", "get-acl", id[1])
	require.Equal(t, "orders=produce\norders=consume\n", r.stdout)

	r = run(boot, "key", "list")
	require.Regexp(t, `(?m)^producer\s+[0-9a-f-]{36}\s+[0-9a-f]{8}\s+never\s+orders=produce$`, r.stdout)
	require.NotContains(t, r.stdout, producer)
	require.Zero(t, run(boot, "key", "revoke", "producer").code)
	r = run(producer, "enqueue", "orders", "x")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "(UNAUTHENTICATED)")
	r = fila(t, addr, "", "queue", "list")
	require.Contains(t, r.stderr, "an api key is required")
}
