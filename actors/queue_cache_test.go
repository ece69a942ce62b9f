package actors

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
)

// checkCache reports how c's bookkeeping disagrees with its entries, or
// with its limit.
func checkCache(c *messageCache) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var sum int64
	n := 0
	for e := c.lru.next; e != &c.lru; e = e.next {
		if c.items[e.key] != e || e.next.prev != e {
			return fmt.Errorf("entry %v is not linked as the map has it", e.key)
		}
		sum += e.size
		n++
	}
	switch {
	case n != len(c.items):
		return fmt.Errorf("%d entries in the ring, %d in the map", n, len(c.items))
	case sum != c.used:
		return fmt.Errorf("entries of %d bytes, %d counted", sum, c.used)
	case c.used > c.limit:
		return fmt.Errorf("%d bytes held, over the limit of %d", c.used, c.limit)
	}
	return nil
}

// TestMessageCacheNeverHoldsMoreThanItsLimit: puts of records small and
// too big, gets and removes in random order never take the cache past its
// bound, and its counts stay those of its entries; the most recently used
// entries are the ones kept.
func TestMessageCacheNeverHoldsMoreThanItsLimit(t *testing.T) {
	t.Parallel()
	const limit = 20 << 10
	c := newMessageCache(limit)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20_000 {
		id := strconv.Itoa(rng.IntN(200))
		switch op := rng.IntN(10); {
		case op < 6:
			size := rng.IntN(4 << 10)
			if rng.IntN(50) == 0 {
				size = limit // too big to keep at all
			}
			c.put("q", id, &storagev1.MessageRecord{Payload: make([]byte, size), Headers: map[string]string{"k": id}})
		case op < 9:
			if rec := c.get("q", id); rec != nil {
				require.Equal(t, id, rec.GetHeaders()["k"], "step %d: the record cached for its id", i)
			}
		default:
			c.remove("q", id)
		}
		require.NoError(t, checkCache(c), "step %d", i)
	}
	entries, used := c.holding()
	require.Positive(t, entries)
	require.LessOrEqual(t, used, int64(limit))

	// The least recently used goes first.
	c = newMessageCache(3 * (1024 + cacheEntryOverhead))
	for _, id := range []string{"a", "b", "c"} {
		c.put("q", id, &storagev1.MessageRecord{Payload: make([]byte, 1024)})
	}
	require.NotNil(t, c.get("q", "a"))
	c.put("q", "d", &storagev1.MessageRecord{Payload: make([]byte, 1024)})
	require.Nil(t, c.get("q", "b"), "the least recently used made room")
	for _, id := range []string{"a", "c", "d"} {
		require.NotNil(t, c.get("q", id), id)
	}
	require.Nil(t, newMessageCache(0).get("q", "a"))
}

// TestBacklogOverTheCacheIsDeliveredPeekedAndRedriven: with a cache that
// holds a few of a queue's messages, every message is still delivered,
// peeked, dead-lettered and redriven with its own headers and payload,
// read from the store; the cache stays within its bound throughout.
func TestBacklogOverTheCacheIsDeliveredPeekedAndRedriven(t *testing.T) {
	t.Parallel()
	const limit = 4 * (1024 + cacheEntryOverhead + 64)
	f := startOn(t, &faultyStore{Store: storage.NewMemory()}, func(o *Options) { o.MessageCacheBytes = limit })
	f.createWith(QueueConfig{Name: "q", VisibilityTimeout: time.Minute, MaxAttempts: 1, DeadLetter: true})
	const n = 40
	payload := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, 1000+i) }
	ids := make([]string, n)
	for i := range n {
		r := f.ask("q", &Enqueue{Headers: map[string]string{"i": strconv.Itoa(i)}, Payload: payload(i)}).(*EnqueueReply)
		require.NoError(t, r.Err)
		ids[i] = r.ID
		require.NoError(t, checkCache(f.sys.cache))
	}
	entries, _ := f.sys.cache.holding()
	require.Less(t, entries, n/2, "most of the backlog is not in the cache")

	check := func(i int, rec *storagev1.MessageRecord) {
		t.Helper()
		require.Equal(t, strconv.Itoa(i), rec.GetHeaders()["i"], "message %d's headers", i)
		require.Equal(t, payload(i), rec.GetPayload(), "message %d's payload", i)
	}
	before := cachedIDs(f.sys.cache)
	require.NotEmpty(t, before, "the newest enqueued are cached")
	p := f.ask("q", &Peek{Limit: n}).(*PeekReply)
	require.Len(t, p.Messages, n)
	for i, m := range p.Messages {
		require.Equal(t, ids[i], m.ID)
		check(i, m.Record)
	}
	// What a Peek reads past the cache is not kept: browsing a backlog
	// must not push out what is about to be delivered.
	require.Equal(t, before, cachedIDs(f.sys.cache), "the peek's reads took the place of the newest enqueued")

	// Each is delivered once, nacked, and dead-lettered (max_attempts 1):
	// the DLQ's record is made from the one read.
	c := f.subscribe("q", n)
	for i := range n {
		d := f.recv(c)
		require.Equal(t, ids[i], d.ID)
		check(i, d.Record)
		require.NoError(t, f.settle("q", &Nack{ID: d.ID, LeaseID: d.LeaseID, Error: "no"}))
		require.NoError(t, checkCache(f.sys.cache))
	}
	require.Eventually(t, func() bool { return f.stats("q.dlq").Depth == n }, waitFor, 5*time.Millisecond)
	p = f.ask("q.dlq", &Peek{Limit: n}).(*PeekReply)
	require.Len(t, p.Messages, n)
	for i, m := range p.Messages {
		check(i, m.Record)
		require.Equal(t, "nack", m.Record.GetHeaders()[HeaderDLQReason])
	}

	// A restart empties nothing but memory: the redrive reads every record
	// from the store.
	f.stop()
	f = startOn(t, f.store, func(o *Options) { o.MessageCacheBytes = limit })
	r := f.ask("q.dlq", &Redrive{}).(*MoveReply)
	require.NoError(t, r.Err)
	require.EqualValues(t, n, r.Moved)
	c = f.subscribe("q", n)
	for i := range n {
		d := f.recv(c)
		require.Equal(t, ids[i], d.ID)
		check(i, d.Record)
		require.NotContains(t, d.Record.GetHeaders(), HeaderDLQReason, "redriven: the dead-letter headers are gone")
		require.NoError(t, f.settle("q", &Ack{ID: d.ID, LeaseID: d.LeaseID}))
	}
	require.NoError(t, checkCache(f.sys.cache))
}

// cachedIDs are the message ids c holds, of any queue.
func cachedIDs(c *messageCache) map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := map[string]bool{}
	for k := range c.items {
		ids[k.id] = true
	}
	return ids
}

// TestAReadyMessageCostsItsQueueLittle (issue 26: at most 256 bytes
// resident per ready message): the entry a queue keeps per message stays
// in the 96-byte size class, its index in 56 bytes, and whatever only a
// lease needs outside both. With the 36-byte id (a 48-byte allocation)
// and its map and DRR slots, a ready message costs about 200 bytes;
// filabench's backlog-memory measures it.
func TestAReadyMessageCostsItsQueueLittle(t *testing.T) {
	require.LessOrEqual(t, unsafe.Sizeof(message{}), uintptr(96), "message")
	require.LessOrEqual(t, unsafe.Sizeof(storage.Index{}), uintptr(56), "storage.Index")
}
