package storagetest

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
)

// runReads: the key-only reads and the config store.
func runReads(t *testing.T, open func(t *testing.T) storage.Store) {
	t.Run("QueueItemsIsBounded", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		var b storage.Batch
		for _, id := range []string{"1", "3", "5"} {
			b.PutMessage("q", id, &storagev1.MessageRecord{})
			b.PutLease("q", id, &storagev1.LeaseRecord{})
		}
		b.PutLease("q", "0", &storagev1.LeaseRecord{})
		require.NoError(t, s.Write(&b))
		var other storage.Batch
		other.PutMessage("qq", "0", &storagev1.MessageRecord{}) // a name that starts the same
		require.NoError(t, s.Write(&other))
		for _, tc := range []struct {
			leases bool
			after  string
			limit  int
			want   []string
		}{
			{false, "", 1, []string{"1"}},
			{false, "", 100, []string{"1", "3", "5"}},
			{false, "1", 1, []string{"3"}},
			{false, "2", 100, []string{"3", "5"}},
			{false, "5", 100, []string{}},
			{true, "", 2, []string{"0", "1"}},
			{true, "1", 100, []string{"3", "5"}},
		} {
			got, err := s.QueueItems("q", tc.leases, tc.after, tc.limit)
			require.NoError(t, err)
			require.Equal(t, tc.want, got, "%+v", tc)
		}
		got, err := s.QueueItems("none", false, "", 10)
		require.NoError(t, err)
		require.Empty(t, got)
		_, err = s.QueueItems("q", false, "", 0)
		require.ErrorContains(t, err, "limit 0")
	})

	// A commit landing while LoadQueue reads must not tear a unit: each
	// write here changes message 0 and its lease together (as a settle or
	// an expiry does), so every load must see the two at the same attempt.
	// The filler messages after it keep a load's reading long, so that
	// commits land during it; read in two scans, a load paired an old
	// message with a newer lease.
	t.Run("LoadQueueIsOneSnapshot", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		var filler storage.Batch
		for i := range 1000 {
			filler.PutMessage("q", fmt.Sprintf("1%04d", i), &storagev1.MessageRecord{})
		}
		require.NoError(t, s.Write(&filler))
		stop, stopped := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(stopped)
			for i := uint32(0); ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var b storage.Batch
				b.PutMessage("q", "0", &storagev1.MessageRecord{AttemptCount: i})
				b.PutLease("q", "0", &storagev1.LeaseRecord{LeaseId: fmt.Sprint(i)})
				if err := s.Write(&b); err != nil {
					t.Errorf("write %d: %v", i, err)
					return
				}
			}
		}()
		defer func() { close(stop); <-stopped }()
		for load := range 300 {
			qc, err := s.LoadQueue("q")
			require.NoError(t, err)
			if qc.Messages[0].ID != "0" {
				require.Empty(t, qc.Leases, "load %d: a lease without its message", load)
				continue
			}
			l := qc.Leases["0"]
			require.NotNil(t, l, "load %d: the message without its lease", load)
			require.Equal(t, fmt.Sprint(qc.Messages[0].Record.GetAttemptCount()), l.GetLeaseId(),
				"load %d: message and lease from different commits", load)
		}
	})

	t.Run("LastMessage", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		var b storage.Batch
		for _, id := range []string{"1", "3", "5"} {
			b.PutMessage("q", id, &storagev1.MessageRecord{})
		}
		b.PutLease("q", "9", &storagev1.LeaseRecord{}) // a lease is no message
		require.NoError(t, s.Write(&b))
		for q, id := range map[string]string{"qq": "7", "r": "8"} { // "qq": a name that starts the same
			var other storage.Batch
			other.PutMessage(q, id, &storagev1.MessageRecord{})
			require.NoError(t, s.Write(&other))
		}
		for queue, want := range map[string]string{"q": "5", "qq": "7", "none": "", "p": ""} {
			got, err := s.LastMessage(queue)
			require.NoError(t, err)
			require.Equal(t, want, got, queue)
		}
		var del storage.Batch
		del.DeleteMessage("q", "5")
		require.NoError(t, s.Write(&del))
		got, err := s.LastMessage("q")
		require.NoError(t, err)
		require.Equal(t, "3", got, "a deleted message is not the last")
	})

	t.Run("ConfigEntries", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		var b storage.Batch
		b.PutConfig("b.limit", "2")
		b.PutConfig("a.limit", "1")
		b.PutConfig("gone", "x")
		b.PutQueue(&storagev1.QueueRecord{Name: "c"}) // another kind of key
		require.NoError(t, s.Write(&b))
		var del storage.Batch
		del.DeleteConfig("gone")
		del.PutConfig("a.limit", "10")
		require.NoError(t, s.Write(&del))
		got, err := s.ConfigEntries()
		require.NoError(t, err)
		require.Equal(t, []storage.ConfigEntry{{Key: "a.limit", Value: "10"}, {Key: "b.limit", Value: "2"}}, got)
	})
}
