package server_test

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// TestRealPrometheus (issue 21, Deliver 11): a real Prometheus (Debian's
// prometheus package; CI installs it) scrapes filad's /metrics as
// OpenMetrics with exemplar storage on and loads deploy/prometheus/rules.yml.
// After traffic that gives every series a value, every query of the
// dashboard returns data, every rule evaluates cleanly, the alerts the
// traffic provokes go pending or firing (the rest are explained below,
// with a query of their inputs that must return data), and a wait bucket's
// exemplar carries a trace id. Without prometheus on PATH it skips, unless
// FILA_REQUIRE_PROMETHEUS is set (CI sets it).
func TestRealPrometheus(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("FILA_REQUIRE_PROMETHEUS") != "" {
			t.Fatalf("FILA_REQUIRE_PROMETHEUS is set and prometheus is not on PATH: %v", err)
		}
		t.Skip("prometheus is not on PATH (apt-get install prometheus); CI runs this test")
	}
	t.Parallel()
	// A dead OTLP endpoint: spans are still sampled (so buckets get
	// exemplars) and every export fails (so the export alert has cause).
	b := everyMetricBroker(t, "http://127.0.0.1:1")
	// A one-node cluster beside it, for the cluster row and alerts.
	cb := clusterMetricBroker(t)
	prom := startPrometheus(t, bin, b.srv.PrometheusAddr().String(), cb.srv.PrometheusAddr().String())

	prom.await(t, `count(up{job="filad"} == 1) == 2`, "Prometheus scrapes both filads")
	exerciseEveryMetric(t, b)
	// A dead-lettering Prometheus sees happen: the counter is scraped at 0
	// first, so its increase is real.
	b.createQueue(t, "lintdl", &filav1.QueueConfig{MaxAttempts: 1})
	b.enqueue(t, "lintdl", nil, nil)
	b.sync(t, "lintdl")
	prom.await(t, `fila_messages_dead_lettered_total{queue_id="lintdl"} == 0`, "the DLQ counter scraped at 0")
	stream, cancel := b.lease(t, "lintdl")
	m := recvN(t, stream, 1)[0]
	_, err = b.svc.Nack(ctxT(t), &filav1.NackRequest{Queue: "lintdl", MessageId: m.GetId(), LeaseId: m.GetLeaseId()})
	require.NoError(t, err)
	cancel()
	b.sync(t, "lintdl")
	// A second wave, once Prometheus has scraped the first: a series'
	// first sample starts its rate, so a histogram filled before it was
	// ever scraped has a rate of 0 (and a quantile of NaN). More free
	// deliveries while "held" waits keep that key starved.
	prom.await(t, `fila_messages_refused_total{queue_id="linttiny",reason="max_depth"} == 1`, "Prometheus has the first wave")
	for _, h := range []map[string]string{{"fila-fairness-key": "free"}, {"fila-fairness-key": "free"}, {"boom": "1"}} {
		b.enqueue(t, "lintlua", h, nil)
	}
	b.enqueue(t, "lintdl", nil, []byte("second wave"))
	stream, cancel = b.lease(t, "lintdl")
	m = recvN(t, stream, 1)[0]
	_, err = b.svc.Ack(ctxT(t), &filav1.AckRequest{Queue: "lintdl", MessageId: m.GetId(), LeaseId: m.GetLeaseId()})
	require.NoError(t, err)
	cancel()
	b.sync(t, "lintlua", "lintdl")
	// The cluster's second wave, once its histograms were scraped.
	prom.await(t, `fila_raft_commit_duration_seconds_count > 0`, "Prometheus has the cluster's first wave")
	exerciseCluster(t, cb)

	// The rules first: the starved key's fair share looks back 60 s.
	t.Run("every rule evaluates; the alerts the traffic provokes are active", rulesEvaluate(prom))
	t.Run("every dashboard query returns data", func(t *testing.T) {
		for _, q := range dashboardQueries(t) {
			expr := strings.NewReplacer(`$job`, "filad", `$instance`, ".*", `$queue`, ".*", `$__rate_interval`, "5m").Replace(q.expr)
			var got []promSample
			prom.awaitFn(t, func() bool { got = prom.query(t, expr); return hasNumber(got) },
				fmt.Sprintf("panel %q returns a number: %s", q.panel, expr))
			t.Logf("panel %-58q %3d series, e.g. %s", q.panel, len(got), example(got))
		}
	})

	t.Run("exemplars reach Prometheus", func(t *testing.T) {
		var ex []string
		prom.awaitFn(t, func() bool {
			ex = prom.exemplarTraceIDs(t, `fila_message_wait_duration_seconds_bucket`)
			return len(ex) > 0
		}, "wait buckets carry exemplars")
		require.Len(t, ex[0], 32, "a trace id")
		t.Logf("exemplars on fila_message_wait_duration_seconds_bucket: %d, e.g. trace_id=%s", len(ex), ex[0])
	})
}

// rulesEvaluate checks every rule of deploy/prometheus/rules.yml in prom.
func rulesEvaluate(prom *prometheus) func(t *testing.T) {
	return func(t *testing.T) {
		// Alerts this traffic cannot provoke in a test's time, each with a
		// query of its inputs that must return data.
		quiet := map[string]struct{ why, inputs string }{
			"FilaQueueBacklogGrowing":      {"needs depth > 1,000 growing for 15 m", `deriv(fila_queue_depth[10m])`},
			"FilaOldestReadyMessageTooOld": {"needs a ready message waiting 5 m", `fila_queue_oldest_ready_age_seconds`},
			"FilaResourceAlarm":            {"no alarm is raised (the disk has room)", `fila_alarm_active_ratio`},
			"FilaDiskNearAlarm":            {"the disk has room (it may fire on a nearly full one)", `instance:fila_storage_disk_free:ratio_min_free`},
			"FilaCommitLatencyHigh":        {"commits take well under 100 ms at p99 (it may fire on a very slow disk)", `queue:fila_storage_commit_duration_seconds:p99_5m`},
			"FilaPartitionWithoutLeader":   {"the one-node cluster leads every partition", `fila_raft_partitions_led`},
			"FilaRaftApplyLagHigh":         {"a lone node applies what it commits at once", `fila_raft_apply_lag`},
		}
		active := []string{"FilaDeadLettering", "FilaNoConsumers", "FilaTelemetryExportFailing", "FilaFairnessKeyStarved"}
		var rules []promRule
		prom.awaitFn(t, func() bool {
			rules = prom.rules(t)
			for _, r := range rules {
				if r.LastEvaluation.Before(prom.started) {
					return false
				}
			}
			return len(rules) > 0
		}, "every rule evaluated")
		for _, r := range rules {
			require.Equal(t, "ok", r.Health, "rule %s: %s", r.Name, r.LastError)
			switch {
			case r.Type == "recording":
				var got []promSample
				prom.awaitFn(t, func() bool { got = prom.query(t, r.Name); return hasNumber(got) }, "recording rule "+r.Name+" has data")
				t.Logf("record %-50s %3d series, e.g. %s", r.Name, len(got), example(got))
			case slices.Contains(active, r.Name):
				prom.awaitFn(t, func() bool { return prom.alertState(t, r.Name) != "" }, "alert "+r.Name+" pending or firing")
				t.Logf("alert  %-50s %s", r.Name, prom.alertState(t, r.Name))
			default:
				q, ok := quiet[r.Name]
				require.True(t, ok, "alert %s is neither provoked nor explained", r.Name)
				prom.awaitFn(t, func() bool { return hasNumber(prom.query(t, q.inputs)) }, "the inputs of "+r.Name)
				t.Logf("alert  %-50s quiet (%s); its inputs %s have data", r.Name, q.why, q.inputs)
			}
		}
	}
}

// TestPromtoolRules (issue 21, Deliver 10): deploy/prometheus/rules.yml
// passes promtool check rules, and its unit tests (rules_test.yml: every
// alert fires on the series it is for, and stays quiet before) pass.
func TestPromtoolRules(t *testing.T) {
	bin, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("FILA_REQUIRE_PROMETHEUS") != "" {
			t.Fatalf("FILA_REQUIRE_PROMETHEUS is set and promtool is not on PATH: %v", err)
		}
		t.Skip("promtool is not on PATH (apt-get install prometheus); CI runs this test")
	}
	t.Parallel()
	for _, args := range [][]string{{"check", "rules", "rules.yml"}, {"test", "rules", "rules_test.yml"}} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = "../deploy/prometheus"
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "promtool %v:\n%s", args, out)
		t.Logf("promtool %s: %s", strings.Join(args, " "), strings.TrimSpace(string(out)))
	}
}

// prometheus is a Prometheus process started for one test.
type prometheus struct {
	base    string
	started time.Time
}

// startPrometheus runs bin scraping targets (one job) every second and
// evaluating deploy/prometheus/rules.yml every second, and stops it when
// the test ends.
func startPrometheus(t *testing.T, bin string, targets ...string) *prometheus {
	t.Helper()
	rules, err := filepath.Abs("../deploy/prometheus/rules.yml")
	require.NoError(t, err)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [%q]
scrape_configs:
  - job_name: filad
    static_configs: [{targets: [%s]}]
`, rules, quoteAll(targets))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close())
	var logs strings.Builder
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--enable-feature=exemplar-storage", "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("prometheus output:\n%s", logs.String())
		}
	})
	p := &prometheus{base: "http://" + addr, started: time.Now()}
	p.awaitFn(t, func() bool {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("prometheus exited: %v\n%s", err, logs.String())
		default:
		}
		resp, err := http.Get(p.base + "/-/ready")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "prometheus ready")
	return p
}

// awaitFn polls cond until it holds, for up to a minute (Prometheus scrapes
// and evaluates every second; a busy machine can lag a few).
func (p *prometheus) awaitFn(t *testing.T, cond func() bool, what string) {
	t.Helper()
	require.Eventually(t, cond, time.Minute, 100*time.Millisecond, what)
}

// await polls until expr returns a number.
func (p *prometheus) await(t *testing.T, expr, what string) {
	t.Helper()
	p.awaitFn(t, func() bool { return hasNumber(p.query(t, expr)) }, what)
}

func (p *prometheus) get(t *testing.T, path string, params url.Values, into any) {
	t.Helper()
	resp, err := http.Get(p.base + path + "?" + params.Encode())
	require.NoError(t, err)
	defer resp.Body.Close()
	var env struct {
		Status, Error string
		Data          json.RawMessage
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&env))
	require.Equal(t, "success", env.Status, "%s %v: %s", path, params, env.Error)
	require.NoError(t, json.Unmarshal(env.Data, into))
}

// promSample is one series of an instant query's answer.
type promSample struct {
	Metric map[string]string
	Value  [2]any
}

func (s promSample) String() string {
	labels := make([]string, 0, len(s.Metric))
	for k, v := range s.Metric {
		if !strings.HasPrefix(k, "otel_scope") {
			labels = append(labels, k+"="+strconv.Quote(v))
		}
	}
	slices.Sort(labels)
	return fmt.Sprintf("{%s} %v", strings.Join(labels, ","), s.Value[1])
}

func (p *prometheus) query(t *testing.T, expr string) []promSample {
	t.Helper()
	var data struct {
		ResultType string
		Result     []promSample
	}
	p.get(t, "/api/v1/query", url.Values{"query": {expr}}, &data)
	require.Equal(t, "vector", data.ResultType, expr)
	return data.Result
}

// hasNumber: some series has a value that is a number (not NaN, as a
// quantile of nothing is).
func hasNumber(ss []promSample) bool {
	_, ok := firstNumber(ss)
	return ok
}

// firstNumber is the first series whose value is a number.
func firstNumber(ss []promSample) (promSample, bool) {
	for _, s := range ss {
		if v, err := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64); err == nil && !math.IsNaN(v) {
			return s, true
		}
	}
	return promSample{}, false
}

// example is got's first series with a number, for the test's log.
func example(got []promSample) string {
	s, _ := firstNumber(got)
	return s.String()
}

type promRule struct {
	Name, Type, Health, LastError string
	LastEvaluation                time.Time
}

func (p *prometheus) rules(t *testing.T) []promRule {
	t.Helper()
	var data struct{ Groups []struct{ Rules []promRule } }
	p.get(t, "/api/v1/rules", url.Values{}, &data)
	var out []promRule
	for _, g := range data.Groups {
		out = append(out, g.Rules...)
	}
	return out
}

// alertState is "pending" or "firing" if alert name is active, else "".
func (p *prometheus) alertState(t *testing.T, name string) string {
	t.Helper()
	var data struct {
		Alerts []struct {
			Labels map[string]string
			State  string
		}
	}
	p.get(t, "/api/v1/alerts", url.Values{}, &data)
	for _, a := range data.Alerts {
		if a.Labels["alertname"] == name {
			return a.State
		}
	}
	return ""
}

func (p *prometheus) exemplarTraceIDs(t *testing.T, expr string) []string {
	t.Helper()
	var data []struct {
		Exemplars []struct{ Labels map[string]string }
	}
	now := time.Now()
	p.get(t, "/api/v1/query_exemplars", url.Values{"query": {expr},
		"start": {strconv.FormatInt(p.started.Unix()-60, 10)}, "end": {strconv.FormatInt(now.Unix()+60, 10)}}, &data)
	var out []string
	for _, s := range data {
		for _, e := range s.Exemplars {
			if id := e.Labels["trace_id"]; id != "" {
				out = append(out, id)
			}
		}
	}
	return out
}

// quoteAll is targets as a YAML flow list's items.
func quoteAll(targets []string) string {
	q := make([]string, len(targets))
	for i, t := range targets {
		q[i] = strconv.Quote(t)
	}
	return strings.Join(q, ", ")
}

// dashboardQuery is one query of deploy/grafana/filad.json.
type dashboardQuery struct{ panel, expr string }

func dashboardQueries(t *testing.T) []dashboardQuery {
	t.Helper()
	raw, err := os.ReadFile("../deploy/grafana/filad.json")
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			Type, Title string
			Targets     []struct{ Expr string }
		}
	}
	require.NoError(t, json.Unmarshal(raw, &dash))
	var out []dashboardQuery
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			out = append(out, dashboardQuery{p.Title, tg.Expr})
		}
	}
	require.NotEmpty(t, out)
	return out
}
