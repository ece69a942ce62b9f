// Package storage persists filad's queues, messages and leases in badger/v4.
//
// # Key layout
//
// Queue names are restricted by validation to [A-Za-z0-9._-], so they never
// contain the 0x00 separator, and a prefix scan over one queue never reaches
// another queue whose name merely starts the same way.
//
//	q 0x00 <queue>               → storagev1.QueueRecord
//	m 0x00 <queue> 0x00 <id>     → storagev1.MessageRecord
//	l 0x00 <queue> 0x00 <id>     → storagev1.LeaseRecord
//	c 0x00 <key>                 → runtime config value (raw bytes)
//	d 0x00 <queue>               → deletion mark: the queue is deleted, and
//	                               its messages and leases may remain
//
// Message ids are UUIDv7 strings, so a queue's messages scan in the order they
// were enqueued, which is what recovery needs to keep each fairness key FIFO.
//
// # Durability
//
// Every change goes through [Store.Submit]: one committer goroutine gathers all
// batches submitted while the previous commit was syncing and writes them in
// one badger transaction, so concurrent writers share one fsync (group
// commit). Each batch is applied atomically, and batches are committed in the
// order they were submitted. Nothing writes around Submit: deleting a
// queue's contents is batches of deletes too (see ReapStep), bounded so
// that other queues' writes interleave with them. With Options.SyncWrites false the fsync is
// skipped: a write survives a crash of filad but not of the machine.
package storage

import (
	"errors"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
)

// ErrClosed is returned for writes submitted after Close.
var ErrClosed = errors.New("storage: closed")

// Store is the boundary between the actors and the disk. Implementations are
// safe for concurrent use.
type Store interface {
	// Queues returns every queue definition, in name order.
	Queues() ([]*storagev1.QueueRecord, error)
	// ConfigEntries returns the runtime config store, in key order.
	ConfigEntries() ([]ConfigEntry, error)
	// LoadQueue returns the messages and leases stored for one queue.
	LoadQueue(queue string) (*QueueContents, error)
	// Submit queues b for the next group commit and calls done, from the
	// committer goroutine, once b is durable or has failed. done must not block.
	Submit(b *Batch, done func(error))
	// Defer is Submit for a batch nobody waits on (lease bookkeeping): it is
	// committed with the next submitted batch, or on its own after DeferMax,
	// whichever is first, and always in order with every other batch.
	Defer(b *Batch, done func(error))
	// Write submits b and waits until it is durable.
	Write(b *Batch) error
	// DeletedQueues returns the queues whose deletion RetireQueues started
	// and ForgetQueue has not ended, in name order.
	DeletedQueues() ([]string, error)
	// QueueItems returns the ids of up to limit (> 0) of queue's messages
	// and leases: messages first, in id order, then leases of no message
	// among them. It is empty only when the queue has neither left. It
	// reads keys only, about 2×limit of them however large the queue.
	QueueItems(queue string, limit int) ([]string, error)
	// Stats reports what the committer has done so far.
	Stats() Stats
	// Close waits for submitted batches to commit, then closes the store.
	Close() error
}

// QueueContents is a queue's state as last committed.
type QueueContents struct {
	// Messages are in id (enqueue) order.
	Messages []StoredMessage
	// Leases maps message id to its lease.
	Leases map[string]*storagev1.LeaseRecord
}

// ConfigEntry is one key of the runtime config store.
type ConfigEntry struct{ Key, Value string }

// loadConfig decodes the runtime config store.
func loadConfig(scan scanFunc) ([]ConfigEntry, error) {
	var out []ConfigEntry
	err := scan([]byte{prefixConfig, sep}, func(k, v []byte) error {
		out = append(out, ConfigEntry{Key: string(k[2:]), Value: string(v)})
		return nil
	})
	return out, err
}

// StoredMessage is a message record with its id.
type StoredMessage struct {
	ID     string
	Record *storagev1.MessageRecord
}

// Stats counts committer work; tests use it to see group commit happen.
type Stats struct {
	// Batches is the number of batches committed.
	Batches uint64
	// Commits is the number of badger transactions (and fsyncs) they took.
	Commits uint64
}

// scanFunc calls fn for every stored key under prefix, in key order.
type scanFunc func(prefix []byte, fn func(k, v []byte) error) error

// keysFunc returns up to limit stored keys under prefix, in key order.
type keysFunc func(prefix []byte, limit int) ([][]byte, error)

// loadDeleted lists the deletion marks.
func loadDeleted(keys keysFunc) ([]string, error) {
	ks, err := keys([]byte{prefixDeleted, sep}, 0)
	out := make([]string, 0, len(ks))
	for _, k := range ks {
		out = append(out, string(k[2:]))
	}
	return out, err
}

// queueItems is Store.QueueItems over keys.
func queueItems(keys keysFunc, queue string, limit int) ([]string, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("storage: QueueItems of %s: limit %d is not positive", queue, limit)
	}
	ks, err := keys(queueItemsPrefix(prefixMessage, queue), limit)
	if err != nil || len(ks) == limit {
		return itemIDs(ks, queue), err
	}
	// Few messages are left: fill up with leases. Most leases belong to
	// those messages, so take limit of them, not what is left of it.
	ls, err := keys(queueItemsPrefix(prefixLease, queue), limit)
	if err != nil {
		return nil, err
	}
	ids := itemIDs(ks, queue)
	for _, id := range itemIDs(ls, queue) {
		if len(ids) == limit {
			break
		}
		if _, dup := slices.BinarySearch(ids[:len(ks)], id); !dup {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

func itemIDs(keys [][]byte, queue string) []string {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = splitItemKey(k, queue)
	}
	return ids
}

// ReapStep returns the next batch of a deletion that RetireQueues started:
// deletes for up to limit of queue's messages and leases or, once none is
// left (then last is true), ForgetQueue. Submit it and wait before the next
// step, so each step sees what the one before deleted; the queue's keys
// must have no other writer meanwhile. Each step is a bounded transaction,
// so other queues' writes are committed between steps.
func ReapStep(s Store, queue string, limit int) (b *Batch, last bool, err error) {
	ids, err := s.QueueItems(queue, limit)
	if err != nil {
		return nil, false, err
	}
	b = &Batch{}
	for _, id := range ids {
		b.DeleteItem(queue, id)
	}
	if len(ids) == 0 {
		b.ForgetQueue(queue)
		return b, true, nil
	}
	return b, false, nil
}

// loadQueues decodes every queue record; each Store scans its own way.
func loadQueues(scan scanFunc) ([]*storagev1.QueueRecord, error) {
	var out []*storagev1.QueueRecord
	err := scan([]byte{prefixQueue, sep}, func(_ []byte, v []byte) error {
		rec := &storagev1.QueueRecord{}
		if err := proto.Unmarshal(v, rec); err != nil {
			return err
		}
		out = append(out, rec)
		return nil
	})
	return out, err
}

// loadQueue decodes one queue's messages and leases.
func loadQueue(scan scanFunc, queue string) (*QueueContents, error) {
	qc := &QueueContents{Leases: map[string]*storagev1.LeaseRecord{}}
	err := scan(queueItemsPrefix(prefixMessage, queue), func(k, v []byte) error {
		rec := &storagev1.MessageRecord{}
		if err := proto.Unmarshal(v, rec); err != nil {
			return err
		}
		qc.Messages = append(qc.Messages, StoredMessage{ID: splitItemKey(k, queue), Record: rec})
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = scan(queueItemsPrefix(prefixLease, queue), func(k, v []byte) error {
		rec := &storagev1.LeaseRecord{}
		if err := proto.Unmarshal(v, rec); err != nil {
			return err
		}
		qc.Leases[splitItemKey(k, queue)] = rec
		return nil
	})
	if err != nil {
		return nil, err
	}
	return qc, nil
}
