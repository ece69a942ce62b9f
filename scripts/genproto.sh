#!/usr/bin/env bash
# Regenerates the Go code of protos/ with Debian's protoc and pinned plugins.
# With --check, regenerates into a temporary copy and fails if the committed
# code differs (stale).
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOC_GEN_GO=google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC=google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2

command -v protoc >/dev/null || { echo "protoc missing: apt-get install protobuf-compiler" >&2; exit 1; }
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
GOBIN="$bin" go install "$PROTOC_GEN_GO"
GOBIN="$bin" go install "$PROTOC_GEN_GO_GRPC"
export PATH="$bin:$PATH"

out=protos
if [[ "${1:-}" == "--check" ]]; then
  out="$bin/out"
  mkdir -p "$out"
fi
protoc -I protos \
  --go_out="$out" --go_opt=paths=source_relative \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
  $(find protos -name '*.proto' | sort)

if [[ "${1:-}" == "--check" ]]; then
  stale=0
  while IFS= read -r f; do
    rel=${f#"$out"/}
    if ! cmp -s "$f" "protos/$rel"; then
      echo "stale generated code: protos/$rel (run: task proto)" >&2
      stale=1
    fi
  done < <(find "$out" -name '*.go')
  exit $stale
fi
