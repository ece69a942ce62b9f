package pattern

import (
	"errors"
	"testing"
)

// steps is a Budget of a number of steps.
type steps struct{ left int }

var errSpent = errors.New("spent")

func (s *steps) Charge(n, _ int) error {
	if s.left -= n; s.left < 0 {
		return errSpent
	}
	return nil
}

func TestBudgetStopsBacktracking(t *testing.T) {
	t.Parallel()
	src := []byte("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
	_, err := Find("a-a-a-a-a-a-a-a-a-a-a-a-a-a-b", src, 0, 1, &steps{left: 100_000})
	if !errors.Is(err, errSpent) {
		t.Fatalf("err = %v, want the budget's", err)
	}
	m, err := Find("(a+)", src, 0, 1, &steps{left: 100_000})
	if err != nil || len(m) != 1 || m[0].Capture(3) != len(src) {
		t.Fatalf("an ordinary match: %v %v", m, err)
	}
}

// FuzzFind: any pattern over any subject either matches, is refused as
// malformed, or runs out of budget; it never panics.
func FuzzFind(f *testing.F) {
	for _, s := range [][2]string{{"(%w+)=(%w+)", "a=1, b=2"}, {"^[%a_][%w_]*$", "name_1"}, {"%b()", "(a(b)c)"}, {"(a*(.)%w(%s*))", "aa b "}, {"[^%]]", "]x"}, {"%1", "x"}, {"(()", "x"}, {"[a-", "a"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, p, src string) {
		_, _ = Find(p, []byte(src), 0, -1, &steps{left: 1_000_000})
	})
}
