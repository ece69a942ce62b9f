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
// order they were submitted. With Options.SyncWrites false the fsync is
// skipped: a write survives a crash of filad but not of the machine.
package storage

import (
	"errors"

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
	// PurgeQueue deletes every message and lease of queue (not its record).
	PurgeQueue(queue string) error
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
