package telemetry

// RPCDuration is the semantic conventions' RPC server call duration, as
// otelgrpc's server handler records it for every call filad serves (a
// Consume stream's lasts as long as its consumer). Its attributes are
// otelgrpc's span attributes: rpc.system.name, the full rpc.method
// ("fila.v1.FilaService/Enqueue"), rpc.response.status_code ("OK",
// "RESOURCE_EXHAUSTED") and, for server errors, error.type; so a latency
// bucket and the spans of its calls select by the same values.
var RPCDuration = MetricSpec{Name: "rpc.server.call.duration", Unit: "s", Description: "Measures the duration of inbound remote procedure calls (RPC)."}
