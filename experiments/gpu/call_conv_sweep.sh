# One GPU call: compile (parallel processes, untimed) every conv backward tiling of the sweep and
# the block profile's kernels, with the conv GPU tests beside them; then alone on the machine:
# experiments/bench/conv_sweep.py (bf16) and experiments/bench/block_profile.py.
# SWEEP=0: the tests and the block profile only (how the final profile was taken, after the
# sweep's best tiling became the default).
source experiments/gpu/setup.sh
export EVENTSSM_AUTOTUNE=0
if [ "${SWEEP:-1}" = 1 ]; then
  for r in 4 8 16; do for t in 4 8 16; do
    timeout 150 python3 experiments/bench/conv_sweep.py --warm $r $t > /dev/null 2>&1 &
  done; done
fi
timeout 200 python3 experiments/bench/block_profile.py --steps 1 > /dev/null 2>&1 &
timeout 200 python3 -m pytest -m gpu tests/test_kernels_conv.py -q -p no:cacheprovider -rA > "$OUT/gpu_tests_conv.txt" 2>&1
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/gpu_tests_conv.txt" | tail -5
wait
echo "== timed, alone"
if [ "${SWEEP:-1}" = 1 ]; then
  timeout 90 python3 experiments/bench/conv_sweep.py > "$OUT/conv_sweep_h200.md" 2>&1
  grep -E "^\|" "$OUT/conv_sweep_h200.md"
fi
timeout 60 python3 experiments/bench/block_profile.py > "$OUT/block_profile_h200_bf16.md" 2>&1
grep -E "^\|" "$OUT/block_profile_h200_bf16.md"
