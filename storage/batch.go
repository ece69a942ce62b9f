package storage

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
)

const sep = 0x00

// Key prefixes; see the package doc for the layout.
const (
	prefixQueue   = 'q'
	prefixMessage = 'm'
	prefixLease   = 'l'
)

// op is one put (value != nil) or delete (value == nil).
type op struct {
	key   []byte
	value []byte
}

// Batch is a set of changes applied atomically. The zero value is empty and
// ready to use. A Batch is not safe for concurrent use.
type Batch struct {
	ops  []op
	size int
}

// Len is the number of changes in b.
func (b *Batch) Len() int { return len(b.ops) }

// PutQueue stores a queue definition.
func (b *Batch) PutQueue(rec *storagev1.QueueRecord) {
	b.put(queueKey(rec.GetName()), rec)
}

// DeleteQueue removes a queue definition (not its messages: see Store.PurgeQueue).
func (b *Batch) DeleteQueue(queue string) { b.del(queueKey(queue)) }

// PutMessage stores a message.
func (b *Batch) PutMessage(queue, id string, rec *storagev1.MessageRecord) {
	b.put(itemKey(prefixMessage, queue, id), rec)
}

// DeleteMessage removes a message.
func (b *Batch) DeleteMessage(queue, id string) { b.del(itemKey(prefixMessage, queue, id)) }

// PutLease stores a lease.
func (b *Batch) PutLease(queue, id string, rec *storagev1.LeaseRecord) {
	b.put(itemKey(prefixLease, queue, id), rec)
}

// DeleteLease removes a lease.
func (b *Batch) DeleteLease(queue, id string) { b.del(itemKey(prefixLease, queue, id)) }

func (b *Batch) put(key []byte, m proto.Message) {
	value, err := proto.Marshal(m)
	if err != nil {
		// Marshalling our own generated records cannot fail short of a bug.
		panic(fmt.Sprintf("storage: marshal %T: %v", m, err))
	}
	b.ops = append(b.ops, op{key: key, value: value})
	b.size += len(key) + len(value) + opOverhead
}

func (b *Batch) del(key []byte) {
	b.ops = append(b.ops, op{key: key})
	b.size += len(key) + opOverhead
}

// opOverhead is a generous bound on badger's per-entry bookkeeping, used to
// keep a group commit under the transaction size limit.
const opOverhead = 32

func queueKey(queue string) []byte {
	k := make([]byte, 0, 2+len(queue))
	k = append(k, prefixQueue, sep)
	return append(k, queue...)
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
