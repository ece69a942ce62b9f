package actors

// drr is a deficit-round-robin scheduler over fairness keys. Each active key
// (one with ready messages) receives weight × quantum credit when its turn
// starts and delivers one message per credit while its credit lasts; a key
// whose ready list empties leaves the round and forfeits its credit. Within
// one key delivery is FIFO.
//
// The cost of a message is 1, so quantum is counted in messages: with the
// default quantum of 1 a key of weight w delivers w messages per round, the
// finest interleaving DRR allows and the best short-window fairness, at no
// cost in throughput (each pick is O(1)).
//
// drr is owned by one queue actor and is not safe for concurrent use.
type drr[T any] struct {
	quantum int64
	keys    map[string]*drrKey[T]
	// cur is the key whose turn it is; the active keys form a ring through
	// next/prev. cur is nil when no key is active.
	cur    *drrKey[T]
	active int
	ready  int
	// turns and rounds count scheduling work since takeCounts; roundTurns
	// is the turns into the current round.
	turns, rounds int64
	roundTurns    int
}

type drrKey[T any] struct {
	name       string
	weight     int64
	deficit    int64
	granted    bool // received its quantum for the current turn
	items      fifo[T]
	next, prev *drrKey[T]
}

func newDRR[T any](quantum int64) *drr[T] {
	return &drr[T]{quantum: quantum, keys: make(map[string]*drrKey[T])}
}

// push appends item to key's FIFO. weight, when > 0, becomes the key's weight:
// the latest message to name a weight sets it for the key.
func (d *drr[T]) push(key string, weight int64, item T) {
	k := d.keys[key]
	if k == nil {
		k = &drrKey[T]{name: key, weight: 1}
		d.keys[key] = k
	}
	if weight > 0 {
		k.weight = weight
	}
	k.items.push(item)
	d.ready++
	if k.items.len() == 1 {
		d.activate(k)
	}
}

func (d *drr[T]) activate(k *drrKey[T]) {
	d.active++
	if d.cur == nil {
		k.next, k.prev = k, k
		d.cur = k
		return
	}
	// Join at the end of the round: just before the key whose turn it is.
	last := d.cur.prev
	k.prev, k.next = last, d.cur
	last.next = k
	d.cur.prev = k
}

func (d *drr[T]) deactivate(k *drrKey[T]) {
	d.active--
	k.deficit, k.granted = 0, false
	if k.next == k {
		d.cur = nil
	} else {
		k.prev.next = k.next
		k.next.prev = k.prev
		if d.cur == k {
			d.cur = k.next
		}
	}
	k.next, k.prev = nil, nil
	delete(d.keys, k.name)
}

// pop returns the next item by DRR order, its key and the key's weight;
// ok is false when nothing is ready.
func (d *drr[T]) pop() (item T, key string, weight int64, ok bool) {
	return d.popWhere(func(T) bool { return true })
}

// popWhere is pop where an item may be refused for now (a throttled
// message): take(item) false passes over that key for this call — it stays
// active and keeps its turn's deficit, spending none — and the search goes
// on with the next key. take must do whatever accepting the item means
// (take its tokens) when it returns true. found is false when nothing is
// ready or every active key's next item was refused.
func (d *drr[T]) popWhere(take func(T) bool) (item T, key string, weight int64, found bool) {
	for refused := 0; d.cur != nil && refused < d.active; {
		k := d.cur
		if !k.granted {
			k.deficit += k.weight * d.quantum
			k.granted = true
			d.turns++
			// A round is as many turns as there are active keys.
			if d.roundTurns++; d.roundTurns >= d.active {
				d.rounds, d.roundTurns = d.rounds+1, 0
			}
		}
		if k.deficit > 0 {
			if !take(k.items.items[k.items.head]) {
				refused++
				d.cur = k.next
				continue
			}
			k.deficit--
			item = k.items.pop()
			d.ready--
			if k.items.len() == 0 {
				d.deactivate(k)
			}
			return item, k.name, k.weight, true
		}
		k.granted = false
		d.cur = k.next
	}
	return item, "", 0, false
}

// takeCounts returns the turns (a key's quantum granted) and rounds since
// the last call.
func (d *drr[T]) takeCounts() (turns, rounds int64) {
	turns, rounds, d.turns, d.rounds = d.turns, d.rounds, 0, 0
	return turns, rounds
}

// removeIf drops every item for which drop is true, keeping the order of
// the others, and returns how many it dropped. It costs O(items): it serves
// admin operations (purge, redrive), not the hot path.
func (d *drr[T]) removeIf(drop func(T) bool) int {
	n := 0
	for _, k := range d.keys {
		live := k.items.items[k.items.head:]
		kept := make([]T, 0, len(live))
		for _, it := range live {
			if drop(it) {
				n++
			} else {
				kept = append(kept, it)
			}
		}
		k.items = fifo[T]{items: kept}
		if len(kept) == 0 {
			d.deactivate(k)
		}
	}
	d.ready -= n
	return n
}

// forEachHead calls fn with the first item of every active key: O(keys).
func (d *drr[T]) forEachHead(fn func(T)) {
	for _, k := range d.keys {
		fn(k.items.items[k.items.head])
	}
}

// forEachActive calls fn with every active key's name in round order,
// from the key whose turn it is: O(keys), and the same order every time.
func (d *drr[T]) forEachActive(fn func(key string)) {
	if d.cur == nil {
		return
	}
	k := d.cur
	for {
		fn(k.name)
		if k = k.next; k == d.cur {
			return
		}
	}
}

// len is the number of ready items.
func (d *drr[T]) len() int { return d.ready }

// keyStats describes one active key for GetStats.
type keyStats struct {
	key     string
	pending int
	deficit int64
	weight  int64
}

func (d *drr[T]) stats() []keyStats {
	out := make([]keyStats, 0, len(d.keys))
	for _, k := range d.keys {
		out = append(out, keyStats{key: k.name, pending: k.items.len(), deficit: k.deficit, weight: k.weight})
	}
	return out
}

// fifo is a slice-backed queue that reuses its space.
type fifo[T any] struct {
	items []T
	head  int
}

func (f *fifo[T]) len() int { return len(f.items) - f.head }

func (f *fifo[T]) push(v T) {
	if f.head > 0 && f.head == len(f.items) {
		f.items, f.head = f.items[:0], 0
	} else if f.head > 64 && f.head*2 >= len(f.items) {
		n := copy(f.items, f.items[f.head:])
		clear(f.items[n:])
		f.items, f.head = f.items[:n], 0
	}
	f.items = append(f.items, v)
}

func (f *fifo[T]) pop() T {
	v := f.items[f.head]
	var zero T
	f.items[f.head] = zero
	f.head++
	if f.head == len(f.items) && cap(f.items) > fifoKeepCap {
		// Empty after a burst: give the memory back rather than keep it.
		f.items, f.head = nil, 0
	}
	return v
}

// fifoKeepCap is the capacity an empty fifo keeps for reuse.
const fifoKeepCap = 1024

// forEach calls fn with every ready item: O(items), for checks.
func (d *drr[T]) forEach(fn func(T)) {
	for _, k := range d.keys {
		for _, it := range k.items.items[k.items.head:] {
			fn(it)
		}
	}
}
