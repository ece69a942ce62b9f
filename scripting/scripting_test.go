package scripting

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
	lua "github.com/yuin/gopher-lua"
)

// testLimits are for tests about what a script does: a minute, so that no
// ordinary call reaches the time limit however busy the machine, and memory
// ample enough that a loop meets the timeout first. A test that needs a
// runaway stopped by time gives its Runner a ticking clock.
var testLimits = Limits{Timeout: time.Minute, MemoryBytes: 1 << 30, BreakerThreshold: 3, BreakerCooldown: time.Minute}

// loopLimits stop a Compile's top level by time (Compile runs on the real
// clock): only a top level that never ends reaches 50 ms, on any machine,
// and it takes about 8 million instructions to reach the memory limit.
var loopLimits = Limits{Timeout: 50 * time.Millisecond, MemoryBytes: 1 << 30}

type config map[string]string

func (c config) Get(k string) (string, bool) { v, ok := c[k]; return v, ok }

func TestCompileReportsLuaErrorsWithTheirLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, src, want string
		limits          Limits
	}{
		{"syntax", "function on_enqueue(msg)\n  return {\nend", "line:3", testLimits},
		{"no hook", "x = 1", "defines no function on_enqueue", testLimits},
		{"top level raises", "error('boom')", "boom", testLimits},
		{"top level loops", "while true do end", "ran over its time budget of 50ms (lua.default_timeout_ms)", loopLimits},
		{"too big", strings.Repeat(" ", MaxScriptBytes+1), "over the limit", testLimits},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Compile("on_enqueue", tt.src, OnEnqueue, tt.limits)
			require.ErrorContains(t, err, tt.want)
		})
	}
	_, err := Compile("on_enqueue", "function on_enqueue(msg) return {} end", OnEnqueue, testLimits)
	require.NoError(t, err)
}

func TestOnEnqueue(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string // the function's body
		want EnqueueResult
		err  string
	}{
		{"tenant from a header, weight from the config store",
			`local t = msg.headers["tenant"]; return {fairness_key = t, weight = tonumber(fila.get("weight." .. t)), throttle_keys = {"provider:aws", "region:eu"}}`,
			EnqueueResult{FairnessKey: "acme", Weight: 3, ThrottleKeys: []string{"provider:aws", "region:eu"}}, ""},
		{"payload size and queue", `return {fairness_key = msg.queue .. ":" .. msg.payload_size}`, EnqueueResult{FairnessKey: "jobs:42"}, ""},
		{"nil", `return nil`, EnqueueResult{}, "returned nil"},
		{"a string", `return "x"`, EnqueueResult{}, "want a table"},
		{"weight out of range", `return {weight = 0}`, EnqueueResult{}, "weight must be"},
		{"weight not whole", `return {weight = 1.5}`, EnqueueResult{}, "weight must be"},
		{"key not a string", `return {fairness_key = {}}`, EnqueueResult{}, "want a string"},
		{"throttle key not a string", `return {throttle_keys = {1}}`, EnqueueResult{}, "throttle_keys[1]"},
		{"half a character as the key", `return {fairness_key = string.sub("é", 1, 1)}`, EnqueueResult{}, "bytes of UTF-8"},
		{"a throttle key not UTF-8", `return {throttle_keys = {"ok", "\255"}}`, EnqueueResult{}, "throttle_keys[2] must be a string of 1 to"},
		{"writes headers", `msg.headers.x = "y"; return {}`, EnqueueResult{}, "read-only"},
		{"raises", `error("bad tenant")`, EnqueueResult{}, "bad tenant"},
		{"os is gone", `os.exit(1)`, EnqueueResult{}, "with key 'exit'"},
		{"io is gone", `io.open("/etc/passwd")`, EnqueueResult{}, "with key 'open'"},
		{"require is gone", `require("os")`, EnqueueResult{}, "attempt to call a non-function"},
		{"loops forever", `while true do end`, EnqueueResult{}, "ran over its time budget of 1m0s"},
		{"allocates without end", `local t = {}; while true do t[#t + 1] = string.rep("x", 4096) end`, EnqueueResult{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := NewRunner(testLimits, config{"weight.acme": "3"})
			defer r.Close()
			// Virtual time: the deadline is 60,000 clock reads away, which
			// only a runaway script reaches, on any machine.
			clock := ticking(time.Millisecond)
			var reads int
			r.clock = func() time.Time { reads++; return clock() }
			require.NoError(t, r.Set(OnEnqueue, "function on_enqueue(msg) "+tt.body+" end"))
			got, c := r.OnEnqueue(EnqueueInput{Headers: map[string]string{"tenant": "acme"}, PayloadSize: 42, Queue: "jobs"})
			require.True(t, c.Ran)
			require.Less(t, reads, 120_000, "stopped within 2x the budget")
			require.Equal(t, tt.want, got)
			if tt.err == "" && tt.want.FairnessKey == "" {
				require.Error(t, c.Err, "the runaway script was stopped")
				return
			}
			if tt.err == "" {
				require.NoError(t, c.Err)
				return
			}
			require.ErrorContains(t, c.Err, tt.err)
		})
	}
}

func TestOnFailure(t *testing.T) {
	t.Parallel()
	r := NewRunner(testLimits, nil)
	defer r.Close()
	require.NoError(t, r.Set(OnFailure, `
function on_failure(msg, err)
  if msg.attempts >= 3 or err == "fatal" then return {action = "dlq"} end
  return {action = "retry", delay_ms = 100 * msg.attempts}
end`))
	res, ok, _ := r.OnFailure(FailureInput{ID: "m", Attempts: 2, Queue: "q", Error: "flaky"})
	require.True(t, ok)
	require.Equal(t, FailureResult{Delay: 200 * time.Millisecond}, res)
	res, ok, _ = r.OnFailure(FailureInput{Attempts: 1, Error: "fatal"})
	require.True(t, ok)
	require.True(t, res.DeadLetter)

	for _, bad := range []string{`{action = "maybe"}`, `{action = "retry", delay_ms = -1}`, `{action = "retry", delay_ms = 86400001}`, `nil`} {
		_, err := DecodeFailure(eval(t, bad))
		require.Error(t, err, bad)
	}
}

func TestBreakerOpensAtTheThresholdAndClosesOnSuccess(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	cfg := config{}
	r := NewRunner(testLimits, cfg)
	r.now = func() time.Time { return now }
	defer r.Close()
	require.NoError(t, r.Set(OnEnqueue, `function on_enqueue(msg) if fila.get("app.ok") then return {} end error("down") end`))
	for i := 1; i <= 3; i++ {
		_, c := r.OnEnqueue(EnqueueInput{})
		require.True(t, c.Ran)
		require.Error(t, c.Err)
		require.Equal(t, i == 3, c.BreakerOpened, "opens at exactly the third failure")
	}
	_, c := r.OnEnqueue(EnqueueInput{})
	require.False(t, c.Ran, "bypassed while open")
	now = now.Add(time.Minute - time.Second)
	_, c = r.OnEnqueue(EnqueueInput{})
	require.False(t, c.Ran, "still within the cooldown")

	now = now.Add(time.Second)
	_, c = r.OnEnqueue(EnqueueInput{})
	require.True(t, c.Ran, "tried again after the cooldown")
	require.Error(t, c.Err)
	cfg["app.ok"] = "1"
	_, c = r.OnEnqueue(EnqueueInput{})
	require.True(t, c.Ran)
	require.NoError(t, c.Err)
	delete(cfg, "app.ok")
	for range 2 { // a success reset the count: two failures do not open it
		_, c = r.OnEnqueue(EnqueueInput{})
		require.False(t, c.BreakerOpened)
	}
	_, c = r.OnEnqueue(EnqueueInput{})
	require.True(t, c.BreakerOpened, "the third in a row opens it again")
}

// testState is a sandboxed state with a budget started.
func testState() *lua.LState {
	b := newBudget("test", testLimits)
	b.start()
	return newState(testLimits, nil, b)
}

// eval returns the value of the Lua expression src.
func eval(t testing.TB, src string) lua.LValue {
	L := testState()
	t.Cleanup(L.Close)
	require.NoError(t, L.DoString("return "+src))
	return L.Get(-1)
}

// FuzzDecodeEnqueue feeds arbitrary Lua expressions to the result decoder:
// it may refuse them, never panic.
func FuzzDecodeEnqueue(f *testing.F) {
	for _, s := range []string{`{fairness_key = "a", weight = 3}`, `{fairness_key = string.sub("\195\169", 1, 1)}`, `{throttle_keys = {"\255"}}`, `{throttle_keys = {"x", 2}}`, `nil`, `{weight = 1/0}`, `{weight = 0/0}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		L := testState()
		defer L.Close()
		if L.DoString("return "+src) != nil {
			return
		}
		res, err := DecodeEnqueue(L.Get(-1))
		if err == nil && res.Weight > MaxWeight {
			t.Fatalf("weight %d accepted", res.Weight)
		}
		if err == nil && (!utf8.ValidString(res.FairnessKey) || !utf8.ValidString(strings.Join(res.ThrottleKeys, ""))) {
			t.Fatalf("a key that is not UTF-8 accepted: %q %q", res.FairnessKey, res.ThrottleKeys)
		}
	})
}

func BenchmarkOnEnqueue(b *testing.B) {
	r := NewRunner(Limits{Timeout: 10 * time.Millisecond, MemoryBytes: 1 << 20, BreakerThreshold: 3, BreakerCooldown: time.Second}, config{"weight.acme": "3"})
	defer r.Close()
	if err := r.Set(OnEnqueue, `
function on_enqueue(msg)
  local tenant = msg.headers["tenant"] or "anonymous"
  return { fairness_key = tenant, weight = tonumber(fila.get("weight." .. tenant)) or 1 }
end`); err != nil {
		b.Fatal(err)
	}
	in := EnqueueInput{Headers: map[string]string{"tenant": "acme", "traceparent": "00-x"}, PayloadSize: 1024, Queue: "q"}
	b.ReportAllocs()
	for b.Loop() {
		if _, c := r.OnEnqueue(in); c.Err != nil {
			b.Fatal(c.Err)
		}
	}
}
