package storagetest

import "github.com/fila-dev/filad/storage"

// Unknown returns a Store that writes through s, but answers
// storage.ErrOutcomeUnknown for every batch pick chooses, as a replicated
// store does when its leader loses its term before it knows an entry's
// fate: when applied, the batch was written (whatever s answered); when
// not, it was not (an empty batch takes its place, so completions keep
// s's order). Other batches complete as s completes them. pick runs in
// the submitter's goroutine, once per batch, before it is submitted; it
// must be safe for concurrent use if the store is. Reads go straight to s.
func Unknown(s storage.Store, pick func(*storage.Batch) bool, applied bool) storage.Store {
	return &unknown{Store: s, pick: pick, applied: applied}
}

type unknown struct {
	storage.Store
	pick    func(*storage.Batch) bool
	applied bool
}

func (u *unknown) Submit(b *storage.Batch, done func(error)) {
	b, done = u.answer(b, done)
	u.Store.Submit(b, done)
}

func (u *unknown) Defer(b *storage.Batch, done func(error)) {
	b, done = u.answer(b, done)
	u.Store.Defer(b, done)
}

func (u *unknown) Write(b *storage.Batch) error {
	ch := make(chan error, 1)
	u.Submit(b, func(err error) { ch <- err })
	return <-ch
}

// answer returns the batch to submit and the done to give it for b.
func (u *unknown) answer(b *storage.Batch, done func(error)) (*storage.Batch, func(error)) {
	if !u.pick(b) {
		return b, done
	}
	if !u.applied {
		b = &storage.Batch{}
	}
	return b, func(error) { done(storage.ErrOutcomeUnknown) }
}
