# One GPU call: the GPU test suite (log -> $OUT/gpu_tests.txt); beside it, the block bench once
# with rep 1 to fill Triton's cache for the timed run of the next call (nothing timed here), and
# the results-suite runs given in SUITE_ARGS (their log -> $OUT/suite_log.txt).
source experiments/gpu/setup.sh
export EVENTSSM_AUTOTUNE=0
warm() { timeout 400 python3 experiments/bench/block.py --rep 1 "$@" > "$OUT/warm_$(echo "$@" | tr -c 'a-zA-Z0-9' _).txt" 2>&1; }
warm --dtypes float32 --couplings Standard Asymmetric --sections block --depths 1 &
warm --dtypes float32 --couplings Scaled Additive --sections block --depths 1 &
warm --dtypes bfloat16 --couplings Standard Asymmetric --sections block --depths 1 &
warm --dtypes bfloat16 --couplings Scaled Additive --sections block --depths 1 &
warm --sections conv scan &
if [ -n "${SUITE_ARGS:-}" ]; then
  timeout 430 python3 experiments/run_suite.py --accelerator gpu $SUITE_ARGS > "$OUT/suite_log.txt" 2>&1 &
fi
timeout 400 python3 -m pytest -m gpu tests/ -n 4 -q -p no:cacheprovider -rA > "$OUT/gpu_tests.txt" 2>&1
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/gpu_tests.txt" | tail -20
wait
tail -3 "$OUT"/warm_*.txt
grep -c "^done" "$OUT/suite_log.txt"
tar czf - .triton_cache | split -b 15m - "$OUT/triton_cache.tgz.part"
ls -la "$OUT"
