#!/usr/bin/env bash
# cluster.sh: a filad cluster of N nodes on 127.0.0.1, for trying it out.
#
#   scripts/cluster.sh up [N]    build filad once (./bin/filad), start N nodes (default 3)
#   scripts/cluster.sh status    which nodes run, with their addresses
#   scripts/cluster.sh kill I    kill -9 node I (a crash: no shutdown code runs)
#   scripts/cluster.sh start I   start node I again on its data directory (it rejoins)
#   scripts/cluster.sh join      start node N+1, which joins the running cluster (cluster.join)
#   scripts/cluster.sh down      SIGTERM every node by the pid it wrote, wait, report
#
# Node I serves clients on 127.0.0.1:555(4+I) and the other nodes on
# 127.0.0.1:755(4+I) (the internal port); its data directory is
# ./data/nI/data, its log ./data/nI/filad.log and its pid ./data/nI/filad.pid.
# Every setting is a FILA_<SECTION>__<KEY> variable (README, Configuration);
# a FILA_* variable set in the caller's environment reaches every node too.
# CLUSTER_ROOT moves ./data elsewhere. Run it from anywhere in the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${CLUSTER_ROOT:-$PWD/data}
bin=$PWD/bin/filad
ready_timeout=60 # seconds a node may take to serve (a majority must be up)
stop_timeout=20  # seconds a node may take to stop on SIGTERM

client_addr() { echo "127.0.0.1:$((5554 + $1))"; }
internal_addr() { echo "127.0.0.1:$((7554 + $1))"; }
dir() { echo "$root/n$1"; }

# size is N, as `up` recorded it.
size() {
  [[ -f $root/cluster.size ]] || { echo "cluster.sh: no cluster in $root (run: scripts/cluster.sh up 3)" >&2; exit 1; }
  cat "$root/cluster.size"
}

# pid_of prints node I's pid if that process runs and is filad (a pid
# file outlives its process, and the number may have been reused).
pid_of() {
  local f pid
  f=$(dir "$1")/filad.pid
  [[ -f $f ]] || return 1
  pid=$(cat "$f")
  [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q filad || return 1
  echo "$pid"
}

# initial is the number of nodes `up` created the cluster with; the nodes
# after them joined it.
initial() {
  if [[ -f $root/cluster.initial ]]; then cat "$root/cluster.initial"; else size; fi
}

# members_env is node I's membership setting: the initial members, the
# same on each of them, or for a node added later the internal addresses
# it joins through.
members_env() {
  local i=$1 n j initial=()
  n=$(initial)
  for ((j = 1; j <= n; j++)); do
    if ((i > n)); then initial+=("$(internal_addr "$j")"); else initial+=("$j=$(internal_addr "$j")"); fi
  done
  # Each node registers its client address (its server.listen_addr) in
  # the meta group itself.
  if ((i > n)); then
    (IFS=,; echo "FILA_CLUSTER__JOIN=${initial[*]}")
  else
    (IFS=,; echo "FILA_CLUSTER__INITIAL_MEMBERS=${initial[*]}")
  fi
}

# launch starts node I in the background, appending to its log.
launch() {
  local i=$1 d
  d=$(dir "$i")
  mkdir -p "$d/data"
  echo "--- start $(date -u +%FT%TZ)" >>"$d/filad.log"
  env "$(members_env "$i")" \
    FILA_CLUSTER__ENABLED=true \
    FILA_CLUSTER__NODE_ID="$i" \
    FILA_CLUSTER__INTERNAL_LISTEN_ADDR="$(internal_addr "$i")" \
    FILA_SERVER__LISTEN_ADDR="$(client_addr "$i")" \
    nohup "$bin" --config "" --data-dir "$d/data" >>"$d/filad.log" 2>&1 </dev/null &
  echo $! >"$d/filad.pid"
}

# await_serving waits until node I logs "filad serving" for this start
# (after the last "--- start" line), or exits, or ready_timeout passes.
await_serving() {
  local i=$1 d deadline pid
  d=$(dir "$i")
  pid=$(cat "$d/filad.pid")
  deadline=$((SECONDS + ready_timeout))
  while ((SECONDS < deadline)); do
    if sed -n '/^--- start/h; /^--- start/!H; ${x;p}' "$d/filad.log" | grep -q '"filad serving"'; then
      echo "node $i serving on $(client_addr "$i") (pid $pid, log $d/filad.log)"
      return 0
    fi
    # Not pid_of: until the child has exec'd filad, it is this script.
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "cluster.sh: node $i exited; the end of $d/filad.log:" >&2
      tail -n 15 "$d/filad.log" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "cluster.sh: node $i not serving after ${ready_timeout}s (a node serves once a majority is up); see $d/filad.log" >&2
  return 1
}

build() {
  mkdir -p "$(dirname "$bin")"
  echo "building $bin"
  go build -o "$bin" ./cmd/filad
}

cmd_up() {
  local n=${1:-3} i failed=0
  [[ $n =~ ^[1-9]$ ]] || { echo "cluster.sh: up takes a node count from 1 to 9" >&2; exit 2; }
  if [[ -f $root/cluster.size ]]; then
    for ((i = 1; i <= $(size); i++)); do
      if pid_of "$i" >/dev/null; then
        echo "cluster.sh: node $i already runs (scripts/cluster.sh down first)" >&2
        exit 1
      fi
    done
    if [[ $(size) != "$n" ]]; then
      echo "cluster.sh: $root holds a cluster of $(size) nodes (add one with: scripts/cluster.sh join; or down, then rm -rf $root, to start another)" >&2
      exit 1
    fi
  fi
  build
  mkdir -p "$root"
  echo "$n" >"$root/cluster.size"
  [[ -f $root/cluster.initial ]] || echo "$n" >"$root/cluster.initial"
  # All at once: a node serves only once its groups have leaders, which
  # takes a majority up.
  for ((i = 1; i <= n; i++)); do launch "$i"; done
  for ((i = 1; i <= n; i++)); do await_serving "$i" || failed=1; done
  ((failed == 0)) || exit 1
  echo "try: go run ./cmd/fila --addr $(client_addr 1) queue create orders"
}

cmd_start() {
  local i=${1:?start takes a node number} n
  n=$(size)
  ((i >= 1 && i <= n)) || { echo "cluster.sh: no node $i in a cluster of $n" >&2; exit 2; }
  if pid_of "$i" >/dev/null; then echo "node $i already runs (pid $(pid_of "$i"))"; return; fi
  [[ -x $bin ]] || build
  launch "$i"
  await_serving "$i"
}

cmd_join() {
  local i
  i=$(($(size) + 1))
  ((i <= 9)) || { echo "cluster.sh: at most 9 nodes" >&2; exit 2; }
  [[ -x $bin ]] || build
  echo "$i" >"$root/cluster.size"
  launch "$i"
  if ! await_serving "$i"; then
    # It exited (a refused join says why above): the next join is node
    # $i again, not one past a node that never joined.
    [[ -n $(pid_of "$i" 2>/dev/null) ]] || echo "$((i - 1))" >"$root/cluster.size"
    exit 1
  fi
  echo "node $i joined; watch it become a voter: go run ./cmd/fila --addr $(client_addr 1) cluster status"
}

cmd_kill() {
  local i=${1:?kill takes a node number} pid
  pid=$(pid_of "$i") || { echo "cluster.sh: node $i is not running" >&2; exit 1; }
  kill -KILL "$pid"
  while [[ -e /proc/$pid ]] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; do sleep 0.1; done
  echo "node $i killed (kill -9 $pid)"
}

cmd_down() {
  local n i deadline left=0 pids=()
  n=$(size)
  for ((i = 1; i <= n; i++)); do
    pids[i]=$(pid_of "$i") || pids[i]=""
    [[ -z ${pids[i]} ]] || kill -TERM "${pids[i]}"
  done
  for ((i = 1; i <= n; i++)); do
    if [[ -z ${pids[i]} ]]; then
      echo "node $i: was not running"
      rm -f "$(dir "$i")/filad.pid"
      continue
    fi
    deadline=$((SECONDS + stop_timeout))
    while pid_of "$i" >/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if pid_of "$i" >/dev/null; then
      echo "node $i: still running ${stop_timeout}s after SIGTERM (pid ${pids[i]}); see $(dir "$i")/filad.log" >&2
      left=1
    else
      echo "node $i: stopped (pid ${pids[i]})"
      rm -f "$(dir "$i")/filad.pid"
    fi
  done
  return $left
}

cmd_status() {
  local n i pid
  n=$(size)
  for ((i = 1; i <= n; i++)); do
    if pid=$(pid_of "$i"); then
      echo "node $i: running (pid $pid), client $(client_addr "$i"), internal $(internal_addr "$i")"
    else
      echo "node $i: not running, client $(client_addr "$i"), internal $(internal_addr "$i")"
    fi
  done
}

case ${1:-} in
up) cmd_up "${2:-3}" ;;
down) cmd_down ;;
status) cmd_status ;;
kill) cmd_kill "${2:-}" ;;
start) cmd_start "${2:-}" ;;
join) cmd_join ;;
*)
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
  ;;
esac
