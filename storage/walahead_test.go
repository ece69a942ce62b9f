package storage

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
)

// memLog is a memtable log in a store's directory: its length and the
// bytes of disk allocated to it.
type memLog struct {
	name            string
	size, allocated int64
}

func memLogs(t *testing.T, dir string) []memLog {
	t.Helper()
	mems, err := filepath.Glob(filepath.Join(dir, "*.mem"))
	require.NoError(t, err)
	var out []memLog
	for _, m := range mems {
		var st syscall.Stat_t
		require.NoError(t, syscall.Stat(m, &st))
		out = append(out, memLog{filepath.Base(m), st.Size, st.Blocks * 512})
	}
	return out
}

// requireAllocatedAhead: every memtable log badger writes has all its
// blocks allocated, so a write to it on a full disk cannot fault (SIGBUS),
// and the next one is ready, empty and allocated, before badger switches
// to it. It returns the name of the log in use.
func requireAllocatedAhead(t *testing.T, dir string, memTableSize int64) string {
	t.Helper()
	logs := memLogs(t, dir)
	var inUse, ready []string
	for _, l := range logs {
		if l.size == 0 {
			ready = append(ready, l.name)
			require.GreaterOrEqual(t, l.allocated, 2*memTableSize, "%s: the next memtable log allocated ahead", l.name)
			continue
		}
		inUse = append(inUse, l.name)
		require.GreaterOrEqual(t, l.allocated, l.size, "%s: a memtable log in use has no holes", l.name)
	}
	require.Len(t, ready, 1, "one next memtable log ready: %v", logs)
	require.NotEmpty(t, inUse, "%v", logs)
	require.Greater(t, ready[0], inUse[len(inUse)-1], "the ready log is the one badger takes next")
	return inUse[len(inUse)-1]
}

func TestMemtableLogsAreAllocatedAhead(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, SyncWrites: true})
	require.NoError(t, err)
	const memTableSize = 16 << 20 // as Open sets it
	first := requireAllocatedAhead(t, dir, memTableSize)

	// 24 MiB of messages under the value threshold: all of it goes to the
	// memtable logs, and badger switches memtables at least once.
	const n, payload = 64000, valueThreshold - 128
	for i := 0; i < n; i += 2000 {
		var b Batch
		for j := i; j < i+2000; j++ {
			b.PutMessage("q", fmt.Sprintf("%06d", j), &storagev1.MessageRecord{Payload: make([]byte, payload)})
		}
		require.NoError(t, s.Write(&b))
	}
	later := requireAllocatedAhead(t, dir, memTableSize)
	require.Greater(t, later, first, "badger switched memtables, to the one allocated ahead")

	// A clean close leaves no empty log behind, and the store opens again.
	require.NoError(t, s.Close())
	for _, l := range memLogs(t, dir) {
		require.NotZero(t, l.size, "%s left empty after a clean close", l.name)
	}
	s = open(t, dir)
	qc, err := s.LoadQueue("q")
	require.NoError(t, err)
	require.Len(t, qc.Messages, n)
	requireAllocatedAhead(t, dir, memTableSize)
}

// TestValueLogFilesAreAllocated: every value log file badger writes has
// all its blocks allocated, the one Open started and those it rotates to,
// so that a write to one on a full disk cannot fault (SIGBUS).
func TestValueLogFilesAreAllocated(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, SyncWrites: false})
	require.NoError(t, err)
	requireValueLogAllocated(t, dir, 1)

	// Payloads over the value threshold, 2.5 value log files of them:
	// badger rotates twice.
	const payload = 16 << 10
	n := 5 * valueLogFileSize / 2 / payload
	for i := 0; i < n; i += 200 {
		var b Batch
		for j := i; j < min(i+200, n); j++ {
			b.PutMessage("q", fmt.Sprintf("%06d", j), &storagev1.MessageRecord{Payload: make([]byte, payload)})
		}
		require.NoError(t, s.Write(&b))
	}
	requireValueLogAllocated(t, dir, 3)
	require.NoError(t, s.Close())

	// A restart starts a new file, allocated too.
	s = open(t, dir)
	requireValueLogAllocated(t, dir, 4)
	qc, err := s.LoadQueue("q")
	require.NoError(t, err)
	require.Len(t, qc.Messages, n)
}

// requireValueLogAllocated: dir has at least files value log files, and
// the newest (the one badger writes) has no holes.
func requireValueLogAllocated(t *testing.T, dir string, files int) {
	t.Helper()
	vlogs, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(vlogs), files, "value log files: %v", vlogs)
	newest := vlogs[len(vlogs)-1] // Glob sorts; names are zero-padded
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat(newest, &st))
	require.GreaterOrEqual(t, st.Size, int64(2*valueLogFileSize), "%s: mapped at twice the file size", newest)
	require.GreaterOrEqual(t, st.Blocks*512, st.Size, "%s: the value log file being written has no holes", newest)
}

// TestWALAheadLooksOnlyWhenItsFilesMove: the committer's look after a
// commit is a read of the directory's events, and only a memtable log or
// value log file created or resized there makes it stat and allocate.
func TestWALAheadLooksOnlyWhenItsFilesMove(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	w := &walAhead{dir: dir, watch: watchDir(dir)}
	require.GreaterOrEqual(t, w.watch, 0, "inotify on a temporary directory")
	defer w.close()
	require.False(t, w.changed(), "nothing happened yet")

	write := func(name string, data []byte) {
		t.Helper()
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), data, 0o644))
	}
	write("MANIFEST", []byte("x"))
	write("000001.sst", nil)
	require.False(t, w.changed(), "files walAhead does not tend")

	write("000002.vlog", nil)
	require.True(t, w.changed(), "a value log file created")
	require.False(t, w.changed(), "each event is reported once")

	write("00003.mem", nil)
	require.True(t, w.changed(), "a memtable log created")
	require.NoError(t, os.Truncate(filepath.Join(dir, "00003.mem"), 1<<20))
	require.True(t, w.changed(), "a memtable log sized (badger taking the one made ahead)")

	// Many events at once, more than one read's buffer, the relevant one last.
	for i := range 300 {
		write(fmt.Sprintf("%06d.sst", i), nil)
	}
	write("000004.vlog", nil)
	require.True(t, w.changed(), "an event after a full buffer of others")

	// The directory gone, the watch is too: it looks every time from then.
	require.NoError(t, os.RemoveAll(dir))
	require.True(t, w.changed(), "the watch's end")
	require.Equal(t, -1, w.watch)
	require.True(t, w.changed())

	// Without a watch it looks every time.
	require.True(t, (&walAhead{watch: -1}).changed())
}

// TestWALAheadRetriesAFailedAllocation: a next memtable log whose
// allocation failed raises no event, and is retried on the next commit
// all the same.
func TestWALAheadRetriesAFailedAllocation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	w := &walAhead{dir: dir, size: 1 << 20, next: 1, watch: watchDir(dir), log: slog.New(slog.DiscardHandler)}
	require.GreaterOrEqual(t, w.watch, 0)
	defer w.close()
	require.False(t, w.changed(), "no event queued")
	w.tendIfChanged() // as after a commit, with the last allocation failed (ready false)
	require.True(t, w.ready)
	logs := memLogs(t, dir)
	require.Len(t, logs, 1, "the next memtable log made ahead")
	require.GreaterOrEqual(t, logs[0].allocated, int64(1<<20))
}
