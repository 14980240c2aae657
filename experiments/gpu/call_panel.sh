# One GPU call: the panel's candidate search (experiments/panel_candidates.yaml), one
# process per candidate on the non-held-out sets' 60 %-dropped rows (seed 0), beside the
# yardstick rows on the CPU cores; every process resumes from and appends to its own file, all
# joined into $OUT/panel_search.jsonl. PANEL_DROPS / PANEL_SEEDS / PANEL_BUDGET override.
source experiments/gpu/setup.sh
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
CHOOSE="ACSF1 ArrowHead BasicMotions GunPoint ItalyPowerDemand PickupGestureWiimoteZ UnitTest"
mkdir -p /tmp/panel
python3 - <<'PY'
import yaml
c = yaml.safe_load(open("experiments/panel_candidates.yaml"))
for name, body in c.items():
    yaml.safe_dump({name: body}, open(f"/tmp/panel/{name}.yaml", "w"))
PY
for f in /tmp/panel/*.yaml; do
  n=$(basename "$f" .yaml)
  [ -f "experiments/results/panel_search.jsonl" ] && cp experiments/results/panel_search.jsonl "/tmp/panel/$n.jsonl"
  timeout 500 python3 experiments/panel.py --candidates "$f" --datasets $CHOOSE \
    --drops ${PANEL_DROPS:-0.6} --seeds ${PANEL_SEEDS:-0} --no-yardsticks --accelerator gpu --threads 2 \
    --budget-s ${PANEL_BUDGET:-380} --out "/tmp/panel/$n.jsonl" > "/tmp/panel/$n.log" 2>&1 &
done
[ -f "experiments/results/panel_search.jsonl" ] && cp experiments/results/panel_search.jsonl /tmp/panel/yardsticks.jsonl
timeout 500 python3 experiments/panel.py --yardsticks-only --drops 0.0 0.3 0.6 --seeds 0 --threads 4 \
  --budget-s ${PANEL_BUDGET:-380} --out /tmp/panel/yardsticks.jsonl > /tmp/panel/yardsticks.log 2>&1 &
wait
cat /tmp/panel/*.jsonl | sort -u > "$OUT/panel_search.jsonl"
tail -n 3 /tmp/panel/*.log > "$OUT/panel_logs.txt"
wc -l "$OUT/panel_search.jsonl"; tail -n 2 /tmp/panel/*.log
