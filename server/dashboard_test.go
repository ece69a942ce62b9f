package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/config"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/server"
	"github.com/fila-dev/filad/telemetry"
)

// TestDashboardUsesOnlyExportedMetrics lints deploy/grafana/filad.json:
// every metric name in its queries must be one filad exports, as
// Prometheus names it (scraped from filad's own /metrics after traffic
// that makes every series appear), so the dashboard cannot rot.
func TestDashboardUsesOnlyExportedMetrics(t *testing.T) {
	t.Parallel()
	b := everyMetricBroker(t, "")
	exerciseEveryMetric(t, b)
	exported := map[string]bool{}
	scraped := scrapeMetrics(t, b) + "\n" + scrapeCluster(t)
	for _, line := range strings.Split(scraped, "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			exported[regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*`).FindString(line)] = true
		}
	}

	raw, err := os.ReadFile("../deploy/grafana/filad.json")
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			Type, Title string
			Targets     []struct{ Expr string }
		}
		Templating struct{ List []struct{ Query string } }
	}
	require.NoError(t, json.Unmarshal(raw, &dash))
	exprs := []string{}
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		require.NotEmpty(t, p.Targets, "panel %q has queries", p.Title)
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		exprs = append(exprs, v.Query)
	}
	metricName := regexp.MustCompile(`\b(?:fila|rpc|go|process)_[a-zA-Z0-9_]+`)
	grouping := regexp.MustCompile(`\b(?:by|without) \([^)]*\)`)                         // label names, not metrics
	matcher := regexp.MustCompile(`\b[a-zA-Z_][a-zA-Z0-9_]*\s*(?:=~|!~|!=|=)\s*"[^"]*"`) // label matchers
	used := 0
	for _, e := range exprs {
		for _, name := range metricName.FindAllString(matcher.ReplaceAllString(grouping.ReplaceAllString(e, ""), ""), -1) {
			used++
			require.True(t, exported[name], "the dashboard queries %s, which filad does not export (query: %s; filad exports %v)", name, e, names(exported))
		}
	}
	require.Greater(t, used, 20, "the lint saw the dashboard's metrics")
}

// everyMetricBroker starts filad serving /metrics, with auth on (its
// clients carry the bootstrap key) so the auth metrics have series, OTLP
// to otlp (every trace sampled, so the histograms carry exemplars; "": no
// OTLP) and exports that give up fast.
func everyMetricBroker(t *testing.T, otlp string) *bundle {
	t.Helper()
	b := setup(t, setupOpts{cfg: func(c *config.Config) {
		tc := config.TelemetryDefaults()
		tc.OTLPEndpoint, tc.PrometheusListenAddr, tc.TraceSampleRatio, tc.MetricsIntervalMS = otlp, "127.0.0.1:0", 1, 200
		c.Telemetry = &tc
		c.Auth = config.Auth{Mode: "on", BootstrapKey: bootstrapKey}
		c.Lua.CircuitBreakerCooldownMS = 100 // a broken script runs again soon
	}, opts: server.Options{ExportTimeout: 200 * time.Millisecond}})
	return asKey(t, b, bootstrapKey)
}

// scrapeCluster returns the /metrics of a one-node cluster that wrote a
// message: the fila.raft.* series. Nothing forwards a call or sends a
// snapshot to a lone node, so the test records one of each itself, as the
// proxy and the snapshot transfer do (Server.ClusterMetrics).
func scrapeCluster(t *testing.T) string {
	t.Helper()
	b := clusterMetricBroker(t)
	exerciseCluster(t, b)
	return scrapeMetrics(t, b)
}

// clusterMetricBroker starts a one-node cluster serving /metrics, with a
// queue to write to.
func clusterMetricBroker(t *testing.T) *bundle {
	t.Helper()
	b := setup(t, setupOpts{cfg: func(c *config.Config) {
		tc := config.TelemetryDefaults()
		tc.OTLPEndpoint, tc.PrometheusListenAddr, tc.MetricsIntervalMS = "", "127.0.0.1:0", 200
		c.Telemetry = &tc
		oneNodeCluster(c)
	}})
	b.createQueue(t, "lintcluster", nil)
	return b
}

// exerciseCluster writes through b's raft log and records a forwarded
// call and a snapshot.
func exerciseCluster(t *testing.T, b *bundle) {
	t.Helper()
	b.enqueue(t, "lintcluster", nil, []byte("x"))
	m := b.srv.ClusterMetrics()
	require.NotNil(t, m)
	m.Forwarded(ctxT(t), "/fila.v1.FilaService/Enqueue")
	m.Snapshot(ctxT(t), telemetry.SnapshotSent, 1<<20, time.Second)
}

// scrapeMetrics returns filad's /metrics in the text format.
func scrapeMetrics(t *testing.T, b *bundle) string {
	t.Helper()
	resp, err := http.Get("http://" + b.srv.PrometheusAddr().String() + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(body)
}

// exerciseEveryMetric makes traffic that gives every metric a series:
// deliveries over two fairness keys, a nack, an expiry into the DLQ, a
// redrive and a delayed message (queue lint); a Lua hook that fails until
// its breaker opens, a throttle that passes one message and holds the
// next, which starves its fairness key (lintlua); a max_depth refusal, left
// with a message and no consumer (linttiny); and a call with a bad key.
func exerciseEveryMetric(t *testing.T, b *bundle) {
	t.Helper()
	// The first is nacked on a lease of the default length, which its Nack
	// cannot outlast; the others are leased for 500 ms, to expire.
	b.createQueue(t, "lint", &filav1.QueueConfig{MaxAttempts: 1})
	var reqs []*filav1.EnqueueRequest
	for i := range lintMessages {
		reqs = append(reqs, &filav1.EnqueueRequest{Queue: "lint", Headers: map[string]string{"fila-fairness-key": []string{"a", "b"}[i%2]}})
	}
	_, err := b.svc.EnqueueBatch(ctxT(t), &filav1.EnqueueBatchRequest{Messages: reqs[:1]})
	require.NoError(t, err)
	stream, err := b.svc.Consume(ctxT(t), &filav1.ConsumeRequest{Queue: "lint", MaxInFlight: 1000, MaxBatch: 100})
	require.NoError(t, err)
	resp, err := stream.Recv()
	require.NoError(t, err)
	first := resp.GetMessages()[0]
	_, err = b.svc.Nack(ctxT(t), &filav1.NackRequest{Queue: "lint", MessageId: first.GetId(), LeaseId: first.GetLeaseId()})
	require.NoError(t, err)
	b.setVisibilityTimeout(t, "lint", 500)
	_, err = b.svc.EnqueueBatch(ctxT(t), &filav1.EnqueueBatchRequest{Messages: reqs[1:]})
	require.NoError(t, err)
	for leased := 1; leased < lintMessages; leased += len(resp.GetMessages()) {
		resp, err = stream.Recv()
		require.NoError(t, err)
	}
	// The rest expire (500 ms leases) into the DLQ; one comes back.
	eventually(t, func() bool { return b.stats(t, "lint.dlq").GetDepth() == lintMessages }, "all in the DLQ")
	_, err = b.admin.Redrive(ctxT(t), &filav1.RedriveRequest{DlqQueue: "lint.dlq", Count: 1})
	require.NoError(t, err)
	recvN(t, stream, 1) // delivered again: a redelivery
	b.enqueue(t, "lint", map[string]string{"fila-delay-ms": "600000"}, nil)

	_, err = b.admin.SetConfig(ctxT(t), &filav1.SetConfigRequest{Key: "throttle.lint", Value: "0.001,1"})
	require.NoError(t, err)
	b.createQueue(t, "lintlua", &filav1.QueueConfig{OnEnqueueScript: `function on_enqueue(msg)
  if msg.headers["boom"] then error("boom") end
  if msg.headers["fila-fairness-key"] == "held" then return { throttle_keys = { "lint" } } end
  return {}
end`})
	for range 2 {
		b.enqueue(t, "lintlua", map[string]string{"fila-fairness-key": "held"}, nil)
	}
	for range 30 {
		b.enqueue(t, "lintlua", map[string]string{"fila-fairness-key": "free"}, nil)
	}
	for range 3 { // the default circuit_breaker_threshold: the breaker opens
		b.enqueue(t, "lintlua", map[string]string{"boom": "1"}, nil)
	}
	luaStream, err := b.svc.Consume(ctxT(t), &filav1.ConsumeRequest{Queue: "lintlua", MaxInFlight: 100})
	require.NoError(t, err)
	// One held (the bucket's one token; the other waits: "held" starves),
	// the free ones, the boom ones (the queue's defaults applied).
	recvN(t, luaStream, 1+30+3)

	b.createQueue(t, "linttiny", &filav1.QueueConfig{MaxDepth: 1, MaxBytes: 1 << 20})
	b.enqueue(t, "linttiny", nil, []byte("x"))
	_, err = b.svc.Enqueue(ctxT(t), &filav1.EnqueueRequest{Queue: "linttiny"})
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "max_depth refuses")
	_, err = filav1.NewFilaServiceClient(dial(t, b.srv.Addr())).Enqueue(ctxT(t), &filav1.EnqueueRequest{Queue: "lint"})
	require.Equal(t, codes.Unauthenticated, status.Code(err), "no key, an auth failure")
	b.sync(t, "lint", "lint.dlq", "lintlua", "linttiny")
}

// lintMessages is how many messages exerciseEveryMetric sends through.
const lintMessages = 100

func names(set map[string]bool) []string {
	var out []string
	for n := range set {
		if strings.HasPrefix(n, "fila_") || strings.HasPrefix(n, "rpc_") {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}
