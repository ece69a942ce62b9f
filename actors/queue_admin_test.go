package actors

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// removeFrom drops each key's count of items, wherever they are in the
// key, keeps the others' order and the ready count, and reads no further
// than it must.
func TestRemoveFromDropsEachKeysCountInOrder(t *testing.T) {
	t.Parallel()
	d := newDRR[int](1)
	for i := range 12 {
		d.push("a", 1, i) // 0..11
	}
	for i := range 5 {
		d.push("b", 1, 100+i)
	}
	d.push("c", 1, 200)
	drop := map[int]bool{0: true, 1: true, 2: true, 5: true, 7: true, 100: true, 101: true, 102: true, 103: true, 104: true}
	var read []int
	n := d.removeFrom(map[string]int{"a": 5, "b": 5, "gone": 3}, func(i int) bool {
		read = append(read, i)
		return drop[i]
	})
	require.Equal(t, 10, n)
	require.Equal(t, 8, d.len(), "12+5+1 ready less the 10 dropped")
	require.NotContains(t, read, 8, "a's items after its fifth drop (7) are not read")
	require.NotContains(t, read, 200, "an unnamed key is not read")
	_, ok := d.keys["b"]
	require.False(t, ok, "a key emptied is no longer active")

	got := map[string][]int{}
	for {
		i, key, _, ok := d.pop()
		if !ok {
			break
		}
		got[key] = append(got[key], i)
	}
	require.Equal(t, map[string][]int{"a": {3, 4, 6, 8, 9, 10, 11}, "c": {200}}, got)
}

// A prefix dropped moves the key's head on; pushes after it still queue
// behind the items kept.
func TestRemoveFromPrefixThenPush(t *testing.T) {
	t.Parallel()
	d := newDRR[int](1)
	for i := range 100 {
		d.push("a", 1, i)
	}
	require.Equal(t, 60, d.removeFrom(map[string]int{"a": 60}, func(i int) bool { return i < 60 }))
	d.push("a", 1, 100)
	var got []int
	for {
		i, _, _, ok := d.pop()
		if !ok {
			break
		}
		got = append(got, i)
	}
	want := []int{}
	for i := 60; i <= 100; i++ {
		want = append(want, i)
	}
	require.Equal(t, want, got)
}
