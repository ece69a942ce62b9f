package raftlog

// SetTxnLimits makes s split its writes into transactions of at most count
// ops and size bytes, so that a test sees every boundary a large write has.
func SetTxnLimits(s *Store, size, count int64) { s.maxSize, s.maxCount = size, count }

// SetTxnHooks sets functions run before and after each badger transaction
// s commits (nil for none); an error from either fails the write there.
func SetTxnHooks(s *Store, before, after func() error) { s.beforeCommit, s.afterTxn = before, after }
