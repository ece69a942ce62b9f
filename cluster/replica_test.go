package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/actors"
	clusterv1 "github.com/fila-dev/filad/protos/fila/cluster/v1"
	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/storage/storagetest"
)

const testPartitions = 3

// replicaNet is n replicas on an in-process network.
type replicaNet struct {
	t     *testing.T
	dir   string
	peers []uint64
	mu    sync.Mutex
	nodes map[uint64]*Replica
	// tune, if set, adjusts each replica's options before it opens.
	tune func(*ReplicaOptions)
	// addrs are the nodes' snapshot servers: real gRPC on loopback, which
	// outlive the replicas behind them (a restart keeps the address).
	// They answer Membership/Leaders too.
	addrs map[uint64]string
	// cutOff are nodes whose raft messages, to and from, are dropped.
	cutOff map[uint64]bool
}

func newReplicaNet(t *testing.T, n int, tune ...func(*ReplicaOptions)) *replicaNet {
	c := &replicaNet{t: t, dir: t.TempDir(), nodes: map[uint64]*Replica{}, addrs: map[uint64]string{}, cutOff: map[uint64]bool{}}
	if len(tune) > 0 {
		c.tune = tune[0]
	}
	for id := uint64(1); id <= uint64(n); id++ {
		c.peers = append(c.peers, id)
		c.serveSnapshots(id)
	}
	for _, id := range c.peers {
		c.open(id)
	}
	t.Cleanup(func() {
		for _, id := range c.peers {
			c.close(id)
		}
	})
	return c
}

func (c *replicaNet) open(id uint64) *Replica {
	c.t.Helper()
	return c.openWith(id, c.peers)
}

// openWith opens replica id with peers as its groups' first voters (nil:
// a node that joins, its groups empty until a leader adds it).
func (c *replicaNet) openWith(id uint64, peers []uint64) *Replica {
	c.t.Helper()
	opts := ReplicaOptions{
		Dir: filepath.Join(c.dir, fmt.Sprint(id)), NodeID: id, Peers: peers, Partitions: testPartitions,
		Tick: 20 * time.Millisecond, ElectionTicks: 10,
		Send: func(to uint64, msgs []*clusterv1.GroupMessage) {
			c.mu.Lock()
			dst := c.nodes[to]
			if c.cutOff[to] || c.cutOff[id] {
				dst = nil
			}
			c.mu.Unlock()
			if dst != nil {
				dst.Driver.Step(msgs)
			}
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Nodes:  NewNodes(c.infos()),
		Dial: func(addr string) (*grpc.ClientConn, error) {
			return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		},
	}
	if c.tune != nil {
		c.tune(&opts)
	}
	r, err := OpenReplica(opts)
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.nodes[id] = r
	c.mu.Unlock()
	return r
}

// infos are the nodes as initial members: their snapshot servers'
// addresses.
func (c *replicaNet) infos() []NodeInfo {
	var out []NodeInfo
	for id, addr := range c.addrs {
		out = append(out, NodeInfo{ID: id, InternalAddr: addr})
	}
	return out
}

// serveSnapshots starts node id's snapshot server, which forwards to
// whichever replica of id is open.
func (c *replicaNet) serveSnapshots(id uint64) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	g := grpc.NewServer()
	clusterv1.RegisterSnapshotsServer(g, snapshotsProxy{c: c, id: id})
	clusterv1.RegisterMembershipServer(g, leadersProxy{c: c, id: id})
	go func() { _ = g.Serve(lis) }()
	c.t.Cleanup(g.Stop)
	c.addrs[id] = lis.Addr().String()
}

type snapshotsProxy struct {
	clusterv1.UnimplementedSnapshotsServer
	c  *replicaNet
	id uint64
}

func (p snapshotsProxy) Fetch(req *clusterv1.FetchSnapshot, s grpc.ServerStreamingServer[clusterv1.SnapshotChunk]) error {
	p.c.mu.Lock()
	r := p.c.nodes[p.id]
	p.c.mu.Unlock()
	if r == nil {
		return status.Error(codes.Unavailable, "node down")
	}
	return r.snaps.Fetch(req, s)
}

// leadersProxy answers Membership/Leaders as whichever replica of id is
// open (Replica.Leaders), as the server's internal port does.
type leadersProxy struct {
	clusterv1.UnimplementedMembershipServer
	c  *replicaNet
	id uint64
}

func (p leadersProxy) Leaders(_ context.Context, req *clusterv1.LeadersRequest) (*clusterv1.LeadersResponse, error) {
	r := p.c.node(p.id)
	if r == nil {
		return nil, status.Error(codes.Unavailable, "node down")
	}
	return &clusterv1.LeadersResponse{Leaders: r.Leaders(req.GetGroups())}, nil
}

// cut drops node id's raft messages, to and from it, or stops dropping
// them.
func (c *replicaNet) cut(id uint64, off bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cutOff[id] = off
}

func (c *replicaNet) node(id uint64) *Replica {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

func (c *replicaNet) close(id uint64) {
	c.mu.Lock()
	r := c.nodes[id]
	delete(c.nodes, id)
	c.mu.Unlock()
	if r != nil {
		if err := r.Close(); err != nil {
			c.t.Error(err)
		}
	}
}

// leaderOf waits for a replica that leads group past its barrier.
func (c *replicaNet) leaderOf(group uint64) *Replica {
	c.t.Helper()
	deadline := time.Now().Add(patience)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		nodes := maps.Clone(c.nodes)
		c.mu.Unlock()
		for _, r := range nodes {
			if st, _ := r.Driver.Status(group); st.Leading {
				return r
			}
		}
		time.Sleep(5 * time.Millisecond) // polls raft's status; the outcome is the status's
	}
	c.t.Fatalf("group %d has no leader", group)
	return nil
}

// write writes b through its group's leader, again after a leader change
// (puts and deletes may apply twice: no harm).
func (c *replicaNet) write(b *storage.Batch) {
	c.t.Helper()
	deadline := time.Now().Add(patience)
	for time.Now().Before(deadline) {
		err := c.leaderOf(c.groupOf(b.Owner())).Store.Write(b)
		if err == nil {
			return
		}
		if !errors.Is(err, ErrNotLeader) && !errors.Is(err, storage.ErrOutcomeUnknown) && !errors.Is(err, storage.ErrClosed) {
			c.t.Fatalf("write: %v", err)
		}
	}
	c.t.Fatal("write never acknowledged")
}

// The replicated store keeps the storage contract: a one-node cluster,
// so that every group is led where the suite writes and reads.
func TestReplicatedStoreKeepsTheStoreContract(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store {
		c := newReplicaNet(t, 1)
		for g := uint64(0); g <= testPartitions; g++ {
			c.leaderOf(g)
		}
		return c.nodes[1].Store
	})
}

// What a leader acknowledged is on every replica, the same, including on
// one that was down meanwhile and came back from its directory.
func TestReplicasConverge(t *testing.T) {
	c := newReplicaNet(t, 3)
	queues := []string{"a", "a.dlq", "b", "c"}
	write := func(round, n int) {
		for i := range n {
			var meta storage.Batch
			meta.PutConfig(fmt.Sprintf("k%d-%d", round, i), "v")
			c.write(&meta)
			for _, q := range queues {
				var b storage.Batch
				b.PutMessage(q, fmt.Sprintf("%d-%03d", round, i), &storagev1.MessageRecord{Payload: []byte(q)})
				c.write(&b)
			}
		}
		var del storage.Batch
		del.DeleteQueueItems("c")
		c.write(&del)
	}
	converged := func() map[string]string {
		t.Helper()
		deadline := time.Now().Add(patience)
		for {
			dumps := map[uint64]map[string]string{}
			for _, id := range c.peers {
				dumps[id] = storagetest.Dump(t, c.nodes[id].Local, queues...)
			}
			if maps.Equal(dumps[1], dumps[2]) && maps.Equal(dumps[1], dumps[3]) {
				return dumps[1]
			}
			if time.Now().After(deadline) {
				t.Fatalf("replicas differ: %d, %d, %d keys", len(dumps[1]), len(dumps[2]), len(dumps[3]))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	write(0, 10)
	first := converged()
	down := c.leaderOf(1 + 0).Driver.opts.NodeID // a partition's leader
	c.close(down)
	write(1, 10)
	c.open(down)
	got := converged()
	if len(got) <= len(first) {
		t.Fatalf("%d keys after the second round, %d after the first", len(got), len(first))
	}
	for _, key := range []string{"m/a/0-009", "m/a.dlq/1-009", "m/b/1-009", "c/k1-9"} {
		if _, ok := got[key]; !ok {
			t.Errorf("%s missing", key)
		}
	}
	for key := range got {
		if strings.HasPrefix(key, "m/c/") {
			t.Fatalf("%s survived queue c's DeleteQueueItems", key)
		}
	}
}

func TestGroupOf(t *testing.T) {
	if g := GroupOf(storage.MetaOwner, 16); g != MetaGroup {
		t.Errorf("meta owner in group %d", g)
	}
	seen := map[uint64]bool{}
	for i := range 200 {
		fam := storage.FamilyOf(fmt.Sprintf("q%d", i))
		g := GroupOf(fam, 16)
		if g < 1 || g > 16 {
			t.Fatalf("family %q in group %d", fam.Family, g)
		}
		if g2 := GroupOf(storage.FamilyOf(fam.Family+".dlq"), 16); g2 != g {
			t.Fatalf("a queue and its DLQ in groups %d and %d", g, g2)
		}
		seen[g] = true
	}
	if len(seen) < 12 {
		t.Errorf("200 families reached %d of 16 partitions", len(seen))
	}
}

// Every member registers its addresses through whichever node leads the
// meta group, and every replica learns them all: a follower's refusal
// then names the leader's client address.
func TestMembersRegisterThroughTheMetaLeader(t *testing.T) {
	c := newReplicaNet(t, 3)
	c.leaderOf(MetaGroup)
	self := func(id uint64) NodeInfo {
		return NodeInfo{ID: id, InternalAddr: fmt.Sprintf("10.0.0.%d:7555", id), ClientAddr: fmt.Sprintf("10.0.0.%d:5555", id)}
	}
	var wg sync.WaitGroup
	for _, id := range c.peers {
		r := c.nodes[id]
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			if err := r.Register(ctx, self(id), 50*time.Millisecond); err != nil {
				t.Errorf("node %d: %v", id, err)
			}
		})
	}
	wg.Wait()
	// Each record carries its node's settings (Register adds them).
	recorded := func(id uint64) NodeInfo {
		n := self(id)
		n.Partitions = testPartitions
		return n
	}
	want := []NodeInfo{recorded(1), recorded(2), recorded(3)}
	deadline := time.Now().Add(patience)
	for _, id := range c.peers {
		for !slices.Equal(c.nodes[id].Nodes.All(), want) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond) // polls the applied table; the outcome is its content
		}
		if got := c.nodes[id].Nodes.All(); !slices.Equal(got, want) {
			t.Fatalf("node %d's member table: %+v, want %+v", id, got, want)
		}
	}

	queueOnPartition := ""
	for i := 0; queueOnPartition == ""; i++ {
		if q := fmt.Sprint("q", i); GroupOf(storage.FamilyOf(q), testPartitions) == 1 {
			queueOnPartition = q
		}
	}
	// A write through a node that does not lead partition 1. The leader
	// is read again if the node picked took over meanwhile (its write
	// then succeeds, which is right for a leader and proves nothing), or
	// if the refusal came mid-election (it names no leader then).
	var follower *Replica
	var nl *actors.NotLeaderError
	for deadline := time.Now().Add(patience); ; {
		var leader *Replica
		leader, nl = c.leaderOf(1), nil
		for _, r := range c.nodes {
			if r != leader {
				follower = r
			}
		}
		var b storage.Batch
		b.PutMessage(queueOnPartition, "m1", &storagev1.MessageRecord{Payload: []byte("x")})
		err := follower.Store.Write(&b)
		if errors.As(err, &nl) && nl.LeaderAddr != "" {
			break
		}
		if (err != nil && nl == nil) || time.Now().After(deadline) {
			t.Fatalf("a follower's write: %v, want a refusal naming the leader", err)
		}
	}
	// The leader may have changed meanwhile on a busy machine: any other
	// member's registered address is right, none or its own is not.
	if others := []string{self(1).ClientAddr, self(2).ClientAddr, self(3).ClientAddr}; !slices.Contains(others, nl.LeaderAddr) || nl.LeaderAddr == self(follower.Driver.opts.NodeID).ClientAddr {
		t.Fatalf("the refusal names %q, want another member's registered client address", nl.LeaderAddr)
	}
}

// groupOf is where a live replica places o (they agree once each has
// applied the meta group's records: placed).
func (c *replicaNet) groupOf(o storage.Owner) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.nodes {
		return r.Families.Group(o)
	}
	return GroupOf(o, testPartitions)
}

// placed waits until every live replica places queue's family on group.
func (c *replicaNet) placed(queue string, group uint64) {
	c.t.Helper()
	deadline := time.Now().Add(patience)
	for {
		c.mu.Lock()
		nodes := maps.Clone(c.nodes)
		c.mu.Unlock()
		all := true
		for _, r := range nodes {
			all = all && r.Families.Group(storage.FamilyOf(queue)) == group
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the replicas never all placed %s on group %d", queue, group)
		}
		time.Sleep(5 * time.Millisecond) // polls the tables; the outcome is theirs
	}
}
