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
//	i 0x00 <queue> 0x00 <id>     → storagev1.MessageIndexRecord (index.go)
//	j 0x00 <queue>               → the queue's messages all have index records
//	l 0x00 <queue> 0x00 <id>     → storagev1.LeaseRecord
//	c 0x00 <key>                 → runtime config value (raw bytes)
//	d 0x00 <queue>               → deletion mark: the queue is deleted, and
//	                               its messages and leases may remain
//	v 0x00                       → schema version (schema.go), uint64 BE
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
// order they were submitted, except that a background batch (the step of a
// purge, redrive or delete: Batch.SetBackground) gives way to the batches
// waiting behind it, one step at a time. Nothing writes around Submit:
// deleting a queue's contents is batches of deletes too (see Reaper),
// bounded so that other queues' writes interleave with them. With Options.SyncWrites false the fsync is
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

// ErrOutcomeUnknown completes a batch whose fate the store cannot tell: it
// may have been applied, or not (a replicated store whose leader lost its
// term before the entry was known committed). A writer that sees it must
// not roll its memory back as for a plain failure; it reloads what was
// committed instead. A store that can always tell never returns it.
var ErrOutcomeUnknown = errors.New("storage: outcome unknown")

// Store is the boundary between the actors and the disk. Implementations are
// safe for concurrent use.
type Store interface {
	// Queues returns every queue definition, in name order.
	Queues() ([]*storagev1.QueueRecord, error)
	// ConfigEntries returns the runtime config store, in key order.
	ConfigEntries() ([]ConfigEntry, error)
	// LoadQueue returns the messages and leases stored for one queue, each
	// message whole, with its index record's fields where it has one.
	LoadQueue(queue string) (*QueueContents, error)
	// LoadIndex returns what a queue schedules by: its messages' index
	// records and its leases, reading no payload once the queue is marked
	// indexed (see QueueIndex). With each set, it calls each for every
	// message's index, in id order, with the message's lease (nil: none),
	// and keeps none of them (QueueIndex.Messages stays empty): a big
	// backlog's index is then never held twice.
	LoadIndex(queue string, each IndexFunc) (*QueueIndex, error)
	// ReadMessages returns the message records of ids in queue, in the
	// order of ids, nil for an id with none, as stored: their scheduling
	// fields may be older than the index record's (WithIndex). It reads
	// them in one transaction.
	ReadMessages(queue string, ids []string) ([]*storagev1.MessageRecord, error)
	// Submit queues b for the next group commit and calls done, from the
	// committer goroutine, once b is durable or has failed. done must not block.
	// A batch refused whole before it is queued (ErrMixedOwners, ErrClosed)
	// has done called inside Submit.
	Submit(b *Batch, done func(error))
	// Defer is Submit for a batch nobody waits on (lease bookkeeping): it is
	// committed with the next submitted batch, or on its own after DeferMax,
	// whichever is first, and always in order with every other batch.
	Defer(b *Batch, done func(error))
	// Write submits b and waits until it is durable.
	Write(b *Batch) error
	// DeletedQueues returns the queues whose deletion RetireQueues started
	// and ForgetQueue (ForgetMark) has not ended, in name order.
	DeletedQueues() ([]string, error)
	// DeletionMarks returns every deletion mark with its value, reaped
	// ones (ForgetMark's) too, in name order.
	DeletionMarks() ([]DeletionMark, error)
	// QueueItems returns the ids of up to limit (> 0) of queue's messages,
	// or with leases of its leases, whose ids sort after after (""; from
	// the first), in id order. It reads keys only.
	QueueItems(queue string, leases bool, after string, limit int) ([]string, error)
	// LastMessage returns the greatest id of queue's messages, "" when it
	// has none. It reads one key.
	LastMessage(queue string) (string, error)
	// SchemaVersion is the version SetSchemaVersion last stored, 0 if none.
	SchemaVersion() (uint64, error)
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

// scanFunc calls fn for every stored key under prefix, in key order. k and
// v are valid only until fn returns: fn copies what it keeps.
type scanFunc func(prefix []byte, fn func(k, v []byte) error) error

// keysFunc returns up to limit (0: all) stored keys under prefix that are
// at or after from (nil: from the start), in key order.
type keysFunc func(prefix, from []byte, limit int) ([][]byte, error)

// loadDeleted lists the deletion marks that are not reaped.
func loadDeleted(scan scanFunc) ([]string, error) {
	marks, err := loadMarks(scan)
	out := make([]string, 0, len(marks))
	for _, m := range marks {
		if !m.Reaped {
			out = append(out, m.Queue)
		}
	}
	return out, err
}

// DeletionMark is a queue's deletion mark as stored: Value is its bytes
// (what ForgetMark compares), Partition the family's partition it
// records (0: none, as in a mark written before marks were records).
// Reaped marks are no deletion: ForgetMark ended it, and the mark stays
// as the name's placement.
type DeletionMark struct {
	Queue     string
	Value     []byte
	Partition uint32
	Reaped    bool
}

// loadMarks lists the deletion marks with their values.
func loadMarks(scan scanFunc) ([]DeletionMark, error) {
	var out []DeletionMark
	err := scan([]byte{prefixDeleted, sep}, func(k, v []byte) error {
		m := DeletionMark{Queue: string(k[2:]), Value: slices.Clone(v)}
		rec := &storagev1.DeletionMarkRecord{}
		if proto.Unmarshal(v, rec) == nil {
			m.Partition, m.Reaped = rec.GetPartition(), rec.GetReaped()
		} // else an old mark, 0x01: no partition recorded
		out = append(out, m)
		return nil
	})
	return out, err
}

// queueItems is Store.QueueItems over keys.
func queueItems(keys keysFunc, queue string, leases bool, after string, limit int) ([]string, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("storage: QueueItems of %s: limit %d is not positive", queue, limit)
	}
	prefix := queueItemsPrefix(prefixMessage, queue)
	if leases {
		prefix = queueItemsPrefix(prefixLease, queue)
	}
	var from []byte
	if after != "" {
		// The first key past after's: ids never hold 0x00.
		from = append(append(slices.Clip(prefix), after...), sep)
	}
	ks, err := keys(prefix, from, limit)
	ids := make([]string, len(ks))
	for i, k := range ks {
		ids[i] = splitItemKey(k, queue)
	}
	return ids, err
}

// lastKeyFunc returns the greatest stored key under prefix, nil if none.
type lastKeyFunc func(prefix []byte) ([]byte, error)

// lastMessage is Store.LastMessage over last.
func lastMessage(last lastKeyFunc, queue string) (string, error) {
	k, err := last(queueItemsPrefix(prefixMessage, queue))
	if err != nil || k == nil {
		return "", err
	}
	return splitItemKey(k, queue), nil
}

// Reaper deletes the contents of a queue that RetireQueues marked deleted,
// in bounded steps: its messages, then its leases, then the mark
// (ForgetQueue). It reads keys from
// where the last step ended, so a step costs about limit keys however much
// the steps before deleted. The queue's keys must have no other writer
// meanwhile. A Reaper is not safe for concurrent use.
//
// Its steps are batches of single deletes, not one DeleteQueueItems: that
// takes its steps back to back inside the committer, and measured with
// filabench's delete of a full queue and DLQ it made another queue's
// Enqueue slower (docs/decisions.md, issue 23).
type Reaper struct {
	queue  string
	mark   *DeletionMark // NewMarkReaper's: the last step is ForgetMark
	leases bool          // past the messages, on to the leases
	after  string        // the last id a step deleted
}

// NewReaper starts the reap of queue.
func NewReaper(queue string) *Reaper { return &Reaper{queue: queue} }

// NewMarkReaper starts the reap of mark's queue that ends with
// ForgetMark(mark) instead of ForgetQueue: the reap of a cluster, whose
// last step may be proposed again, or late.
func NewMarkReaper(mark DeletionMark) *Reaper { return &Reaper{queue: mark.Queue, mark: &mark} }

// Next returns the next step, deletes for up to limit items, or once none
// is left (then last is true) ForgetQueue (ForgetMark). Submit it and wait for it
// before asking for the next one. Each step is a bounded transaction and a
// background batch (Batch.SetBackground), so other queues' writes are
// committed between steps, and first.
func (r *Reaper) Next(s Store, limit int) (b *Batch, last bool, err error) {
	for {
		ids, err := s.QueueItems(r.queue, r.leases, r.after, limit)
		if err != nil {
			return nil, false, err
		}
		b = &Batch{background: true} // bulk work: other writes go first
		if len(ids) > 0 {
			for _, id := range ids {
				if r.leases {
					b.DeleteLease(r.queue, id)
				} else {
					b.DeleteMessage(r.queue, id)
				}
			}
			r.after = ids[len(ids)-1]
			return b, false, nil
		}
		if !r.leases {
			r.leases, r.after = true, ""
			continue
		}
		if r.mark != nil {
			b.ForgetMark(*r.mark)
		} else {
			b.ForgetQueue(r.queue)
		}
		return b, true, nil
	}
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

// loadQueue decodes one queue's messages and leases; a message's index
// record, where it has one, gives its scheduling fields.
func loadQueue(scan scanFunc, queue string) (*QueueContents, error) {
	qc := &QueueContents{Leases: map[string]*storagev1.LeaseRecord{}}
	index := map[string]Index{}
	keys := interner{}
	err := scan(queueItemsPrefix(prefixIndex, queue), func(k, v []byte) error {
		idx, err := decodeIndex(v, keys)
		if err != nil {
			return err
		}
		index[splitItemKey(k, queue)] = idx
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = scan(queueItemsPrefix(prefixMessage, queue), func(k, v []byte) error {
		rec := &storagev1.MessageRecord{}
		if err := proto.Unmarshal(v, rec); err != nil {
			return err
		}
		id := splitItemKey(k, queue)
		if idx, ok := index[id]; ok {
			rec = WithIndex(rec, idx)
		}
		qc.Messages = append(qc.Messages, StoredMessage{ID: id, Record: rec})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := loadLeases(scan, queue, qc.Leases); err != nil {
		return nil, err
	}
	return qc, nil
}

// loadLeases decodes queue's leases into leases, by message id.
func loadLeases(scan scanFunc, queue string, leases map[string]*storagev1.LeaseRecord) error {
	return scan(queueItemsPrefix(prefixLease, queue), func(k, v []byte) error {
		rec := &storagev1.LeaseRecord{}
		if err := proto.Unmarshal(v, rec); err != nil {
			return err
		}
		leases[splitItemKey(k, queue)] = rec
		return nil
	})
}
