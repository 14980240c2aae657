# One GPU call of the panel (docs/panel.md), resumable: put the returned files back in
# experiments/results/ and run it again to go on where it stopped.
#
#   PANEL_MODE=search: one process per candidate of experiments/panel_candidates.yaml named in
#     PANEL_ONLY (default: every one) on the non-held-out sets; resumes from and returns
#     experiments/results/panel_search.jsonl.
#   PANEL_MODE=final: the library defaults (candidate "readme", the README's command) on every
#     dataset, held-out ones included, one process per dataset; resumes from and returns
#     experiments/results/panel.jsonl.
#   PANEL_MODE=both (default): the two side by side.
# Beside them, the yardstick rows of PANEL_YSEEDS on the CPU cores (panel_yardsticks.jsonl;
# PANEL_YARDSTICKS=0: none, for when they run elsewhere).
# PANEL_DROPS / PANEL_SEEDS (search) / PANEL_BUDGET (seconds before no new row starts) override.
source experiments/gpu/setup.sh
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
CHOOSE="ACSF1 ArrowHead BasicMotions GunPoint ItalyPowerDemand PickupGestureWiimoteZ UnitTest"
ALL="$CHOOSE JapaneseVowels OSULeaf"
MODE=${PANEL_MODE:-both}
BUDGET=${PANEL_BUDGET:-420}
R=experiments/results
T="timeout $((BUDGET + 90))"
resume() { if [ -f "$R/$1" ]; then cp "$R/$1" "$2"; fi; }  # file, copy
mkdir -p /tmp/search /tmp/final /tmp/ys
if [ "$MODE" != final ]; then
  python3 - <<'PY'
import os, yaml
c = yaml.safe_load(open("experiments/panel_candidates.yaml"))
for name in os.environ.get("PANEL_ONLY", "").split() or list(c):
    yaml.safe_dump({name: c[name]}, open(f"/tmp/search/{name}.yaml", "w"))
PY
  for f in /tmp/search/*.yaml; do
    n=$(basename "$f" .yaml)
    resume panel_search.jsonl "/tmp/search/$n.jsonl"
    $T python3 experiments/panel.py --candidates "$f" --datasets $CHOOSE --drops 0.6 \
      --seeds ${PANEL_SEEDS:-0 1 2} --no-yardsticks --accelerator gpu --threads 1 \
      --budget-s $BUDGET --out "/tmp/search/$n.jsonl" > "/tmp/search/$n.log" 2>&1 &
  done
fi
if [ "$MODE" != search ]; then
  for d in $ALL; do
    resume panel.jsonl "/tmp/final/$d.jsonl"
    $T python3 experiments/panel.py --datasets "$d" --drops ${PANEL_DROPS:-0.0 0.3 0.6} \
      --seeds 0 1 2 --no-yardsticks --accelerator gpu --threads 1 --budget-s $BUDGET \
      --out "/tmp/final/$d.jsonl" > "/tmp/final/$d.log" 2>&1 &
  done
fi
resume panel_yardsticks.jsonl /tmp/ys/ys.jsonl
if [ "${PANEL_YARDSTICKS:-1}" = 1 ]; then
  $T python3 experiments/panel.py --yardsticks-only --drops 0.0 0.3 0.6 --seeds ${PANEL_YSEEDS:-0 1 2} \
    --threads 2 --budget-s $BUDGET --out /tmp/ys/ys.jsonl > /tmp/ys/ys.log 2>&1 &
fi
wait
if compgen -G "/tmp/search/*.jsonl" > /dev/null; then cat /tmp/search/*.jsonl | sort -u > "$OUT/panel_search.jsonl"; fi
if compgen -G "/tmp/final/*.jsonl" > /dev/null; then cat /tmp/final/*.jsonl | sort -u > "$OUT/panel.jsonl"; fi
sort -u /tmp/ys/ys.jsonl > "$OUT/panel_yardsticks.jsonl"
tail -qn 2 /tmp/search/*.log /tmp/final/*.log /tmp/ys/ys.log > "$OUT/panel_logs.txt" 2>/dev/null
wc -l "$OUT"/*.jsonl; cat "$OUT/panel_logs.txt"
