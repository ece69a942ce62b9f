// Command filabench measures filad against a real server, with NATS
// JetStream on the same machine in the same run as the yardstick. It starts
// filad in-process on a temporary data dir (as a subprocess for the memory
// workload), runs each workload with a progress line, and prints Markdown
// tables: the figures, and filad/NATS ratios. -json writes the figures too.
//
//	go run ./cmd/filabench                 # the full suite (several minutes)
//	go run ./cmd/filabench -short          # proves the tool works; figures not meaningful
//	go run ./cmd/filabench -only lifecycle # workloads whose name contains "lifecycle"
//	go run ./cmd/filabench -no-nats -cluster 3 -only cluster # a 3-node cluster against one node
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
)

// result is one figure.
type result struct {
	Workload string  `json:"workload"`
	Target   string  `json:"target"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
	Note     string  `json:"note,omitempty"`
}

type benchFlags struct {
	short    bool
	messages int
	jsonPath string
	only     string
	noNATS   bool
	// cluster is the node count of the cluster workloads (cluster.go);
	// 0, the default, runs none.
	cluster   int
	rounds    int
	failovers int
	// clusterBacklog is the 1 KiB messages in the queue of the cluster
	// failover and catch-up workloads.
	clusterBacklog int
	// serverProfile is where the CPU workloads write filad's own CPU and
	// allocation profiles (profile.go); "" writes none.
	serverProfile        string
	serverProfileSeconds int
	// hugeBacklog is the message count of the huge-backlog workload
	// (backlog.go); 0, the default, runs none.
	hugeBacklog int
}

func main() {
	var f benchFlags
	flag.BoolVar(&f.short, "short", false, "small message counts: proves the tool works, figures are not meaningful")
	flag.IntVar(&f.messages, "messages", 20000, "messages per throughput workload")
	flag.StringVar(&f.jsonPath, "json", "", "also write the results as JSON to this file")
	flag.StringVar(&f.only, "only", "", "run only the workloads whose name contains this")
	flag.BoolVar(&f.noNATS, "no-nats", false, "skip the NATS JetStream yardstick")
	flag.IntVar(&f.cluster, "cluster", 0, "also run the cluster workloads with this many filad processes (RF = N) against single-node filad; 0: none")
	flag.IntVar(&f.rounds, "rounds", 3, "alternating rounds of the cluster throughput comparison")
	flag.IntVar(&f.failovers, "failovers", 5, "partition leader kills in the cluster failover workload (needs -cluster 3 or more)")
	flag.IntVar(&f.clusterBacklog, "cluster-backlog", 20000, "1 KiB messages in the queue of the cluster failover and catch-up workloads (1000000: issue 25's size)")
	flag.StringVar(&f.serverProfile, "server-profile", "", "the cpu workloads also write filad's CPU and allocation profiles into this directory")
	flag.IntVar(&f.serverProfileSeconds, "server-profile-seconds", 10, "how long each filad CPU profile runs, from the workload's start")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run (filabench itself, the clients) to this file")
	flag.IntVar(&f.hugeBacklog, "huge-backlog", 0, "also run the huge-backlog workload with this many 1 KiB messages (10000000: ~12 GB of disk, tens of minutes); 0: none")
	flag.Parse()
	if f.short {
		f.messages = 300
		f.rounds, f.failovers = 1, 1
	}
	if *cpuProfile != "" {
		pf, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "filabench:", err)
			os.Exit(1)
		}
		_ = pprof.StartCPUProfile(pf)
	}
	err := run(context.Background(), f, os.Stdout)
	pprof.StopCPUProfile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "filabench:", err)
		os.Exit(1)
	}
}

type workload struct {
	name string
	run  func(ctx context.Context, e *bench) ([]result, error)
}

// bench is the state shared by the workloads of one run.
type bench struct {
	f       benchFlags
	natsBin string
	// filadBin is filad built for the workloads that run it as a
	// subprocess; built on first use.
	filadBin string
	out      io.Writer
	// current is the name of the workload running.
	current string
}

func run(ctx context.Context, f benchFlags, out io.Writer) error {
	e := &bench{f: f, out: out}
	fmt.Fprintf(out, "filabench: %s, %d CPUs, %s/%s, %d messages per throughput workload\n",
		runtime.Version(), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, f.messages)
	fmt.Fprintln(out, "durability: filad sync_writes=true fsyncs every group commit before replying; sync_writes=false does not.")
	if !f.noNATS {
		bin, version, err := natsBinary()
		if err != nil {
			return fmt.Errorf("nats-server (use -no-nats to skip): %w", err)
		}
		e.natsBin = bin
		fmt.Fprintf(out, "yardstick: %s (%s), -js, file storage, work-queue stream, pull consumer with explicit ack;\n", version, bin)
		fmt.Fprintln(out, "           JetStream acknowledges a publish before fsync (it syncs every 2 min by default).")
	}
	var results []result
	ran := 0
	for _, w := range workloads(f) {
		if !strings.Contains(w.name, f.only) {
			continue
		}
		ran++
		fmt.Fprintf(out, "running %s ...\n", w.name)
		e.current = w.name
		rs, err := w.run(ctx, e)
		if err != nil {
			return fmt.Errorf("%s: %w", w.name, err)
		}
		for _, r := range rs {
			fmt.Fprintf(out, "  %-28s %-40s %12.1f %s\n", r.Workload, r.Target, r.Value, r.Unit)
		}
		results = append(results, rs...)
	}
	if ran == 0 {
		hint := ""
		if f.cluster == 0 {
			hint = " (the cluster workloads run only with -cluster N)"
		}
		return fmt.Errorf("-only %q matches no workload%s", f.only, hint)
	}
	printTables(out, results)
	if f.jsonPath != "" {
		b, err := json.MarshalIndent(results, "", "  ")
		if err != nil {
			return err
		}
		return os.WriteFile(f.jsonPath, b, 0o644)
	}
	return nil
}

func printTables(out io.Writer, results []result) {
	fmt.Fprintln(out)
	fmt.Fprintln(out, "| workload | target | value | unit | note |")
	fmt.Fprintln(out, "|---|---|---:|---|---|")
	for _, r := range results {
		fmt.Fprintf(out, "| %s | %s | %.2f | %s | %s |\n", r.Workload, r.Target, r.Value, r.Unit, r.Note)
	}
	// filad/NATS ratios for the workloads both ran, per yardstick.
	for _, yardstick := range []string{targetNATS, targetNATSAlways} {
		printRatios(out, results, yardstick)
	}
}

// printRatios prints filad's figures over the yardstick's for each workload
// (msg/s, or CPU per message) that both ran.
func printRatios(out io.Writer, results []result, yardstick string) {
	base := map[string]float64{}
	for _, r := range results {
		if r.Target == yardstick {
			base[r.Workload] = r.Value
		}
	}
	if len(base) == 0 {
		return
	}
	fmt.Fprintln(out)
	fmt.Fprintf(out, "| workload | filad (sync_writes=true) / %[1]s | filad (sync_writes=false) / %[1]s |\n", yardstick)
	fmt.Fprintln(out, "|---|---:|---:|")
	ratio := map[string]map[string]float64{}
	var order []string
	for _, r := range results {
		n, ok := base[r.Workload]
		if !ok || (r.Target != targetSync && r.Target != targetNoSync) {
			continue
		}
		if ratio[r.Workload] == nil {
			ratio[r.Workload] = map[string]float64{}
			order = append(order, r.Workload)
		}
		ratio[r.Workload][r.Target] = r.Value / n
	}
	cell := func(w, target string) string {
		if v, ok := ratio[w][target]; ok {
			return fmt.Sprintf("%.2f", v)
		}
		return "–"
	}
	for _, w := range order {
		fmt.Fprintf(out, "| %s | %s | %s |\n", w, cell(w, targetSync), cell(w, targetNoSync))
	}
}
