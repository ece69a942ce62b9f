package scripting

import (
	"sort"
	"strings"
	"unsafe"

	lua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/ast"

	"github.com/fila-dev/filad/scripting/pattern"
)

// The sandbox's library functions that can allocate or run without bound
// in gopher-lua (string.rep(s, 1e12) is one call; a pattern can backtrack
// for seconds; gsub, table.concat and string.format build strings of any
// size) are replaced by versions charged to the call's budget, with Lua
// 5.1's semantics otherwise. The .. operator is rewritten into a call of
// concatFunc when a script is compiled (concatAST), because the VM's own
// concatenation cannot be charged.

// concatFunc is the global that a script's .. operators call.
const concatFunc = "__fila_concat"

// bound installs the charged functions in L.
func bound(L *lua.LState, b *budget) {
	str := L.GetGlobal(lua.StringLibName).(*lua.LTable)
	tbl := L.GetGlobal(lua.TabLibName).(*lua.LTable)
	gmatch := L.NewFunction(b.strGmatch)
	for t, fns := range map[*lua.LTable]map[string]lua.LValue{
		str: {
			"rep": L.NewFunction(b.strRep), "format": L.NewFunction(b.strFormat(str.RawGetString("format").(*lua.LFunction))),
			"find": L.NewFunction(b.strFind), "match": L.NewFunction(b.strMatch), "gmatch": gmatch, "gfind": gmatch,
			"gsub": L.NewFunction(b.strGsub), "lower": L.NewFunction(b.mapString(strings.ToLower)),
			"upper": L.NewFunction(b.mapString(strings.ToUpper)), "reverse": L.NewFunction(b.mapString(reverse)),
			"char": L.NewFunction(b.strChar(str.RawGetString("char").(*lua.LFunction))), "dump": lua.LNil,
			"byte": b.charged(L, str.RawGetString("byte"), nil, byteValues),
		},
		tbl: {
			"concat": L.NewFunction(b.tableConcat), "sort": L.NewFunction(b.tableSort),
			"insert": b.charged(L, tbl.RawGetString("insert"), tableLength, nil),
			"remove": b.charged(L, tbl.RawGetString("remove"), tableLength, nil),
			"maxn":   b.charged(L, tbl.RawGetString("maxn"), tableLength, nil),
		},
		L.G.Global: {
			"unpack":   b.charged(L, L.GetGlobal("unpack"), nil, unpackValues),
			"tostring": b.charged(L, L.GetGlobal("tostring"), nil, func(*lua.LState) int { return 64 }),
		},
	} {
		for name, fn := range fns {
			t.RawSetString(name, fn)
		}
	}
	L.SetGlobal(concatFunc, L.NewFunction(b.concat))
}

// concat is a .. b: strings and numbers are joined (charged), anything else
// goes to a __concat metamethod, as in the VM.
func (b *budget) concat(L *lua.LState) int {
	lhs, rhs := L.Get(1), L.Get(2)
	if lua.LVCanConvToString(lhs) && lua.LVCanConvToString(rhs) {
		ls, rs := lua.LVAsString(lhs), lua.LVAsString(rhs)
		b.alloc(L, len(ls)+len(rs))
		L.Push(lua.LString(ls + rs))
		return 1
	}
	op := L.GetMetaField(lhs, "__concat")
	if op == lua.LNil {
		op = L.GetMetaField(rhs, "__concat")
	}
	if op.Type() != lua.LTFunction {
		bad := lhs
		if lua.LVCanConvToString(lhs) {
			bad = rhs
		}
		L.RaiseError("attempt to concatenate a %s value", bad.Type().String())
	}
	L.Push(op)
	L.Push(lhs)
	L.Push(rhs)
	L.Call(2, 1)
	return 1
}

func (b *budget) strRep(L *lua.LState) int {
	s, n := L.CheckString(1), L.CheckInt(2)
	if n <= 0 || s == "" {
		L.Push(lua.LString(""))
		return 1
	}
	if n > int(b.limit)/len(s)+1 { // before multiplying: n may be 1e12
		b.alloc(L, -1)
	}
	b.alloc(L, len(s)*n)
	L.Push(lua.LString(strings.Repeat(s, n)))
	return 1
}

// strFormat checks each directive as Lua 5.1 does (flags, a width and a
// precision of at most two digits each, a known conversion) and charges
// the result's bound before gopher-lua's format makes it: Go's fmt would
// otherwise take "%999999999d" and allocate a gigabyte.
func (b *budget) strFormat(format *lua.LFunction) lua.LGFunction {
	return func(L *lua.LState) int {
		f := L.CheckString(1)
		size, arg := len(f), 2
		for i := 0; i < len(f); i++ {
			if f[i] != '%' {
				continue
			}
			if i++; i < len(f) && f[i] == '%' {
				continue
			}
			for i < len(f) && strings.IndexByte("-+ #0", f[i]) >= 0 {
				i++
			}
			digits := func() {
				n := 0
				for ; i < len(f) && f[i] >= '0' && f[i] <= '9'; i++ {
					if n++; n > 2 {
						L.RaiseError("invalid format (width or precision too long)")
					}
				}
			}
			digits()
			if i < len(f) && f[i] == '.' {
				i++
				digits()
			}
			if i >= len(f) || strings.IndexByte("cdiouxXeEfgGqs", f[i]) < 0 {
				L.RaiseError("invalid option in format string")
			}
			size += 99 + 32 // the widest width or precision, and a number's digits
			if f[i] == 's' || f[i] == 'q' {
				size += 2 * len(lua.LVAsString(L.Get(arg)))
			}
			arg++
		}
		b.alloc(L, size)
		return format.GFunction(L)
	}
}

// mapString is a string function whose result is about as long as its
// argument (lower, upper, reverse).
func (b *budget) mapString(fn func(string) string) lua.LGFunction {
	return func(L *lua.LState) int {
		s := L.CheckString(1)
		b.alloc(L, len(s))
		out := fn(s)
		if len(out) > len(s) { // Unicode case mapping may grow a string
			b.alloc(L, len(out)-len(s))
		}
		L.Push(lua.LString(out))
		return 1
	}
}

func reverse(s string) string {
	out := make([]byte, len(s))
	for i := range len(s) {
		out[len(s)-1-i] = s[i]
	}
	return string(out)
}

func (b *budget) strChar(char *lua.LFunction) lua.LGFunction {
	return func(L *lua.LState) int {
		b.alloc(L, L.GetTop())
		return char.GFunction(L)
	}
}

// charged is fn charged, before it runs, the steps and bytes its arguments
// say it will take (either may be nil).
func (b *budget) charged(L *lua.LState, fn lua.LValue, steps, bytes func(*lua.LState) int) *lua.LFunction {
	g := fn.(*lua.LFunction).GFunction
	return L.NewFunction(func(L *lua.LState) int {
		if steps != nil {
			b.work(L, steps(L))
		}
		if bytes != nil {
			b.alloc(L, bytes(L))
		}
		return g(L)
	})
}

// tableLength: table.insert, remove and maxn move or visit every element.
func tableLength(L *lua.LState) int { return L.CheckTable(1).Len() }

// valueBytes is what a value pushed on the stack costs, twice: a table
// constructor may copy what unpack or string.byte pushed.
const valueBytes = 32

// unpackValues and byteValues are what unpack(t, i, j) and
// string.byte(s, i, j) push; -1 (refused) past the limit, before i..j can
// overflow.
func unpackValues(L *lua.LState) int {
	i, j := L.OptInt(2, 1), L.OptInt(3, L.CheckTable(1).Len())
	return pushedBytes(i, j)
}

func byteValues(L *lua.LState) int {
	s := L.CheckString(1)
	i := startIndex(s, L.OptInt(2, 1))
	j := L.OptInt(3, i+1)
	if j < 0 {
		j = len(s) + j + 1
	}
	return pushedBytes(i+1, min(j, len(s)))
}

func pushedBytes(i, j int) int {
	if j < i {
		return 0
	}
	if n := uint64(j) - uint64(i) + 1; n < 1<<40 {
		return int(n) * valueBytes
	}
	return -1
}

func (b *budget) tableConcat(L *lua.LState) int {
	t := L.CheckTable(1)
	sep := L.OptString(2, "")
	i, j := L.OptInt(3, 1), L.OptInt(4, t.Len())
	size := 0
	for k := i; k <= j; k++ {
		v := t.RawGetInt(k)
		if !lua.LVCanConvToString(v) {
			L.ArgError(1, "invalid value (at index "+lua.LNumber(k).String()+") in table for concat")
		}
		size += len(lua.LVAsString(v))
		if k < j {
			size += len(sep)
		}
		if size < 0 || int64(size) > b.limit { // before the loop can run to j = 1e12
			b.alloc(L, -1)
		}
		b.work(L, 1)
	}
	b.alloc(L, size)
	var out strings.Builder
	out.Grow(size)
	for k := i; k <= j; k++ {
		out.WriteString(lua.LVAsString(t.RawGetInt(k)))
		if k < j {
			out.WriteString(sep)
		}
	}
	L.Push(lua.LString(out.String()))
	return 1
}

// tableSort sorts with a comparison that is charged, so a sort stops at the
// deadline like everything else.
func (b *budget) tableSort(L *lua.LState) int {
	t := L.CheckTable(1)
	var cmp *lua.LFunction
	if L.GetTop() >= 2 && L.Get(2) != lua.LNil {
		cmp = L.CheckFunction(2)
	}
	n := t.Len()
	b.alloc(L, 16*n)
	vals := make([]lua.LValue, n)
	for i := range vals {
		vals[i] = t.RawGetInt(i + 1)
	}
	sort.Slice(vals, func(i, j int) bool {
		b.work(L, 1)
		if cmp == nil {
			return L.LessThan(vals[i], vals[j])
		}
		L.Push(cmp)
		L.Push(vals[i])
		L.Push(vals[j])
		L.Call(2, 1)
		less := lua.LVAsBool(L.Get(-1))
		L.Pop(1)
		return less
	})
	for i, v := range vals {
		t.RawSetInt(i+1, v)
	}
	return 0
}

// find runs a pattern charged to b, raising its error in L.
func (b *budget) find(L *lua.LState, pat, s string, init, limit int) []*pattern.MatchData {
	// The matcher only reads the subject: no copy of it (gopher-lua does the same).
	mds, err := pattern.Find(pat, unsafe.Slice(unsafe.StringData(s), len(s)), init, limit, b)
	if err != nil {
		L.RaiseError("%s", err.Error())
	}
	return mds
}

// pushCaptures pushes md's captures (or the whole match when it has none
// and whole is set), returning how many.
func pushCaptures(L *lua.LState, s string, md *pattern.MatchData, whole bool) int {
	if md.CaptureLength() == 2 {
		if !whole {
			return 0
		}
		L.Push(lua.LString(s[md.Capture(0):md.Capture(1)]))
		return 1
	}
	for i := 2; i < md.CaptureLength(); i += 2 {
		if md.IsPosCapture(i) {
			L.Push(lua.LNumber(md.Capture(i)))
		} else {
			L.Push(lua.LString(s[md.Capture(i):md.Capture(i+1)]))
		}
	}
	return md.CaptureLength()/2 - 1
}

// startIndex turns Lua's 1-based (or negative) init into an offset.
func startIndex(s string, i int) int {
	if i < 0 {
		i = len(s) + i + 1
	}
	return min(max(i-1, 0), len(s))
}

func (b *budget) strFind(L *lua.LState) int {
	s, pat := L.CheckString(1), L.CheckString(2)
	init := startIndex(s, L.OptInt(3, 1))
	if pat == "" {
		L.Push(lua.LNumber(init + 1))
		L.Push(lua.LNumber(init))
		return 2
	}
	if lua.LVAsBool(L.Get(4)) || !strings.ContainsAny(pat, "^$*+?.([%-") {
		pos := strings.Index(s[init:], pat)
		if pos < 0 {
			L.Push(lua.LNil)
			return 1
		}
		L.Push(lua.LNumber(init + pos + 1))
		L.Push(lua.LNumber(init + pos + len(pat)))
		return 2
	}
	mds := b.find(L, pat, s, init, 1)
	if len(mds) == 0 {
		L.Push(lua.LNil)
		return 1
	}
	L.Push(lua.LNumber(mds[0].Capture(0) + 1))
	L.Push(lua.LNumber(mds[0].Capture(1)))
	return 2 + pushCaptures(L, s, mds[0], false)
}

func (b *budget) strMatch(L *lua.LState) int {
	s, pat := L.CheckString(1), L.CheckString(2)
	mds := b.find(L, pat, s, startIndex(s, L.OptInt(3, 1)), 1)
	if len(mds) == 0 {
		L.Push(lua.LNil)
		return 1
	}
	return pushCaptures(L, s, mds[0], true)
}

func (b *budget) strGmatch(L *lua.LState) int {
	s, pat := L.CheckString(1), L.CheckString(2)
	mds := b.find(L, pat, s, 0, -1)
	next := 0
	L.Push(L.NewFunction(func(L *lua.LState) int {
		if next >= len(mds) {
			return 0
		}
		next++
		return pushCaptures(L, s, mds[next-1], true)
	}))
	return 1
}

// strGsub builds its result in one pass, charging every piece before it is
// added (gopher-lua's copies the whole string once per match).
func (b *budget) strGsub(L *lua.LState) int {
	s, pat := L.CheckString(1), L.CheckString(2)
	L.CheckTypes(3, lua.LTString, lua.LTNumber, lua.LTTable, lua.LTFunction)
	repl := L.Get(3)
	mds := b.find(L, pat, s, 0, L.OptInt(4, -1))
	var out strings.Builder
	add := func(piece string) {
		b.alloc(L, 2*len(piece)) // the builder doubles as it grows
		out.WriteString(piece)
	}
	// capture is md's capture n (0-based); with no captures, capture 0 is
	// the whole match, as in Lua.
	capture := func(md *pattern.MatchData, n int) lua.LValue {
		if md.CaptureLength() == 2 && n == 0 {
			return lua.LString(s[md.Capture(0):md.Capture(1)])
		}
		i := 2 + 2*n
		if i >= md.CaptureLength() {
			L.RaiseError("invalid capture index")
		}
		if md.IsPosCapture(i) {
			return lua.LNumber(md.Capture(i))
		}
		return lua.LString(s[md.Capture(i):md.Capture(i+1)])
	}
	last := 0
	for _, md := range mds {
		start, end := md.Capture(0), md.Capture(1)
		add(s[last:start])
		last = end
		whole := s[start:end]
		var v lua.LValue
		switch r := repl.(type) {
		case lua.LString, lua.LNumber:
			tmpl := lua.LVAsString(r)
			for i := 0; i < len(tmpl); i++ {
				if tmpl[i] != '%' || i+1 == len(tmpl) {
					add(tmpl[i : i+1])
					continue
				}
				i++
				switch c := tmpl[i]; {
				case c == '0':
					add(whole)
				case c >= '1' && c <= '9':
					add(lua.LVAsString(capture(md, int(c-'1'))))
				default:
					add(tmpl[i : i+1])
				}
			}
			continue
		case *lua.LTable:
			v = L.GetTable(r, capture(md, 0))
		case *lua.LFunction:
			L.Push(r)
			n := pushCaptures(L, s, md, true)
			L.Call(n, 1)
			v = L.Get(-1)
			L.Pop(1)
		}
		if !lua.LVAsBool(v) {
			add(whole)
		} else if lua.LVCanConvToString(v) {
			add(lua.LVAsString(v))
		} else {
			L.RaiseError("invalid replacement value (a %s)", v.Type().String())
		}
	}
	add(s[last:])
	L.Push(lua.LString(out.String()))
	L.Push(lua.LNumber(len(mds)))
	return 2
}

// concatAST rewrites every a .. b in stmts into __fila_concat(a, b).
func concatAST(stmts []ast.Stmt) {
	for _, s := range stmts {
		concatStmt(s)
	}
}

func concatStmt(s ast.Stmt) {
	switch s := s.(type) {
	case *ast.AssignStmt:
		concatExprs(s.Lhs)
		concatExprs(s.Rhs)
	case *ast.LocalAssignStmt:
		concatExprs(s.Exprs)
	case *ast.FuncCallStmt:
		s.Expr = concatExpr(s.Expr)
	case *ast.DoBlockStmt:
		concatAST(s.Stmts)
	case *ast.WhileStmt:
		s.Condition = concatExpr(s.Condition)
		concatAST(s.Stmts)
	case *ast.RepeatStmt:
		s.Condition = concatExpr(s.Condition)
		concatAST(s.Stmts)
	case *ast.IfStmt:
		s.Condition = concatExpr(s.Condition)
		concatAST(s.Then)
		concatAST(s.Else)
	case *ast.NumberForStmt:
		s.Init, s.Limit = concatExpr(s.Init), concatExpr(s.Limit)
		if s.Step != nil {
			s.Step = concatExpr(s.Step)
		}
		concatAST(s.Stmts)
	case *ast.GenericForStmt:
		concatExprs(s.Exprs)
		concatAST(s.Stmts)
	case *ast.FuncDefStmt:
		concatAST(s.Func.Stmts)
		if s.Name.Func != nil {
			s.Name.Func = concatExpr(s.Name.Func)
		}
		if s.Name.Receiver != nil {
			s.Name.Receiver = concatExpr(s.Name.Receiver)
		}
	case *ast.ReturnStmt:
		concatExprs(s.Exprs)
	}
}

func concatExprs(es []ast.Expr) {
	for i := range es {
		es[i] = concatExpr(es[i])
	}
}

func concatExpr(e ast.Expr) ast.Expr {
	switch e := e.(type) {
	case *ast.StringConcatOpExpr:
		call := &ast.FuncCallExpr{Func: &ast.IdentExpr{Value: concatFunc}, Args: []ast.Expr{concatExpr(e.Lhs), concatExpr(e.Rhs)}}
		call.SetLine(e.Line())
		call.SetLastLine(e.LastLine())
		call.Func.SetLine(e.Line())
		call.Func.SetLastLine(e.LastLine())
		return call
	case *ast.AttrGetExpr:
		e.Object, e.Key = concatExpr(e.Object), concatExpr(e.Key)
	case *ast.TableExpr:
		for _, f := range e.Fields {
			if f.Key != nil {
				f.Key = concatExpr(f.Key)
			}
			f.Value = concatExpr(f.Value)
		}
	case *ast.FuncCallExpr:
		if e.Func != nil {
			e.Func = concatExpr(e.Func)
		}
		if e.Receiver != nil {
			e.Receiver = concatExpr(e.Receiver)
		}
		concatExprs(e.Args)
	case *ast.LogicalOpExpr:
		e.Lhs, e.Rhs = concatExpr(e.Lhs), concatExpr(e.Rhs)
	case *ast.RelationalOpExpr:
		e.Lhs, e.Rhs = concatExpr(e.Lhs), concatExpr(e.Rhs)
	case *ast.ArithmeticOpExpr:
		e.Lhs, e.Rhs = concatExpr(e.Lhs), concatExpr(e.Rhs)
	case *ast.UnaryMinusOpExpr:
		e.Expr = concatExpr(e.Expr)
	case *ast.UnaryNotOpExpr:
		e.Expr = concatExpr(e.Expr)
	case *ast.UnaryLenOpExpr:
		e.Expr = concatExpr(e.Expr)
	case *ast.FunctionExpr:
		concatAST(e.Stmts)
	}
	return e
}
