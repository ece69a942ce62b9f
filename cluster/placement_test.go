package cluster

import (
	"testing"

	"github.com/stretchr/testify/require"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
)

func TestLeastLoaded(t *testing.T) {
	for _, tc := range []struct {
		name  string
		load  []int
		start uint64
		want  uint64
	}{
		{"all empty: the hash's choice", []int{0, 0, 0, 0}, 3, 3},
		{"the fewest families", []int{2, 1, 0, 1}, 1, 3},
		{"a tie: the first from the hash's on", []int{1, 0, 1, 0}, 3, 4},
		{"a tie wraps around", []int{0, 1, 1, 0}, 2, 4},
		{"a tie, wrapping to the first", []int{0, 1, 1, 1}, 4, 1},
		{"the hash's own when it is least", []int{1, 1, 0, 1}, 3, 3},
		{"one partition", []int{5}, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, leastLoaded(tc.load, tc.start))
		})
	}
}

// Families places a family by its record, else its deletion mark (reaped
// or not), else the hash; a record without a partition (a cluster older
// than placement) is placed by the hash too. Choose counts the families
// that hold something (a record, a deletion under way), not reaped marks.
func TestFamiliesFollowRecordsAndMarks(t *testing.T) {
	const partitions = 4
	local, err := storage.Open(storage.Options{Dir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = local.Close() })
	hash := func(family string) uint64 { return GroupOf(storage.Owner{Family: family}, partitions) }
	// A partition for the recorded queues that is not their hash's, so
	// that following the hash instead would show.
	other := func(family string) uint32 { return uint32(hash(family)%partitions + 1) }

	var b storage.Batch
	b.PutQueue(&storagev1.QueueRecord{Name: "rec", Partition: other("rec")})
	b.PutQueue(&storagev1.QueueRecord{Name: "rec.dlq", Partition: other("rec")})
	b.PutQueue(&storagev1.QueueRecord{Name: "old"})                            // no partition: before placement
	b.PutQueue(&storagev1.QueueRecord{Name: "bad", Partition: partitions + 1}) // out of range: the hash
	require.NoError(t, local.Write(&b))
	var retire storage.Batch
	retire.RetireQueuesOn(other("gone"), "gone", "gone.dlq")
	require.NoError(t, local.Write(&retire))
	var retired storage.Batch
	retired.RetireQueuesOn(other("reaped"), "reaped")
	require.NoError(t, local.Write(&retired))
	marks, err := local.DeletionMarks()
	require.NoError(t, err)
	for _, m := range marks {
		if m.Queue == "reaped" {
			var forget storage.Batch
			forget.ForgetMark(m)
			require.NoError(t, local.Write(&forget))
		}
	}

	f := newFamilies(partitions)
	require.NoError(t, f.reload(local))
	for _, tc := range []struct {
		queue string
		want  uint64
	}{
		{"rec", uint64(other("rec"))},
		{"rec.dlq", uint64(other("rec"))},
		{"gone", uint64(other("gone"))},
		{"gone.dlq", uint64(other("gone"))},
		{"reaped", uint64(other("reaped"))},
		{"old", hash("old")},
		{"bad", hash("bad")},
		{"never", hash("never")},
	} {
		require.Equal(t, tc.want, f.Group(storage.FamilyOf(tc.queue)), tc.queue)
	}
	require.Equal(t, uint64(MetaGroup), f.Group(storage.MetaOwner))
	require.Equal(t, other("reaped"), f.Choose("reaped"), "a name created again goes where it was")
	require.Equal(t, uint32(hash("old")), f.Choose("old"), "a family placed stays")

	load := make([]int, partitions)
	for _, fam := range []string{"rec", "gone", "old", "bad"} { // not "reaped": it holds nothing
		load[f.Group(storage.Owner{Family: fam})-1]++
	}
	require.Equal(t, load, f.t.Load().load)
	require.Equal(t, uint32(leastLoaded(load, hash("new"))), f.Choose("new"))
}
