# One GPU call for issue 24 (and the panel's event-model rows beside the untimed part):
#  1. untimed, side by side: the anchors' builds, the GPU tests, the panel (PANEL_BUDGET s,
#     final mode: the defaults on every dataset), and one process per shape that compiles the
#     kernels the steps section needs (Triton's cache is shared);
#  2. timed, alone: block.py's steps section (issue 24's back-to-back protocol, four shapes,
#     bf16, mamba-ssm beside ours), then the fit bench (FIT_SIZES, FIT_ROWS).
source experiments/gpu/setup.sh
export PYTHONUNBUFFERED=1 EVENTSSM_AUTOTUNE=0
A=${UNTIMED_S:-270}
(
  export TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=6
  if [ ! -d /tmp/anchors/mamba ]; then
    timeout $A python3 .anchors/tools/build_anchors.py build causal .anchors /tmp/anchors/causal > /tmp/build_causal.txt 2>&1 &
    timeout $A python3 .anchors/tools/build_anchors.py build mamba .anchors /tmp/anchors/mamba > /tmp/build_mamba.txt 2>&1
    wait
  fi
  { tail -n 3 /tmp/build_causal.txt /tmp/build_mamba.txt; find /tmp/anchors -name "*.so"; } > "$OUT/builds.txt" 2>&1
) &
if [ "${PANEL_BUDGET:-0}" -gt 0 ]; then
  (PANEL_MODE=final PANEL_YARDSTICKS=0 bash -c 'OUT=/tmp/po; mkdir -p $OUT; source experiments/gpu/call_panel.sh' > /tmp/panel_call.log 2>&1) &
fi
for sh in 16,4096,1024 8,2048,768 32,1024,256 64,256,128; do
  timeout $A python3 experiments/bench/block.py --sections steps --dtypes bfloat16 --depths 1 --rounds 1 --shapes $sh > /tmp/warm_$sh.txt 2>&1 &
done
timeout $A python3 experiments/bench/fit.py --sizes ${FIT_SIZES:-small medium} --rows std asym add --rounds 1 --steps 2 --warmup 2 > /tmp/warm_fit.txt 2>&1 &
timeout $A python3 -m pytest -m gpu tests/ -n 4 -q -p no:cacheprovider -rA > "$OUT/gpu_tests.txt" 2>&1
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/gpu_tests.txt" | tail -30
wait
if [ -f /tmp/po/panel.jsonl ]; then cp /tmp/po/panel.jsonl /tmp/po/panel_logs.txt "$OUT/"; fi
tail -n 4 /tmp/warm_*.txt /tmp/panel_call.log > "$OUT/untimed_log.txt" 2>/dev/null
cat "$OUT/builds.txt"
echo "== timed, alone"
timeout ${STEPS_S:-150} python3 experiments/bench/block.py --sections steps --dtypes bfloat16 --depths 1 --out "$OUT/steps.md" 2>&1 | grep -E "^\| steps|^- |NVIDIA"
timeout ${FIT_S:-150} python3 experiments/bench/fit.py --sizes ${FIT_SIZES:-small medium} --rows ${FIT_ROWS:-std asym add gru mamba-ssm} --rounds 5 --out "$OUT/fit.md" 2>&1 | tail -25
