package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// filadProcess is filad running as a subprocess, so that its own resident
// set and CPU time can be read apart from filabench's clients.
type filadProcess struct {
	cmd  *exec.Cmd
	dir  string
	addr string
	// metricsURL is its Prometheus endpoint, when
	// FILA_TELEMETRY__PROMETHEUS_LISTEN_ADDR turned it on (logged before
	// the listen address).
	metricsURL string
}

// filadBinary builds ./cmd/filad once per run.
func (e *bench) filadBinary() (string, error) {
	if e.filadBin != "" {
		return e.filadBin, nil
	}
	dir, err := os.MkdirTemp("", "filabench-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "filad")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/fila-dev/filad/cmd/filad").CombinedOutput(); err != nil {
		return "", fmt.Errorf("build filad (run filabench from the repository root): %v\n%s", err, out)
	}
	e.filadBin = bin
	return bin, nil
}

// startFiladProcess starts filad on its defaults, a temp data dir and a free
// loopback port; env adds FILA_* settings. It returns once filad has logged
// its listen address.
func (e *bench) startFiladProcess(env ...string) (*filadProcess, error) {
	dir, err := os.MkdirTemp("", "filabench-proc")
	if err != nil {
		return nil, err
	}
	return e.startFiladProcessIn(dir, env...)
}

// startFiladProcessIn is startFiladProcess on dir's data (a restart).
func (e *bench) startFiladProcessIn(dir string, env ...string) (*filadProcess, error) {
	bin, err := e.filadBinary()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--config", "", "--data-dir", filepath.Join(dir, "data"))
	cmd.Env = append(append(os.Environ(), "FILA_SERVER__LISTEN_ADDR=127.0.0.1:0"), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &filadProcess{cmd: cmd, dir: dir}
	type started struct{ addr, metrics string }
	addr := make(chan started, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		metrics := ""
		for sc.Scan() {
			var line struct {
				Msg        string `json:"msg"`
				Address    string `json:"address"`
				ListenAddr string `json:"listen_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			if line.Msg == "serving metrics for Prometheus" {
				metrics = line.Address
			}
			if line.ListenAddr != "" {
				addr <- started{line.ListenAddr, metrics}
			}
		}
	}()
	select {
	case s := <-addr:
		p.addr, p.metricsURL = s.addr, s.metrics
		return p, nil
	case <-time.After(2 * time.Minute): // a big backlog's recovery comes first (10M × 1 KiB: some 20 s)
		p.close()
		return nil, fmt.Errorf("filad did not start")
	}
}

func (p *filadProcess) pid() int { return p.cmd.Process.Pid }

// kill9 kills filad with SIGKILL and reaps it, leaving its data.
func (p *filadProcess) kill9() {
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
}

func (p *filadProcess) close() {
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
	_ = os.RemoveAll(p.dir)
}

// rssMB reads VmRSS of pid from /proc.
func rssMB(pid int) (float64, error) { return procStatusMB(pid, "VmRSS:") }

// rssAnonMB reads RssAnon of pid from /proc: its resident memory that is
// not file pages (badger's mmapped tables and value log are those).
func rssAnonMB(pid int) (float64, error) { return procStatusMB(pid, "RssAnon:") }

// procStatusMB reads the field of /proc/<pid>/status named field, in MB.
func procStatusMB(pid int, field string) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field {
			kb, err := strconv.ParseFloat(f[1], 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no %s for pid %d", field, pid)
}

// userHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ, 100 on
// every Linux architecture Go supports).
const userHZ = 100

// processCPU reads the user + system CPU time pid has used, all threads.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; the fields after its
	// closing parenthesis start at field 3, so utime and stime (fields 14
	// and 15) are at 11 and 12.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return time.Duration(utime+stime) * time.Second / userHZ, nil
}

// selfCPU is the user + system CPU time filabench itself has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuMeter measures the CPU a server process and filabench's clients use
// over one workload.
type cpuMeter struct {
	pid            int
	server, client time.Duration
}

func startCPUMeter(pid int) (*cpuMeter, error) {
	s, err := processCPU(pid)
	return &cpuMeter{pid: pid, server: s, client: selfCPU()}, err
}

// perMessage returns the server's and the clients' CPU µs per message since
// the meter started.
func (m *cpuMeter) perMessage(messages int) (server, client float64, err error) {
	s, err := processCPU(m.pid)
	if err != nil {
		return 0, 0, err
	}
	c := selfCPU()
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(messages) }
	return per(s - m.server), per(c - m.client), nil
}

// startFiladTarget starts filad as a subprocess (env: FILA_* settings) and
// a client of it; stop ends both.
func (e *bench) startFiladTarget(env ...string) (p *filadProcess, t *filadTarget, stop func(), err error) {
	if p, err = e.startFiladProcess(env...); err != nil {
		return nil, nil, nil, err
	}
	if t, err = newFiladTarget(p.addr); err != nil {
		p.close()
		return nil, nil, nil, err
	}
	return p, t, func() { t.close(); p.close() }, nil
}
