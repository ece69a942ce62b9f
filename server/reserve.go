package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ReserveFile is the name of the disk reserve in the data directory.
const ReserveFile = "DISK_RESERVE"

// diskReserve is space held for the store in an allocated file beside it.
// badger writes its tables and logs through mmapped files, and a write to a
// sparse page on a full file system kills the process with SIGBUS: no
// error reaches filad. The store allocates its memtable logs ahead (see
// storage/walahead.go), so leases, acks and small messages are safe; it
// cannot allocate the table files that flushes and compactions write, nor
// the value log, before badger writes them. The disk alarm refuses
// Enqueue well before the disk is full, but acks, leases and other
// programs still write. When the disk is all but full the monitor deletes
// the reserve, so the store can finish its flushes and compactions while
// Enqueue is refused, and allocates it again once there is room.
// CockroachDB's ballast file is the model. Only the resource monitor's
// goroutine uses it after start.
type diskReserve struct {
	path string
	size int64
	held bool
}

// openDiskReserve makes sure the reserve is in place before the store
// opens. A start on a disk with less free space than the reserve, and no
// reserve to give up, is refused with an error saying so: the store could
// crash on its first write.
func openDiskReserve(dir string, size int64) (*diskReserve, error) {
	if size == 0 {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	r := &diskReserve{path: filepath.Join(dir, ReserveFile), size: size}
	if st, err := os.Stat(r.path); err == nil && st.Size() >= size {
		r.held = true
		return r, nil
	}
	free, err := freeDiskBytes(dir)
	if err != nil {
		return nil, err
	}
	if free < size {
		return nil, fmt.Errorf("data dir %s has %d bytes free, less than limits.disk_reserve_bytes %d: filad keeps that much in reserve so that its store never writes to a full disk (it would crash). Free some space, or lower limits.disk_reserve_bytes",
			dir, free, size)
	}
	if err := r.allocate(); err != nil {
		return nil, fmt.Errorf("allocate the disk reserve %s: %w", r.path, err)
	}
	return r, nil
}

// allocate creates the reserve with its blocks allocated (fallocate), not
// a sparse file, which would hold nothing.
func (r *diskReserve) allocate() error {
	f, err := os.OpenFile(r.path, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = unix.Fallocate(int(f.Fd()), 0, 0, r.size)
	if errors.Is(err, unix.EOPNOTSUPP) {
		err = writeZeros(f, r.size) // file systems without fallocate
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(r.path) // a partial reserve would be counted as held
		return err
	}
	r.held = true
	return nil
}

func writeZeros(f *os.File, n int64) error {
	buf := make([]byte, 1<<20)
	for n > 0 {
		w, err := f.Write(buf[:min(int64(len(buf)), n)])
		if err != nil {
			return err
		}
		n -= int64(w)
	}
	return nil
}

// release gives the reserve's space to the store.
func (r *diskReserve) release() error {
	if err := os.Remove(r.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	r.held = false
	return nil
}
