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

// resourceMonitor measures free disk and anonymous memory every interval
// and raises or clears the alarms, with one WARN when an alarm is raised
// and one INFO when it clears.
type resourceMonitor struct {
	alarms   *gateway.Alarms
	dir      string
	minFree  int64
	maxMem   int64
	interval time.Duration
	// reserve, when set, is given up when the disk is all but full.
	reserve *diskReserve
	log     *slog.Logger
	stop    chan struct{}
	done    chan struct{}
	// released is when freed heap was last handed back to the OS.
	released time.Time
}

func startResourceMonitor(cfg config.Config, alarms *gateway.Alarms, reserve *diskReserve, log *slog.Logger) *resourceMonitor {
	m := &resourceMonitor{
		alarms: alarms, dir: cfg.Storage.DataDir, minFree: cfg.Limits.MinFreeDiskBytes, reserve: reserve,
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
// monitor hands it back to the OS: the runtime's own scavenger returns
// memory slowly, and after a drain of 1 GB resident memory stayed at 2.5 GB
// for minutes. releaseEvery bounds how often: FreeOSMemory forces a whole
// collection, and under churn, with more than 64 MiB free after every
// cycle, a release at each check was half of all collections and held a
// core for up to a second each time (issue 19's operator-tool stalls).
// Near the memory alarm, where anonymous memory decides, it releases at
// each check.
const (
	releaseAbove = 64 << 20
	releaseEvery = 30 * time.Second
)

func (m *resourceMonitor) check() {
	anon, anonErr := anonymousBytes()
	heapFree := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}
	metrics.Read(heapFree)
	nearAlarm := anonErr == nil && m.maxMem > 0 && float64(anon) >= memoryClearRatio*float64(m.maxMem)
	if v := heapFree[0].Value; v.Kind() == metrics.KindUint64 && v.Uint64() > releaseAbove &&
		(nearAlarm || time.Since(m.released) >= releaseEvery) {
		debug.FreeOSMemory()
		m.released = time.Now()
		anon, anonErr = anonymousBytes()
	}
	if free, err := freeDiskBytes(m.dir); err == nil {
		free = m.tendReserve(free)
		low := m.minFree > 0 && free < m.minFree
		released := m.reserve != nil && !m.reserve.held
		reason := fmt.Sprintf("%d bytes free for %s, under limits.min_free_disk_bytes %d", free, m.dir, m.minFree)
		if released {
			reason = fmt.Sprintf("%d bytes free for %s: the disk reserve was given to the store; Enqueue is refused until limits.min_free_disk_bytes + limits.disk_reserve_bytes (%d) are free",
				free, m.dir, m.minFree+m.reserve.size)
		}
		m.set(gateway.AlarmDisk, low || released, !low && !released, reason)
	}
	if anonErr == nil && m.maxMem > 0 {
		m.set(gateway.AlarmMemory, anon >= m.maxMem, float64(anon) < memoryClearRatio*float64(m.maxMem),
			fmt.Sprintf("anonymous resident memory %d bytes reached limits.max_memory_bytes %d", anon, m.maxMem))
	}
}

// tendReserve gives the disk reserve up when less than its size is free,
// and allocates it again once the alarm's limit and the reserve both fit.
// It returns the free space after that.
func (m *resourceMonitor) tendReserve(free int64) int64 {
	r := m.reserve
	switch {
	case r == nil:
		return free
	case r.held && free < r.size:
		if err := r.release(); err != nil {
			m.log.Error("releasing the disk reserve failed", slog.String("path", r.path), slog.Any("error", err))
			return free
		}
		m.log.Warn("disk all but full: gave the disk reserve to the store so it can finish its writes",
			slog.Int64("free_bytes", free), slog.Int64("reserve_bytes", r.size))
	case !r.held && free >= m.minFree+r.size:
		if err := r.allocate(); err != nil {
			m.log.Warn("allocating the disk reserve again failed; will retry", slog.String("path", r.path), slog.Any("error", err))
			return free
		}
		m.log.Info("disk reserve allocated again", slog.Int64("reserve_bytes", r.size))
	default:
		return free
	}
	if now, err := freeDiskBytes(m.dir); err == nil {
		return now
	}
	return free
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

// residentBytes is this process's resident set size, from /proc: what
// the process metrics report.
func residentBytes() (int64, error) {
	resident, _, err := statm()
	return resident, err
}

// anonymousBytes is the part of the resident set that is not file pages:
// the memory the kernel cannot reclaim without the process giving it back.
// The memory alarm judges this. Badger reads and writes its value log
// through mmapped files, so a big backlog's recent payloads are resident
// file pages of this process: the page cache's, given back under pressure,
// not a reason to refuse Enqueue.
func anonymousBytes() (int64, error) {
	resident, shared, err := statm()
	return resident - shared, err
}

// statm reads /proc/self/statm's resident and shared (file-backed
// resident) sizes, in bytes.
func statm() (resident, shared int64, err error) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return 0, 0, errors.New("statm: unexpected format")
	}
	var pages [2]int64
	for i := range pages {
		if pages[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
			return 0, 0, err
		}
	}
	page := int64(os.Getpagesize())
	return pages[0] * page, pages[1] * page, nil
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
