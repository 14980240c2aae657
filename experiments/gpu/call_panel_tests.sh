# One GPU call: the panel's candidate search (call_panel.sh, PANEL_BUDGET s) and the precision
# probe beside the GPU test suite, then alone the streaming-step bench.
source experiments/gpu/setup.sh
export PYTHONUNBUFFERED=1 EVENTSSM_AUTOTUNE=0
PANEL_BUDGET=${PANEL_BUDGET:-300} bash -c 'OUT=/tmp/panelout; mkdir -p $OUT; source experiments/gpu/call_panel.sh' > /tmp/panel_call.log 2>&1 &
timeout 330 python3 experiments/probe_precision.py --triton > "$OUT/precision.md" 2>&1 &
timeout 330 python3 -m pytest -m gpu tests/ -n 4 -q -p no:cacheprovider -rA > "$OUT/gpu_tests.txt" 2>&1
grep -E "^(FAILED|ERROR)|passed|failed|error" "$OUT/gpu_tests.txt" | tail -25
wait
cp /tmp/panelout/panel_search.jsonl /tmp/panelout/panel_logs.txt "$OUT/"
timeout 80 python3 experiments/bench/stream.py --steps 200 --rounds 7 2>&1 | tee "$OUT/stream.md"
cat "$OUT/precision.md"; tail -5 /tmp/panel_call.log
