package storage

import (
	"bytes"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
)

// Index records (issue 26): a queue actor keeps an index entry per message
// in memory, not the message, and reads headers and payloads when it
// delivers them (ReadMessages). Every message record written since has a
// small index record beside it, in the same unit, so that a queue loads
// (LoadIndex) without reading a payload:
//
//	i 0x00 <queue> 0x00 <id>  → storagev1.MessageIndexRecord
//	j 0x00 <queue>            → (empty) every message of queue has its index record
//
// A message stored before index records existed has none. LoadIndex reads
// those whole until the queue's actor has written their index records and
// the queue's mark (MarkIndexed); from then on it reads the index alone.
// Both keys are the queue family's, so they replicate and snapshot with
// its messages.
const (
	prefixIndex   = 'i'
	prefixIndexed = 'j'
)

// IndexOf is the index record of rec, a message record as enqueued or moved.
func IndexOf(rec *storagev1.MessageRecord) *storagev1.MessageIndexRecord {
	return &storagev1.MessageIndexRecord{
		FairnessKey:      rec.GetFairnessKey(),
		Weight:           rec.GetWeight(),
		AttemptCount:     rec.GetAttemptCount(),
		EnqueuedAtUnixNs: rec.GetEnqueuedAtUnixNs(),
		ReadyAtUnixMs:    rec.GetReadyAtUnixMs(),
		ThrottleKeys:     rec.GetThrottleKeys(),
		PayloadBytes:     uint64(len(rec.GetPayload())),
	}
}

// WithIndex returns rec with the scheduling fields of idx (which win over
// its own: a retry rewrites only the index record). It returns rec itself
// when they already agree, a shallow copy otherwise; rec is never changed.
func WithIndex(rec *storagev1.MessageRecord, idx *storagev1.MessageIndexRecord) *storagev1.MessageRecord {
	if rec.GetAttemptCount() == idx.GetAttemptCount() && rec.GetReadyAtUnixMs() == idx.GetReadyAtUnixMs() &&
		rec.GetFairnessKey() == idx.GetFairnessKey() && rec.GetWeight() == idx.GetWeight() {
		return rec
	}
	return &storagev1.MessageRecord{
		Headers:             rec.GetHeaders(),
		Payload:             rec.GetPayload(),
		FairnessKey:         idx.GetFairnessKey(),
		Weight:              idx.GetWeight(),
		AttemptCount:        idx.GetAttemptCount(),
		EnqueuedAtUnixNs:    idx.GetEnqueuedAtUnixNs(),
		CreationTraceparent: rec.GetCreationTraceparent(),
		CreationTracestate:  rec.GetCreationTracestate(),
		ReadyAtUnixMs:       idx.GetReadyAtUnixMs(),
		ThrottleKeys:        idx.GetThrottleKeys(),
	}
}

// PutIndex stores a message's index record alone: a retry's new attempt
// count and ready time, or the index of a message stored before index
// records existed. The message record must be stored already.
func (b *Batch) PutIndex(queue, id string, idx *storagev1.MessageIndexRecord) {
	b.own(FamilyOf(queue))
	b.put(queue+"\x00"+id, itemKey(prefixIndex, queue, id), idx)
}

// MarkIndexed records that every message of queue has its index record,
// so that LoadIndex reads no message record of it again. Put it after the
// index records it vouches for (a unit of its own, applied after theirs).
func (b *Batch) MarkIndexed(queue string) {
	b.own(FamilyOf(queue))
	b.add("", op{key: indexedKey(queue), value: []byte{}})
}

func indexedKey(queue string) []byte { return append([]byte{prefixIndexed, sep}, queue...) }

// QueueIndex is what a queue schedules by, as last committed: an index
// record per message and the leases.
type QueueIndex struct {
	// Messages are in id (enqueue) order.
	Messages []IndexedMessage
	// Leases maps message id to its lease.
	Leases map[string]*storagev1.LeaseRecord
	// Indexed: the queue is marked (MarkIndexed), and only index records
	// were read. Unindexed lists, otherwise, the messages stored without an
	// index record, whose index in Messages was made from the whole record.
	Indexed   bool
	Unindexed []IndexedMessage
}

// IndexedMessage is a message's index record with its id.
type IndexedMessage struct {
	ID    string
	Index *storagev1.MessageIndexRecord
}

// loadIndex reads queue's index records and leases (scan is one
// transaction's, so no unit tears between them), and, unless the queue is
// marked indexed, its message records for the messages without one.
func loadIndex(scan scanFunc, queue string) (*QueueIndex, error) {
	qi := &QueueIndex{Leases: map[string]*storagev1.LeaseRecord{}}
	key := indexedKey(queue)
	err := scan(key, func(k, _ []byte) error {
		qi.Indexed = qi.Indexed || bytes.Equal(k, key) // not "orders.dlq" for "orders"
		return nil
	})
	if err != nil {
		return nil, err
	}
	var stored map[string]*storagev1.MessageIndexRecord // !Indexed: by id
	if !qi.Indexed {
		stored = map[string]*storagev1.MessageIndexRecord{}
	}
	err = scan(queueItemsPrefix(prefixIndex, queue), func(k, v []byte) error {
		idx := &storagev1.MessageIndexRecord{}
		if err := proto.Unmarshal(v, idx); err != nil {
			return fmt.Errorf("index record: %w", err)
		}
		id := splitItemKey(k, queue)
		if stored != nil {
			stored[id] = idx
			return nil
		}
		qi.Messages = append(qi.Messages, IndexedMessage{ID: id, Index: idx})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !qi.Indexed {
		// Every message record, in id order; an index record wins.
		err = scan(queueItemsPrefix(prefixMessage, queue), func(k, v []byte) error {
			id := splitItemKey(k, queue)
			if idx, ok := stored[id]; ok {
				qi.Messages = append(qi.Messages, IndexedMessage{ID: id, Index: idx})
				return nil
			}
			rec := &storagev1.MessageRecord{}
			if err := proto.Unmarshal(v, rec); err != nil {
				return err
			}
			im := IndexedMessage{ID: id, Index: IndexOf(rec)}
			qi.Messages = append(qi.Messages, im)
			qi.Unindexed = append(qi.Unindexed, im)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if err := loadLeases(scan, queue, qi.Leases); err != nil {
		return nil, err
	}
	return qi, nil
}

// getFunc calls fn with the value stored under key, and reports whether
// there was one.
type getFunc func(key []byte, fn func(v []byte) error) (bool, error)

// readMessages is Store.ReadMessages over get.
func readMessages(get getFunc, queue string, ids []string) ([]*storagev1.MessageRecord, error) {
	out := make([]*storagev1.MessageRecord, len(ids))
	for i, id := range ids {
		_, err := get(itemKey(prefixMessage, queue, id), func(v []byte) error {
			out[i] = &storagev1.MessageRecord{}
			return proto.Unmarshal(v, out[i])
		})
		if err != nil {
			return nil, fmt.Errorf("storage: read message %s of %s: %w", id, queue, err)
		}
	}
	return out, nil
}

// LoadIndex implements Store, in one transaction.
func (s *Badger) LoadIndex(queue string) (*QueueIndex, error) {
	var qi *QueueIndex
	err := s.db.View(func(txn *badger.Txn) (err error) {
		qi, err = loadIndex(func(prefix []byte, fn func(k, v []byte) error) error { return scanTxn(txn, prefix, fn) }, queue)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("storage: load index of %q: %w", queue, err)
	}
	return qi, nil
}

// ReadMessages implements Store, in one transaction.
func (s *Badger) ReadMessages(queue string, ids []string) ([]*storagev1.MessageRecord, error) {
	var out []*storagev1.MessageRecord
	err := s.db.View(func(txn *badger.Txn) (err error) {
		out, err = readMessages(func(key []byte, fn func(v []byte) error) (bool, error) {
			item, err := txn.Get(key)
			if err == badger.ErrKeyNotFound {
				return false, nil
			}
			if err != nil {
				return false, err
			}
			return true, item.Value(fn)
		}, queue, ids)
		return err
	})
	return out, err
}

// LoadIndex implements Store.
func (m *Memory) LoadIndex(queue string) (*QueueIndex, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return loadIndex(m.scanLocked, queue)
}

// ReadMessages implements Store.
func (m *Memory) ReadMessages(queue string, ids []string) ([]*storagev1.MessageRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return readMessages(func(key []byte, fn func(v []byte) error) (bool, error) {
		v, ok := m.data[string(key)]
		if !ok {
			return false, nil
		}
		return true, fn(v)
	}, queue, ids)
}
