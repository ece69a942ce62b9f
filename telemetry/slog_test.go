package telemetry

import (
	"bytes"
	"context"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"
)

// TestLogHandlerLogsOnlySampledTraceIDs (issue 21, Deliver 5): a log line
// carries trace_id and span_id only when they lead to an exported trace.
func TestLogHandlerLogsOnlySampledTraceIDs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		flags trace.TraceFlags
		want  bool
	}{{"sampled", trace.FlagsSampled, true}, {"unsampled", 0, false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			log := slog.New(LogHandler{slog.NewJSONHandler(&out, nil)})
			sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: tc.flags})
			log.InfoContext(trace.ContextWithSpanContext(context.Background(), sc), "hello")
			require.Equal(t, tc.want, bytes.Contains(out.Bytes(), []byte(`"trace_id":"01000000000000000000000000000000"`)), out.String())
			require.Equal(t, tc.want, bytes.Contains(out.Bytes(), []byte(`"span_id":"0200000000000000"`)), out.String())
		})
	}
}
