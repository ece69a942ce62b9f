package storage

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
)

// TestLoadIndexReadsBothLayoutsThenTheIndexAlone: a queue stored before
// index records (message records alone) loads whole, its messages listed
// as unindexed; one whose index records and mark are written loads from
// them alone, without reading a message record, and a retry's index record wins over the message record.
func TestLoadIndexReadsBothLayoutsThenTheIndexAlone(t *testing.T) {
	t.Parallel()
	for name, s := range map[string]interface {
		Store
		Write(*Batch) error
	}{"memory": NewMemory(), "badger": open(t, t.TempDir())} {
		t.Run(name, func(t *testing.T) {
			var old Batch
			for _, id := range []string{"1", "2"} {
				// As a filad before index records wrote them.
				old.put("q\x00"+id, itemKey(prefixMessage, "q", id), &storagev1.MessageRecord{FairnessKey: "k" + id, Payload: []byte("payload " + id), AttemptCount: 2})
			}
			old.PutMessage("q.dlq", "3", &storagev1.MessageRecord{FairnessKey: "other"}) // a name that starts the same
			old.MarkIndexed("q.dlq")
			require.NoError(t, s.Write(&old))
			qi, err := s.LoadIndex("q", nil)
			require.NoError(t, err)
			require.False(t, qi.Indexed, "q.dlq's mark is not q's")
			require.Len(t, qi.Messages, 2)
			require.Len(t, qi.Unindexed, 2)
			require.Equal(t, "k1", qi.Messages[0].Index.FairnessKey)
			require.EqualValues(t, len("payload 1"), qi.Messages[0].Index.PayloadBytes)

			var idx Batch
			for _, m := range qi.Unindexed {
				idx.PutIndex("q", m.ID, m.Index)
			}
			idx.MarkIndexed("q")
			retried := qi.Messages[1].Index
			retried.AttemptCount = 3
			idx.PutIndex("q", "2", retried)
			// A message record alone (no filad writes one now): a load of a
			// marked queue does not look at message records, so it is not
			// found; one that read them would list it.
			idx.put("q\x00"+"4", itemKey(prefixMessage, "q", "4"), &storagev1.MessageRecord{})
			require.NoError(t, s.Write(&idx))
			qi, err = s.LoadIndex("q", nil)
			require.NoError(t, err)
			require.True(t, qi.Indexed)
			require.Empty(t, qi.Unindexed)
			require.Len(t, qi.Messages, 2)
			require.Equal(t, "1", qi.Messages[0].ID)
			require.EqualValues(t, 3, qi.Messages[1].Index.AttemptCount, "the index record wins")

			recs, err := s.ReadMessages("q", []string{"1", "missing"})
			require.NoError(t, err)
			require.Equal(t, []byte("payload 1"), recs[0].GetPayload())
			require.Nil(t, recs[1])
		})
	}
}

// TestThrottleKeySetsAreInternedApart: equal sets share one slice, and
// sets that would join to the same string stay apart.
func TestThrottleKeySetsAreInternedApart(t *testing.T) {
	a := Index{}.WithThrottleKeys([]string{"a\x00b"})
	b := Index{}.WithThrottleKeys([]string{"a", "b"})
	require.Equal(t, []string{"a\x00b"}, a.ThrottleKeys())
	require.Equal(t, []string{"a", "b"}, b.ThrottleKeys())
	again := Index{}.WithThrottleKeys([]string{"a", "b"})
	require.Same(t, &b.ThrottleKeys()[0], &again.ThrottleKeys()[0], "one slice per set")
	require.Nil(t, Index{}.WithThrottleKeys(nil).ThrottleKeys())
}

// A set no index names any more leaves the table: a hook that makes a
// throttle key per user must not grow memory with every user ever seen.
func TestThrottleKeySetsNoOneNamesAreForgotten(t *testing.T) {
	const n = 10_000
	kept := Index{}.WithThrottleKeys([]string{"kept"})
	for i := range n {
		_ = Index{}.WithThrottleKeys([]string{fmt.Sprint("user:", i)})
	}
	// Other tests' sets may be collected meanwhile too: the bound is
	// "none of ours left", counted by name below, not a total.
	ours := func() int {
		throttleSets.RLock()
		defer throttleSets.RUnlock()
		c := 0
		for k := range throttleSets.m {
			if strings.Contains(k, ":user:") {
				c++
			}
		}
		return c
	}
	// Cleanups run after a collection, on the runtime's own goroutine:
	// poll until they have (the deadline only bounds a failure).
	deadline := time.Now().Add(30 * time.Second)
	for ours() > 0 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
	require.Zero(t, ours(), "the sets of %d dropped indexes are still interned", n)
	again := Index{}.WithThrottleKeys([]string{"kept"})
	require.Same(t, &kept.ThrottleKeys()[0], &again.ThrottleKeys()[0], "a set still named is still shared")
}
