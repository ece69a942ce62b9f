// Package telemetry sets up OpenTelemetry for filad: the OTLP/gRPC exporters,
// the W3C propagators, the fila.* instruments, and the small carrier that
// moves a span context through an actor envelope. Its subpackage
// telemetrytest is the in-memory harness the tests use.
package telemetry
