# One GPU call of the panel (docs/panel.md), resumable: run it again with the returned file
# put back in experiments/results/ to go on where it stopped.
#
#   PANEL_MODE=search (default): one process per candidate of experiments/panel_candidates.yaml
#     named in PANEL_ONLY (default: every one) on the non-held-out sets, beside the yardstick
#     rows of PANEL_YSEEDS on the CPU cores; resumes from and returns
#     experiments/results/panel_search.jsonl (and panel_yardsticks.jsonl).
#   PANEL_MODE=final: the library defaults (candidate "readme", the README's command) on every
#     dataset, held-out ones included, one process per dataset; resumes from and returns
#     experiments/results/panel.jsonl.
# PANEL_DROPS / PANEL_SEEDS / PANEL_BUDGET (seconds before no new row starts) override.
source experiments/gpu/setup.sh
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
CHOOSE="ACSF1 ArrowHead BasicMotions GunPoint ItalyPowerDemand PickupGestureWiimoteZ UnitTest"
ALL="$CHOOSE JapaneseVowels OSULeaf"
MODE=${PANEL_MODE:-search}
BUDGET=${PANEL_BUDGET:-420}
R=experiments/results
mkdir -p /tmp/panel
resume() { [ -f "$R/$1" ] && cp "$R/$1" "/tmp/panel/$2.jsonl" || true; }
if [ "$MODE" = search ]; then
  python3 - <<'PY'
import os, yaml
c = yaml.safe_load(open("experiments/panel_candidates.yaml"))
only = os.environ.get("PANEL_ONLY", "").split() or list(c)
for name in only:
    yaml.safe_dump({name: c[name]}, open(f"/tmp/panel/{name}.yaml", "w"))
PY
  for f in /tmp/panel/*.yaml; do
    n=$(basename "$f" .yaml)
    resume panel_search.jsonl "$n"
    timeout $((BUDGET + 90)) python3 experiments/panel.py --candidates "$f" --datasets $CHOOSE \
      --drops ${PANEL_DROPS:-0.6} --seeds ${PANEL_SEEDS:-0 1 2} --no-yardsticks --accelerator gpu \
      --threads 2 --budget-s $BUDGET --out "/tmp/panel/$n.jsonl" > "/tmp/panel/$n.log" 2>&1 &
  done
  RESULT=panel_search.jsonl
else
  for d in $ALL; do
    resume panel.jsonl "$d"
    timeout $((BUDGET + 90)) python3 experiments/panel.py --datasets "$d" \
      --drops ${PANEL_DROPS:-0.0 0.3 0.6} --seeds ${PANEL_SEEDS:-0 1 2} --no-yardsticks \
      --accelerator gpu --threads 1 --budget-s $BUDGET --out "/tmp/panel/$d.jsonl" \
      > "/tmp/panel/$d.log" 2>&1 &
  done
  RESULT=panel.jsonl
fi
mkdir -p /tmp/ys && resume panel_yardsticks.jsonl ys && mv /tmp/panel/ys.jsonl /tmp/ys/ 2>/dev/null
timeout $((BUDGET + 90)) python3 experiments/panel.py --yardsticks-only --drops 0.0 0.3 0.6 \
  --seeds ${PANEL_YSEEDS:-0 1 2} --threads 4 --budget-s $BUDGET --out /tmp/ys/ys.jsonl \
  > /tmp/ys/ys.log 2>&1 &
wait
cat /tmp/panel/*.jsonl | sort -u > "$OUT/$RESULT"
sort -u /tmp/ys/ys.jsonl > "$OUT/panel_yardsticks.jsonl"
tail -qn 2 /tmp/panel/*.log /tmp/ys/ys.log > "$OUT/panel_logs.txt"
wc -l "$OUT"/*.jsonl; cat "$OUT/panel_logs.txt"
