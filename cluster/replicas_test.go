package cluster

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReplicasOf(t *testing.T) {
	five := []uint64{1, 2, 3, 4, 5}
	for _, tc := range []struct {
		name  string
		group uint64
		ids   []uint64
		rf    int
		want  int
	}{
		{"the meta group is on every node", MetaGroup, five, 3, 5},
		{"a partition on rf nodes", 7, five, 3, 3},
		{"rf 1", 7, five, 1, 1},
		{"rf at the node count: all", 7, five, 5, 5},
		{"rf above the node count: all there are", 7, []uint64{4, 2}, 3, 2},
		{"rf 0: all", 7, five, 0, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ReplicasOf(tc.group, tc.ids, tc.rf)
			require.Len(t, got, tc.want)
			for _, id := range got {
				require.Contains(t, tc.ids, id)
			}
			require.Len(t, slices.Compact(slices.Sorted(slices.Values(got))), tc.want, "a node twice: %v", got)
			// Every node ranks alike, whatever order it lists the members in.
			rev := slices.Clone(tc.ids)
			slices.Reverse(rev)
			require.Equal(t, got, ReplicasOf(tc.group, rev, tc.rf))
		})
	}
}

// TestReplicasSpreadAndMoveLittle: each node holds its share of 1,024
// partitions, and a node joining or leaving moves only partitions it
// ranks in, about rf/n of them.
func TestReplicasSpreadAndMoveLittle(t *testing.T) {
	const groups, rf = 1024, 3
	place := func(ids []uint64) map[uint64][]uint64 {
		m := map[uint64][]uint64{}
		for g := uint64(1); g <= groups; g++ {
			m[g] = ReplicasOf(g, ids, rf)
		}
		return m
	}
	five := []uint64{1, 2, 3, 4, 5}
	before := place(five)
	held := map[uint64]int{}
	for _, r := range before {
		for _, id := range r {
			held[id]++
		}
	}
	for _, id := range five {
		share := groups * rf / len(five) // 614
		require.InDelta(t, share, held[id], float64(share)/10, "node %d holds %d partitions", id, held[id])
	}

	for _, tc := range []struct {
		name  string
		after []uint64
		// changed: the node whose arrival or leave is the only change a
		// moved partition may show.
		changed uint64
	}{
		{"a sixth node joins", []uint64{1, 2, 3, 4, 5, 6}, 6},
		{"node 3 leaves", []uint64{1, 2, 4, 5}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			after := place(tc.after)
			moved := 0
			for g := uint64(1); g <= groups; g++ {
				if slices.Equal(slices.Sorted(slices.Values(before[g])), slices.Sorted(slices.Values(after[g]))) {
					continue
				}
				moved++
				// Exactly one replica changed, and it is the node that came or went.
				gone := slices.DeleteFunc(slices.Clone(before[g]), func(id uint64) bool { return slices.Contains(after[g], id) })
				came := slices.DeleteFunc(slices.Clone(after[g]), func(id uint64) bool { return slices.Contains(before[g], id) })
				require.Len(t, gone, 1, "group %d: %v -> %v", g, before[g], after[g])
				require.Len(t, came, 1, "group %d: %v -> %v", g, before[g], after[g])
				require.True(t, gone[0] == tc.changed || came[0] == tc.changed, "group %d: %v -> %v", g, before[g], after[g])
			}
			n := max(len(five), len(tc.after))
			expect := groups * rf / n
			require.InDelta(t, expect, moved, float64(expect)/5, "moved %d of %d partitions", moved, groups)
		})
	}
}
