package storage

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"sync"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
)

// Memory is a Store that keeps everything in memory and loses it on exit.
// It passes the same contract tests as Badger (storagetest), so the actors'
// rules can be unit-tested against it in milliseconds; filad itself never
// uses it. Each batch is applied atomically when it is submitted, so
// batches apply in submission order, and done runs before Submit returns;
// a DeleteQueueItems too is applied at once, in one step.
type Memory struct {
	mu     sync.Mutex
	data   map[string][]byte
	closed bool
	stats  Stats
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory { return &Memory{data: map[string][]byte{}} }

// Submit implements Store.
func (m *Memory) Submit(b *Batch, done func(error)) { done(m.apply(b)) }

// Defer implements Store; in memory there is no commit to share.
func (m *Memory) Defer(b *Batch, done func(error)) { done(m.apply(b)) }

// Write implements Store.
func (m *Memory) Write(b *Batch) error { return m.apply(b) }

func (m *Memory) apply(b *Batch) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if err := b.CheckOwner(); err != nil {
		return err
	}
	for _, o := range b.ops {
		if o.prefix {
			for k := range m.data {
				if strings.HasPrefix(k, string(o.key)) {
					delete(m.data, k)
				}
			}
			continue
		}
		if o.cond != nil {
			if v, ok := m.data[string(o.key)]; ok && bytes.Equal(v, o.cond) {
				m.data[string(o.key)] = slices.Clone(o.value)
			}
		} else if o.value == nil {
			delete(m.data, string(o.key))
		} else {
			m.data[string(o.key)] = slices.Clone(o.value)
		}
	}
	m.stats.Batches++
	m.stats.Commits++
	return nil
}

// Queues implements Store.
func (m *Memory) Queues() ([]*storagev1.QueueRecord, error) { return loadQueues(m.scan) }

// ConfigEntries implements Store.
func (m *Memory) ConfigEntries() ([]ConfigEntry, error) { return loadConfig(m.scan) }

// LoadQueue implements Store. Its messages and leases are read under one hold of the lock, so that no
// batch lands between the two.
func (m *Memory) LoadQueue(queue string) (*QueueContents, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return loadQueue(m.scanLocked, queue)
}

// scan calls fn for every key under prefix, in key order, holding m.mu:
// fn must not call back into m.
func (m *Memory) scan(prefix []byte, fn func(k, v []byte) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.scanLocked(prefix, fn)
}

// scanLocked is scan for a caller that holds m.mu.
func (m *Memory) scanLocked(prefix []byte, fn func(k, v []byte) error) error {
	type kv struct{ k, v []byte }
	var found []kv
	for k, v := range m.data {
		if strings.HasPrefix(k, string(prefix)) {
			found = append(found, kv{[]byte(k), v})
		}
	}
	slices.SortFunc(found, func(a, b kv) int { return bytes.Compare(a.k, b.k) })
	for _, e := range found {
		if err := fn(e.k, e.v); err != nil {
			return err
		}
	}
	return nil
}

// DeletedQueues implements Store.
func (m *Memory) DeletedQueues() ([]string, error) { return loadDeleted(m.scan) }

// DeletionMarks implements Store.
func (m *Memory) DeletionMarks() ([]DeletionMark, error) { return loadMarks(m.scan) }

// QueueItems implements Store.
func (m *Memory) QueueItems(queue string, leases bool, after string, limit int) ([]string, error) {
	return queueItems(m.keys, queue, leases, after, limit)
}

// LastMessage implements Store.
func (m *Memory) LastMessage(queue string) (string, error) {
	return lastMessage(func(prefix []byte) ([]byte, error) {
		var last []byte
		err := m.scan(prefix, func(k, _ []byte) error { last = k; return nil })
		return last, err
	}, queue)
}

// keys is a keysFunc.
func (m *Memory) keys(prefix, from []byte, limit int) ([][]byte, error) {
	var out [][]byte
	err := m.scan(prefix, func(k, _ []byte) error {
		if bytes.Compare(k, from) < 0 {
			return nil
		}
		out = append(out, k)
		if len(out) == limit {
			return errEnough
		}
		return nil
	})
	if errors.Is(err, errEnough) {
		err = nil
	}
	return out, err
}

// errEnough stops a scan early.
var errEnough = errors.New("enough")

// Stats implements Store: every batch is its own commit.
func (m *Memory) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stats
}

// Close implements Store. It is safe to call more than once.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}
