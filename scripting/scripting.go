// Package scripting runs a queue's Lua policy hooks (on_enqueue and
// on_failure) in gopher-lua, the pure-Go Lua 5.1 VM, sandboxed and bounded:
// only the base (without load, loadstring, dofile, loadfile, require and
// print), string, math and table libraries; a budget of time and memory
// per call that library functions are charged to as well (budget.go,
// bounded.go); a bounded registry and call stack; and a circuit breaker
// that bypasses a script failing again and again. A Runner belongs to one queue actor, which
// calls it from its own goroutine only: one Lua state per queue, no pool
// (the actor runs one request at a time anyway).
package scripting

import (
	"errors"
	"fmt"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/parse"
)

// Hook names, as the hook attribute of the fila.lua.* metrics has them.
const (
	OnEnqueue = "on_enqueue"
	OnFailure = "on_failure"
)

// MaxScriptBytes bounds a script's source.
const MaxScriptBytes = 64 << 10

// Limits bound a script's calls. config's [lua] section has the defaults.
type Limits struct {
	// Timeout bounds one hook call (and the script's top level at load),
	// inside library functions too.
	Timeout time.Duration
	// MemoryBytes bounds what one call may allocate (budget.go says how it
	// is counted), and the Lua registry (the VM's value stack).
	MemoryBytes int
	// BreakerThreshold is how many failures in a row open the breaker;
	// BreakerCooldown how long it stays open before the script is tried
	// again.
	BreakerThreshold int
	BreakerCooldown  time.Duration
}

// Compile parses and compiles src (name says where it came from, for the
// messages) and checks, in a sandbox, that its top level runs within the
// limits and defines hook. The error carries Lua's message with its line:
// what an operator gets back as INVALID_ARGUMENT.
func Compile(name, src, hook string, limits Limits) (*lua.FunctionProto, error) {
	if len(src) > MaxScriptBytes {
		return nil, fmt.Errorf("%d bytes is over the limit of %d", len(src), MaxScriptBytes)
	}
	chunk, err := parse.Parse(strings.NewReader(src), name)
	if err != nil {
		return nil, errors.New(strings.TrimSpace(err.Error()))
	}
	concatAST(chunk)
	proto, err := lua.Compile(chunk, name)
	if err != nil {
		return nil, err
	}
	b := newBudget(hook, limits)
	L := newState(limits, nil, b)
	defer L.Close()
	if err := load(L, proto, b); err != nil {
		return nil, err
	}
	if _, ok := L.GetGlobal(hook).(*lua.LFunction); !ok {
		return nil, fmt.Errorf("the script defines no function %s", hook)
	}
	return proto, nil
}

// Config is what a hook may read: fila.get(key) returns the runtime config
// store's value, or nil.
type Config interface {
	Get(key string) (string, bool)
}

// ReadablePrefixes are the runtime config keys fila.get reads; any other key
// reads as nil. A script is installed by whoever has admin on its queue,
// and the config store is the operator's (auth.* holds the keys' hashes and
// rights): a script must not be a way round GetConfig's permission.
var ReadablePrefixes = []string{"app.", "weight.", "throttle."}

// Readable reports whether fila.get may read key.
func Readable(key string) bool {
	for _, p := range ReadablePrefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// newState makes a sandboxed Lua state whose calls are charged to b.
func newState(limits Limits, cfg Config, b *budget) *lua.LState {
	// A registry slot is an interface, 16 bytes: the registry takes at most
	// a quarter of the limit.
	slots := max(limits.MemoryBytes/64, 1024)
	L := lua.NewState(lua.Options{
		SkipOpenLibs:        true,
		CallStackSize:       200,
		RegistrySize:        1024,
		RegistryMaxSize:     slots,
		MinimizeStackMemory: true,
	})
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.BaseLibName, lua.OpenBase}, {lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}, {lua.TabLibName, lua.OpenTable}} {
		L.Push(L.NewFunction(lib.open))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	for _, name := range []string{"load", "loadstring", "dofile", "loadfile", "require", "module", "print", "collectgarbage", "getfenv", "setfenv", "newproxy"} {
		L.SetGlobal(name, lua.LNil)
	}
	fila := L.NewTable()
	L.SetField(fila, "get", L.NewFunction(func(L *lua.LState) int {
		key := L.CheckString(1)
		if cfg != nil && Readable(key) {
			if v, ok := cfg.Get(key); ok {
				L.Push(lua.LString(v))
				return 1
			}
		}
		L.Push(lua.LNil)
		return 1
	}))
	L.SetGlobal("fila", fila)
	bound(L, b)
	L.SetContext(b)
	return L
}

// load runs proto's top level in L within b.
func load(L *lua.LState, proto *lua.FunctionProto, b *budget) error {
	b.start()
	L.Push(L.NewFunctionFromProto(proto))
	if err := L.PCall(0, 0, nil); err != nil {
		if b.err != nil {
			return b.err
		}
		return err
	}
	return nil
}
