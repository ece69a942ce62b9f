package actors

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDRRShares(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		quantum int64
		weights map[string]int64
		window  int
	}{
		{"equal weights", 1, map[string]int64{"a": 1, "b": 1, "c": 1}, 300},
		{"1:2:3", 1, map[string]int64{"a": 1, "b": 2, "c": 3}, 600},
		{"1:2:3 quantum 10", 10, map[string]int64{"a": 1, "b": 2, "c": 3}, 600},
		{"1:2:3:4:5", 1, map[string]int64{"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}, 1500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := newDRR[int](tt.quantum)
			var total int64
			for k, w := range tt.weights {
				total += w
				for i := range 10 * tt.window {
					d.push(k, w, i)
				}
			}
			got := map[string]int{}
			for range tt.window {
				_, k, _, ok := d.pop()
				require.True(t, ok)
				got[k]++
			}
			for k, w := range tt.weights {
				want := tt.window * int(w) / int(total)
				require.Equal(t, want, got[k], "key %s", k)
			}
		})
	}
}

func TestDRRFIFOWithinKeyAndDrains(t *testing.T) {
	t.Parallel()
	d := newDRR[string](1)
	for i := range 5 {
		d.push("a", 1, fmt.Sprint("a", i))
		d.push("b", 3, fmt.Sprint("b", i))
	}
	require.Equal(t, 10, d.len())
	var seq []string
	for {
		v, _, _, ok := d.pop()
		if !ok {
			break
		}
		seq = append(seq, v)
	}
	require.Equal(t, []string{"a0", "b0", "b1", "b2", "a1", "b3", "b4", "a2", "a3", "a4"}, seq)
	require.Zero(t, d.len())
	require.Empty(t, d.keys)
}

func TestDRRQuietKeyServedInFirstRound(t *testing.T) {
	t.Parallel()
	d := newDRR[int](1)
	for i := range 10000 {
		d.push("noisy", 1, i)
	}
	d.push("quiet", 1, -1)
	first, _, _, _ := d.pop()
	second, key, _, _ := d.pop()
	require.Equal(t, 0, first)
	require.Equal(t, "quiet", key)
	require.Equal(t, -1, second)
}

func TestDRRRemoveIfKeepsOrderAndCounts(t *testing.T) {
	t.Parallel()
	d := newDRR[int](1)
	for i := range 10 {
		d.push(fmt.Sprint("k", i%2), 0, i)
	}
	require.Equal(t, 5, d.removeIf(func(i int) bool { return i%2 == 1 }), "key k1 emptied")
	require.Equal(t, 5, d.len())
	var got []int
	for {
		i, key, _, ok := d.pop()
		if !ok {
			break
		}
		require.Equal(t, "k0", key)
		got = append(got, i)
	}
	require.Equal(t, []int{0, 2, 4, 6, 8}, got)
	require.Zero(t, d.active, "an emptied key left the round")
}
