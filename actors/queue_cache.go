package actors

import (
	"context"
	"fmt"
	"sync"
	"time"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
)

// messageCache holds the records (headers and payload) of messages the
// queues are likely to deliver soon: those just enqueued, adopted, or read
// for a delivery (a nacked one comes round again). A queue actor keeps an
// index entry per message, not the message (issue 26); what is not here is
// read from the store when it is delivered. One cache serves every queue
// of a System, so its bound is the whole node's. It is safe for concurrent
// use; a queue's entries are only ever its own actor's business, so no two
// actors race on one entry.
type messageCache struct {
	mu    sync.Mutex
	limit int64 // bytes; 0 caches nothing
	used  int64
	items map[cacheKey]*cacheEntry
	// lru is a ring through a sentinel: lru.next is the most recently
	// used entry, lru.prev the next to go.
	lru cacheEntry
}

type cacheKey struct{ queue, id string }

type cacheEntry struct {
	key        cacheKey
	rec        *storagev1.MessageRecord
	size       int64
	prev, next *cacheEntry
}

// cacheEntryOverhead is what an entry costs beyond its record's bytes: the
// entry, its map slot and the record's struct.
const cacheEntryOverhead = 256

// newMessageCache returns a cache that holds at most limit bytes (its
// records' payloads, headers and trace context, plus cacheEntryOverhead
// each); 0 makes one that holds nothing.
func newMessageCache(limit int64) *messageCache {
	c := &messageCache{limit: max(limit, 0), items: map[cacheKey]*cacheEntry{}}
	c.lru.prev, c.lru.next = &c.lru, &c.lru
	return c
}

// recordSize is what rec costs the cache.
func recordSize(rec *storagev1.MessageRecord) int64 {
	n := len(rec.GetPayload()) + len(rec.GetCreationTraceparent()) + len(rec.GetCreationTracestate()) + cacheEntryOverhead
	for k, v := range rec.GetHeaders() {
		n += len(k) + len(v) + 16
	}
	return int64(n)
}

// put caches rec as message id of queue, evicting the least recently used
// entries to make room; a record bigger than the whole cache is not kept.
func (c *messageCache) put(queue, id string, rec *storagev1.MessageRecord) {
	size := recordSize(rec)
	if size > c.limit {
		c.remove(queue, id) // an older record of it must not stay
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	k := cacheKey{queue, id}
	if e := c.items[k]; e != nil {
		c.unlink(e)
	}
	for c.used+size > c.limit {
		c.unlink(c.lru.prev)
	}
	e := &cacheEntry{key: k, rec: rec, size: size}
	c.items[k] = e
	c.used += size
	e.prev, e.next = &c.lru, c.lru.next
	e.prev.next, e.next.prev = e, e
}

// get returns the cached record of message id of queue, or nil, and makes
// it the most recently used.
func (c *messageCache) get(queue, id string) *storagev1.MessageRecord {
	if c.limit == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.items[cacheKey{queue, id}]
	if e == nil {
		return nil
	}
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = &c.lru, c.lru.next
	e.prev.next, e.next.prev = e, e
	return e.rec
}

// remove drops message id of queue: it is gone, or its record changed.
func (c *messageCache) remove(queue, id string) {
	if c.limit == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.items[cacheKey{queue, id}]; e != nil {
		c.unlink(e)
	}
}

// unlink drops e; c.mu is held.
func (c *messageCache) unlink(e *cacheEntry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
	delete(c.items, e.key)
	c.used -= e.size
}

// holding reports the entries cached and the bytes they count.
func (c *messageCache) holding() (entries int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items), c.used
}

// bodies returns the whole records of ms, in order, as a delivery shows
// them: headers and payload from the cache or, for those it misses, from
// one read of the store, with the scheduling fields of each message's
// index entry. keep caches what was read: a delivery's (a nacked message
// comes round again), not a Peek page's, a redrive's or a dead-lettering's,
// whose messages are browsed once or leave this queue, and would push out
// what is about to be delivered.
func (q *queueActor) bodies(ms []*message, keep bool) ([]*storagev1.MessageRecord, error) {
	out := make([]*storagev1.MessageRecord, len(ms))
	var missed []int
	for i, m := range ms {
		if out[i] = q.deps.cache.get(q.cacheScope, m.id); out[i] == nil {
			missed = append(missed, i)
		}
	}
	if len(missed) > 0 {
		ids := make([]string, len(missed))
		for j, i := range missed {
			ids[j] = ms[i].id
		}
		start := time.Now()
		read, err := q.deps.store.ReadMessages(q.cfg.Name, ids)
		q.metrics.ReadDuration.Record(context.Background(), time.Since(start).Seconds())
		if err != nil {
			return nil, err
		}
		for j, i := range missed {
			if read[j] == nil {
				return nil, fmt.Errorf("message %s of queue %s is indexed but has no record", ids[j], q.cfg.Name)
			}
			if keep {
				q.deps.cache.put(q.cacheScope, ids[j], read[j])
			}
			out[i] = read[j]
		}
	}
	for i, m := range ms {
		out[i] = storage.WithIndex(out[i], m.idx)
	}
	return out, nil
}

// body is bodies of one message.
func (q *queueActor) body(m *message) (*storagev1.MessageRecord, error) {
	recs, err := q.bodies([]*message{m}, false)
	if err != nil {
		return nil, err
	}
	return recs[0], nil
}
