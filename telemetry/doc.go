// Package telemetry is what filad's core records telemetry with: the names
// of every span and metric (names.go), the per-queue readings board and the
// instruments that read it, the small carrier that moves a span context
// through an actor envelope, and the slog handler that adds trace ids. It
// links the OpenTelemetry API only; exporters are set up by its subpackage
// otlpexport, which only server (and so cmd/filad) links. telemetrytest is
// the in-memory harness the tests use.
package telemetry
