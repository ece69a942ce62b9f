#!/usr/bin/env bash
# Release build: static filad and fila binaries with the version and commit
# stamped in, for linux and darwin on amd64 and arm64.
#
#   scripts/release.sh [--host] [--out DIR]
#
# VERSION (default: `git describe --tags --dirty`, else 0.1.0-dev: a clone
# without tags is 0.1.0-dev, and the commit says which)
# and COMMIT (default: the short commit of HEAD) may be set in the
# environment. --host builds only this machine's platform, as
# filad-<os>-<arch> and fila-<os>-<arch> in DIR (default dist/); the
# Dockerfile's build stage and CI use it.
set -euo pipefail
cd "$(dirname "$0")/.."

out=dist
platforms=(linux/amd64 linux/arm64 darwin/amd64 darwin/arm64)
while [[ $# -gt 0 ]]; do
  case "$1" in
    --host) platforms=("$(go env GOOS)/$(go env GOARCH)"); shift ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: $0 [--host] [--out DIR]" >&2; exit 2 ;;
  esac
done
version="${VERSION:-$(git describe --tags --dirty 2>/dev/null || echo 0.1.0-dev)}"
commit="${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
pkg=github.com/fila-dev/filad/telemetry
ldflags="-s -w -X ${pkg}.Version=${version} -X ${pkg}.Commit=${commit}"

mkdir -p "$out"
for platform in "${platforms[@]}"; do
  os="${platform%/*}" arch="${platform#*/}"
  for cmd in filad fila; do
    CGO_ENABLED=0 GOOS="$os" GOARCH="$arch" go build -trimpath -ldflags "$ldflags" \
      -o "$out/${cmd}-${os}-${arch}" "./cmd/${cmd}"
  done
  echo "built $out/filad-${os}-${arch} and $out/fila-${os}-${arch} (${version}, commit ${commit})"
done
