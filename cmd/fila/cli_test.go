package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// Tests of issue 22's CLI conventions (Deliver 4, Why 5 to 7).

// TestConsumeTimeout: --timeout ends the wait; exit 0 with what arrived,
// exit 3 when nothing did (issue 22, Why 5).
func TestConsumeTimeout(t *testing.T) {
	t.Parallel()
	addr := startBroker(t)
	require.Zero(t, fila(t, addr, "", "queue", "create", "q").code)
	for _, p := range []string{"one", "two"} {
		require.Zero(t, fila(t, addr, "", "enqueue", "q", p).code)
	}
	tests := []struct {
		name   string
		args   []string
		code   int
		lines  int
		stderr string
	}{
		// Two of the five asked for are there: they are printed and acked
		// when the wait ends. The timeout is generous: the messages are
		// stored before the call.
		{"fewer than --count", []string{"--count", "5", "--timeout", "5s"}, 0, 2, ""},
		{"empty queue", []string{"--count", "1", "--timeout", "200ms"}, exitNothing, 0, "fila: no message arrived in 200ms"},
		{"empty queue, no --count", []string{"--timeout", "200ms"}, exitNothing, 0, "no message arrived"},
		{"negative", []string{"--timeout", "-1s"}, exitUsage, 0, "--timeout must not be negative"},
	}
	for _, tt := range tests {
		r := fila(t, addr, "", append([]string{"consume", "q"}, tt.args...)...)
		require.Equal(t, tt.code, r.code, "%s: %s", tt.name, r.stderr)
		require.Equal(t, tt.lines, strings.Count(r.stdout, "\n"), tt.name)
		require.Contains(t, r.stderr, tt.stderr, tt.name)
	}
	require.Contains(t, fila(t, addr, "", "queue", "stats", "q").stdout, "depth 0, in flight 0", "what arrived was acked")
}

func TestPayloadText(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 300) // 600 bytes: cut inside no rune
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", `""`},
		{"text", "hello world", `"hello world"`},
		{"newline quoted", "a\nb", `"a\nb"`},
		{"unicode", "héllo", `"héllo"`},
		{"binary", "\x00\x01\xff", "(binary; --json shows it as payload_base64)"},
		{"invalid UTF-8", "ab\xffc", "(binary; --json shows it as payload_base64)"},
		{"long", long, `"` + strings.Repeat("é", 256) + `"… (88 more bytes; --json shows them all)`},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, payloadText([]byte(tt.in)), tt.name)
	}
}

// TestTextConsumeShowsPayload: text consume shows the payload, or a hint
// for binary (issue 22, Why 6).
func TestTextConsumeShowsPayload(t *testing.T) {
	t.Parallel()
	addr := startBroker(t)
	require.Zero(t, fila(t, addr, "", "queue", "create", "q").code)
	require.Zero(t, fila(t, addr, "", "enqueue", "q", "hello").code)
	require.Zero(t, fila(t, addr, "\x00\xffbin", "enqueue", "q").code)
	r := fila(t, addr, "", "consume", "q", "--count", "2")
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, `(?m)^\S+  key=default  attempt=0  5 bytes  "hello"\n\S+  key=default  attempt=0  5 bytes  \(binary; --json shows it as payload_base64\)$`, r.stdout)
}

// TestJSONEverywhere: every command that prints data takes --json and
// prints one JSON object with fila.v1's field names and numbers as numbers
// (issue 22, Why 6).
func TestJSONEverywhere(t *testing.T) {
	t.Parallel()
	addr := startBroker(t)
	ok := func(args ...string) string {
		t.Helper()
		r := fila(t, addr, "", args...)
		require.Equal(t, 0, r.code, "%v: %s", args, r.stderr)
		return r.stdout
	}
	ok("queue", "create", "q")
	ok("enqueue", "q", "-H", "fila-fairness-key=a", "-H", "fila-weight=3", "x")
	ok("enqueue", "q", "-H", "fila-fairness-key=b", "y")
	ok("config", "set", "rate.a", "10")
	ok("throttle", "set", "t1", "5,2")
	tests := []struct {
		args []string
		path []any // into the decoded object
		want any
	}{
		{[]string{"queue", "list"}, []any{"queues", 0, "name"}, "q"},
		{[]string{"queue", "list"}, []any{"queues", 0, "depth"}, 2.0},
		{[]string{"queue", "stats", "q"}, []any{"depth"}, 2.0},
		{[]string{"queue", "stats", "q"}, []any{"config", "visibility_timeout_ms"}, 30000.0},
		{[]string{"queue", "peek", "q"}, []any{"messages", 0, "headers", "fila-fairness-key"}, "a"},
		{[]string{"queue", "update", "q", "--max-depth", "9"}, []any{"config", "max_depth"}, 9.0},
		{[]string{"config", "get", "rate.a"}, []any{"value"}, "10"},
		{[]string{"config", "list"}, []any{"total_count"}, 2.0},
		{[]string{"throttle", "list"}, []any{"entries", 0, "value"}, "5,2"},
		{[]string{"key", "list"}, []any{"keys"}, []any{}},
	}
	for _, tt := range tests {
		out := ok(append(tt.args, "--json")...)
		require.Equal(t, 1, strings.Count(out, "\n"), "%v: one line", tt.args)
		var v any
		require.NoError(t, json.Unmarshal([]byte(out), &v), "%v: %s", tt.args, out)
		for _, step := range tt.path {
			switch s := step.(type) {
			case string:
				v = v.(map[string]any)[s]
			case int:
				v = v.([]any)[s]
			}
		}
		require.Equal(t, tt.want, v, "%v %v: %s", tt.args, tt.path, out)
	}

	r := fila(t, addr, "", "enqueue", "q", "z", "--json")
	require.Regexp(t, `^\{"message_id":"[0-9a-f-]{36}"\}\n$`, r.stdout)
	r = fila(t, addr, "l1\nl2\n", "enqueue", "q", "--lines", "--json")
	require.Regexp(t, `^\{"line":1,"message_id":"[0-9a-f-]{36}"\}\n\{"line":2,"message_id":"[0-9a-f-]{36}"\}\n$`, r.stdout)

	// consume --json: the weight a message carried, and none when it
	// carried none (it then counts at its key's weight, 1 here), not 0.
	out := ok("consume", "q", "--count", "5", "--json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 5)
	require.Contains(t, lines[0], `"weight":3`)
	require.NotContains(t, lines[1], `"weight"`)
}

// TestAdminOutput: set commands say what they did; the backoff cap is a
// number (issue 22, Why 7).
func TestAdminOutput(t *testing.T) {
	t.Parallel()
	addr := startBroker(t)
	tests := []struct {
		args   []string
		stdout string
	}{
		{[]string{"config", "set", "rate.a", "10"}, "set rate.a=10\n"},
		{[]string{"config", "set", "rate.a", ""}, "deleted rate.a\n"},
		{[]string{"throttle", "set", "p", "200,50"}, "throttle p set to 200,50\n"},
		{[]string{"throttle", "rm", "p"}, "removed throttle p\n"},
		{[]string{"queue", "create", "q", "--retry-initial-ms", "100"}, "created queue q\n"},
	}
	for _, tt := range tests {
		r := fila(t, addr, "", tt.args...)
		require.Equal(t, 0, r.code, "%v: %s", tt.args, r.stderr)
		require.Equal(t, tt.stdout, r.stdout, tt.args)
	}
	r := fila(t, addr, "", "queue", "stats", "q")
	require.Contains(t, r.stdout, "retry backoff 100 ms × 2 up to 51.2s (initial × multiplier^9)")
}

func TestDescribeBackoff(t *testing.T) {
	t.Parallel()
	tests := []struct {
		b    *filav1.RetryBackoff
		want string
	}{
		{&filav1.RetryBackoff{InitialMs: 100}, "100 ms × 2 up to 51.2s (initial × multiplier^9)"},
		{&filav1.RetryBackoff{InitialMs: 1000, Multiplier: 10}, "1000 ms × 10 up to 24h0m0s (initial × multiplier^9)"},
		{&filav1.RetryBackoff{InitialMs: 10, MaxMs: 500, Multiplier: 3}, "10 ms × 3 up to 500 ms"},
	}
	for _, tt := range tests {
		require.Contains(t, describeConfig(&filav1.QueueConfig{RetryBackoff: tt.b}), "retry backoff "+tt.want)
	}
}

// TestSubcommandHelp: each subcommand's --help shows its own usage and
// flags, not another's (issue 22, Why 7: key revoke --help showed key
// create's).
func TestSubcommandHelp(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args        []string
		has, hasNot []string
	}{
		{[]string{"key", "revoke", "--help"}, []string{"usage: fila key revoke NAME"}, []string{"-allow", "-expires", "-superadmin"}},
		{[]string{"key", "list", "--help"}, []string{"usage: fila key list", "-json"}, []string{"-allow", "-expires"}},
		{[]string{"key", "create", "--help"}, []string{"usage: fila key create NAME", "-allow", "-expires", "-superadmin", "no --allow: a key with no rights yet"}, nil},
		{[]string{"key", "set-acl", "--help"}, []string{"-allow"}, []string{"-expires", "-superadmin"}},
		{[]string{"config", "set", "--help"}, []string{"usage: fila config set KEY VALUE"}, []string{"-json"}},
		{[]string{"config", "list", "--help"}, []string{"-json"}, nil},
		{[]string{"throttle", "--help"}, []string{"throttle set KEY RATE[,BURST]", "throttle rm KEY", "throttle list"}, nil},
		{[]string{"consume", "--help"}, []string{"-timeout duration", "exit 3"}, nil},
	}
	for _, tt := range tests {
		r := fila(t, "127.0.0.1:1", "", tt.args...)
		require.Equal(t, 0, r.code, "%v: %s", tt.args, r.stderr)
		for _, s := range tt.has {
			require.Contains(t, r.stdout, s, tt.args)
		}
		for _, s := range tt.hasNot {
			require.NotContains(t, r.stdout, s, tt.args)
		}
	}
	r := fila(t, "127.0.0.1:1", "", "key", "revoke", "x", "--allow", "q=produce")
	require.Equal(t, exitUsage, r.code, "revoke takes no --allow")
	require.Contains(t, r.stderr, "flag provided but not defined: -allow")
}

// TestCompletion: the scripts name every command, subcommand and flag;
// bash's completes through its function.
func TestCompletion(t *testing.T) {
	t.Parallel()
	for _, shell := range []string{"bash", "zsh", "fish"} {
		r := fila(t, "127.0.0.1:1", "", "completion", shell)
		require.Equal(t, 0, r.code, r.stderr)
		for _, s := range []string{"queue", "consume", "redrive", "set-acl", "visibility-timeout-ms", "timeout", "completion"} {
			require.Contains(t, r.stdout, s, shell)
		}
	}
	r := fila(t, "127.0.0.1:1", "", "completion", "tcsh")
	require.Equal(t, exitUsage, r.code)
	require.Contains(t, r.stderr, "bash, zsh or fish")

	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash to run the script")
	}
	script := filepath.Join(t.TempDir(), "fila.bash")
	require.NoError(t, os.WriteFile(script, []byte(fila(t, "", "", "completion", "bash").stdout), 0o600))
	tests := []struct {
		words []string // the last is the word being completed
		want  string
	}{
		{[]string{"fila", ""}, "config consume enqueue help key queue throttle"},
		{[]string{"fila", "qu"}, "queue"},
		{[]string{"fila", "queue", "p"}, "peek purge"},
		{[]string{"fila", "key", "revoke", "--"}, "--help"},
		{[]string{"fila", "key", "create", "x", "--s"}, "--superadmin"},
		{[]string{"fila", "consume", "q", "--t"}, "--timeout"},
		{[]string{"fila", "--addr", "h:1", "queue", "st"}, "stats"},
		{[]string{"fila", "completion", ""}, "bash fish zsh"},
	}
	for _, tt := range tests {
		words := strings.Join(quoteAll(tt.words), " ")
		cmd := exec.Command(bash, "--norc", "-c", `source "$0"; COMP_WORDS=(`+words+`); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _fila; echo "${COMPREPLY[*]}"`, script)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, string(out))
		got := strings.Fields(string(out))
		for _, w := range strings.Fields(tt.want) {
			require.Contains(t, got, w, "%v: %s", tt.words, out)
		}
	}
}

func quoteAll(ws []string) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = "'" + w + "'"
	}
	return out
}

// TestCompletionCoversEveryCommand: a command added to the table but not
// to commandTree would not complete.
func TestCompletionCoversEveryCommand(t *testing.T) {
	t.Parallel()
	require.ElementsMatch(t, sortedKeys(commands), sortedKeys(commandTree()))
	for name := range queueSubcommands {
		require.Contains(t, commandTree()["queue"], name)
	}
}

// TestEnqueueLinesStreams: a line is sent as soon as it is read, not held
// for a full batch, so `tail -f log | fila enqueue q --lines` works.
func TestEnqueueLinesStreams(t *testing.T) {
	t.Parallel()
	addr := startBroker(t)
	require.Zero(t, fila(t, addr, "", "queue", "create", "q").code)
	pr, pw := io.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"enqueue", "q", "--lines"}, pr, &out, &errOut, func(k string) string {
			return map[string]string{"FILA_ADDR": addr}[k]
		})
	}()
	_, err := io.WriteString(pw, "first\n")
	require.NoError(t, err)
	// The first line is stored while stdin is still open.
	require.Eventually(t, func() bool {
		return strings.Contains(fila(t, addr, "", "queue", "stats", "q").stdout, "depth 1,")
	}, 15*time.Second, 20*time.Millisecond)
	_, err = io.WriteString(pw, "second\n")
	require.NoError(t, err)
	require.NoError(t, pw.Close())
	require.Equal(t, 0, <-code, errOut.String())
	require.Len(t, strings.Fields(out.String()), 2)
	require.Contains(t, errOut.String(), "2 enqueued in")
}
