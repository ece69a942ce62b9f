#!/usr/bin/env bash
# ab.sh: filabench of this checkout against another commit, in alternating
# rounds in one run, so that a shared, noisy machine loads both alike.
#
#   scripts/ab.sh BASE_COMMIT ROUNDS FILABENCH_FLAGS...
#   scripts/ab.sh main~3 3 -no-nats -only lifecycle
#
# Each side runs its own filabench from its own source tree (filabench
# builds the filad its subprocess workloads start from the directory it
# runs in). It prints every round's figures, then per row the median of
# each side and the ratio this/base. Rounds' raw output stays in $AB_OUT
# (default: a temporary directory, printed).
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:?base commit}
rounds=${2:?rounds}
shift 2
out=${AB_OUT:-$(mktemp -d)}
mkdir -p "$out"
tree=$(mktemp -d)
trap 'git worktree remove --force "$tree/base" >/dev/null 2>&1 || true; rm -rf "$tree"' EXIT
git worktree add -q --detach "$tree/base" "$base"
(cd "$tree/base" && go build -o "$out/filabench-base" ./cmd/filabench)
go build -o "$out/filabench-this" ./cmd/filabench
echo "base $(git -C "$tree/base" rev-parse --short HEAD), this $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)'); rounds in $out"
for ((i = 1; i <= rounds; i++)); do
  for side in base this; do
    dir=$PWD
    [[ $side == base ]] && dir=$tree/base
    (cd "$dir" && "$out/filabench-$side" "$@") >"$out/$side-$i.txt" 2>&1
    echo "round $i $side: $(grep -c '^| ' "$out/$side-$i.txt") rows"
  done
done
# Rows are filabench's markdown table: | workload | target | value | unit | note |
awk -F' *\\| *' '
  FNR == 1 { side = FILENAME; sub(/.*\//, "", side); sub(/-[0-9]+\.txt$/, "", side) }
  /^\| / && $4 ~ /^[0-9.]+$/ {
    key = $2 " | " $3 " | " $5
    # The same row can come from two workloads (durable and not): tell
    # them apart by their order within the file.
    occ = ++count[FILENAME, key]
    if (occ > 1) key = key " (" occ ")"
    if (!(key in seen)) { seen[key] = 1; order[++n] = key }
    v[side, key] = v[side, key] " " $4
  }
  function median(s,   a, k, i, j, t) {
    k = split(s, a, " ")
    for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
  }
  END {
    print "| workload | target | unit | base median | this median | this/base | rounds (base; this) |"
    print "|---|---|---|---:|---:|---:|---|"
    for (i = 1; i <= n; i++) {
      key = order[i]; b = median(v["base", key]); t = median(v["this", key])
      split(key, p, / \| /)
      printf "| %s | %s | %s | %.2f | %.2f | %s | %s;%s |\n", p[1], p[2], p[3], b, t, (b > 0 ? sprintf("%.3f", t / b) : "-"), v["base", key], v["this", key]
    }
  }' "$out"/base-*.txt "$out"/this-*.txt
