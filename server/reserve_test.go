package server

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDiskReserve(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	const size = 4 << 20
	r, err := openDiskReserve(dir, size)
	require.NoError(t, err)
	require.True(t, r.held)
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat(filepath.Join(dir, ReserveFile), &st))
	require.EqualValues(t, size, st.Size)
	require.GreaterOrEqual(t, st.Blocks*512, int64(size), "allocated, not sparse")

	// A second start finds it in place.
	again, err := openDiskReserve(dir, size)
	require.NoError(t, err)
	require.True(t, again.held)

	require.NoError(t, r.release())
	require.False(t, r.held)
	_, err = os.Stat(filepath.Join(dir, ReserveFile))
	require.ErrorIs(t, err, os.ErrNotExist)
	require.NoError(t, r.release(), "releasing twice is harmless")

	// No reserve and not enough room for one: start refused, saying why.
	_, err = openDiskReserve(dir, 1<<60)
	require.ErrorContains(t, err, "less than limits.disk_reserve_bytes")

	off, err := openDiskReserve(dir, 0)
	require.NoError(t, err)
	require.Nil(t, off, "0 turns it off")
}
