package storage

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
)

// Options configures a badger-backed Store.
type Options struct {
	// Dir is the data directory. Required.
	Dir string
	// SyncWrites makes every group commit fsync before it is acknowledged.
	// Defaults to false in the zero value; config sets it to true by default.
	SyncWrites bool
	// GCInterval is how often value-log GC runs. Defaults to GCIntervalDefault.
	GCInterval time.Duration
	// Logger receives badger's warnings and errors. Defaults to slog.Default().
	Logger *slog.Logger
	// OnCommit, when set, is called from the committer after each badger
	// transaction with the number of items (units: a message with its
	// lease) it wrote. It must not block.
	OnCommit func(items int)
	// Compactors is how many compaction goroutines badger runs (at least
	// 2, badger's minimum); badger's default, 4, when 0. Each wakes on its
	// own ticker, which an idle node pays for.
	Compactors int
}

// GCIntervalDefault is the default period between value-log GC runs.
const GCIntervalDefault = 5 * time.Minute

// maxPending bounds the batches waiting for the committer; Submit blocks
// beyond it, which is the back-pressure a flood of writes deserves.
const maxPending = 8192

type request struct {
	batch    *Batch
	done     func(error)
	deferred bool // nobody waits on it: it may ride with a later commit
	// part: a part of a batch applied in steps (stepBackground), whose
	// own request counts in Stats.Batches, not this one.
	part bool
	// step is where a batch applied in steps has got to; nil until its
	// first step.
	step *stepState
}

// prefixStepKeys bounds the keys one step of a DeletePrefix deletes: one
// small transaction, so that other batches wait for about one step of it.
const prefixStepKeys = 1000

// DeferMax is how long a deferred batch may wait for a commit that someone
// waits on before it is committed on its own.
const DeferMax = 5 * time.Millisecond

// Badger is the Store on badger/v4.
type Badger struct {
	db   *badger.DB
	log  *slog.Logger
	reqs chan request

	mu     sync.RWMutex // guards closed against Submit
	closed bool

	stopGC    context.CancelFunc
	wg        sync.WaitGroup
	batches   atomic.Uint64
	commits   atomic.Uint64
	onCommit  func(items int)
	maxSize   int64
	maxCount  int64
	closeOnce sync.Once
	closeErr  error
	walAhead  *walAhead // only the committer uses it
}

var _ Store = (*Badger)(nil)

const (
	// valueThreshold is the smallest value badger keeps in its value log
	// rather than inline in the LSM tree.
	valueThreshold = 512
	// valueLogFileSize is where badger starts a new value log file.
	valueLogFileSize = 64 << 20
)

// Open opens (creating if needed) the store in opts.Dir and starts its
// committer and value-log GC.
func Open(opts Options) (*Badger, error) {
	if opts.Dir == "" {
		return nil, errors.New("storage: data dir is empty")
	}
	log := cmp.Or(opts.Logger, slog.Default())
	if err := removeEmptyMemtables(opts.Dir, log); err != nil {
		return nil, err
	}
	bopts := badger.DefaultOptions(opts.Dir).
		WithSyncWrites(opts.SyncWrites).
		WithLogger(badgerLogger{log}).
		WithDetectConflicts(false). // one committer; no concurrent read-modify-write
		WithNumVersionsToKeep(1).
		// filad reads from badger to recover (index records) and to deliver
		// what the actors' message cache misses, which has a cache of its
		// own. So a small block cache, and fewer, smaller
		// memtables than badger's defaults (5 × 64 MiB, 256 MiB cache), which
		// held ~800 MB resident with 100k 1 KiB messages (filabench memory).
		WithBlockCacheSize(16 << 20).
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		// Values over 512 B (payloads, with their headers) go to the value
		// log, so compactions move keys and pointers, not payloads: inline,
		// a 100k-message purge's compactions rewrote the payloads and took
		// the CPU other queues' writes needed (issue 19; decisions.md);
		// value-log GC reclaims them after acks. Index records stay inline.
		WithValueThreshold(valueThreshold).
		// badger maps each value log file sparse at twice this size and
		// walAhead allocates all of it (so that a write on a full disk
		// cannot fault): 128 MiB of disk, not badger's 2 GiB.
		WithValueLogFileSize(valueLogFileSize)
	if opts.Compactors > 0 {
		bopts = bopts.WithNumCompactors(max(opts.Compactors, 2))
	}
	db, err := badger.Open(bopts)
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", opts.Dir, err)
	}
	s := &Badger{
		db:       db,
		log:      log,
		reqs:     make(chan request, maxPending),
		maxSize:  db.MaxBatchSize() / 2,
		maxCount: db.MaxBatchCount() / 2,
		onCommit: opts.OnCommit,
		walAhead: newWALAhead(opts.Dir, bopts.MemTableSize, bopts.ValueLogFileSize, log),
	}
	gcCtx, stop := context.WithCancel(context.Background())
	s.stopGC = stop
	s.wg.Add(2)
	go s.commitLoop()
	go s.gcLoop(gcCtx, cmp.Or(opts.GCInterval, GCIntervalDefault))
	return s, nil
}

// removeEmptyMemtables deletes the empty memtable files in dir. badger
// creates a memtable file and then sizes it, before any write goes in; a
// kill -9 between the two leaves a file of 0 bytes, which holds nothing but
// makes badger.Open fail with "Create a new file" (badger issue #2207), so
// filad would not start again after such a crash.
func removeEmptyMemtables(dir string, log *slog.Logger) error {
	mems, err := filepath.Glob(filepath.Join(dir, "*.mem"))
	if err != nil {
		return fmt.Errorf("storage: list memtables in %s: %w", dir, err)
	}
	for _, f := range mems {
		if fi, err := os.Stat(f); err == nil && fi.Mode().IsRegular() && fi.Size() == 0 {
			if err := os.Remove(f); err != nil {
				return fmt.Errorf("storage: remove empty memtable %s: %w", f, err)
			}
			log.Warn("removed an empty memtable file left by a crash", slog.String("file", f))
		}
	}
	return nil
}

// Submit implements Store.
func (s *Badger) Submit(b *Batch, done func(error)) { s.submit(request{batch: b, done: done}) }

// Defer implements Store.
func (s *Badger) Defer(b *Batch, done func(error)) {
	s.submit(request{batch: b, done: done, deferred: true})
}

func (s *Badger) submit(r request) {
	if err := r.batch.CheckOwner(); err != nil {
		r.done(err)
		return
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		r.done(ErrClosed)
		return
	}
	s.reqs <- r
}

// Write implements Store.
func (s *Badger) Write(b *Batch) error {
	ch := make(chan error, 1)
	s.Submit(b, func(err error) { ch <- err })
	return <-ch
}

// commitLoop is the group committer: it takes every batch waiting and
// commits them, in order, in as few transactions as the size limits allow.
// A group of deferred batches alone waits up to DeferMax for a batch that
// someone waits on, so that lease bookkeeping shares that commit's fsync
// instead of taking one of its own.
//
// Background batches (Batch.SetBackground) wait in a lane of their own and
// are committed one per transaction: when nothing else waits, at once;
// when other batches wait too, turn about with them, so that a write that
// arrives during a purge waits for one step of it at most, and the purge
// still moves on under a steady load. A batch with a DeletePrefix
// (DeleteQueueItems) takes one step a turn (stepBackground), then waits
// behind the other background batches for its next.
func (s *Badger) commitLoop() {
	defer s.wg.Done()
	var (
		group      []request
		background []request
		urgent     bool
		bgTurn     bool // the last commit was of group: a background batch is next
		deadline   time.Time
		timer      = time.NewTimer(time.Hour)
	)
	timer.Stop()
	add := func(r request) {
		if r.batch.Background() {
			background = append(background, r)
			return
		}
		if len(group) == 0 {
			deadline = time.Now().Add(DeferMax)
		}
		group = append(group, r)
		urgent = urgent || !r.deferred
	}
	flush := func() {
		s.commitGroup(group)
		clear(group) // drop references to committed payloads
		group, urgent = group[:0], false
		bgTurn = true
	}
	flushBackground := func() {
		head := background[0]
		finished := true
		if head.batch.prefixes {
			finished = s.stepBackground(&head)
		} else {
			s.commitGroup(background[:1])
		}
		background[0] = request{}
		background = background[1:]
		if !finished {
			// Behind the other background batches: each gets its steps
			// in turn, so a long delete does not hold up a redrive.
			background = append(background, head)
		}
		if len(background) == 0 {
			background = nil // let the backing array go
		}
		bgTurn = false
	}
	open := true
	for open || len(group) > 0 || len(background) > 0 {
		if len(group) == 0 && len(background) == 0 {
			r, ok := <-s.reqs
			if !ok {
				return
			}
			add(r)
		}
	drain:
		for open && len(group) < maxPending {
			select {
			case r, ok := <-s.reqs:
				if !ok {
					open = false
					break drain
				}
				add(r)
			default:
				break drain
			}
		}
		// due: group is to be committed now, not left to gather more.
		due := len(group) > 0 &&
			(urgent || !open || len(group) >= maxPending || !time.Now().Before(deadline))
		switch {
		case len(background) > 0 && (bgTurn || !due):
			// Its turn, or nothing in group must go yet.
			flushBackground()
			continue
		case due:
			flush()
			continue
		case len(group) == 0:
			continue
		}
		timer.Reset(time.Until(deadline))
		select {
		case r, ok := <-s.reqs:
			if !ok {
				open = false
			} else {
				add(r)
			}
		case <-timer.C:
			flush()
		}
		timer.Stop()
	}
}

// commitGroup commits group's batches, in order, in as few transactions as
// badger's limits allow: a transaction closes when the next unit would not
// fit, so a batch too big for one transaction is split between its units
// (one item's changes always commit together). Each request's done runs
// once all its units are committed, with the first error any of them met.
func (s *Badger) commitGroup(group []request) {
	var (
		txn         = s.db.NewTransaction(true)
		size, count int64
		units       int   // units in txn
		inTxn       []int // requests with ops in txn, by index in group
		errs        = make([]error, len(group))
		completed   int // requests before this index have had done called
	)
	// end commits txn, or with err set discards it: then none of its ops
	// apply, and every request with ops in it sees err.
	end := func(err error) {
		if err == nil {
			err = txn.Commit()
		}
		txn.Discard()
		s.walAhead.tendIfChanged() // before the next commit can switch memtables
		if err != nil {
			err = fmt.Errorf("storage: commit: %w", err)
			s.log.Error("storage commit failed", slog.Int("batches", len(inTxn)), slog.Any("error", err))
		}
		s.commits.Add(1)
		if err == nil && s.onCommit != nil {
			s.onCommit(units)
		}
		for _, i := range inTxn {
			errs[i] = cmp.Or(errs[i], err)
		}
		txn, size, count, units, inTxn = s.db.NewTransaction(true), 0, 0, 0, inTxn[:0]
	}
	finish := func(upTo int) { // every request before upTo is fully committed
		for ; completed < upTo; completed++ {
			if !group[completed].part {
				s.batches.Add(1)
			}
			group[completed].done(errs[completed])
		}
	}
	for i, r := range group {
		b := r.batch
		for u := range b.units {
			ops := b.unit(u)
			var us int64
			for _, o := range ops {
				us += int64(o.size())
			}
			if count > 0 && (size+us > s.maxSize || count+int64(len(ops)) > s.maxCount) {
				end(nil)
				finish(i) // requests wholly in that transaction are done
			}
			if len(inTxn) == 0 || inTxn[len(inTxn)-1] != i {
				inTxn = append(inTxn, i)
			}
			var err error
			for _, o := range ops {
				if o.cond != nil {
					err = putIfValue(txn, o)
				} else if o.value == nil {
					err = txn.Delete(o.key)
				} else {
					err = txn.Set(o.key, o.value)
				}
				if err != nil {
					break
				}
			}
			if err != nil {
				end(err) // a unit never half-applies
				continue
			}
			size += us
			count += int64(len(ops))
			units++
		}
	}
	if count > 0 {
		end(nil)
	} else {
		txn.Discard()
	}
	finish(len(group))
}

// stepState is how far stepBackground has applied a batch.
type stepState struct {
	unit int    // the next unit to apply
	op   int    // in a DeletePrefix unit, the next op
	from []byte // in that op, the key to read from (nil: the prefix)
	// ahead is the read of the keys from from on, started while the step
	// before committed, so the committer seldom waits for a read.
	ahead chan keysRead
	err   error // the first error; it ends the batch
}

type keysRead struct {
	keys [][]byte
	err  error
}

// readKeys reads up to prefixStepKeys keys under prefix from from on, on
// a goroutine of its own (Close waits for it).
func (s *Badger) readKeys(prefix, from []byte) chan keysRead {
	ch := make(chan keysRead, 1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		keys, err := s.keys(prefix, from, prefixStepKeys)
		ch <- keysRead{keys, err}
	}()
	return ch
}

// stepBackground applies one step of r's batch, which holds a DeletePrefix
// unit: its next run of other units, as commitGroup would, or one bounded
// transaction of a DeletePrefix (prefixStepKeys keys). It reports whether
// the batch is finished, and then has called r's done, with the first
// error. An error ends the batch where it stands: the units before it
// stay applied, as DeleteQueueItems documents.
func (s *Badger) stepBackground(r *request) (finished bool) {
	b := r.batch
	if r.step == nil {
		r.step = &stepState{}
	}
	st := r.step
	for st.err == nil && st.unit < len(b.units) {
		if !b.prefixUnit(st.unit) {
			end := st.unit + 1
			for end < len(b.units) && !b.prefixUnit(end) {
				end++
			}
			part := request{batch: b.view(st.unit, end), part: true, done: func(err error) { st.err = err }}
			s.commitGroup([]request{part})
			st.unit = end
			break
		}
		ops := b.unit(st.unit)
		prefix := ops[st.op].key
		if st.ahead == nil {
			st.ahead = s.readKeys(prefix, st.from)
		}
		read := <-st.ahead
		st.ahead = nil
		keys, err := read.keys, read.err
		if err == nil && len(keys) == prefixStepKeys {
			// Read on from the next key after the last one this step
			// deletes, while it commits: that skips what it deletes, so a
			// step costs about prefixStepKeys keys however many the steps
			// before took.
			st.from = append(keys[len(keys)-1], 0)
			st.ahead = s.readKeys(prefix, st.from)
		}
		if err == nil && len(keys) > 0 {
			err = s.deleteKeys(keys)
		}
		if err != nil {
			st.err = err
			break
		}
		if len(keys) == prefixStepKeys {
			break
		}
		st.op, st.from = st.op+1, nil
		if st.op == len(ops) {
			st.unit, st.op = st.unit+1, 0
		}
		if len(keys) > 0 {
			break // a transaction this step; the rest next step
		}
	}
	if st.err == nil && st.unit < len(b.units) {
		return false
	}
	s.batches.Add(1)
	r.done(st.err)
	return true
}

// deleteKeys deletes keys in one transaction (the caller bounds them).
// putIfValue applies o, a conditional put (ForgetMark), in txn: it reads
// the key as txn sees it, the units before it in the same transaction
// included.
func putIfValue(txn *badger.Txn, o op) error {
	item, err := txn.Get(o.key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	v, err := item.ValueCopy(nil)
	if err != nil || !bytes.Equal(v, o.cond) {
		return err
	}
	return txn.Set(o.key, o.value)
}

func (s *Badger) deleteKeys(keys [][]byte) error {
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	for _, k := range keys {
		if err := txn.Delete(k); err != nil {
			return fmt.Errorf("storage: delete prefix: %w", err)
		}
	}
	err := txn.Commit()
	s.commits.Add(1)
	if err != nil {
		err = fmt.Errorf("storage: commit: %w", err)
		s.log.Error("storage commit failed", slog.Int("batches", 1), slog.Any("error", err))
		return err
	}
	if s.onCommit != nil {
		s.onCommit(len(keys))
	}
	return nil
}

func (s *Badger) gcLoop(ctx context.Context, every time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// Each successful run reclaims one file; repeat until nothing is left.
			for s.db.RunValueLogGC(0.5) == nil {
			}
		}
	}
}

// Queues implements Store.
func (s *Badger) Queues() ([]*storagev1.QueueRecord, error) { return loadQueues(s.scan) }

// ConfigEntries implements Store.
func (s *Badger) ConfigEntries() ([]ConfigEntry, error) { return loadConfig(s.scan) }

// Nodes returns the cluster members the meta group recorded
// (Batch.PutNode), in id order; none on a single node.
func (s *Badger) Nodes() ([]*storagev1.NodeRecord, error) {
	var out []*storagev1.NodeRecord
	err := s.scan([]byte{prefixNode, sep}, func(_, v []byte) error {
		rec := &storagev1.NodeRecord{}
		if err := proto.Unmarshal(v, rec); err != nil {
			return fmt.Errorf("storage: node record: %w", err)
		}
		out = append(out, rec)
		return nil
	})
	return out, err
}

// LoadQueue implements Store. Its messages and leases are read in one
// transaction, so that a commit landing between the two scans cannot tear
// a unit (a settle's message without its lease).
func (s *Badger) LoadQueue(queue string) (*QueueContents, error) {
	var qc *QueueContents
	err := s.db.View(func(txn *badger.Txn) (err error) {
		qc, err = loadQueue(func(prefix []byte, fn func(k, v []byte) error) error { return scanTxn(txn, prefix, fn) }, queue)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("storage: load queue %q: %w", queue, err)
	}
	return qc, nil
}

// scan calls fn for every key under prefix, in key order.
func (s *Badger) scan(prefix []byte, fn func(k, v []byte) error) error {
	if err := s.db.View(func(txn *badger.Txn) error { return scanTxn(txn, prefix, fn) }); err != nil {
		return fmt.Errorf("storage: scan %q: %w", prefix, err)
	}
	return nil
}

// scanTxn calls fn for every key under prefix that txn sees, in key order.
func scanTxn(txn *badger.Txn, prefix []byte, fn func(k, v []byte) error) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 100})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		// No copy of the key: fn copies what it keeps (scanFunc), and a
		// recovery reads a million of them.
		if err := item.Value(func(v []byte) error { return fn(item.Key(), v) }); err != nil {
			return err
		}
	}
	return nil
}

// DeletedQueues implements Store.
func (s *Badger) DeletedQueues() ([]string, error) { return loadDeleted(s.scan) }

// DeletionMarks implements Store.
func (s *Badger) DeletionMarks() ([]DeletionMark, error) { return loadMarks(s.scan) }

// QueueItems implements Store.
func (s *Badger) QueueItems(queue string, leases bool, after string, limit int) ([]string, error) {
	return queueItems(s.keys, queue, leases, after, limit)
}

// LastMessage implements Store.
func (s *Badger) LastMessage(queue string) (string, error) { return lastMessage(s.lastKey, queue) }

// lastKey is a lastKeyFunc: a reverse seek from past the prefix's end (no
// key holds 0xff, as names and ids are printable).
func (s *Badger) lastKey(prefix []byte) ([]byte, error) {
	var out []byte
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: true})
		defer it.Close()
		if it.Seek(append(slices.Clip(prefix), 0xff)); it.Valid() {
			out = it.Item().KeyCopy(nil)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: last key %q: %w", prefix, err)
	}
	return out, nil
}

// keys is a keysFunc; it reads no values.
func (s *Badger) keys(prefix, from []byte, limit int) ([][]byte, error) {
	var out [][]byte
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		if from == nil {
			from = prefix
		}
		for it.Seek(from); it.Valid() && (limit == 0 || len(out) < limit); it.Next() {
			out = append(out, it.Item().KeyCopy(nil))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: keys %q: %w", prefix, err)
	}
	return out, nil
}

// Stats implements Store.
func (s *Badger) Stats() Stats {
	return Stats{Batches: s.batches.Load(), Commits: s.commits.Load()}
}

// Close implements Store. It is safe to call more than once.
func (s *Badger) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.reqs)
		s.mu.Unlock()
		s.stopGC()
		s.wg.Wait()
		s.closeErr = s.db.Close()
		s.walAhead.close()
	})
	return s.closeErr
}

// badgerLogger routes badger's logging into slog; its INFO and DEBUG chatter
// is dropped, as operators only need its warnings and errors.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(f string, a ...any) {
	l.log.Error(fmt.Sprintf(f, a...), "component", "badger")
}
func (l badgerLogger) Warningf(f string, a ...any) {
	l.log.Warn(fmt.Sprintf(f, a...), "component", "badger")
}
func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}
