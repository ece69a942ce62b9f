package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// serverProfile takes filad's own CPU and allocation profiles over one
// workload, from its server.pprof_listen_addr (-server-profile). The
// profiler costs the server CPU too: a profiled run's figures are for
// reading the profile beside, not for the tables.
type serverProfile struct {
	dir, name string
	seconds   int
	addr      string // the pprof listener, "" when not profiling
}

// newServerProfile prepares the profiles of the current workload's run
// named variant (files <workload>-<variant>.cpu.pprof and .allocs.pprof);
// without -server-profile it does nothing.
func (e *bench) newServerProfile(variant string) (*serverProfile, error) {
	if e.f.serverProfile == "" {
		return &serverProfile{}, nil
	}
	if err := os.MkdirAll(e.f.serverProfile, 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	slug := strings.NewReplacer(" ", "-", "/", "-").Replace(e.current + "-" + variant)
	return &serverProfile{dir: e.f.serverProfile, name: slug, seconds: max(e.f.serverProfileSeconds, 1),
		addr: fmt.Sprintf("127.0.0.1:%d", port)}, nil
}

// env is what filad needs to serve its profiles.
func (p *serverProfile) env() []string {
	if p.addr == "" {
		return nil
	}
	return []string{"FILA_SERVER__PPROF_LISTEN_ADDR=" + p.addr}
}

// start begins the CPU profile; the function it returns writes the
// allocation profile (everything allocated since filad started, which was
// for this workload) and waits for the CPU profile's file.
func (p *serverProfile) start(ctx context.Context) (finish func()) {
	if p.addr == "" {
		return func() {}
	}
	cpu := make(chan error, 1)
	go func() {
		cpu <- p.fetch(ctx, fmt.Sprintf("profile?seconds=%d", p.seconds), p.name+".cpu.pprof")
	}()
	return func() {
		errs := []error{p.fetch(ctx, "allocs", p.name+".allocs.pprof"), <-cpu}
		for _, err := range errs {
			if err != nil {
				fmt.Fprintln(os.Stderr, "filabench: server profile:", err)
			}
		}
		fmt.Fprintf(os.Stderr, "filabench: profiles of filad in %s\n", filepath.Join(p.dir, p.name+".*.pprof"))
	}
}

func (p *serverProfile) fetch(ctx context.Context, path, file string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(p.seconds)*time.Second+time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addr+"/debug/pprof/"+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	f, err := os.Create(filepath.Join(p.dir, file))
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
