# One GPU call: the GPU test suite (log -> $OUT/gpu_tests.txt), then alone on the machine the
# streaming-step bench (-> $OUT/stream.md) and the float32/bf16 precision probe with the Triton
# kernels beside the torch path (-> $OUT/precision.md).
source experiments/gpu/setup.sh
export EVENTSSM_AUTOTUNE=0 PYTHONUNBUFFERED=1
timeout 330 python3 -m pytest -m gpu tests/ -n 6 -q -p no:cacheprovider -rA > "$OUT/gpu_tests.txt" 2>&1
grep -E "^(FAILED|ERROR)|passed|failed|error" "$OUT/gpu_tests.txt" | tail -25
timeout 90 python3 experiments/bench/stream.py --steps 200 --rounds 7 2>&1 | tee "$OUT/stream.md"
timeout 120 python3 experiments/probe_precision.py --triton 2>&1 | tee "$OUT/precision.md"
