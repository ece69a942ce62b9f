package server

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/gateway"
)

// memoryClearRatio is where a raised memory alarm clears: under 90% of the
// limit, so that one collection does not make it flap.
const memoryClearRatio = 0.9

// MemoryLimit is limits.max_memory_bytes, or when that is 0, 60% of the
// machine's memory (the cgroup's limit when one is set). 0 if neither can
// be read.
func MemoryLimit(l config.Limits) int64 {
	if l.MaxMemoryBytes > 0 {
		return l.MaxMemoryBytes
	}
	return machineMemory() * 6 / 10
}

// resourceMonitor measures free disk and resident memory every interval
// and raises or clears the alarms, with one WARN when an alarm is raised
// and one INFO when it clears.
type resourceMonitor struct {
	alarms   *gateway.Alarms
	dir      string
	minFree  int64
	maxMem   int64
	interval time.Duration
	log      *slog.Logger
	stop     chan struct{}
	done     chan struct{}
}

func startResourceMonitor(cfg config.Config, alarms *gateway.Alarms, log *slog.Logger) *resourceMonitor {
	m := &resourceMonitor{
		alarms: alarms, dir: cfg.Storage.DataDir, minFree: cfg.Limits.MinFreeDiskBytes,
		maxMem: MemoryLimit(cfg.Limits), interval: cfg.Limits.CheckInterval(), log: log,
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	m.check() // an alarm already due is raised before the first request
	go m.run()
	return m
}

func (m *resourceMonitor) run() {
	defer close(m.done)
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.check()
		}
	}
}

func (m *resourceMonitor) close() {
	close(m.stop)
	<-m.done
}

// releaseAbove is how much freed heap the Go runtime may keep before the
// monitor hands it back to the OS at once: the runtime's own scavenger
// returns memory slowly, and after a drain of 1 GB resident memory stayed
// at 2.5 GB for minutes.
const releaseAbove = 64 << 20

func (m *resourceMonitor) check() {
	heapFree := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}
	metrics.Read(heapFree)
	if v := heapFree[0].Value; v.Kind() == metrics.KindUint64 && v.Uint64() > releaseAbove {
		debug.FreeOSMemory()
	}
	if free, err := freeDiskBytes(m.dir); err == nil && m.minFree > 0 {
		m.set(gateway.AlarmDisk, free < m.minFree, free >= m.minFree,
			fmt.Sprintf("%d bytes free for %s, under limits.min_free_disk_bytes %d", free, m.dir, m.minFree))
	}
	if rss, err := residentBytes(); err == nil && m.maxMem > 0 {
		m.set(gateway.AlarmMemory, rss >= m.maxMem, float64(rss) < memoryClearRatio*float64(m.maxMem),
			fmt.Sprintf("resident memory %d bytes reached limits.max_memory_bytes %d", rss, m.maxMem))
	}
}

func (m *resourceMonitor) set(a gateway.Alarm, raise, clear bool, reason string) {
	name := gateway.AlarmNames[a]
	switch {
	case raise && m.alarms.Raise(a, reason):
		m.log.Warn("resource alarm raised: Enqueue is refused until it clears; consumers can drain",
			slog.String("alarm", name), slog.String("reason", reason))
	case raise:
		m.alarms.Raise(a, reason) // still raised: keep the reason current
	case clear && m.alarms.Clear(a):
		m.log.Info("resource alarm cleared", slog.String("alarm", name))
	}
}

func freeDiskBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// residentBytes is this process's resident set size, from /proc.
func residentBytes() (int64, error) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, errors.New("statm: unexpected format")
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, err
	}
	return pages * int64(os.Getpagesize()), nil
}

// machineMemory is the cgroup v2 memory limit when one is set, else the
// machine's total memory; 0 when neither can be read.
func machineMemory() int64 {
	if b, err := os.ReadFile("/sys/fs/cgroup/memory.max"); err == nil {
		if n, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64); err == nil && n > 0 {
			return n
		}
	}
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// MemTotal:       24589472 kB
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}
