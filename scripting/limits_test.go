package scripting

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	lua "github.com/yuin/gopher-lua"
)

// hostile runs body as on_enqueue's body through a real Runner, once.
func hostile(t *testing.T, limits Limits, body string, headers map[string]string) Call {
	t.Helper()
	r := NewRunner(limits, config{})
	t.Cleanup(r.Close)
	require.NoError(t, r.Set(OnEnqueue, "function on_enqueue(msg)\n"+body+"\nend"))
	_, c := r.OnEnqueue(EnqueueInput{Headers: headers, Queue: "q"})
	require.True(t, c.Ran)
	return c
}

// memoryScripts each try to make filad allocate without bound.
var memoryScripts = []struct{ name, body string }{
	{"string.rep 1e12", `return {fairness_key = string.rep("x", 1e12)}`},
	{"string.rep 400 MB", `return {fairness_key = ("x"):rep(4e8)}`},
	{"concatenation doubling", `local s = "x" while true do s = s .. s end`},
	{"concatenation in a loop", `local t = {} for i = 1, 1e9 do t[#t+1] = "abcdefgh" .. i end`},
	{"table.concat", `local t = {} for i = 1, 1e9 do t[i] = ("x"):rep(100) end return {fairness_key = table.concat(t)}`},
	{"table.concat of a repeated piece", `local p = ("x"):rep(1e6) local t = {} for i = 1, 100 do t[i] = p end return {fairness_key = table.concat(t, p)}`},
	{"growing a table", `local t = {} local i = 1 while true do t[i] = i i = i + 1 end`},
	{"growing a table of tables", `local t = {} local i = 1 while true do t[i] = {a = 1, b = 2, c = 3} i = i + 1 end`},
	{"growing a table of closures", `local t = {} local i = 1 while true do t[i] = function() return i end i = i + 1 end`},
	{"gsub with a large replacement", `local s = ("a"):rep(1000) while true do s = s:gsub("a", "aaaa") end`},
	{"gsub with a function", `local s = ("a"):rep(1e6) while true do s = s:gsub(".", function(c) return c .. c end) end`},
	{"string.format doubling", `local s = "x" while true do s = string.format("%s%s", s, s) end`},
	{"string.format wide", `local t = {} while true do t[#t+1] = string.format("%99d", 1) end`},
	{"unpack doubling", `local t = {1, 2} while true do t = {unpack(t), unpack(t)} end`},
	{"string.byte", `local s = ("x"):rep(3e6) local t = {s:byte(1, -1)}`},
	{"upper in a loop", `local s = ("x"):rep(1e5) local t = {} while true do t[#t+1] = s:upper() end`},
	{"pcall swallowing the refusal", `while true do pcall(string.rep, "x", 1e12) end`},
	{"tostring in a loop", `local t = {} local i = 0 while true do i = i + 1 t[i] = tostring(i) end`},
}

// TestCallsCannotExhaustMemory: no call allocates much past the limit,
// whatever it does, and every one of them fails as a memory overrun. It
// counts the process's own allocations, so it does not run in parallel.
func TestCallsCannotExhaustMemory(t *testing.T) {
	const limit = 8 << 20
	// A long timeout, so that memory is what stops them, on any machine.
	limits := Limits{Timeout: time.Minute, MemoryBytes: limit, BreakerThreshold: 3, BreakerCooldown: time.Minute}
	for _, tt := range memoryScripts {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			c := hostile(t, limits, tt.body, nil)
			runtime.ReadMemStats(&after)
			require.ErrorIs(t, c.Err, ErrMemory)
			require.ErrorContains(t, c.Err, "lua.default_memory_limit_bytes")
			kind, _ := c.Failure()
			require.Equal(t, FailureMemory, kind)
			allocated := after.TotalAlloc - before.TotalAlloc
			t.Logf("allocated %.1f MiB in %v", float64(allocated)/(1<<20), c.Duration)
			// The state itself (libraries, registry: about 0.2 MiB) is made
			// in the call, and the runtime allocates a little of its own.
			require.Less(t, allocated, uint64(limit+2<<20), "allocated past the limit")
		})
	}
}

// ticking is a clock that moves on by step at every read, so a test of the
// time budget does not depend on the machine's speed: a call is stopped
// within 2× its budget when fewer than 2 × budget/step clock reads are
// needed past the deadline, which holds when every long-running path reads
// the clock.
func ticking(step time.Duration) func() time.Time {
	now := time.Unix(0, 0)
	return func() time.Time { now = now.Add(step); return now }
}

// TestCallsCannotExhaustTime: each of these ran for seconds in gopher-lua's
// own library functions; they stop at the budget, inside the functions.
func TestCallsCannotExhaustTime(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, body string }{
		{"a backtracking pattern", `return {fairness_key = tostring(string.find(("a"):rep(26), ("a-"):rep(8) .. "b"))}`},
		{"a backtracking match", `return {fairness_key = string.match(("a"):rep(30), ("a-"):rep(10) .. "b")}`},
		{"a backtracking gmatch", `for m in string.gmatch(("a"):rep(30), ("a-"):rep(10) .. "b") do end`},
		{"a backtracking gsub", `string.gsub(("a"):rep(30), ("a-"):rep(10) .. "b", "")`},
		{"a loop", `while true do end`},
		{"a loop inside pcall", `while true do pcall(function() while true do end end) end`},
		{"sorting", `local t = {} for i = 1, 2e4 do t[i] = -i end while true do table.sort(t, function(a, b) return a > b end) end`},
		{"table.insert at the front", `local t = {} while true do table.insert(t, 1, 0) end`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const budget = 10 * time.Millisecond
			r := NewRunner(Limits{Timeout: budget, MemoryBytes: 1 << 30, BreakerThreshold: 3, BreakerCooldown: time.Minute}, config{})
			defer r.Close()
			clock := ticking(time.Microsecond)
			var reads int
			r.clock = func() time.Time { reads++; return clock() }
			require.NoError(t, r.Set(OnEnqueue, "function on_enqueue(msg)\n"+tt.body+"\nend"))
			_, c := r.OnEnqueue(EnqueueInput{})
			require.ErrorIs(t, c.Err, ErrTimeout)
			require.ErrorContains(t, c.Err, "lua.default_timeout_ms")
			// The deadline is 10,000 reads away; 2x the budget is 20,000.
			require.Less(t, reads, 20_000, "the clock was read too seldom to stop within 2x the budget")
			t.Logf("stopped after %d clock reads, %v of real time", reads, c.Duration)
		})
	}
}

// TestCompileBoundsTheTopLevel: CreateQueue's check runs a script's top
// level within the same limits, and says which.
func TestCompileBoundsTheTopLevel(t *testing.T) {
	t.Parallel()
	// Compile runs on the real clock: the memory cases have a minute, so
	// that time cannot stop them first however busy the machine; the
	// backtracking pattern never ends, so it reaches 50 ms on any machine.
	tests := []struct {
		name, top, want string
		timeout         time.Duration
	}{
		{"string.rep 1e12", `local s = string.rep("x", 1e12)`, "memory budget of 8388608 bytes (lua.default_memory_limit_bytes)", time.Minute},
		{"a backtracking pattern", `string.find(("a"):rep(40), ("a-"):rep(12) .. "b")`, "time budget of 50ms (lua.default_timeout_ms)", 50 * time.Millisecond},
		{"pcall around the refusal", `for i = 1, 10 do pcall(string.rep, "x", 1e12) end`, "memory budget", time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			limits := Limits{Timeout: tt.timeout, MemoryBytes: 8 << 20}
			_, err := Compile(OnEnqueue, tt.top+"\nfunction on_enqueue(msg) return {} end", OnEnqueue, limits)
			require.ErrorContains(t, err, tt.want)
		})
	}
}

// TestBoundedFunctionsKeepLuaSemantics compares each replaced function with
// gopher-lua's own on ordinary input: the bounds change nothing else.
func TestBoundedFunctionsKeepLuaSemantics(t *testing.T) {
	t.Parallel()
	exprs := []string{
		`string.rep("ab", 3)`, `string.rep("ab", 0)`, `string.rep("", 5)`, `("x"):rep(-1)`,
		`string.format("%d|%5.2f|%-4s|%x|%q|%%|%c|%g", 42, 3.14159, "ab", 255, 'a"b', 65, 1e20)`,
		`string.format("%s %s", 1, true)`, `string.format("%03d", 7)`,
		`string.find("hello world", "o w")`, `string.find("hello", "l+")`, `string.find("hello", "(h)(e)")`,
		`string.find("a.b", ".", 1, true)`, `string.find("abc", "b", -1)`, `string.find("abc", "")`,
		`string.find("key=val", "(%w+)=(%w+)")`, `string.find("abc", "()b()")`, `string.find("x", "y")`,
		`string.match("key=val", "(%w+)=(%w+)")`, `string.match("abc", "b")`, `string.match("  x", "%s*()")`,
		`string.match("hello", "l", -2)`,
		`string.gsub("hello world", "o", "0")`, `string.gsub("hello", "l", "L", 1)`, `string.gsub("abc", "%w", "%0%0")`,
		`string.gsub("key=val", "(%w+)=(%w+)", "%2=%1")`, `string.gsub("abc", "b", "%%")`, `string.gsub("abc", "x", "y")`,
		`string.gsub("$name is $age", "%$(%w+)", {name = "ann", age = 3})`, `string.gsub("abc", "%w", {a = false, b = "B"})`,
		`string.gsub("abc", "%w", function(c) return c:upper() .. "." end)`, `string.gsub("abc", "(b)", function() return nil end)`,
		`string.gsub("abc", "", "-")`, `string.gsub("hello", "l", "%1")`,
		`string.lower("AbC")`, `string.upper("aBc")`, `string.reverse("abc")`, `string.reverse("")`,
		`string.char(72, 105)`, `string.byte("abc")`, `string.byte("abc", 1, -1)`, `string.byte("abc", 10)`, `string.byte("abc", -1)`,
		`table.concat({1, 2, "x"}, ", ")`, `table.concat({})`, `table.concat({"a", "b", "c"}, "-", 2)`, `table.concat({"a", "b", "c"}, "", 2, 3)`,
		`(function() local t = {3, 1, 2} table.sort(t) return table.concat(t, " ") end)()`,
		`(function() local t = {"b", "c", "a"} table.sort(t, function(a, b) return a > b end) return table.concat(t) end)()`,
		`(function() local t = {1, 2} table.insert(t, 3) table.insert(t, 1, 0) return table.concat(t, " "), table.remove(t), table.remove(t, 1), table.maxn(t) end)()`,
		`unpack({1, 2, 3})`, `unpack({1, 2, 3}, 2)`, `unpack({1, 2, 3}, 2, 3)`, `tostring(12)`, `tostring(nil)`,
		`"a" .. "b" .. 1 .. 2.5`, `1 .. ""`, `(function() local s = "" for i = 1, 3 do s = s .. i end return s end)()`,
		`(function() local t = setmetatable({}, {__concat = function(a, b) return "meta" end}) return t .. "x", "x" .. t end)()`,
		`(function() for k, v in string.gmatch("a=1, b=2", "(%w+)=(%w+)") do return k, v end end)()`,
		`(function() local n = 0 for w in string.gmatch("one two three", "%a+") do n = n + #w end return n end)()`,
	}
	for _, expr := range exprs {
		want := evalAll(t, lua.NewState(), expr, false)
		got := evalAll(t, testState(), expr, true)
		require.Equal(t, want, got, expr)
	}
	// Where gopher-lua differs from Lua 5.1, the bounded functions follow Lua.
	require.Equal(t, "number:4 number:3", evalAll(t, testState(), `string.find("abc", "", 10)`, true))
	require.Equal(t, "nil:nil", evalAll(t, testState(), `string.match("abc", "^b")`, true), "gopher-lua returns nothing")
	require.Equal(t, "string:a1b number:1", evalAll(t, testState(), `string.gsub("a,b", ",", 1)`, true), "gopher-lua refuses a number")
	for _, bad := range []string{`string.format("%123d", 1)`, `string.format("%v", 1)`, `nil .. "x"`, `{} .. "x"`, `table.concat({{}})`, `string.gsub("abc", "(", "")`} {
		_, err := Compile(OnEnqueue, "local x = "+bad+"\nfunction on_enqueue() end", OnEnqueue, testLimits)
		require.Error(t, err, bad)
	}
}

// evalAll evaluates expr in L (through Compile's rewriting when bounded) and
// returns its results as text.
func evalAll(t *testing.T, L *lua.LState, expr string, bounded bool) string {
	t.Helper()
	defer L.Close()
	src := "function on_enqueue() end\nfunction probe() return " + expr + " end"
	if bounded {
		proto, err := Compile("t", src, OnEnqueue, testLimits)
		require.NoError(t, err, expr)
		L.Push(L.NewFunctionFromProto(proto))
		require.NoError(t, L.PCall(0, 0, nil), expr)
	} else {
		require.NoError(t, L.DoString(src), expr)
	}
	require.NoError(t, L.CallByParam(lua.P{Fn: L.GetGlobal("probe"), NRet: lua.MultRet, Protect: true}), expr)
	var out []string
	for i := 1; i <= L.GetTop(); i++ {
		out = append(out, fmt.Sprintf("%s:%s", L.Get(i).Type(), L.Get(i).String()))
	}
	return strings.Join(out, " ")
}

// TestFilaGetReadsOnlyItsNamespaces: a script installed by one queue's admin
// cannot read the operator's config or the keys (issue 19, row 5).
func TestFilaGetReadsOnlyItsNamespaces(t *testing.T) {
	t.Parallel()
	cfg := config{"weight.acme": "3", "app.region": "eu", "throttle.aws": "5", "auth.key.ops": "hash", "db.password": "hunter2", "lua.default_timeout_ms": "10"}
	r := NewRunner(testLimits, cfg)
	defer r.Close()
	require.NoError(t, r.Set(OnEnqueue, `function on_enqueue(msg) return {fairness_key = tostring(fila.get(msg.headers.k))} end`))
	for key, want := range map[string]string{"weight.acme": "3", "app.region": "eu", "throttle.aws": "5", "auth.key.ops": "nil", "db.password": "nil", "lua.default_timeout_ms": "nil", "missing": "nil"} {
		res, c := r.OnEnqueue(EnqueueInput{Headers: map[string]string{"k": key}})
		require.NoError(t, c.Err)
		require.Equal(t, want, res.FairnessKey, key)
	}
}

// TestFailureNeverCarriesTheScriptsText: what is logged of a failed call is
// its kind and line, never text the script built (issue 19, row 10).
func TestFailureNeverCarriesTheScriptsText(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-header-value"
	headers := map[string]string{"secret": secret}
	tests := []struct{ name, body, kind, detail string }{
		{"error with a header", `error("boom-" .. msg.headers.secret)`, FailureError, "on_enqueue:2"},
		{"error without position", `error("boom-" .. msg.headers.secret, 0)`, FailureError, "on_enqueue:2"},
		{"error with a table", `error({msg.headers.secret})`, FailureError, "on_enqueue:2"},
		{"runtime error", "local x = nil\nreturn x.y .. msg.headers.secret", FailureError, "on_enqueue:3"},
		{"invalid result", `return {weight = msg.headers.secret}`, FailureInvalid, "weight is a string, want a number"},
		{"memory", `return {fairness_key = msg.headers.secret:rep(1e12)}`, FailureMemory, "on_enqueue ran over its memory budget"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := hostile(t, testLimits, tt.body, headers)
			require.Error(t, c.Err)
			kind, detail := c.Failure()
			require.Equal(t, tt.kind, kind)
			require.Contains(t, detail, tt.detail)
			require.NotContains(t, detail, secret)
		})
	}
}

// TestStateIsMadeAgainOnceWorn: what a script keeps between calls is bounded
// too: a state charged stateCallsBytes × the limit is made afresh.
func TestStateIsMadeAgainOnceWorn(t *testing.T) {
	t.Parallel()
	r := NewRunner(Limits{Timeout: time.Minute, MemoryBytes: 1 << 20, BreakerThreshold: 3, BreakerCooldown: time.Minute}, config{})
	defer r.Close()
	// Each call keeps 100 KiB in a global; 20 MiB of them would be kept for ever.
	require.NoError(t, r.Set(OnEnqueue, `kept = {} function on_enqueue(msg) kept[#kept+1] = ("x"):rep(100 * 1024) return {fairness_key = tostring(#kept)} end`))
	most := 0
	for range 200 {
		res, c := r.OnEnqueue(EnqueueInput{})
		require.NoError(t, c.Err)
		var n int
		_, err := fmt.Sscan(res.FairnessKey, &n)
		require.NoError(t, err)
		most = max(most, n)
	}
	// About 1 MiB of charges fit before the state is made again: 10 pieces.
	require.LessOrEqual(t, most, 20, "the state kept %d pieces of 100 KiB", most)
	require.GreaterOrEqual(t, most, 5, "the state was made again far too often")
}

func TestBudgetErrorsAreSticky(t *testing.T) {
	t.Parallel()
	b := newBudget(OnEnqueue, Limits{Timeout: time.Minute, MemoryBytes: 1000})
	b.start()
	require.ErrorIs(t, b.Charge(0, 2000), ErrMemory)
	require.ErrorIs(t, b.Charge(0, 0), ErrMemory)
	require.True(t, errors.Is(b.Err(), ErrMemory))
	select {
	case <-b.Done():
	default:
		t.Fatal("Done is not closed after an overrun")
	}
	b.start()
	require.NoError(t, b.Err(), "a new call starts afresh")
}
