// Command filabench measures filad against a real server: it starts filad
// in-process on a temporary data dir (or uses --addr), runs each workload
// with a progress line, and prints a Markdown table (and --json FILE).
//
//	go run ./cmd/filabench                 # default workloads
//	go run ./cmd/filabench -short          # a quick run that only proves the tool works
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/server"
	"github.com/fila-dev/filad/telemetry/telemetrytest"
)

// result is one workload's figure.
type result struct {
	Workload string  `json:"workload"`
	Target   string  `json:"target"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
	Note     string  `json:"note,omitempty"`
}

type benchFlags struct {
	short      bool
	messages   int
	jsonPath   string
	syncWrites bool
	only       string
}

func main() {
	var f benchFlags
	flag.BoolVar(&f.short, "short", false, "small message counts: proves the tool works, figures are not meaningful")
	flag.IntVar(&f.messages, "messages", 20000, "messages per throughput workload")
	flag.StringVar(&f.jsonPath, "json", "", "also write the results as JSON to this file")
	flag.BoolVar(&f.syncWrites, "sync-writes", true, "storage.sync_writes for the filad under test")
	flag.StringVar(&f.only, "only", "", "run only the workloads whose name contains this")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *cpuProfile != "" {
		pf, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "filabench:", err)
			os.Exit(1)
		}
		_ = pprof.StartCPUProfile(pf)
		defer pprof.StopCPUProfile()
	}
	if f.short {
		f.messages = 500
	}
	if err := run(context.Background(), f, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "filabench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(ctx context.Context, f benchFlags, out io.Writer) error {
	fmt.Fprintf(out, "filabench: %s, %d CPUs, %s/%s, sync_writes=%v, %d messages per workload\n",
		runtime.Version(), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, f.syncWrites, f.messages)
	var results []result
	for _, w := range workloads(f) {
		if !strings.Contains(w.name, f.only) {
			continue
		}
		fmt.Fprintf(out, "running %s ...\n", w.name)
		r, err := w.run(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", w.name, err)
		}
		fmt.Fprintf(out, "  %s: %.0f %s\n", w.name, r.Value, r.Unit)
		results = append(results, r)
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, "| workload | target | value | unit |")
	fmt.Fprintln(out, "|---|---|---:|---|")
	for _, r := range results {
		fmt.Fprintf(out, "| %s | %s | %.0f | %s |\n", r.Workload, r.Target, r.Value, r.Unit)
	}
	if f.jsonPath != "" {
		b, err := json.MarshalIndent(results, "", "  ")
		if err != nil {
			return err
		}
		return os.WriteFile(f.jsonPath, b, 0o644)
	}
	return nil
}

type workload struct {
	name string
	run  func(ctx context.Context) (result, error)
}

func workloads(f benchFlags) []workload {
	kib := make([]byte, 1024)
	lifecycle := func(ctx context.Context, t *filadTarget) (result, error) {
		return t.lifecycleThroughput(ctx, 4, 4, f.messages, kib)
	}
	return []workload{
		{"enqueue 1 producer 1KiB", filadWorkload(f, nil, func(ctx context.Context, t *filadTarget) (result, error) {
			return t.enqueueThroughput(ctx, 1, f.messages, kib)
		})},
		{"enqueue 4 producers 1KiB", filadWorkload(f, nil, func(ctx context.Context, t *filadTarget) (result, error) {
			return t.enqueueThroughput(ctx, 4, f.messages, kib)
		})},
		{"lifecycle 4P/4C 1KiB", filadWorkload(f, nil, lifecycle)},
		{"lifecycle 4P/4C 1KiB, telemetry exporting", filadWorkload(f, withTelemetry(config.TraceSampleRatioDefault), lifecycle)},
		{"lifecycle 4P/4C 1KiB, telemetry exporting, every trace sampled", filadWorkload(f, withTelemetry(1), lifecycle)},
	}
}

// withTelemetry points filad at an in-process OTLP receiver with the given
// trace sampling ratio and a 1 s metric interval.
func withTelemetry(ratio float64) func(*config.Config) (func(), error) {
	return func(cfg *config.Config) (func(), error) {
		recv, err := telemetrytest.StartReceiver("127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		tc := config.TelemetryDefaults()
		tc.OTLPEndpoint = recv.Addr()
		tc.MetricsIntervalMS = 1000
		tc.TraceSampleRatio = ratio
		cfg.Telemetry = &tc
		return recv.Stop, nil
	}
}

// filadWorkload runs fn against a fresh in-process filad on a temp dir;
// configure, if set, adjusts its config and returns what to stop afterwards.
func filadWorkload(f benchFlags, configure func(*config.Config) (func(), error), fn func(context.Context, *filadTarget) (result, error)) func(context.Context) (result, error) {
	return func(ctx context.Context) (result, error) {
		dir, err := os.MkdirTemp("", "filabench")
		if err != nil {
			return result{}, err
		}
		defer os.RemoveAll(dir)
		cfg := config.Defaults()
		cfg.Server.ListenAddr = "127.0.0.1:0"
		cfg.Storage.DataDir = dir
		cfg.Storage.SyncWrites = f.syncWrites
		if configure != nil {
			stop, err := configure(&cfg)
			if err != nil {
				return result{}, err
			}
			defer stop()
		}
		srv, err := server.Start(ctx, cfg, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			return result{}, err
		}
		defer srv.Shutdown(context.Background())
		t, err := newFiladTarget(srv.Addr().String())
		if err != nil {
			return result{}, err
		}
		defer t.close()
		r, err := fn(ctx, t)
		r.Target = "filad"
		if !f.syncWrites {
			r.Target = "filad (sync_writes=false)"
		}
		if cfg.Telemetry != nil {
			r.Target += fmt.Sprintf(" +telemetry (sampling %g)", cfg.Telemetry.TraceSampleRatio)
		}
		return r, err
	}
}

func rate(workload string, n int, d time.Duration) result {
	return result{Workload: workload, Value: float64(n) / d.Seconds(), Unit: "msg/s"}
}
