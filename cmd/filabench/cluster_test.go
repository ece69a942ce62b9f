package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestParseHistogram(t *testing.T) {
	text := `# HELP fila_raft_entries_per_append Raft entries per log append.
# TYPE fila_raft_entries_per_append histogram
fila_raft_entries_per_append_bucket{le="1"} 3
fila_raft_entries_per_append_sum{otel_scope_name="x"} 120
fila_raft_entries_per_append_count{otel_scope_name="x"} 10
fila_raft_entries_per_append_sum{otel_scope_name="y"} 30 1733097600000
fila_raft_entries_per_append_count{otel_scope_name="y"} 5
fila_raft_entries_per_append_other 99
`
	v, err := parseHistogram(strings.NewReader(text), entriesPerAppend)
	if err != nil {
		t.Fatal(err)
	}
	if v != [2]float64{150, 15} {
		t.Fatalf("sum, count = %v, want [150 15]", v)
	}
	if _, err := parseHistogram(strings.NewReader("fila_storage_commit_messages_sum 3\n"), entriesPerAppend); err == nil {
		t.Fatal("a scrape without the histogram gave no error")
	}
}

// TestClusterFailover runs the failover workload once on three real
// filad processes: the partition leader found, killed, an enqueue and a
// delivery through a survivor that succeed, the node restarted.
func TestClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three filad processes")
	}
	ctx, e := testBench(t, benchFlags{messages: 300, clusterBacklog: 300}, 3*time.Minute)
	rs, err := e.clusterFailover(ctx, 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 4 {
		t.Fatalf("want p50 and max of the enqueue and of the delivery, got %+v", rs)
	}
	for i := 0; i < 4; i += 2 {
		if rs[i].Unit != "ms p50" || rs[i].Value <= 0 || rs[i+1].Value < rs[i].Value {
			t.Fatalf("results: %+v", rs)
		}
	}
}

// The idle workload measures every node: a share of a core and the bytes
// written, which heartbeats make more than zero on every node.
func TestClusterIdle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three filad processes")
	}
	ctx, e := testBench(t, benchFlags{short: true}, 3*time.Minute)
	rs, err := e.clusterIdle(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 6 {
		t.Fatalf("want a CPU share and a write rate per node, got %+v", rs)
	}
	for _, r := range rs {
		// A share of a core can round to 0 in a short window (the clock
		// ticks in 10 ms); bytes written cannot, with heartbeats flowing.
		cpu := r.Unit == "% of one core"
		if (cpu && (r.Value < 0 || r.Value > 100*float64(runtime.NumCPU()))) || (!cpu && r.Value <= 0) {
			t.Fatalf("implausible: %+v", r)
		}
	}
}

// The catch-up workload replaces a dead follower of three real filad
// processes by a fourth, which joins and becomes a voter, and removes the
// dead one; the leader's enqueues are timed before and during.
func TestClusterCatchup(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four filad processes")
	}
	ctx, e := testBench(t, benchFlags{short: true}, 4*time.Minute)
	rs, err := e.clusterCatchup(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 5 || rs[0].Value <= 0 || rs[1].Value < rs[0].Value || rs[2].Value <= 0 || rs[3].Value <= 0 {
		t.Fatalf("results: %+v", rs)
	}
}

// testBench is a bench with flags whose output is discarded, the filad it
// builds removed after the test, and a context that bounds the test.
func testBench(t *testing.T, f benchFlags, bound time.Duration) (context.Context, *bench) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	e := &bench{f: f, out: io.Discard}
	t.Cleanup(func() {
		cancel()
		if e.filadBin != "" {
			_ = os.RemoveAll(filepath.Dir(e.filadBin))
		}
	})
	return ctx, e
}
