package cluster

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/fila-dev/filad/actors"
	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry/telemetrytest"
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

// A replica taken out of a partition while it was cut off never learns
// it (the leader stops sending to it once the change applied): its raft
// view names no leader for ever. Its placement asks the other members and
// names the leader they name, and raft's view again once that names one.
func TestAReplicaTakenOutUnawareNamesTheLeaderTheMembersName(t *testing.T) {
	c := newReplicaNet(t, 3)
	const g, queue = 1, "orders"
	var b storage.Batch
	b.PutQueue(&storagev1.QueueRecord{Name: queue, Partition: g})
	c.write(&b)
	leader := c.leaderOf(g)
	lead := leader.Driver.opts.NodeID
	victim := lead%3 + 1
	out := c.node(victim)
	telemetrytest.Await(t, patience, func() (bool, string) {
		got := out.Families.Group(storage.Owner{Family: queue})
		return got == g, fmt.Sprintf("node %d places %q on partition %d", victim, queue, got)
	})

	c.cut(victim, true)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	require.NoError(t, leader.Driver.ChangeConf(ctx, g, confChange(pb.ConfChangeType_ConfChangeRemoveNode, victim)))
	telemetrytest.Await(t, patience, func() (bool, string) {
		lst, _ := leader.Driver.Status(g)
		vst, _ := out.Driver.Status(g)
		return !lst.Holds(victim) && vst.Holds(victim) && vst.Leader == 0,
			fmt.Sprintf("the leader's membership %v; node %d's %v, leader %d", lst.Conf, victim, vst.Conf, vst.Leader)
	})
	c.cut(victim, false)

	var changed atomic.Int32
	p := NewPlacement(out, func() { changed.Add(1) })
	require.Equal(t, "0", p.Where(queue).Node, "before it asked, node %d knows no leader", victim)
	p.refresh(ctx, patience)
	where := p.Where(queue)
	require.Equal(t, strconv.FormatUint(lead, 10), where.Node, "node %d names the leader the members name", victim)
	require.Equal(t, uint64(0), where.Term)
	require.Equal(t, int32(1), changed.Load(), "the directory is told once")
	l, _ := p.Queue(queue)
	require.Equal(t, lead, l)

	// Its raft view answers again once it names a leader: the node is
	// added back, the leader sends to it again.
	require.NoError(t, leader.Driver.ChangeConf(ctx, g, confChange(pb.ConfChangeType_ConfChangeAddNode, victim)))
	telemetrytest.Await(t, patience, func() (bool, string) {
		vst, _ := out.Driver.Status(g)
		return vst.Leader != 0, fmt.Sprintf("node %d knows no leader of partition %d", victim, g)
	})
	p.refresh(ctx, patience)
	vst, _ := out.Driver.Status(g)
	require.Equal(t, actors.Location{Node: strconv.FormatUint(vst.Leader, 10), LeaderAddr: out.Nodes.ClientAddr(vst.Leader), Term: vst.Term}, p.Where(queue))
	require.Equal(t, uint64(0), p.LearntLeader(g))
}
