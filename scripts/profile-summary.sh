#!/usr/bin/env bash
# profile-summary.sh: where a filad CPU profile's time goes, by layer.
#
#   scripts/profile-summary.sh PROFILE.cpu.pprof...
#
# Each row is the share of the profile's samples whose stack passes
# through the pattern (pprof -focus), so rows overlap (badger's msync is
# inside badger; the actors run inside protoactor). Profiles come from
# `filabench -server-profile DIR` (issue 27) or from server.pprof_listen_addr.
set -euo pipefail
layers=(
  'z\.msync|unix\.Msync:badger WAL msync (sync_writes)'
  'dgraph-io/badger:badger (all)'
  'syscall\.write$:socket and file writes'
  'syscall\.read$:socket reads'
  'grpc/internal/transport:grpc transport'
  'chainUnaryInterceptors:unary interceptor chain'
  'otelgrpc|otel/sdk|otel/trace:OpenTelemetry'
  'filad/gateway:filad gateway'
  'asynkron/protoactor-go:protoactor (actors run inside)'
  'filad/actors:filad actors'
  'filad/storage:filad storage'
  'google\.golang\.org/protobuf:protobuf'
  'runtime\.mallocgc:allocation'
  'runtime\.gcBgMarkWorker:GC marking'
  'runtime\.findRunnable|runtime\.schedule:scheduler'
)
for prof in "$@"; do
  total=$(go tool pprof -top -nodecount=1 "$prof" 2>/dev/null | grep -o 'Total samples = [^ ]*' || true)
  echo "## $prof ($total)"
  echo "| layer | share of samples |"
  echo "|---|---:|"
  for l in "${layers[@]}"; do
    pat=${l%%:*}
    share=$(go tool pprof -top -nodecount=1000000 -focus="$pat" "$prof" 2>/dev/null | grep -o 'accounting for [^,]*, [0-9.]*%' | grep -o '[0-9.]*%$' || echo "0%")
    echo "| ${l#*:} | $share |"
  done
  echo
done
