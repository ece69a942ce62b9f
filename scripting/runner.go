package scripting

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	lua "github.com/yuin/gopher-lua"

	"github.com/fila-dev/filad/protocol"
)

// Limits on what on_enqueue may return.
const (
	MaxFairnessKeyBytes = 8 << 10
	MaxWeight           = protocol.MaxWeight
	MaxThrottleKeys     = 16
	MaxThrottleKeyBytes = 256
)

// MaxDelay bounds on_failure's delay_ms.
const MaxDelay = protocol.MaxDelay

// Runner runs one queue's hooks. It is not safe for concurrent use: its
// queue actor calls it.
type Runner struct {
	limits Limits
	cfg    Config
	hooks  map[string]*hook
	now    func() time.Time
	// clock is the budgets' clock.
	clock func() time.Time
}

// hook is one installed script: its compiled code, a Lua state running it
// (made again after a failure, which may leave a state half-run), and its
// breaker.
type hook struct {
	name      string
	src       string
	proto     *lua.FunctionProto
	L         *lua.LState
	failures  int       // in a row
	openUntil time.Time // the breaker is open until then
	// budget is the state's context: each call's allowance of time and
	// memory.
	budget *budget
	// headers is the read-only view of the current call's headers: one
	// table per state whose __index reads current, so a call copies no
	// headers into Lua.
	headers *lua.LTable
	current map[string]string
	// msg is the table a call's hook gets, filled afresh for each call (a
	// script that keeps it sees the next call's values).
	msg *lua.LTable
}

// NewRunner returns a Runner with no scripts.
func NewRunner(limits Limits, cfg Config) *Runner {
	return &Runner{limits: limits, cfg: cfg, hooks: map[string]*hook{}, now: time.Now, clock: time.Now}
}

// Set installs src as hook's script, or removes it when src is empty; the
// same source again keeps the running state and its breaker.
func (r *Runner) Set(name, src string) error {
	h := r.hooks[name]
	if h != nil && h.src == src {
		return nil
	}
	if h != nil {
		h.close()
		delete(r.hooks, name)
	}
	if src == "" {
		return nil
	}
	proto, err := Compile(name, src, name, r.limits)
	if err != nil {
		return err
	}
	r.hooks[name] = &hook{name: name, src: src, proto: proto}
	return nil
}

// Has reports whether hook has a script.
func (r *Runner) Has(name string) bool { return r.hooks[name] != nil }

// Close releases the Lua states.
func (r *Runner) Close() {
	for _, h := range r.hooks {
		h.close()
	}
}

func (h *hook) close() {
	if h.L != nil {
		h.L.Close()
		h.L, h.headers, h.current, h.msg = nil, nil, nil, nil
	}
}

// open makes h's state: the sandbox, its script's top level run within
// its budget, and the headers view.
func (h *hook) open(limits Limits, cfg Config, clock func() time.Time) error {
	h.budget = newBudget(h.name, limits)
	h.budget.now = clock
	h.L = newState(limits, cfg, h.budget)
	if err := load(h.L, h.proto, h.budget); err != nil {
		h.L.Close()
		h.L = nil
		return err
	}
	h.headers = h.L.NewTable()
	meta := h.L.NewTable()
	h.L.SetField(meta, "__index", h.L.NewFunction(func(L *lua.LState) int {
		if v, ok := h.current[L.CheckString(2)]; ok {
			L.Push(lua.LString(v))
			return 1
		}
		L.Push(lua.LNil)
		return 1
	}))
	h.L.SetField(meta, "__newindex", h.L.NewFunction(func(L *lua.LState) int {
		L.RaiseError("msg.headers is read-only")
		return 0
	}))
	h.L.SetMetatable(h.headers, meta)
	h.msg = h.L.CreateTable(0, 5)
	h.msg.RawSetString("headers", h.headers)
	return nil
}

// Call says what one hook call did, for metrics and spans.
type Call struct {
	// Ran is false when there is no script or its breaker is open.
	Ran      bool
	Duration time.Duration
	// Err is the script's error, a time or memory overrun (errors.Is
	// ErrTimeout, ErrMemory), or invalid output. A script's own error may
	// carry text it built from the message's headers: log Failure, never
	// Err.
	Err error
	// BreakerOpened is set on the failure that opened the breaker.
	BreakerOpened bool
}

// Failure kinds, as Call.Failure reports them.
const (
	FailureError    = "error"   // the script raised an error (or its top level did, when its state was made)
	FailureTimeout  = "timeout" // over lua.default_timeout_ms
	FailureMemory   = "memory"  // over lua.default_memory_limit_bytes
	FailureInvalid  = "invalid_result"
	FailureInternal = "internal" // a bug of filad's, recovered
)

// Failure describes a failed call for a log line: its kind, and a detail
// that holds no text of the script's making: the hook and line for an
// error ("on_enqueue:3"), filad's own message otherwise.
func (c Call) Failure() (kind, detail string) {
	var api *lua.ApiError
	switch {
	case c.Err == nil:
		return "", ""
	case errors.Is(c.Err, ErrTimeout):
		return FailureTimeout, c.Err.Error()
	case errors.Is(c.Err, ErrMemory):
		return FailureMemory, c.Err.Error()
	case errors.Is(c.Err, errInternal):
		return FailureInternal, "a panic in filad's hook runner, recovered"
	case errors.As(c.Err, &api):
		return FailureError, errorPosition(api)
	default:
		return FailureInvalid, c.Err.Error() // the decoders' messages name fields and bounds, never values
	}
}

// errorPosition is where a script raised its error: "hook:line" from the
// position Lua puts before the message, or the traceback's first frame.
func errorPosition(err *lua.ApiError) string {
	msg := ""
	if s, ok := err.Object.(lua.LString); ok {
		msg = string(s)
	}
	for _, text := range []string{msg, err.StackTrace} {
		for _, field := range strings.Fields(text) {
			if name, rest, ok := strings.Cut(field, ":"); ok && (name == OnEnqueue || name == OnFailure) {
				if line, _, _ := strings.Cut(rest, ":"); line != "" && strings.Trim(line, "0123456789") == "" {
					return name + ":" + line
				}
			}
		}
	}
	return "no line"
}

var errInternal = errors.New("internal error")

// call runs hook name with args made in its state, and decodes the first
// result with decode. ok is false when the caller must apply its defaults.
func (r *Runner) call(name string, args func(h *hook) []lua.LValue, decode func(lua.LValue) error) (c Call) {
	h := r.hooks[name]
	if h == nil || r.now().Before(h.openUntil) {
		return Call{}
	}
	c.Ran = true
	start := r.now()
	defer func() {
		if p := recover(); p != nil { // a bug in a decoder must not take the actor down
			c.Err = fmt.Errorf("%s: %w: %v", name, errInternal, p)
		}
		c.Duration = r.now().Sub(start)
		if c.Err == nil {
			h.failures = 0
			return
		}
		h.close() // a failed call may leave the state mid-run
		if h.failures++; h.failures >= r.limits.BreakerThreshold {
			h.failures, h.openUntil, c.BreakerOpened = 0, r.now().Add(r.limits.BreakerCooldown), true
		}
	}()
	if h.L == nil {
		if err := h.open(r.limits, r.cfg, r.clock); err != nil {
			c.Err = err
			return c
		}
	}
	L, b := h.L, h.budget
	b.start()
	if err := L.CallByParam(lua.P{Fn: L.GetGlobal(name), NRet: 1, Protect: true}, args(h)...); err != nil {
		if b.err != nil { // the overrun, whatever pcall made of it
			err = b.err
		}
		c.Err = err
		return c
	}
	ret := L.Get(-1)
	L.Pop(1)
	c.Err = decode(ret)
	if c.Err == nil && b.worn() {
		h.close() // made again at the next call: what the script kept is dropped
	}
	return c
}

// EnqueueInput is what on_enqueue(msg) sees.
type EnqueueInput struct {
	Headers     map[string]string
	PayloadSize int
	Queue       string
}

// EnqueueResult is what on_enqueue decided; zero fields mean the defaults.
type EnqueueResult struct {
	FairnessKey  string
	Weight       uint32
	ThrottleKeys []string
}

// OnEnqueue runs on_enqueue(msg). With no script, an open breaker, an
// error or invalid output, the result is zero and the caller applies its
// defaults; Call says which.
func (r *Runner) OnEnqueue(in EnqueueInput) (EnqueueResult, Call) {
	var res EnqueueResult
	c := r.call(OnEnqueue, func(h *hook) []lua.LValue {
		h.current = in.Headers
		h.msg.RawSetString("payload_size", lua.LNumber(in.PayloadSize))
		h.msg.RawSetString("queue", lua.LString(in.Queue))
		return []lua.LValue{h.msg}
	}, func(v lua.LValue) error {
		var err error
		res, err = DecodeEnqueue(v)
		return err
	})
	if c.Err != nil {
		res = EnqueueResult{}
	}
	return res, c
}

// DecodeEnqueue reads on_enqueue's result: a table with optional
// fairness_key (a non-empty string), weight (an integer 1..1000) and
// throttle_keys (a list of non-empty strings). Keys must be UTF-8: they
// are stored in proto string fields and exported as attribute values (a
// hook can cut a header's multi-byte character in half with string.sub).
func DecodeEnqueue(v lua.LValue) (EnqueueResult, error) {
	var res EnqueueResult
	t, ok := v.(*lua.LTable)
	if !ok {
		return res, fmt.Errorf("on_enqueue returned %s, want a table", v.Type())
	}
	switch k := t.RawGetString("fairness_key").(type) {
	case *lua.LNilType:
	case lua.LString:
		if k == "" || len(k) > MaxFairnessKeyBytes || !utf8.ValidString(string(k)) {
			return res, fmt.Errorf("fairness_key must be 1 to %d bytes of UTF-8", MaxFairnessKeyBytes)
		}
		res.FairnessKey = string(k)
	default:
		return res, fmt.Errorf("fairness_key is a %s, want a string", k.Type())
	}
	switch w := t.RawGetString("weight").(type) {
	case *lua.LNilType:
	case lua.LNumber:
		f := float64(w)
		if f != math.Trunc(f) || f < 1 || f > MaxWeight {
			return res, fmt.Errorf("weight must be an integer from 1 to %d", MaxWeight)
		}
		res.Weight = uint32(f)
	default:
		return res, fmt.Errorf("weight is a %s, want a number", w.Type())
	}
	switch keys := t.RawGetString("throttle_keys").(type) {
	case *lua.LNilType:
	case *lua.LTable:
		n := keys.Len()
		if n > MaxThrottleKeys {
			return res, fmt.Errorf("throttle_keys holds %d keys, over the limit of %d", n, MaxThrottleKeys)
		}
		for i := 1; i <= n; i++ {
			k, ok := keys.RawGetInt(i).(lua.LString)
			if !ok || k == "" || len(k) > MaxThrottleKeyBytes || !utf8.ValidString(string(k)) {
				return res, fmt.Errorf("throttle_keys[%d] must be a string of 1 to %d bytes of UTF-8", i, MaxThrottleKeyBytes)
			}
			res.ThrottleKeys = append(res.ThrottleKeys, string(k))
		}
	default:
		return res, fmt.Errorf("throttle_keys is a %s, want a list", keys.Type())
	}
	return res, nil
}

// FailureInput is what on_failure(msg, err) sees.
type FailureInput struct {
	Headers  map[string]string
	ID       string
	Attempts uint32
	Queue    string
	Error    string
}

// FailureResult is what on_failure decided.
type FailureResult struct {
	// DeadLetter: action "dlq". Otherwise retry, after Delay.
	DeadLetter bool
	Delay      time.Duration
}

// OnFailure runs on_failure(msg, err). ok is false when there is no
// decision (no script, an open breaker, an error or invalid output): the
// queue's own policy applies.
func (r *Runner) OnFailure(in FailureInput) (res FailureResult, ok bool, c Call) {
	c = r.call(OnFailure, func(h *hook) []lua.LValue {
		h.current = in.Headers
		h.msg.RawSetString("id", lua.LString(in.ID))
		h.msg.RawSetString("attempts", lua.LNumber(in.Attempts))
		h.msg.RawSetString("queue", lua.LString(in.Queue))
		return []lua.LValue{h.msg, lua.LString(in.Error)}
	}, func(v lua.LValue) error {
		var err error
		res, err = DecodeFailure(v)
		return err
	})
	return res, c.Ran && c.Err == nil, c
}

// DecodeFailure reads on_failure's result: {action = "retry" | "dlq",
// delay_ms = integer 0..86400000 (retry only)}.
func DecodeFailure(v lua.LValue) (FailureResult, error) {
	var res FailureResult
	t, ok := v.(*lua.LTable)
	if !ok {
		return res, fmt.Errorf("on_failure returned %s, want a table", v.Type())
	}
	switch a := t.RawGetString("action"); a {
	case lua.LString("dlq"):
		res.DeadLetter = true
	case lua.LString("retry"):
	default:
		return res, errors.New(`action must be "retry" or "dlq"`)
	}
	switch d := t.RawGetString("delay_ms").(type) {
	case *lua.LNilType:
	case lua.LNumber:
		f := float64(d)
		if f != math.Trunc(f) || f < 0 || f > float64(MaxDelay/time.Millisecond) {
			return res, fmt.Errorf("delay_ms must be an integer from 0 to %d", MaxDelay/time.Millisecond)
		}
		res.Delay = time.Duration(f) * time.Millisecond
	default:
		return res, fmt.Errorf("delay_ms is a %s, want a number", d.Type())
	}
	return res, nil
}
