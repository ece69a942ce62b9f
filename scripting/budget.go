package scripting

import (
	"fmt"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// What a hook call is charged (docs/scripting.md, "Limits"). gopher-lua has
// no allocator to hook, so the budget is charged where memory can be taken:
//   - every VM instruction, instructionBytes: an upper bound of what one
//     instruction that is not a string operation allocates (a table slot
//     and its growth, a new table or closure), measured by
//     TestInstructionChargeBoundsAllocation (the worst loop found, a
//     table constructor with hash fields, allocates about 123 bytes an
//     instruction);
//   - every string the sandbox's functions and the .. operator make, its
//     length, before it is made;
//   - the pattern matcher's recursion and the matches it keeps.
//
// Time is read every clockEvery instructions and every pattern-matcher
// charge, so a call stops soon after its deadline, inside a library
// function too.
const (
	instructionBytes = 128
	clockEvery       = 8
	// stateCallsBytes: a state is made afresh once its calls were charged
	// this many times the limit together, which bounds what a script keeps
	// between calls (globals, upvalues) to about twice the limit: every
	// queue with traffic holds a state per hook. Making one again costs
	// tens of microseconds, against a limit's worth of charged work.
	stateCallsBytes = 1
)

// budget is one hook call's allowance of time and bytes. It is the Lua
// state's context.Context: gopher-lua asks Done before every instruction,
// which is where the instruction is charged and the clock read. It is used
// from the queue actor's goroutine only (no timer goroutine), and an
// overrun is sticky: once stopped, every later instruction raises again, so
// pcall cannot swallow it.
type budget struct {
	hook     string
	limit    int64
	timeout  time.Duration
	deadline time.Time
	used     int64
	// spent is what the state's calls were charged since it was made.
	spent int64
	ticks int
	err   error
	done  chan struct{}
	// now is the clock (a test's may advance at every read).
	now func() time.Time
}

// closed is the Done channel of a stopped budget.
var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func newBudget(hook string, limits Limits) *budget {
	return &budget{hook: hook, limit: int64(limits.MemoryBytes), timeout: limits.Timeout, now: time.Now}
}

// start begins a call.
func (b *budget) start() {
	b.spent += b.used
	b.deadline, b.used, b.ticks, b.err, b.done = b.now().Add(b.timeout), 0, 0, nil, nil
}

// worn reports whether the state has been charged enough to be made again.
func (b *budget) worn() bool { return b.spent+b.used > stateCallsBytes*b.limit }

// ErrMemory and ErrTimeout are why a call was stopped (errors.Is).
var (
	ErrMemory  = fmt.Errorf("memory budget exceeded")
	ErrTimeout = fmt.Errorf("time budget exceeded")
)

func (b *budget) stop(kind error) {
	if kind == ErrMemory {
		b.err = fmt.Errorf("%s ran over its memory budget of %d bytes (lua.default_memory_limit_bytes): %w", b.hook, b.limit, kind)
	} else {
		b.err = fmt.Errorf("%s ran over its time budget of %v (lua.default_timeout_ms): %w", b.hook, b.timeout, kind)
	}
	b.done = closed
}

// Charge adds bytes and steps of work to the call, and says when it must
// stop. The pattern matcher calls it.
func (b *budget) Charge(steps, bytes int) error {
	if b.err != nil {
		return b.err
	}
	if b.used += int64(bytes); b.used > b.limit {
		b.stop(ErrMemory)
	} else if steps > 0 && b.now().After(b.deadline) {
		b.stop(ErrTimeout)
	}
	return b.err
}

// alloc charges n bytes that a sandbox function is about to allocate, and
// raises the budget's error in L instead when they do not fit. n is checked
// before it is added, so a huge request cannot overflow the count.
func (b *budget) alloc(L *lua.LState, n int) {
	if b.err == nil && (n < 0 || int64(n) > b.limit-b.used) {
		b.used = b.limit + 1
		b.stop(ErrMemory)
	}
	if b.Charge(1, max(n, 0)) != nil {
		L.RaiseError("%s", b.err.Error())
	}
}

// work charges n steps of a library function (elements moved, compared).
func (b *budget) work(L *lua.LState, n int) {
	if b.ticks += n; b.ticks >= clockEvery {
		b.ticks = 0
		if b.Charge(1, 0) != nil {
			L.RaiseError("%s", b.err.Error())
		}
	}
}

// The context.Context methods, as the VM uses them.

func (b *budget) Deadline() (time.Time, bool) { return b.deadline, true }

// Done charges one instruction; its channel is nil (never ready) until the
// call is stopped, then closed.
func (b *budget) Done() <-chan struct{} {
	if b.err == nil {
		if b.used += instructionBytes; b.used > b.limit {
			b.stop(ErrMemory)
		} else if b.ticks++; b.ticks >= clockEvery {
			b.ticks = 0
			if b.now().After(b.deadline) {
				b.stop(ErrTimeout)
			}
		}
	}
	return b.done
}

func (b *budget) Err() error { return b.err }

func (b *budget) Value(any) any { return nil }
