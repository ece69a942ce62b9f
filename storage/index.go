package storage

import (
	"bytes"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
	"unique"
	"weak"

	badger "github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/encoding/protowire"
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

// Index is a message's index record as a queue keeps it in memory, one
// per message (issue 26): the fields of storagev1.MessageIndexRecord in 56
// bytes, whose only pointers are to strings shared by every message that
// names them (the fairness key, interned, and the throttle keys). It is a
// value: copy it to change it, as deliveries are made from it.
type Index struct {
	// FairnessKey is interned (unique.Make) by whoever makes the Index:
	// IndexOf and LoadIndex do.
	FairnessKey string
	// throttle is the on_enqueue hook's throttle keys, interned
	// (internThrottle); nil for none.
	throttle         *[]string
	EnqueuedAtUnixNs int64
	ReadyAtUnixMs    int64
	// PayloadBytes is the payload's length (max_bytes counts it); a
	// payload is far below 4 GiB (the gRPC message limit).
	PayloadBytes uint32
	Weight       uint32
	AttemptCount uint32
}

// ThrottleKeys returns the on_enqueue hook's throttle keys, shared: the
// caller must not change the slice.
func (x Index) ThrottleKeys() []string {
	if x.throttle == nil {
		return nil
	}
	return *x.throttle
}

// WithThrottleKeys returns x with keys as its throttle keys, interned.
func (x Index) WithThrottleKeys(keys []string) Index {
	x.throttle = internThrottle(keys)
	return x
}

// throttleSets interns throttle key sets: there are as few as there are
// throttle keys in use, and a message keeps a pointer, not a slice of its
// own. The table holds each set weakly, so a set no message names any
// more is collected and its entry dropped (a hook may make a key per
// user: the table must not grow with every key ever seen). Keys are
// length-prefixed, so no two sets meet.
var throttleSets = struct {
	sync.RWMutex
	m map[string]weak.Pointer[[]string]
}{m: map[string]weak.Pointer[[]string]{}}

func internThrottle(keys []string) *[]string {
	if len(keys) == 0 {
		return nil
	}
	var sb strings.Builder
	for _, k := range keys {
		sb.WriteString(strconv.Itoa(len(k)))
		sb.WriteByte(':')
		sb.WriteString(k)
	}
	joined := sb.String()
	// Most enqueues name a set in use: a shared lock finds it.
	throttleSets.RLock()
	p := throttleSets.m[joined].Value()
	throttleSets.RUnlock()
	if p != nil {
		return p
	}
	throttleSets.Lock()
	defer throttleSets.Unlock()
	if p := throttleSets.m[joined].Value(); p != nil {
		return p
	}
	own := make([]string, len(keys))
	for i, k := range keys {
		own[i] = unique.Make(k).Value()
	}
	p = &own
	throttleSets.m[joined] = weak.Make(p)
	runtime.AddCleanup(p, forgetThrottleSet, joined)
	return p
}

// forgetThrottleSet drops joined's entry once its set is collected,
// unless the set was made again meanwhile.
func forgetThrottleSet(joined string) {
	throttleSets.Lock()
	defer throttleSets.Unlock()
	if throttleSets.m[joined].Value() == nil {
		delete(throttleSets.m, joined)
	}
}

// IndexOf is the index record of rec, a message record as enqueued or
// moved, with its fairness key interned.
func IndexOf(rec *storagev1.MessageRecord) Index {
	return Index{
		FairnessKey:      unique.Make(rec.GetFairnessKey()).Value(),
		throttle:         internThrottle(rec.GetThrottleKeys()),
		EnqueuedAtUnixNs: rec.GetEnqueuedAtUnixNs(),
		ReadyAtUnixMs:    rec.GetReadyAtUnixMs(),
		PayloadBytes:     uint32(min(len(rec.GetPayload()), math.MaxUint32)),
		Weight:           rec.GetWeight(),
		AttemptCount:     rec.GetAttemptCount(),
	}
}

// Record is x as the stored MessageIndexRecord.
func (x Index) Record() *storagev1.MessageIndexRecord {
	return &storagev1.MessageIndexRecord{
		FairnessKey:      x.FairnessKey,
		Weight:           x.Weight,
		AttemptCount:     x.AttemptCount,
		EnqueuedAtUnixNs: x.EnqueuedAtUnixNs,
		ReadyAtUnixMs:    x.ReadyAtUnixMs,
		ThrottleKeys:     x.ThrottleKeys(),
		PayloadBytes:     uint64(x.PayloadBytes),
	}
}

// The index record's field numbers (records.proto), for the codec below.
const (
	idxFairnessKey protowire.Number = iota + 1
	idxWeight
	idxAttemptCount
	idxEnqueuedAt
	idxReadyAt
	idxThrottleKeys
	idxPayloadBytes
)

// appendIndex appends x encoded as its MessageIndexRecord, as
// proto.Marshal does (fields in number order, zero values left out),
// without making the record: an enqueue writes one per message, and a
// recovery reads a million.
func appendIndex(b []byte, x Index) []byte {
	if x.FairnessKey != "" {
		b = protowire.AppendTag(b, idxFairnessKey, protowire.BytesType)
		b = protowire.AppendString(b, x.FairnessKey)
	}
	for _, n := range []struct {
		num protowire.Number
		v   uint64
	}{{idxWeight, uint64(x.Weight)}, {idxAttemptCount, uint64(x.AttemptCount)}, {idxEnqueuedAt, uint64(x.EnqueuedAtUnixNs)}, {idxReadyAt, uint64(x.ReadyAtUnixMs)}} {
		if n.v != 0 {
			b = protowire.AppendTag(b, n.num, protowire.VarintType)
			b = protowire.AppendVarint(b, n.v)
		}
	}
	for _, k := range x.ThrottleKeys() {
		b = protowire.AppendTag(b, idxThrottleKeys, protowire.BytesType)
		b = protowire.AppendString(b, k)
	}
	if x.PayloadBytes != 0 {
		b = protowire.AppendTag(b, idxPayloadBytes, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(x.PayloadBytes))
	}
	return b
}

// indexValue is x's stored value: never nil, which would be a delete.
func indexValue(x Index) []byte { return appendIndex(make([]byte, 0, 64), x) }

// interner makes one string per distinct fairness key of a load: a
// lookup by the record's bytes allocates nothing once the key is known.
type interner map[string]string

func (in interner) of(b []byte) string {
	if s, ok := in[string(b)]; ok {
		return s
	}
	s := unique.Make(string(b)).Value()
	in[s] = s
	return s
}

// decodeIndex decodes a MessageIndexRecord into an Index, as
// proto.Unmarshal would (unknown fields skipped, the last of a repeated
// scalar wins), without making the record.
func decodeIndex(v []byte, keys interner) (Index, error) {
	var x Index
	var throttle []string
	for len(v) > 0 {
		num, typ, n := protowire.ConsumeTag(v)
		if n < 0 {
			return Index{}, protowire.ParseError(n)
		}
		if !num.IsValid() {
			return Index{}, fmt.Errorf("index record: field number %d", num)
		}
		v = v[n:]
		switch {
		case (num == idxFairnessKey || num == idxThrottleKeys) && typ == protowire.BytesType:
			s, n := protowire.ConsumeBytes(v)
			if n < 0 {
				return Index{}, protowire.ParseError(n)
			}
			if !utf8.Valid(s) {
				return Index{}, fmt.Errorf("index record: field %d is not valid UTF-8", num)
			}
			if num == idxFairnessKey {
				x.FairnessKey = keys.of(s)
			} else {
				throttle = append(throttle, string(s))
			}
			v = v[n:]
		case num >= idxWeight && num <= idxPayloadBytes && num != idxThrottleKeys && typ == protowire.VarintType:
			u, n := protowire.ConsumeVarint(v)
			if n < 0 {
				return Index{}, protowire.ParseError(n)
			}
			switch num {
			case idxWeight:
				x.Weight = uint32(u)
			case idxAttemptCount:
				x.AttemptCount = uint32(u)
			case idxEnqueuedAt:
				x.EnqueuedAtUnixNs = int64(u)
			case idxReadyAt:
				x.ReadyAtUnixMs = int64(u)
			case idxPayloadBytes:
				x.PayloadBytes = uint32(min(u, math.MaxUint32))
			}
			v = v[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, v)
			if n < 0 {
				return Index{}, protowire.ParseError(n)
			}
			v = v[n:]
		}
	}
	x.throttle = internThrottle(throttle)
	return x, nil
}

// WithIndex returns rec with the scheduling fields of idx (which win over
// its own: a retry rewrites only the index record). It returns rec itself
// when they already agree, a shallow copy otherwise; rec is never changed.
func WithIndex(rec *storagev1.MessageRecord, idx Index) *storagev1.MessageRecord {
	if rec.GetAttemptCount() == idx.AttemptCount && rec.GetReadyAtUnixMs() == idx.ReadyAtUnixMs &&
		rec.GetFairnessKey() == idx.FairnessKey && rec.GetWeight() == idx.Weight {
		return rec
	}
	return &storagev1.MessageRecord{
		Headers:             rec.GetHeaders(),
		Payload:             rec.GetPayload(),
		FairnessKey:         idx.FairnessKey,
		Weight:              idx.Weight,
		AttemptCount:        idx.AttemptCount,
		EnqueuedAtUnixNs:    idx.EnqueuedAtUnixNs,
		CreationTraceparent: rec.GetCreationTraceparent(),
		CreationTracestate:  rec.GetCreationTracestate(),
		ReadyAtUnixMs:       idx.ReadyAtUnixMs,
		ThrottleKeys:        idx.ThrottleKeys(),
	}
}

// PutIndex stores a message's index record alone: a retry's new attempt
// count and ready time, or the index of a message stored before index
// records existed. The message record must be stored already.
func (b *Batch) PutIndex(queue, id string, idx Index) {
	b.own(FamilyOf(queue))
	b.add(queue+"\x00"+id, op{key: itemKey(prefixIndex, queue, id), value: indexValue(idx)})
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
	// Messages are in id (enqueue) order; empty when LoadIndex was given
	// each, which had them instead.
	Messages []IndexedMessage
	// Leases maps message id to its lease.
	Leases map[string]*storagev1.LeaseRecord
	// Indexed: the queue is marked (MarkIndexed), and only index records
	// were read. Unindexed lists, otherwise, the messages stored without an
	// index record, whose index was made from the whole record.
	Indexed   bool
	Unindexed []IndexedMessage
}

// IndexedMessage is a message's index record with its id.
type IndexedMessage struct {
	ID    string
	Index Index
}

// IndexFunc takes one message's index and its lease (nil: none) from
// LoadIndex.
type IndexFunc func(m IndexedMessage, lease *storagev1.LeaseRecord) error

// loadIndex reads queue's leases and index records (scan is one
// transaction's, so no unit tears between them), and, unless the queue is
// marked indexed, its message records for the messages without one. Each
// message's index goes to each, or, with each nil, into qi.Messages.
func loadIndex(scan scanFunc, queue string, take IndexFunc) (*QueueIndex, error) {
	qi := &QueueIndex{Leases: map[string]*storagev1.LeaseRecord{}}
	each := func(im IndexedMessage) error {
		if take == nil {
			qi.Messages = append(qi.Messages, im)
			return nil
		}
		return take(im, qi.Leases[im.ID])
	}
	key := indexedKey(queue)
	err := scan(key, func(k, _ []byte) error {
		qi.Indexed = qi.Indexed || bytes.Equal(k, key) // not "orders.dlq" for "orders"
		return nil
	})
	if err != nil {
		return nil, err
	}
	// The leases first: whoever takes the messages one by one needs each
	// one's lease as it comes.
	if err := loadLeases(scan, queue, qi.Leases); err != nil {
		return nil, err
	}
	var stored map[string]Index // !Indexed: by id
	if !qi.Indexed {
		stored = map[string]Index{}
	}
	keys := interner{}
	err = scan(queueItemsPrefix(prefixIndex, queue), func(k, v []byte) error {
		idx, err := decodeIndex(v, keys)
		if err != nil {
			return fmt.Errorf("index record: %w", err)
		}
		id := splitItemKey(k, queue)
		if stored != nil {
			stored[id] = idx
			return nil
		}
		return each(IndexedMessage{ID: id, Index: idx})
	})
	if err != nil || qi.Indexed {
		return qi, err
	}
	// Every message record, in id order; an index record wins.
	err = scan(queueItemsPrefix(prefixMessage, queue), func(k, v []byte) error {
		id := splitItemKey(k, queue)
		if idx, ok := stored[id]; ok {
			return each(IndexedMessage{ID: id, Index: idx})
		}
		rec := &storagev1.MessageRecord{}
		if err := proto.Unmarshal(v, rec); err != nil {
			return err
		}
		im := IndexedMessage{ID: id, Index: IndexOf(rec)}
		qi.Unindexed = append(qi.Unindexed, im)
		return each(im)
	})
	return qi, err
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
func (s *Badger) LoadIndex(queue string, each IndexFunc) (*QueueIndex, error) {
	var qi *QueueIndex
	err := s.db.View(func(txn *badger.Txn) (err error) {
		qi, err = loadIndex(func(prefix []byte, fn func(k, v []byte) error) error { return scanTxn(txn, prefix, fn) }, queue, each)
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
func (m *Memory) LoadIndex(queue string, each IndexFunc) (*QueueIndex, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return loadIndex(m.scanLocked, queue, each)
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
