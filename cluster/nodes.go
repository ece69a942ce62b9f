package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/fila-dev/filad/actors"
	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
)

// NodeInfo is one member: where the other nodes reach it, and where
// clients do ("" until the member registered it in the meta group).
type NodeInfo struct {
	ID                       uint64
	InternalAddr, ClientAddr string
	// Removed: RemoveNode marked it; it is no member any more, and its
	// raft messages and calls are refused (its record stays, so that the
	// id is never added again).
	Removed bool
	// Partitions and ReplicationFactor are the settings the member
	// registered with (Register); 0 until it registered them.
	Partitions, ReplicationFactor int
}

// Nodes is this node's view of the members: the configured initial
// members, overlaid with the node table the meta group applied here
// (each member registers its own addresses, Replica.Register). Reads are
// lock-free; it is safe for concurrent use.
type Nodes struct {
	// mu guards initial, and orders the writers of m (reload, Add);
	// readers only load m.
	mu      sync.Mutex
	initial map[uint64]NodeInfo
	m       atomic.Pointer[map[uint64]NodeInfo]
	// changed, if set, is told after a reload changed the table (Watch).
	changed atomic.Pointer[func()]
}

// NewNodes starts from the initial members.
func NewNodes(initial []NodeInfo) *Nodes {
	n := &Nodes{initial: map[uint64]NodeInfo{}}
	for _, i := range initial {
		n.initial[i.ID] = i
	}
	m := maps.Clone(n.initial)
	n.m.Store(&m)
	return n
}

// Watch has f told after each change of the table that the meta group
// applied here (one watcher; the last set wins), on the driver's
// goroutine: it must not block. The transport and the dialers learn a
// member's internal address from it, and forget a removed one.
func (n *Nodes) Watch(f func()) { n.changed.Store(&f) }

// Add overlays members learnt before the meta group was applied here (a
// joining node's, from its Join's answer); the node table overrides them
// once it applies.
func (n *Nodes) Add(members []NodeInfo) {
	n.mu.Lock()
	defer n.mu.Unlock()
	m := maps.Clone(*n.m.Load())
	for _, i := range members {
		if _, ok := m[i.ID]; !ok {
			m[i.ID] = i
			n.initial[i.ID] = i
		}
	}
	n.m.Store(&m)
	n.notify()
}

func (n *Nodes) notify() {
	if f := n.changed.Load(); f != nil {
		(*f)()
	}
}

// Removed reports whether id's record is marked removed.
func (n *Nodes) Removed(id uint64) bool {
	i, ok := n.Get(id)
	return ok && i.Removed
}

// Get returns member id, and whether it is one (removed or not).
func (n *Nodes) Get(id uint64) (NodeInfo, bool) {
	i, ok := (*n.m.Load())[id]
	return i, ok
}

// ClientAddr is member id's client address, "" when not known.
func (n *Nodes) ClientAddr(id uint64) string {
	i, _ := n.Get(id)
	return i.ClientAddr
}

// Count is the number of members, removed ones not counted.
func (n *Nodes) Count() int { return len(n.Active()) }

// Active returns the members not removed, in id order: which nodes
// should hold each group today (Membership.replicas).
func (n *Nodes) Active() []NodeInfo {
	var out []NodeInfo
	for _, i := range n.All() {
		if !i.Removed {
			out = append(out, i)
		}
	}
	return out
}

// All returns the members in id order, removed ones included.
func (n *Nodes) All() []NodeInfo {
	m := *n.m.Load()
	out := make([]NodeInfo, 0, len(m))
	for _, id := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[id])
	}
	return out
}

// reload overlays the node table stored in local on the initial members.
func (n *Nodes) reload(local *storage.Badger) error {
	recs, err := local.Nodes()
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	m := maps.Clone(n.initial)
	for _, r := range recs {
		m[r.GetId()] = NodeInfo{ID: r.GetId(), InternalAddr: r.GetInternalAddr(), ClientAddr: r.GetClientAddr(), Removed: r.GetRemoved(),
			Partitions: int(r.GetPartitions()), ReplicationFactor: int(r.GetReplicationFactor())}
	}
	if old := n.m.Swap(&m); !maps.Equal(*old, m) {
		n.notify()
	}
	return nil
}

// Register records self in the meta group's node table, through whichever
// node leads it, and returns once this node has applied the record (at
// once when it already holds it). It proposes again every retry until
// then, or until ctx ends: a forwarded proposal can be lost on the way
// (no leader, a leader change), and the record is idempotent.
//
// The record carries this node's partition count and replication factor,
// which the members compare (Disagreement).
func (r *Replica) Register(ctx context.Context, self NodeInfo, retry time.Duration) error {
	self.Partitions, self.ReplicationFactor = r.Families.partitions, r.rf
	data, err := registration(self)
	if err != nil {
		return err
	}
	for {
		// The initial members have no client address, so an equal entry
		// is the stored record (self.ClientAddr is never "").
		got, ok := r.Nodes.Get(self.ID)
		switch {
		case ok && got.Removed:
			// Proposing it again would be refused, and must be: a removed
			// id is never a member again.
			return fmt.Errorf("cluster: node %d was removed from the cluster; a node comes back only under a new id, on an empty data directory", self.ID)
		case ok && got == self:
			return nil
		}
		if err := r.Driver.ProposeForwarded(MetaGroup, data); err != nil {
			r.logger.Debug("cluster: registering this node", slog.Any("err", err))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: registering node %d: %w", self.ID, ctx.Err())
		case <-r.Driver.Done():
			return storage.ErrClosed
		case <-time.After(retry):
		}
	}
}

// registration is the batch Register proposes for self.
func registration(self NodeInfo) ([]byte, error) {
	var b storage.Batch
	b.PutNode(&storagev1.NodeRecord{Id: self.ID, InternalAddr: self.InternalAddr, ClientAddr: self.ClientAddr, Removed: self.Removed,
		Partitions: uint32(self.Partitions), ReplicationFactor: uint32(self.ReplicationFactor)})
	return b.Marshal()
}

// Disagreement is nil when every member that registered its settings has
// this node's partition count and replication factor, else an error
// naming the first that differs. Members must agree: leaders ranking the
// replicas with two factors would undo each other's membership changes,
// and two partition counts place queues on different groups.
func (r *Replica) Disagreement() error {
	for _, n := range r.Nodes.Active() {
		if err := r.SettingsDiffer(fmt.Sprintf("node %d registered", n.ID), n.Partitions, n.ReplicationFactor); err != nil {
			return err
		}
	}
	return nil
}

// SettingsDiffer is nil when partitions and rf (each 0: not said) are this
// node's, else an error naming the setting that differs, said of who
// ("node 4 joins with").
func (r *Replica) SettingsDiffer(who string, partitions, rf int) error {
	switch {
	case partitions != 0 && partitions != r.Families.partitions:
		return fmt.Errorf("cluster: %s cluster.partitions = %d, this node has %d; every member must have the same", who, partitions, r.Families.partitions)
	case rf != 0 && rf != r.rf:
		return fmt.Errorf("cluster: %s cluster.replication_factor = %d, this node has %d; every member must have the same", who, rf, r.rf)
	}
	return nil
}

// AdmitForwarded decides a proposal (a marshalled raft MsgProp) that peer
// from forwarded to this node: nil when it is what Register sends, that
// node's own record and nothing else. A member proposes through another
// only to register itself, so this is all a peer may append to a log it
// does not lead; anything else, another node's record (its client
// address is where clients are sent), a queue's batch, a conf change, or
// a proposal id some waiting proposal of the leader's could be mistaken
// for, is refused. It is the transport's Options.AdmitProposal.
func AdmitForwarded(from uint64, msg []byte) error {
	m := &pb.Message{}
	if err := proto.Unmarshal(msg, m); err != nil {
		return fmt.Errorf("cluster: a forwarded proposal that does not decode: %w", err)
	}
	for _, e := range m.GetEntries() {
		if err := admitRegistration(from, e); err != nil && !admitForget(e) {
			return fmt.Errorf("cluster: a proposal node %d forwarded is refused: %w", from, err)
		}
	}
	return nil
}

func admitRegistration(from uint64, e *pb.Entry) error {
	data := e.GetData()
	switch {
	case e.GetType() != pb.EntryType_EntryNormal:
		return fmt.Errorf("an entry of type %s", e.GetType())
	case len(data) < 8 || binary.BigEndian.Uint64(data) != 0:
		return errors.New("an entry with a proposal id (ProposeForwarded's are 0)")
	}
	if _, err := storage.UnmarshalBatch(data[8:]); err != nil {
		return err
	}
	node, err := nodeRecordOf(data[8:])
	if err != nil {
		return err
	}
	if node.GetId() != from {
		return fmt.Errorf("node %d's record, not its own", node.GetId())
	}
	if node.GetRemoved() {
		return errors.New("a record marked removed (only RemoveNode, on the meta leader, writes one)")
	}
	return nil
}

// nodeRecordOf is the node record that data, a marshalled storage batch,
// puts, when it is one node record and nothing else (as Register,
// AddNode and RemoveNode propose).
func nodeRecordOf(data []byte) (*storagev1.NodeRecord, error) {
	rec := &storagev1.BatchRecord{}
	if err := proto.Unmarshal(data, rec); err != nil {
		return nil, err
	}
	ops := rec.GetOps()
	if len(ops) != 1 || ops[0].GetKind() != storagev1.BatchOp_KIND_PUT || !rec.GetMeta() {
		return nil, errors.New("a batch that is not one node record")
	}
	node := &storagev1.NodeRecord{}
	if err := proto.Unmarshal(ops[0].GetValue(), node); err != nil {
		return nil, err
	}
	if !bytes.Equal(ops[0].GetKey(), nodeRecordKey(node.GetId())) {
		return nil, errors.New("a batch that is not one node record")
	}
	return node, nil
}

// revives reports whether data, a meta entry, would put back a node
// record that removed (the ids marked removed before it) holds, without
// the mark: a registration the node sent before it learnt of its
// removal, committed after the mark. Every replica skips such an entry
// alike (removed is replicated state), so a removed id stays removed.
func revives(data []byte, removed func(id uint64) bool) (id uint64, ok bool) {
	node, err := nodeRecordOf(data)
	if err != nil || node.GetRemoved() || !removed(node.GetId()) {
		return 0, false
	}
	return node.GetId(), true
}

// nodeRecordKey is the key PutNode stores node id's record under, as a
// batch carries it.
func nodeRecordKey(id uint64) []byte {
	var b storage.Batch
	b.PutNode(&storagev1.NodeRecord{Id: id})
	data, err := b.Marshal()
	rec := &storagev1.BatchRecord{}
	if err == nil {
		err = proto.Unmarshal(data, rec)
	}
	if err != nil || len(rec.GetOps()) != 1 {
		return nil // never: a batch of one PutNode marshals
	}
	return rec.GetOps()[0].GetKey()
}

// AddNode records node id, reached by the members at internalAddr, in the
// meta group's node table; the groups' leaders then add it to every group
// (Membership). It returns once the record is applied here, at once when
// the table holds it already. This node must lead the meta group: a
// refusal names the leader (actors.NotLeaderError), so that the gateway
// forwards the call there. An id that was removed, or is a member at
// another address, is refused (actors.ErrFailedPrecondition).
func (r *Replica) AddNode(ctx context.Context, id uint64, internalAddr string) error {
	if err := r.leadingMeta(); err != nil {
		return err
	}
	got, ok := r.Nodes.Get(id)
	switch {
	case ok && got.Removed:
		return fmt.Errorf("%w: node %d was removed from the cluster, and a removed id is never a member again: give the node a new node_id (and an empty data directory)", actors.ErrFailedPrecondition, id)
	case ok && got.InternalAddr != internalAddr:
		return fmt.Errorf("%w: node %d is a member at %s, not %s", actors.ErrFailedPrecondition, id, got.InternalAddr, internalAddr)
	case ok && r.inTable(id):
		return nil
	}
	data, err := registration(NodeInfo{ID: id, InternalAddr: internalAddr, ClientAddr: got.ClientAddr})
	if err != nil {
		return err
	}
	return notLeader(r.Driver.Propose(ctx, MetaGroup, data), r.Nodes, "")
}

// RemoveNode marks member id removed in the meta group's node table: the
// groups' leaders take it out of every group (Membership), and every node
// refuses its messages once it applied the mark. It returns once the mark
// is applied here (not once every group let the node go: GetClusterStatus
// shows that). As AddNode, this node must lead the meta group. An id that
// is no member is actors.ErrNotFound; the last member is not removed.
func (r *Replica) RemoveNode(ctx context.Context, id uint64) error {
	if err := r.leadingMeta(); err != nil {
		return err
	}
	got, ok := r.Nodes.Get(id)
	switch {
	case !ok:
		return fmt.Errorf("%w: node %d is no member of the cluster", actors.ErrNotFound, id)
	case got.Removed && r.inTable(id):
		return nil
	case len(r.Nodes.Active()) == 1:
		return fmt.Errorf("%w: node %d is the cluster's last member", actors.ErrFailedPrecondition, id)
	}
	got.Removed = true
	data, err := registration(got)
	if err != nil {
		return err
	}
	return notLeader(r.Driver.Propose(ctx, MetaGroup, data), r.Nodes, "")
}

// leadingMeta is nil when this node leads the meta group, else the
// refusal naming its leader.
func (r *Replica) leadingMeta() error {
	if st, _ := r.Driver.Status(MetaGroup); !st.Leading {
		return notLeader(&NotLeaderError{Group: MetaGroup, Leader: st.Leader}, r.Nodes, "")
	}
	return nil
}

// inTable reports whether the node table applied here holds id's record
// (an initial member is known before it registers, but not recorded).
func (r *Replica) inTable(id uint64) bool {
	recs, err := r.Local.Nodes()
	return err == nil && slices.ContainsFunc(recs, func(n *storagev1.NodeRecord) bool { return n.GetId() == id })
}
