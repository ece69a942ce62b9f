package telemetry

// Version is filad's version, reported as service.version and by
// `filad --version` and `fila --version`. Release builds set it with
// -ldflags "-X github.com/fila-dev/filad/telemetry.Version=v1.2.3".
var Version = "0.1.0-dev"
