package server

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/fila-dev/filad/telemetry"
)

// readProcess reads filad's CPU time, resident and anonymous memory and
// open file descriptors; what this platform cannot tell reads -1.
func readProcess() telemetry.ProcessReading {
	r := telemetry.ProcessReading{UserCPU: -1, SystemCPU: -1, RSS: -1, FDs: -1, Anonymous: -1}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		r.UserCPU = time.Duration(ru.Utime.Nano())
		r.SystemCPU = time.Duration(ru.Stime.Nano())
	}
	if resident, shared, err := statm(); err == nil {
		r.RSS, r.Anonymous = resident, resident-shared
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		r.FDs = int64(len(fds)) - 1 // less the one reading the directory
	}
	return r
}

// allocated is the space a file takes on disk: badger's value log is a
// sparse file of 2 GiB apparent size from its first write.
func allocated(info fs.FileInfo) int64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return info.Size()
}

// readStorage sums the disk space of the files under dir (but skip, the disk
// reserve) and reads the free space of dir's filesystem. A badger
// directory holds tens to hundreds of files: a walk per collection is
// cheap.
func readStorage(dir, skip string) telemetry.StorageReading {
	var r telemetry.StorageReading
	free, err := freeDiskBytes(dir)
	if err != nil {
		return r
	}
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a file removed under the walk (compaction): skip it
		}
		if d.Type().IsRegular() && path != skip {
			if info, err := d.Info(); err == nil {
				r.Size += allocated(info)
			}
		}
		return nil
	})
	r.Free, r.OK = free, err == nil
	return r
}
