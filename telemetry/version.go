package telemetry

import "runtime"

// Version is filad's version, reported as service.version and by
// `filad --version` and `fila --version`; Commit is the commit it was built
// from. Release builds set both (scripts/release.sh):
//
//	-ldflags "-X github.com/fila-dev/filad/telemetry.Version=v1.2.3 -X github.com/fila-dev/filad/telemetry.Commit=abc1234"
var (
	Version = "0.1.0-dev"
	Commit  = "unknown"
)

// VersionLine is what `--version` prints after the program's name:
// "0.1.0-dev (commit abc1234, go1.26.8 linux/amd64)".
func VersionLine() string {
	return Version + " (commit " + Commit + ", " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ")"
}
