package actors

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fila-dev/filad/storage"
)

// TestMaximalQueueOnBadger drives every write path of a queue with the
// longest name and 10,000 messages through real badger: enqueue, one
// dispatch of 10,000 leases, restart, expiry of them all, delete (purge),
// and creating the name again. Before writes were split, the dispatch's
// lease batch and the purge were over badger's transaction limit and failed.
func TestMaximalQueueOnBadger(t *testing.T) {
	t.Parallel()
	db, err := storage.Open(storage.Options{Dir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	store := &faultyStore{Store: db}
	f := startOn(t, store)
	name := strings.Repeat("q", 255)
	const n = 10_000
	f.create(name, 300*time.Millisecond)
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < n; i += 16 {
				f.enqueue(name, nil)
			}
		})
	}
	wg.Wait()
	c := f.subscribe(name, n) // one dispatch leases all of them
	for range n {
		recv(t, c)
	}
	require.EqualValues(t, n, f.stats(name).InFlight)
	f.stop()
	f = startOn(t, store)
	qc, err := store.LoadQueue(name)
	require.NoError(t, err)
	require.Len(t, qc.Leases, n, "the 10,000 leases were durable")

	// They expire: 10,000 requeues in one deferred batch.
	require.Eventually(t, func() bool { return f.stats(name).Depth == n }, waitFor, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		qc, err := store.LoadQueue(name)
		return err == nil && len(qc.Leases) == 0
	}, waitFor, 10*time.Millisecond, "the expiries were durable")

	require.NoError(t, f.ask(nil, &DeleteQueue{Name: name}).(*AdminReply).Err)
	qc, err = store.LoadQueue(name)
	require.NoError(t, err)
	require.Empty(t, qc.Messages, "purged")
	f.create(name, time.Minute)
	require.Zero(t, f.stats(name).Depth, "the name is usable again, empty")
}
