package storage

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// walAhead keeps the disk blocks of badger's memtable logs (its *.mem
// write-ahead logs) allocated before badger writes to them. badger creates
// each one sparse (ftruncate to twice the memtable size) and writes it
// through a shared mmap; on a full file system a write to a page with no
// block behind it raises SIGBUS, which kills the process: no error reaches
// the store. With the blocks allocated first, such a write never needs
// space.
//
// badger names its memtable logs by a counter and creates the next one by
// opening it with O_CREATE but not O_EXCL, and sizes it only when it is
// empty. So walAhead creates the next one itself, empty, with its blocks
// allocated past its end (FALLOC_FL_KEEP_SIZE): badger then takes it as
// new, and its ftruncate keeps those blocks. Allocating fails with ENOSPC,
// an error, where a fault would have killed filad; it is retried on every
// commit, and the disk reserve (server/reserve.go) is what gives it room.
// Only the committer uses it after Open.
//
// The value log (*.vlog, where values over the value threshold go) is
// written the same way, through a shared mmap of a sparse file of twice
// the value log file size. badger creates each one with O_EXCL, so it
// cannot be prepared ahead: walAhead allocates the file badger writes to
// as soon as it sees it, at Open (badger always starts a new one there)
// and after every commit (badger rotates inside a write, so the commit
// that rotates is the last to write to the old file and the next commit
// the first to write to the new). What is left is a window: one badger
// write that carries more than one request (the committer's and a value
// log GC's rewrite, which badger batches together) can rotate and go on
// writing into the new file before the committer allocates it. On a full
// disk such a write would fault; it needs a rotation, a GC rewrite and a
// full disk at the same moment.
//
// Looking costs: three stats a commit were 5 % of filad's CPU under one
// call per message. So walAhead watches the directory (inotify) and looks
// only after a memtable log or value log file was created or resized
// there. The kernel queues that event while badger creates or sizes the
// file, inside the commit, so the committer's read right after the commit
// sees it; nothing is looked at later than before. Without inotify it
// looks after every commit.
type walAhead struct {
	dir   string
	size  int64 // what badger sizes a memtable log to
	next  int   // the number of the memtable log badger creates next
	ready bool  // next is created and allocated
	log   *slog.Logger
	warn  bool // the last attempt failed and was logged

	// watch is the inotify descriptor on dir (-1: none, look every time).
	watch  int
	events [4096]byte

	vlog     int   // the number of the value log file allocated last (0: none)
	vlogSize int64 // what badger sizes a value log file to
	vlogWarn bool  // the last value log allocation failed and was logged
}

// newWALAhead allocates the blocks of the memtable log and value log file
// badger.Open created and of the DISCARD file it maps (dir must hold an
// open store), and prepares the next memtable log.
func newWALAhead(dir string, memTableSize, valueLogFileSize int64, log *slog.Logger) *walAhead {
	w := &walAhead{dir: dir, size: 2 * memTableSize, vlogSize: 2 * valueLogFileSize, log: log, watch: watchDir(dir)}
	w.next = lastMemtable(dir) + 1
	w.vlog = lastFile(dir, ".vlog")
	for _, f := range []string{w.path(w.next - 1), w.vlogPath(w.vlog), filepath.Join(dir, "DISCARD")} {
		if err := allocateFile(f, 0, 0); err != nil && !errors.Is(err, os.ErrNotExist) {
			log.Warn("could not allocate a store file's blocks; a write to it on a full disk would crash filad",
				slog.String("file", f), slog.Any("error", err))
		}
	}
	w.tend()
	return w
}

func (w *walAhead) path(fid int) string {
	return filepath.Join(w.dir, fmt.Sprintf("%05d.mem", fid))
}

func (w *walAhead) vlogPath(fid int) string {
	return filepath.Join(w.dir, fmt.Sprintf("%06d.vlog", fid))
}

// tendValueLog allocates the value log files badger created since the
// last look: a stat when nothing changed.
func (w *walAhead) tendValueLog() {
	for {
		if _, err := os.Stat(w.vlogPath(w.vlog + 1)); err != nil {
			return
		}
		w.vlog++
		err := allocateFile(w.vlogPath(w.vlog), unix.FALLOC_FL_KEEP_SIZE, w.vlogSize)
		switch {
		case err == nil && w.vlogWarn:
			w.vlogWarn = false
			w.log.Info("value log files are allocated again", slog.String("file", w.vlogPath(w.vlog)))
		case err != nil && !w.vlogWarn && !errors.Is(err, os.ErrNotExist):
			w.vlogWarn = true
			w.log.Warn("could not allocate a value log file's blocks; a write to it on a full disk would crash filad",
				slog.String("file", w.vlogPath(w.vlog)), slog.Any("error", err))
		}
	}
}

// watchDir returns an inotify descriptor reporting files created or
// resized in dir, or -1 if inotify is not available (then walAhead looks
// after every commit).
func watchDir(dir string) int {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return -1
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MODIFY); err != nil {
		_ = unix.Close(fd)
		return -1
	}
	return fd
}

// changed reports whether a memtable log or value log file was created or
// resized since the last call (true without a watch, or if the watch lost
// events). It reads every queued event: one read when there is none.
func (w *walAhead) changed() bool {
	if w.watch < 0 {
		return true
	}
	changed := false
	for {
		n, err := unix.Read(w.watch, w.events[:])
		if err != nil || n <= 0 {
			// EAGAIN: nothing more queued. Any other error: look, to be
			// safe, and keep the watch (it cannot fail this way for long
			// without failing every read).
			return changed || (err != nil && err != unix.EAGAIN)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&w.events[off]))
			name := w.events[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i] // the kernel pads names with NULs
			}
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 || bytes.HasSuffix(name, []byte(".mem")) || bytes.HasSuffix(name, []byte(".vlog")) {
				changed = true
			}
			if ev.Mask&unix.IN_IGNORED != 0 {
				// The watch is gone (the directory was removed or
				// unmounted): look after every commit from now on.
				_ = unix.Close(w.watch)
				w.watch = -1
				return true
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
}

// tendIfChanged is tend when changed says a file it tends moved, or when
// the next memtable log is not ready (its allocation failed: a failed
// fallocate raises no event, and it is retried on every commit).
func (w *walAhead) tendIfChanged() {
	if w.changed() || !w.ready {
		w.tend()
	}
}

// tend moves on past the memtable logs badger has taken (a sized file) and
// makes sure the next one is created and allocated, then allocates a new
// value log file. It costs a stat or three when nothing changed.
func (w *walAhead) tend() {
	w.tendValueLog()
	for {
		st, err := os.Stat(w.path(w.next))
		if err == nil && st.Size() == 0 && w.ready {
			if _, err := os.Stat(w.path(w.next + 1)); err != nil {
				return // prepared and not taken yet: the common case
			}
			// badger went past it (it rotated twice between two commits,
			// then dropped it): ours is a stray empty file.
			_ = os.Remove(w.path(w.next))
			w.next, w.ready = lastMemtable(w.dir)+1, false
			continue
		}
		if err != nil || st.Size() == 0 {
			break
		}
		// Taken. If it was not ready, badger made it sparse: allocate its
		// holes now, the sooner the better.
		if !w.ready {
			_ = allocateFile(w.path(w.next), unix.FALLOC_FL_KEEP_SIZE, w.size)
		}
		w.next, w.ready = w.next+1, false
	}
	err := allocateFile(w.path(w.next), unix.FALLOC_FL_KEEP_SIZE, w.size, os.O_CREATE)
	switch {
	case err == nil:
		w.ready = true
		if w.warn {
			w.log.Info("the next memtable log is allocated again", slog.String("file", w.path(w.next)))
		}
		w.warn = false
	case !w.warn:
		w.warn = true
		w.log.Warn("could not allocate the next memtable log ahead; will retry on every commit, and until then a memtable switch on a full disk would crash filad",
			slog.String("file", w.path(w.next)), slog.Any("error", err))
	}
}

// close removes the prepared memtable log, which badger did not take, so
// that a restart does not find it (removeEmptyMemtables would, and say a
// crash left it). The store must be closed.
func (w *walAhead) close() {
	if w.watch >= 0 {
		_ = unix.Close(w.watch)
		w.watch = -1
	}
	if st, err := os.Stat(w.path(w.next)); err == nil && st.Size() == 0 {
		_ = os.Remove(w.path(w.next))
	}
}

// lastMemtable is the highest memtable log number in dir, 0 if none.
func lastMemtable(dir string) int { return lastFile(dir, ".mem") }

// lastFile is the highest number of a file named <number><ext> in dir, 0
// if none.
func lastFile(dir, ext string) int {
	files, _ := filepath.Glob(filepath.Join(dir, "*"+ext))
	last := 0
	for _, m := range files {
		if fid, err := strconv.Atoi(strings.TrimSuffix(filepath.Base(m), ext)); err == nil {
			last = max(last, fid)
		}
	}
	return last
}

// allocateFile allocates the blocks of path's first size bytes (its whole
// length when size is 0) with fallocate mode. flag adds to O_RDWR.
func allocateFile(path string, mode uint32, size int64, flag ...int) error {
	fl := os.O_RDWR
	for _, f := range flag {
		fl |= f
	}
	f, err := os.OpenFile(path, fl, 0o644)
	if err != nil {
		return err
	}
	if size == 0 {
		st, err := f.Stat()
		if err != nil {
			_ = f.Close()
			return err
		}
		size = st.Size()
	}
	if size > 0 {
		err = unix.Fallocate(int(f.Fd()), mode, 0, size)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
