package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"

	"google.golang.org/protobuf/proto"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
)

const sep = 0x00

// Key prefixes; see the package doc for the layout.
const (
	prefixQueue   = 'q'
	prefixMessage = 'm'
	prefixLease   = 'l'
	prefixConfig  = 'c'
	prefixDeleted = 'd'
	prefixNode    = 'n'
)

// op is one put (value != nil), delete (value == nil), or, with prefix
// set, a delete of every key under key (see DeleteQueueItems), or, with
// cond set, a put of value only if key's value is cond then (ForgetMark).
type op struct {
	key    []byte
	value  []byte
	cond   []byte
	prefix bool
}

// Batch is a set of changes. The changes to one item (a message and its
// lease, by id) that sit next to each other form a unit, and a unit is
// always applied atomically; a batch too big for one badger transaction is
// split between units, so a batch is atomic only as a whole when it fits
// in one (half of badger's size and count limits). A DeleteQueueItems is a
// unit that is not atomic: see there. Every op names the batch's Owner,
// and a batch must have one. The zero value is empty and ready to use.
// A Batch is not safe for concurrent use.
type Batch struct {
	ops  []op
	size int
	// units[i] is the index in ops where unit i starts.
	units   []int
	lastKey string // the item of the last unit, "" for a unit of its own
	// owner is whose b is, set by the first op (owned); other is the
	// first owner of a later op that differs, for the error (a pointer, as
	// only a refused batch has one).
	owner Owner
	other *Owner
	// background: see SetBackground.
	background bool
	owned      bool
	prefixes   bool // some op is a DeletePrefix: see DeleteQueueItems
	// trace: see SetTrace.
	trace context.Context // a span's parent, carried with the batch, never marshalled
}

// Owner is whose a batch is: the unit a replicated store proposes it to.
// A batch belongs to one queue family (Family: a queue and its DLQ,
// "<name>.dlq", which always stay together so that dead-lettering and
// redrive, MoveMessage, are one unit of one owner) or to the meta owner
// (Meta: queue definitions, deletion marks and the runtime config). The
// zero Owner is an empty batch's.
type Owner struct {
	// Family is the family's queue name: a queue's name with one trailing
	// ".dlq" removed. "" when Meta.
	Family string
	// Meta marks the meta owner.
	Meta bool
}

// MetaOwner owns queue definitions, deletion marks and runtime config.
var MetaOwner = Owner{Meta: true}

// FamilyOf returns the owner of queue's messages and leases: its name
// with one trailing ".dlq" removed, so "orders" and "orders.dlq" share one.
func FamilyOf(queue string) Owner {
	return Owner{Family: strings.TrimSuffix(queue, dlqSuffix)}
}

// dlqSuffix ends a dead-letter queue's name (actors.DLQSuffix; storage
// cannot import actors).
const dlqSuffix = ".dlq"

// String names o for errors.
func (o Owner) String() string {
	switch {
	case o.Meta:
		return "meta"
	case o == Owner{}:
		return "none"
	}
	return fmt.Sprintf("queue family %q", o.Family)
}

// ErrMixedOwners completes a batch whose ops have more than one Owner;
// no store applies any of it.
var ErrMixedOwners = errors.New("storage: batch mixes owners")

// Owner is whose b is: the owner of its ops, the zero Owner when it has
// none. For a batch that mixes owners (see CheckOwner) it is the first.
func (b *Batch) Owner() Owner { return b.owner }

// CheckOwner returns an error wrapping ErrMixedOwners, naming two of
// them, when b's ops have more than one owner; stores refuse such a batch
// whole. It returns nil otherwise.
func (b *Batch) CheckOwner() error {
	if b.other != nil {
		return fmt.Errorf("%w: %s and %s", ErrMixedOwners, b.owner, *b.other)
	}
	return nil
}

// own records that the next op is o's. It costs a string compare.
func (b *Batch) own(o Owner) {
	switch {
	case !b.owned:
		b.owner, b.owned = o, true
	case b.owner != o && b.other == nil:
		b.other = new(Owner) // allocated only here, for a refused batch
		*b.other = o
	}
}

// Units is the number of units in b.
func (b *Batch) Units() int { return len(b.units) }

// SetBackground marks b as a step of bulk work (a purge, redrive or
// delete of a large queue) that must not hold up other writes: the
// committer commits it in a transaction of its own, never grouped with
// other batches, and when other batches are waiting it commits them first,
// taking at most one background batch between two groups of theirs. So a
// write of another queue waits for at most one background step.
//
// A background batch may therefore be committed after batches submitted
// later than it. The submitter guarantees that no batch it, or anyone,
// submits before the background batch is durable touches the same keys:
// the steps of an operator tool change only messages it has taken out of
// their queue (and the deleted queue's), which nothing else writes.
func (b *Batch) SetBackground() { b.background = true }

// SetTrace makes ctx's span the parent of the spans a store records for
// b (a replicated store's fila.raft.commit). Only the span travels: it
// is never marshalled, and a store reads nothing else of ctx.
func (b *Batch) SetTrace(ctx context.Context) { b.trace = ctx }

// Trace is what SetTrace set; nil when nothing did.
func (b *Batch) Trace() context.Context { return b.trace }

// Background reports whether SetBackground marked b.
func (b *Batch) Background() bool { return b.background }

// Len is the number of changes in b.
func (b *Batch) Len() int { return len(b.ops) }

// PutQueue stores a queue definition.
func (b *Batch) PutQueue(rec *storagev1.QueueRecord) {
	b.own(MetaOwner)
	b.put("", queueKey(rec.GetName()), rec)
}

// DeleteQueue removes a queue definition (not its messages: see
// RetireQueues for deleting a queue whole).
func (b *Batch) DeleteQueue(queue string) {
	b.own(MetaOwner)
	b.del("", queueKey(queue))
}

// RetireQueues starts the deletion of queues (a queue and its DLQ): it
// removes their definitions and marks each deleted, all in one unit, so a
// crash leaves either both queues or neither. Their messages and leases are
// deleted afterwards in bounded batches (Reaper), and the last of them
// clears the marks (ForgetQueue, or ForgetMark); Store.DeletedQueues lists
// the marks left, so that recovery finishes what a crash cut short. Each
// mark is a DeletionMarkRecord with a token of its own and partition (the
// family's, 0 when unplaced), which the reap of a cluster needs after the
// record is gone (RetireQueuesOn).
func (b *Batch) RetireQueues(queues ...string) { b.RetireQueuesOn(0, queues...) }

// RetireQueuesOn is RetireQueues of queues placed on partition.
func (b *Batch) RetireQueuesOn(partition uint32, queues ...string) {
	// No queue name holds 0x01, so this item is no message's.
	b.own(MetaOwner)
	item := "\x01retire\x00" + strings.Join(queues, "\x00")
	for _, q := range queues {
		b.del(item, queueKey(q))
		mark, err := proto.Marshal(&storagev1.DeletionMarkRecord{Token: markToken(), Partition: partition})
		if err != nil {
			panic(fmt.Sprintf("storage: marshal a deletion mark: %v", err)) // our own record: a bug
		}
		b.add(item, op{key: deletedKey(q), value: mark})
	}
}

// markToken is a deletion's token: random and never 0, so that a mark's
// record always has bytes and two deletions of a name never share one.
func markToken() uint64 {
	for {
		if t := rand.Uint64(); t != 0 {
			return t
		}
	}
}

// ForgetQueue ends a deletion that RetireQueues started: it clears the
// queue's mark (and, for good measure, any definition). Submit it after
// the queue's last message and lease are gone.
func (b *Batch) ForgetQueue(queue string) {
	b.own(MetaOwner)
	item := "\x01forget\x00" + queue
	b.del(item, queueKey(queue))
	b.del(item, deletedKey(queue))
}

// ForgetMark ends the deletion mark names, a cluster's: when applied, the
// queue's mark, if it still holds mark.Value, becomes a reaped mark (no
// deletion, the name's placement: DeletionMark.Reaped), and nothing
// changes otherwise (a later deletion of the name has its own token). It
// leaves any definition alone: one that exists then is a queue created
// again, after this deletion ended. So it may be proposed more than once,
// and late.
func (b *Batch) ForgetMark(mark DeletionMark) {
	b.own(MetaOwner)
	reaped, err := proto.Marshal(&storagev1.DeletionMarkRecord{Partition: mark.Partition, Reaped: true})
	if err != nil {
		panic(fmt.Sprintf("storage: marshal a deletion mark: %v", err)) // our own record: a bug
	}
	b.add("\x01forget\x00"+mark.Queue, op{key: deletedKey(mark.Queue), value: reaped, cond: mark.Value})
}

// IsForgetMark reports whether b is one ForgetMark and nothing else: a
// conditional put of a reaped mark over a deletion mark. Such a batch can
// end only a deletion whose mark it names exactly, never create one,
// and touches no definition (a cluster admits it from any member).
func IsForgetMark(b *Batch) bool {
	if len(b.ops) != 1 || b.ops[0].cond == nil || len(b.ops[0].key) < 3 || b.ops[0].key[0] != prefixDeleted || b.ops[0].key[1] != sep {
		return false
	}
	rec := &storagev1.DeletionMarkRecord{}
	return proto.Unmarshal(b.ops[0].value, rec) == nil && rec.GetReaped() && rec.GetToken() == 0
}

// PutMessage stores a message, and its index record (IndexOf) in the
// same unit.
func (b *Batch) PutMessage(queue, id string, rec *storagev1.MessageRecord) {
	b.PutMessageIndexed(queue, id, rec, IndexOf(rec))
}

// PutMessageIndexed is PutMessage for a caller that has made rec's index
// record, IndexOf(rec), already.
func (b *Batch) PutMessageIndexed(queue, id string, rec *storagev1.MessageRecord, idx Index) {
	b.own(FamilyOf(queue))
	item := queue + "\x00" + id
	b.put(item, itemKey(prefixMessage, queue, id), rec)
	b.add(item, op{key: itemKey(prefixIndex, queue, id), value: indexValue(idx)})
}

// DeleteMessage removes a message and its index record.
func (b *Batch) DeleteMessage(queue, id string) { b.deleteItem(queue, id, false) }

// DeleteSettled removes a message, its index record and its lease in one
// unit: a message acked, or dropped at the end of its life.
func (b *Batch) DeleteSettled(queue, id string) { b.deleteItem(queue, id, true) }

// deleteItem removes message id's records, its lease too if lease, in one
// unit (one item string for all of them).
func (b *Batch) deleteItem(queue, id string, lease bool) {
	b.own(FamilyOf(queue))
	item := queue + "\x00" + id
	b.del(item, itemKey(prefixMessage, queue, id))
	b.del(item, itemKey(prefixIndex, queue, id))
	if lease {
		b.del(item, itemKey(prefixLease, queue, id))
	}
}

// PutLease stores a lease.
func (b *Batch) PutLease(queue, id string, rec *storagev1.LeaseRecord) {
	b.own(FamilyOf(queue))
	b.put(queue+"\x00"+id, itemKey(prefixLease, queue, id), rec)
}

// DeleteLease removes a lease.
func (b *Batch) DeleteLease(queue, id string) {
	b.own(FamilyOf(queue))
	b.del(queue+"\x00"+id, itemKey(prefixLease, queue, id))
}

// MoveMessage moves message id from queue from to queue to, as rec: the
// message and its lease leave from and the message arrives in to in one
// unit, so a crash never leaves it in both queues or in neither.
func (b *Batch) MoveMessage(from, to, id string, rec *storagev1.MessageRecord) {
	b.own(FamilyOf(from))
	b.own(FamilyOf(to))
	item := from + "\x00" + id
	b.del(item, itemKey(prefixMessage, from, id))
	b.del(item, itemKey(prefixIndex, from, id))
	b.del(item, itemKey(prefixLease, from, id))
	b.put(item, itemKey(prefixMessage, to, id), rec)
	b.add(item, op{key: itemKey(prefixIndex, to, id), value: indexValue(IndexOf(rec))})
}

// PutConfig stores value under key in the runtime config store.
func (b *Batch) PutConfig(key, value string) {
	b.own(MetaOwner)
	b.add("", op{key: configKey(key), value: []byte(value)})
}

// DeleteConfig removes key from the runtime config store.
func (b *Batch) DeleteConfig(key string) {
	b.own(MetaOwner)
	b.del("", configKey(key))
}

// PutNode records a cluster member (meta owner): the meta group's node
// table, which a node reads with (*Badger).Nodes.
func (b *Batch) PutNode(rec *storagev1.NodeRecord) {
	b.own(MetaOwner)
	b.put("", nodeKey(rec.GetId()), rec)
}

// DeleteQueueItems removes every message (with its index record) and lease of queue (and of no
// other queue, whatever its name starts with), as a unit of its own that
// is not atomic: a store may apply it in bounded steps, with other
// batches committed between them, and it makes b a background batch
// (SetBackground) for that reason. It is idempotent, and a crash part way
// leaves part of it done, so its owner repeats it until it completes (the
// deletion mark of RetireQueues makes recovery finish a queue's delete).
// Ops after it in b apply after its last step.
func (b *Batch) DeleteQueueItems(queue string) {
	b.own(FamilyOf(queue))
	b.background, b.prefixes = true, true
	// No queue name holds 0x01, so this item is no message's.
	item := "\x01items\x00" + queue
	b.add(item, op{key: queueItemsPrefix(prefixMessage, queue), prefix: true})
	b.add(item, op{key: queueItemsPrefix(prefixIndex, queue), prefix: true})
	b.add(item, op{key: queueItemsPrefix(prefixLease, queue), prefix: true})
}

func (b *Batch) put(item string, key []byte, m proto.Message) {
	value, err := proto.Marshal(m)
	if err != nil {
		// Marshalling our own generated records cannot fail short of a bug.
		panic(fmt.Sprintf("storage: marshal %T: %v", m, err))
	}
	b.add(item, op{key: key, value: value})
}

func (b *Batch) del(item string, key []byte) { b.add(item, op{key: key}) }

// add appends o, starting a new unit unless o changes the same item as the
// op before it.
func (b *Batch) add(item string, o op) {
	if item == "" || item != b.lastKey || len(b.units) == 0 {
		b.units = append(b.units, len(b.ops))
	}
	b.lastKey = item
	b.ops = append(b.ops, o)
	b.size += o.size()
}

func (o op) size() int { return len(o.key) + len(o.value) + len(o.cond) + opOverhead }

// unit returns the ops of unit i.
func (b *Batch) unit(i int) []op {
	end := len(b.ops)
	if i+1 < len(b.units) {
		end = b.units[i+1]
	}
	return b.ops[b.units[i]:end]
}

// view returns units [from, to) of b as a batch of their own, sharing
// b's ops.
func (b *Batch) view(from, to int) *Batch {
	end := len(b.ops)
	if to < len(b.units) {
		end = b.units[to]
	}
	v := &Batch{ops: b.ops[b.units[from]:end], background: b.background, owner: b.owner, owned: b.owned}
	v.units = make([]int, to-from)
	for i := range v.units {
		v.units[i] = b.units[from+i] - b.units[from]
	}
	for _, o := range v.ops {
		v.size += o.size()
	}
	return v
}

// opOverhead is a generous bound on badger's per-entry bookkeeping, used to
// keep a group commit under the transaction size limit.
const opOverhead = 32

func queueKey(queue string) []byte {
	k := make([]byte, 0, 2+len(queue))
	k = append(k, prefixQueue, sep)
	return append(k, queue...)
}

func deletedKey(queue string) []byte {
	return append([]byte{prefixDeleted, sep}, queue...)
}

func configKey(key string) []byte {
	return append([]byte{prefixConfig, sep}, key...)
}

// nodeKey is a member's key: its id, big-endian, so the table scans in id
// order.
func nodeKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixNode, sep}, id)
}

func itemKey(prefix byte, queue, id string) []byte {
	k := make([]byte, 0, 3+len(queue)+len(id))
	k = append(k, prefix, sep)
	k = append(k, queue...)
	k = append(k, sep)
	return append(k, id...)
}

// queueItemsPrefix is the prefix of every key of kind prefix in queue.
func queueItemsPrefix(prefix byte, queue string) []byte {
	return itemKey(prefix, queue, "")
}

// splitItemKey returns the id part of an item key made by itemKey.
func splitItemKey(key []byte, queue string) string {
	return string(key[3+len(queue):])
}
