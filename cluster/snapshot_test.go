package cluster

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	pb "go.etcd.io/raft/v3/raftpb"
	"golang.org/x/time/rate"

	"github.com/fila-dev/filad/actors"
	"github.com/fila-dev/filad/cluster/raftlog"
	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/storage/storagetest"
)

// smallLog compacts after a few dozen entries, so that a node down for a
// few hundred writes comes back behind its leaders' logs.
func smallLog(o *ReplicaOptions) { o.SnapshotEntries, o.LogTail = 40, 10 }

// snapshotRun writes to a three-node cluster while one follower is down
// long enough that every leader compacts past what it has, brings it back,
// and waits until all three hold the same keys. prepare runs on each
// replica before the writes that the follower misses; tune, if given,
// changes every replica's options after smallLog. Queues a and b are
// recorded (as CreateQueue places families) on two partitions, neither
// of them the one their hash gives, which holds nothing: a snapshot that
// selected keys by the hash would not carry them.
func snapshotRun(t *testing.T, prepare func(*Replica), tune ...func(*ReplicaOptions)) (c *replicaNet, down uint64, dump map[string]string) {
	c = newReplicaNet(t, 3, func(o *ReplicaOptions) {
		smallLog(o)
		for _, f := range tune {
			f(o)
		}
	})
	queues := []string{"a", "b"}
	hash := GroupOf(storage.FamilyOf("a"), testPartitions)
	if GroupOf(storage.FamilyOf("b"), testPartitions) != hash {
		t.Fatal("the test wants a and b of one hash")
	}
	group, bGroup := hash%testPartitions+1, (hash+1)%testPartitions+1
	var rec storage.Batch
	rec.PutQueue(&storagev1.QueueRecord{Name: "a", Partition: uint32(group)})
	rec.PutQueue(&storagev1.QueueRecord{Name: "b", Partition: uint32(bGroup)})
	c.write(&rec)
	c.placed("a", group)
	c.placed("b", bGroup)
	for i := range 20 {
		for _, q := range queues {
			var b storage.Batch
			b.PutMessage(q, fmt.Sprintf("0-%03d", i), &storagev1.MessageRecord{Payload: []byte(q)})
			c.write(&b)
		}
		var m storage.Batch
		m.PutConfig(fmt.Sprintf("k0-%d", i), "v")
		c.write(&m)
	}
	c.converged(queues...)
	leader := c.leaderOf(group).Driver.opts.NodeID
	down = leader%3 + 1
	var lasts []uint64
	for _, g := range []uint64{MetaGroup, group} {
		l, err := c.node(down).Log.Log(g)
		if err != nil {
			t.Fatal(err)
		}
		last, _ := l.LastIndex()
		lasts = append(lasts, last)
	}
	c.close(down)
	for _, id := range c.peers {
		if r := c.node(id); r != nil && prepare != nil {
			prepare(r)
		}
	}
	// What the follower holds and must lose: deleted while it is down.
	for i := range 10 {
		var b storage.Batch
		b.DeleteMessage("a", fmt.Sprintf("0-%03d", i))
		c.write(&b)
		var m storage.Batch
		m.DeleteConfig(fmt.Sprintf("k0-%d", i))
		c.write(&m)
	}
	for i := 0; ; i++ {
		for _, q := range queues {
			var b storage.Batch
			b.PutMessage(q, fmt.Sprintf("1-%04d", i), &storagev1.MessageRecord{Payload: []byte(q)})
			c.write(&b)
		}
		var m storage.Batch
		m.PutConfig(fmt.Sprintf("k1-%d", i), "v")
		c.write(&m)
		if i >= 100 && c.compactedPast(down, []uint64{MetaGroup, group}, lasts) {
			break
		}
		if i > 5000 {
			t.Fatal("the leaders never compacted past the follower's log")
		}
	}
	c.open(down)
	dump = c.converged(queues...)
	for _, key := range []string{"m/a/0-000", "c/k0-0"} {
		if _, ok := dump[key]; ok {
			t.Errorf("%s, deleted while the follower was down, is on every replica", key)
		}
	}
	for _, key := range []string{"m/a/0-019", "m/a/1-0100", "m/b/0-000", "c/k1-100"} {
		if _, ok := dump[key]; !ok {
			t.Errorf("%s missing", key)
		}
	}
	return c, down, dump
}

// compactedPast reports whether every live node's log of each group
// starts after what the down node last had of it.
func (c *replicaNet) compactedPast(down uint64, groups, lasts []uint64) bool {
	c.t.Helper()
	for _, id := range c.peers {
		r := c.node(id)
		if id == down || r == nil {
			continue
		}
		for i, g := range groups {
			l, err := r.Log.Log(g)
			if err != nil {
				c.t.Fatal(err)
			}
			if first, _ := l.FirstIndex(); first <= lasts[i]+1 {
				return false
			}
		}
	}
	return true
}

// converged waits until every open replica holds the same keys of queues
// and the meta group, and returns them.
func (c *replicaNet) converged(queues ...string) map[string]string {
	c.t.Helper()
	deadline := time.Now().Add(patience)
	for {
		var first map[string]string
		same := true
		for _, id := range c.peers {
			r := c.node(id)
			if r == nil {
				continue
			}
			d := storagetest.Dump(c.t, r.Local, queues...)
			if first == nil {
				first = d
			} else if !maps.Equal(first, d) {
				same = false
			}
		}
		if same {
			return first
		}
		if time.Now().After(deadline) {
			c.t.Fatal("replicas never converged")
		}
		time.Sleep(5 * time.Millisecond) // polls the stores; the outcome is theirs
	}
}

// A follower down while its leaders compact past its log comes back by
// snapshots: its keys are then its peers', those deleted meanwhile gone,
// and other groups' keys untouched (they converge too).
func TestFollowerCatchesUpBySnapshot(t *testing.T) {
	c, down, _ := snapshotRun(t, nil)
	st := c.node(down).SnapshotStats()
	if st.Installs == 0 || st.ReceivedBytes == 0 {
		t.Fatalf("follower stats %+v: no snapshot installed", st)
	}
	var sent SnapshotStats
	for _, id := range c.peers {
		if id != down {
			s := c.node(id).SnapshotStats()
			sent.SentBytes += s.SentBytes
			sent.Compactions += s.Compactions
		}
	}
	if sent.SentBytes == 0 || sent.Compactions == 0 {
		t.Fatalf("leaders' stats %+v: no compaction or nothing sent", sent)
	}
	// The follower's log now starts where a snapshot put it, and no
	// install is left half done. A leader that compacted again may be
	// sending another snapshot as the stores converge: its marker is
	// there until that install ends.
	deadline := time.Now().Add(patience)
	for g := uint64(0); g <= testPartitions; {
		m, ok, err := c.node(down).Log.SnapshotMarker(g)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			g++
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %d: snapshot marker %v left", g, m)
		}
		time.Sleep(5 * time.Millisecond) // polls the install's end; the outcome is the marker's
	}
}

// While a snapshot is on its way to a follower (its fetch held here), the
// leader's SnapshotFloor is the snapshot's index, below which the
// compactor keeps the log (TestCompactionKeepsWhatASnapshotFollowerNeeds);
// once the follower installed it and answered, no floor is left.
func TestASnapshotOnItsWayHoldsTheLogFromItsIndex(t *testing.T) {
	gate := make(chan struct{})
	var (
		mu       sync.Mutex
		replicas []*Replica
		watch    sync.Once
	)
	floors := make(chan uint64, 1)
	c, _, _ := snapshotRun(t, func(r *Replica) {
		r.snaps.gate.Store(&gate)
		mu.Lock()
		replicas = append(replicas, r)
		mu.Unlock()
		watch.Do(func() {
			go func() {
				defer close(gate)
				for deadline := time.Now().Add(patience); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) { // polls the drivers' status
					mu.Lock()
					rs := slices.Clone(replicas)
					mu.Unlock()
					for _, r := range rs {
						for g := uint64(0); g <= testPartitions; g++ {
							if st, _ := r.Driver.Status(g); st.SnapshotFloor > 0 {
								floors <- st.SnapshotFloor
								return
							}
						}
					}
				}
			}()
		})
	})
	select {
	case f := <-floors:
		t.Logf("a leader held its log from index %d while the fetch waited", f)
	default:
		t.Fatal("no leader held a floor while its snapshot's fetch waited")
	}
	deadline := time.Now().Add(patience)
	for _, id := range c.peers {
		for g := uint64(0); g <= testPartitions; g++ {
			for st, _ := c.node(id).Driver.Status(g); st.SnapshotFloor != 0; st, _ = c.node(id).Driver.Status(g) {
				if time.Now().After(deadline) {
					t.Fatalf("node %d group %d: floor %d left after the follower caught up", id, g, st.SnapshotFloor)
				}
				time.Sleep(5 * time.Millisecond) // polls the driver's status
			}
		}
	}
}

// A transfer whose stream breaks midway resumes after the last key
// received, and the follower converges all the same.
func TestSnapshotStreamResumes(t *testing.T) {
	c, down, _ := snapshotRun(t, func(r *Replica) {
		r.snaps.chunkBytes.Store(64) // a few keys a chunk
		r.snaps.breakAfter.Store(2)
	})
	if st := c.node(down).SnapshotStats(); st.Resumes == 0 || st.Installs == 0 {
		t.Fatalf("follower stats %+v: no transfer resumed", st)
	}
}

// compactionLog is a raft log of group with entries 1..n in a badger
// store: setApplied records an applied index, first waits for the log's
// first index to be want.
type compactionLog struct {
	t     *testing.T
	s     *raftlog.Store
	db    *badger.DB
	group uint64
}

func newCompactionLog(t *testing.T, group, n uint64) *compactionLog {
	db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	s := raftlog.New(db)
	w := s.NewWrite()
	var ents []*pb.Entry
	for i := uint64(1); i <= n; i++ {
		ents = append(ents, &pb.Entry{Index: new(i), Term: new(uint64(1)), Data: []byte("x")})
	}
	w.Append(group, ents)
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	return &compactionLog{t: t, s: s, db: db, group: group}
}

func (c *compactionLog) setApplied(i uint64) {
	c.t.Helper()
	if err := c.db.Update(func(txn *badger.Txn) error {
		return raftlog.SetApplied(txn, c.group, &pb.SnapshotMetadata{Index: new(i), Term: new(uint64(1))})
	}); err != nil {
		c.t.Fatal(err)
	}
}

func (c *compactionLog) waitFirst(want uint64) {
	c.t.Helper()
	l, _ := c.s.Log(c.group)
	deadline := time.Now().Add(patience)
	for {
		if first, _ := l.FirstIndex(); first == want {
			return
		} else if time.Now().After(deadline) {
			c.t.Fatalf("first index %d, want %d", first, want)
		}
		time.Sleep(time.Millisecond) // polls the log's bound
	}
}

// Compaction never discards an entry above the synced applied index: an
// apply committed but not yet covered by a sync keeps its entries.
func TestCompactionStaysBelowSyncedApplied(t *testing.T) {
	const group = 3
	cl := newCompactionLog(t, group, 200)
	s, setApplied, waitFirst := cl.s, cl.setApplied, cl.waitFirst
	var counters snapshotCounters
	c := newCompactor(s, 20, 10, &counters, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer c.stop()
	l, _ := s.Log(group)
	// Applied 150, but synced only up to 70 (the sync began before the
	// later apply committed): compaction to 70-10, not 150-10.
	setApplied(70)
	c.applied(group, 70)
	covered := c.beforeSync()
	setApplied(150)
	c.applied(group, 150)
	c.synced(covered)
	waitFirst(61)
	// The next sync covers 150: compaction to 150-10.
	c.synced(c.beforeSync())
	waitFirst(141)
	for deadline := time.Now().Add(patience); counters.compactions.Load() != 2; {
		if time.Now().After(deadline) {
			t.Fatalf("%d compactions, want 2", counters.compactions.Load())
		}
		time.Sleep(time.Millisecond) // the count follows the deletes
	}
	if _, err := l.Entries(141, 201, 1<<30); err != nil {
		t.Fatalf("entries above the compaction: %v", err)
	}
}

// A snapshot on its way to a follower holds compaction at its index (the
// follower goes on from the next entry), within maxSnapshotHold
// intervals; past that, or once no snapshot is pending, compaction goes
// to the synced applied index less the tail again.
func TestCompactionKeepsWhatASnapshotFollowerNeeds(t *testing.T) {
	const group = 5
	cl := newCompactionLog(t, group, 400)
	var counters snapshotCounters
	c := newCompactor(cl.s, 20, 10, &counters, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer c.stop()
	var floor atomic.Uint64
	c.setFloor(func(g uint64) uint64 {
		if g != group {
			return 0
		}
		return floor.Load()
	})
	cl.setApplied(390)
	c.applied(group, 390)
	floor.Store(330) // a snapshot at 330 streams: 380 - 330 is within 3 intervals of 20
	c.synced(c.beforeSync())
	cl.waitFirst(331)
	floor.Store(300) // 380 - 300 is past the hold's bound: not held
	c.synced(c.beforeSync())
	cl.waitFirst(381)
}

// A node that stopped during a snapshot install (the marker is set) never
// serves the group until a snapshot installs: elected, it passes no
// barrier, while its other groups serve.
func TestAnInstallCutShortHoldsTheGroup(t *testing.T) {
	c := newReplicaNet(t, 1)
	group := GroupOf(storage.FamilyOf("a"), testPartitions)
	var b storage.Batch
	b.PutMessage("a", "1", &storagev1.MessageRecord{Payload: []byte("x")})
	c.write(&b)
	c.close(1)
	local, err := storage.Open(storage.Options{Dir: filepath.Join(c.dir, "1"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := local.DB().Update(func(txn *badger.Txn) error {
		return raftlog.SetSnapshotMarker(txn, group, &pb.SnapshotMetadata{Index: new(uint64(1000)), Term: new(uint64(9))})
	}); err != nil {
		t.Fatal(err)
	}
	if err := local.Close(); err != nil {
		t.Fatal(err)
	}
	r := c.open(1)
	fam := "b"
	for i := 0; GroupOf(storage.FamilyOf(fam), testPartitions) == group; i++ {
		fam = fmt.Sprintf("b%d", i)
	}
	// The other group serves; a write to it goes through the same driver
	// loop that would have passed the held group's barrier by then.
	var ob storage.Batch
	ob.PutMessage(fam, "1", &storagev1.MessageRecord{Payload: []byte("y")})
	c.write(&ob)
	deadline := time.Now().Add(patience)
	for {
		st, _ := r.Driver.Status(group)
		if st.Leader == 1 && st.Applied >= st.Commit && st.Commit > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %d never elected its only node: %+v", group, st)
		}
		time.Sleep(5 * time.Millisecond) // polls raft's status
	}
	c.write(&ob) // one more loop past the held group's barrier
	if st, _ := r.Driver.Status(group); st.Leading {
		t.Fatalf("group %d, held by its snapshot marker, is served: %+v", group, st)
	}
	var ab storage.Batch
	ab.PutMessage("a", "2", &storagev1.MessageRecord{Payload: []byte("x")})
	err = r.Store.Write(&ab)
	if !errors.Is(err, actors.ErrNotLeader) || !strings.Contains(err.Error(), (&NotLeaderError{Group: group, Leader: 1}).Error()) {
		t.Fatalf("a write to the held group: %v, want a refusal of group %d", err, group)
	}
}

// Snapshot transfer keeps to the node's rate: what a follower receives
// takes at least bytes/rate (less the limiter's burst) to arrive.
func TestSnapshotTransferIsRateLimited(t *testing.T) {
	const perSec, burst = 4 << 10, 1 << 10
	c, down, _ := snapshotRun(t, func(r *Replica) {
		r.snaps.chunkBytes.Store(256) // every chunk within the burst: fully counted
		r.snaps.limiter = rate.NewLimiter(perSec, burst)
	})
	st := c.node(down).SnapshotStats()
	// Each install may start with a full bucket.
	free := min(st.ReceivedBytes, st.Installs*burst)
	floor := time.Duration(float64(st.ReceivedBytes-free) / perSec * float64(time.Second))
	t.Logf("received %d bytes in %d installs, %v (floor %v)", st.ReceivedBytes, st.Installs, st.InstallTime, floor)
	if floor < 100*time.Millisecond {
		t.Fatalf("%d bytes: too few to show a rate", st.ReceivedBytes)
	}
	if st.InstallTime < floor {
		t.Fatalf("%d bytes in %v: faster than %d B/s allows (%v)", st.ReceivedBytes, st.InstallTime, perSec, floor)
	}
}
