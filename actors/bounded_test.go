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
// longest name and 10,000 messages through real badger: enqueue, leasing
// them all, restart, recovery that finds every lease expired (one batch of
// 10,000 requeues), delete (purge), and creating the name again. Before
// writes were split, big lease batches and the purge were over badger's
// transaction limit and failed.
func TestMaximalQueueOnBadger(t *testing.T) {
	t.Parallel()
	db, err := storage.Open(storage.Options{Dir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	store := &faultyStore{Store: db}
	f := startOn(t, store)
	name := strings.Repeat("q", 255)
	const n = 10_000
	f.create(name, time.Hour)
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < n; i += 16 {
				f.enqueue(name, nil)
			}
		})
	}
	wg.Wait()
	c := f.subscribe(name, n)
	for range n {
		f.recv(c)
	}
	require.EqualValues(t, n, f.stats(name).InFlight)
	f.stop()
	f.awaitWrites() // leases are written deferred: Stop does not wait for them
	qc, err := store.LoadQueue(name)
	require.NoError(t, err)
	require.Len(t, qc.Leases, n, "the 10,000 leases were durable")

	// While filad is down, every lease runs out: recovery finds them all
	// expired and requeues them in one batch.
	expireLeases(t, store, name)
	f = startOn(t, store)
	st := f.stats(name)
	require.EqualValues(t, n, st.Depth)
	require.Zero(t, st.InFlight)
	f.awaitWrites()
	qc, err = store.LoadQueue(name)
	require.NoError(t, err)
	require.Empty(t, qc.Leases, "the requeues were durable")
	require.Len(t, qc.Messages, n)
	for _, m := range qc.Messages {
		require.EqualValues(t, 1, m.Record.GetAttemptCount(), "message %s: the expired delivery counts", m.ID)
	}

	require.NoError(t, f.ask(nil, &DeleteQueue{Name: name}).(*AdminReply).Err)
	qc, err = store.LoadQueue(name)
	require.NoError(t, err)
	require.Empty(t, qc.Messages, "purged")
	f.create(name, time.Minute)
	require.Zero(t, f.stats(name).Depth, "the name is usable again, empty")
}
