package server

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestMappedFilePagesAreNotAnonymous: the memory alarm judges anonymous
// memory, so the pages of a file this process has mapped and read (as
// badger maps its value log) count in the resident set but not in what
// the alarm sees. Before, a backlog's payloads in the value log raised the
// alarm although the kernel could reclaim every one of those pages.
//
// Not parallel: the resident set is the whole test process's.
func TestMappedFilePagesAreNotAnonymous(t *testing.T) {
	const size = 64 << 20
	path := filepath.Join(t.TempDir(), "mapped")
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	for written := 0; written < size; written += len(chunk) {
		_, err := f.Write(chunk)
		require.NoError(t, err)
	}
	residentBefore, err := residentBytes()
	require.NoError(t, err)
	anonBefore, err := anonymousBytes()
	require.NoError(t, err)

	data, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
	require.NoError(t, err)
	defer func() { require.NoError(t, syscall.Munmap(data)) }()
	for i := 0; i < size; i += os.Getpagesize() {
		mappedSink += data[i]
	}

	residentAfter, err := residentBytes()
	require.NoError(t, err)
	anonAfter, err := anonymousBytes()
	require.NoError(t, err)
	t.Logf("resident +%d MiB, anonymous +%d MiB", (residentAfter-residentBefore)>>20, (anonAfter-anonBefore)>>20)
	require.Greater(t, residentAfter-residentBefore, int64(size/2), "the mapped pages are resident")
	require.Less(t, anonAfter-anonBefore, int64(size/4), "but not anonymous")
}

// mappedSink keeps the reads of the mapped pages from being optimised away.
var mappedSink byte
