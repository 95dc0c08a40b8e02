#!/usr/bin/env bash
# One sitting: the peers and conveyor back to back on a quiet machine, then the comparisons.
#
#   bench/sitting.sh            full: peers sql, bullmq, python; conveyor sqlite + redis (full runs
#                               and the 1M-vs-1k backlog runs); compare.py for both backends
#   bench/sitting.sh --no-1m    skip the two 1,000,000-job backlog runs (~2 min less)
#   bench/sitting.sh --smoke    plumbing check only (~1-2 min): each harness on one peer, W2, quick,
#                               results into a temp dir (nothing appended to the real results files)
#
# Each harness is set up first if its venv / node_modules is missing (./setup.sh, npm install).
# The run ids are taken from the lines each harness appended to its results files during this
# sitting. Logs, the run ids and both comparisons go to bench/results/sittings/<start time>/.
# Environment: PEERS=<dir> (default: ../shared/peers next to this checkout), PY=<conveyor python>.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PEERS="${PEERS:-$(cd "$ROOT/../shared/peers" 2>/dev/null && pwd)}"
PY="${PY:-$ROOT/.venv/bin/python}"
MODE=full
ONE_M=1
for a in "$@"; do
  case "$a" in
    --smoke) MODE=smoke ;;
    --no-1m) ONE_M=0 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown option $a" >&2; exit 2 ;;
  esac
done
[[ -d "$PEERS" ]] || { echo "peers not found: set PEERS=<dir with sql/ bullmq/ python/>" >&2; exit 2; }
[[ -x "$PY" ]] || { echo "conveyor python not found: $PY (set PY=...)" >&2; exit 2; }

STAMP="$(date +%Y-%m-%dT%H-%M-%S)"
if [[ $MODE == smoke ]]; then
  OUT="$(mktemp -d /tmp/conveyor-sitting-smoke-XXXXXX)"
  RES_SQL="$OUT/res-sql"; RES_BULLMQ="$OUT/res-bullmq"; RES_PY="$OUT/res-python"; RES_OURS="$OUT/res-conveyor"
else
  OUT="$ROOT/bench/results/sittings/$STAMP"
  RES_SQL="$PEERS/sql/results"; RES_BULLMQ="$PEERS/bullmq/results"; RES_PY="$PEERS/python/results"
  RES_OURS="$ROOT/bench/results"
fi
mkdir -p "$OUT" "$RES_SQL" "$RES_BULLMQ" "$RES_PY" "$RES_OURS"
SNAP="$OUT/snapshot.json"
IDS="$OUT/run-ids.txt"
: > "$IDS"
T0=$(date +%s)
FAILED=()

log() { printf '\n=== %s  %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$OUT/sitting.log"; }

# Line counts of every results file in a folder (before a harness runs) ...
snapshot() {
  "$PY" - "$1" "$SNAP" <<'EOF'
import json, sys
from pathlib import Path
d, snap = Path(sys.argv[1]), Path(sys.argv[2])
data = json.loads(snap.read_text()) if snap.exists() else {}
for f in d.glob("*.jsonl"):
    data[str(f)] = sum(1 for _ in f.open())
snap.write_text(json.dumps(data))
EOF
}

# ... and afterwards: "<label> <file> <run id>" for every run id in the lines appended since.
new_runs() {
  "$PY" - "$1" "$SNAP" "$2" <<'EOF'
import json, sys
from pathlib import Path
d, snap, label = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
seen = json.loads(snap.read_text()) if snap.exists() else {}
for f in sorted(d.glob("*.jsonl")):
    lines = f.read_text().splitlines()[seen.get(str(f), 0):]
    ids = dict.fromkeys(json.loads(x).get("run_id") for x in lines if x.strip())
    for rid in ids:
        print(label, f, rid)
EOF
}

# run <label> <results dir> <dir to cd into> <command...>
run() {
  local label="$1" res="$2" dir="$3"; shift 3
  log "$label: (cd $dir && $*)"
  snapshot "$res"
  local t=$(date +%s)
  (cd "$dir" && "$@") > "$OUT/$label.log" 2>&1
  local rc=$?
  tail -n 30 "$OUT/$label.log"
  echo "[$label: rc=$rc, $(( $(date +%s) - t )) s, log $OUT/$label.log]" | tee -a "$OUT/sitting.log"
  [[ $rc -eq 0 ]] || FAILED+=("$label")
  new_runs "$res" "$label" | tee -a "$IDS"
}

setup_peers() {
  if [[ ! -x "$PEERS/sql/.venv/bin/python" ]]; then
    log "setup: sql/.venv"; (cd "$PEERS/sql" && ./setup.sh) || FAILED+=("setup-sql")
  fi
  if [[ ! -d "$PEERS/bullmq/node_modules" ]]; then
    log "setup: bullmq npm install"; (cd "$PEERS/bullmq" && npm install) || FAILED+=("setup-bullmq")
  fi
  if [[ ! -x "$PEERS/python/.venv/bin/python" || ! -x "$PEERS/python/.venv-saq/bin/python" \
        || ! -x "$PEERS/python/.venv-arq/bin/python" ]]; then
    log "setup: python/.venv*"; (cd "$PEERS/python" && ./setup.sh) || FAILED+=("setup-python")
  fi
}

log "sitting $STAMP ($MODE) -> $OUT; peers $PEERS; conveyor $ROOT ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null))"
uptime | tee -a "$OUT/sitting.log"
setup_peers

if [[ $MODE == smoke ]]; then
  run sql    "$RES_SQL"    "$PEERS/sql"    .venv/bin/python run.py --quick --only huey --workloads w2 --no-w5 --wait-quiet 0 --results "$RES_SQL"
  run bullmq "$RES_BULLMQ" "$PEERS/bullmq" node run.mjs --quick --only bullmq --workloads w2 --no-w5 --results "$RES_BULLMQ"
  run python "$RES_PY"     "$PEERS/python" .venv/bin/python run.py --quick --only dramatiq --workloads w2 --no-w5 --results "$RES_PY"
  run conveyor-sqlite "$RES_OURS" "$ROOT" "$PY" bench/run.py --backend sqlite --quick --only w2 --results "$RES_OURS"
  run conveyor-redis  "$RES_OURS" "$ROOT" "$PY" bench/run.py --backend redis --quick --only w2,mem --mem-n 20000 --results "$RES_OURS"
else
  run sql    "$RES_SQL"    "$PEERS/sql"    .venv/bin/python run.py
  run bullmq "$RES_BULLMQ" "$PEERS/bullmq" node run.mjs
  run python "$RES_PY"     "$PEERS/python" .venv/bin/python run.py
  run conveyor-sqlite "$RES_OURS" "$ROOT" "$PY" bench/run.py --backend sqlite
  run conveyor-redis  "$RES_OURS" "$ROOT" "$PY" bench/run.py --backend redis
  if [[ $ONE_M == 1 ]]; then
    run conveyor-sqlite-1m "$RES_OURS" "$ROOT" "$PY" bench/run.py --backend sqlite --only w5 --backlog 1000000 --small-backlog 1000
    run conveyor-redis-1m  "$RES_OURS" "$ROOT" "$PY" bench/run.py --backend redis --only w5 --backlog 1000000 --small-backlog 1000
  fi
fi

# -- comparisons ---------------------------------------------------------------------------------
log "run ids of this sitting ($IDS)"
cat "$IDS"
compare() {  # compare <backend> <conveyor label>...
  local backend="$1"; shift
  local args=() files=() pids=() ours=()
  for label in "$@"; do
    while read -r l f rid; do
      [[ "$l" == "$label" ]] || continue
      ours+=("$f"); args+=(--run-id "$rid")
    done < "$IDS"
  done
  while read -r l f rid; do
    case "$l" in
      sql|bullmq|python) files+=("$f"); pids+=(--peer-run-id "$rid") ;;
    esac
  done < "$IDS"
  if [[ ${#ours[@]} -eq 0 || ${#files[@]} -eq 0 ]]; then
    echo "compare $backend: missing run ids (ours: ${#ours[@]}, peer files: ${#files[@]})" | tee -a "$OUT/sitting.log"
    FAILED+=("compare-$backend")
    return
  fi
  mapfile -t files < <(printf '%s\n' "${files[@]}" | sort -u)
  mapfile -t ours < <(printf '%s\n' "${ours[@]}" | sort -u)
  log "compare $backend: $PY bench/compare.py --backend $backend --ours ${ours[*]} ${args[*]} --peers ${files[*]} ${pids[*]}"
  (cd "$ROOT" && "$PY" bench/compare.py --backend "$backend" --ours "${ours[@]}" "${args[@]}" \
     --peers "${files[@]}" "${pids[@]}") 2>&1 | tee "$OUT/compare-$backend.txt"
}
compare sqlite conveyor-sqlite conveyor-sqlite-1m
compare redis conveyor-redis conveyor-redis-1m

log "done in $(( $(date +%s) - T0 )) s"
echo "results: sql -> $RES_SQL, bullmq -> $RES_BULLMQ, python -> $RES_PY, conveyor -> $RES_OURS"
echo "this sitting: $OUT (sitting.log, <harness>.log, run-ids.txt, compare-sqlite.txt, compare-redis.txt)"
if [[ ${#FAILED[@]} -gt 0 ]]; then
  echo "FAILED: ${FAILED[*]}" | tee -a "$OUT/sitting.log"
  exit 1
fi
