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

	"github.com/stretchr/testify/require"

	"github.com/fila-dev/filad/actors"
	"github.com/fila-dev/filad/config"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// TestDashboardUsesOnlyExportedMetrics lints deploy/grafana/filad.json:
// every metric name in its queries must be one filad exports, as
// Prometheus names it (scraped from filad's own /metrics after traffic
// that makes every series appear), so the dashboard cannot rot.
func TestDashboardUsesOnlyExportedMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{cfg: func(c *config.Config) {
		tc := config.TelemetryDefaults()
		tc.OTLPEndpoint, tc.PrometheusListenAddr = "", "127.0.0.1:0"
		c.Telemetry = &tc
	}})
	exerciseEveryMetric(t, b)

	resp, err := http.Get("http://" + b.srv.PrometheusAddr().String() + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	exported := map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			exported[regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*`).FindString(line)] = true
		}
	}

	raw, err := os.ReadFile("../deploy/grafana/filad.json")
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct{ List []struct{ Query string } }
	}
	require.NoError(t, json.Unmarshal(raw, &dash))
	exprs := []string{}
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, "panel %q has queries", p.Title)
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		exprs = append(exprs, v.Query)
	}
	metricName := regexp.MustCompile(`\b(?:fila|rpc|go)_[a-zA-Z0-9_]+`)
	grouping := regexp.MustCompile(`\b(?:by|without) \([^)]*\)`) // label names, not metrics
	used := 0
	for _, e := range exprs {
		for _, name := range metricName.FindAllString(grouping.ReplaceAllString(e, ""), -1) {
			used++
			require.True(t, exported[name], "the dashboard queries %s, which filad does not export (query: %s; filad exports %v)", name, e, names(exported))
		}
	}
	require.Greater(t, used, 20, "the lint saw the dashboard's metrics")
}

// exerciseEveryMetric makes traffic that gives every metric a series: a
// fairness window's deliveries over keys, a nack, an expiry into the DLQ,
// a redrive and a delayed message.
func exerciseEveryMetric(t *testing.T, b *bundle) {
	t.Helper()
	b.createQueue(t, "lint", &filav1.QueueConfig{MaxAttempts: 1, VisibilityTimeoutMs: 500})
	var reqs []*filav1.EnqueueRequest
	for i := range actors.FairnessWindow {
		reqs = append(reqs, &filav1.EnqueueRequest{Queue: "lint", Headers: map[string]string{"fila-fairness-key": []string{"a", "b"}[i%2]}})
	}
	_, err := b.svc.EnqueueBatch(ctxT(t), &filav1.EnqueueBatchRequest{Messages: reqs})
	require.NoError(t, err)
	stream, err := b.svc.Consume(ctxT(t), &filav1.ConsumeRequest{Queue: "lint", MaxInFlight: 1000, MaxBatch: 100})
	require.NoError(t, err)
	var ms []*filav1.Message
	for len(ms) < actors.FairnessWindow {
		resp, err := stream.Recv()
		require.NoError(t, err)
		if len(ms) == 0 {
			first := resp.GetMessages()[0]
			_, err = b.svc.Nack(ctxT(t), &filav1.NackRequest{Queue: "lint", MessageId: first.GetId(), LeaseId: first.GetLeaseId()})
			require.NoError(t, err)
		}
		ms = append(ms, resp.GetMessages()...)
	}
	// The rest expire (500 ms leases) into the DLQ; one comes back.
	eventually(t, func() bool { return b.stats(t, "lint.dlq").GetDepth() == uint64(actors.FairnessWindow) }, "all in the DLQ")
	_, err = b.admin.Redrive(ctxT(t), &filav1.RedriveRequest{DlqQueue: "lint.dlq", Count: 1})
	require.NoError(t, err)
	recvN(t, stream, 1) // delivered again: a redelivery
	b.enqueue(t, "lint", map[string]string{"fila-delay-ms": "600000"}, nil)
	b.sync(t, "lint", "lint.dlq")
}

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
