# One GPU call: the block profile (bf16) with the conv's final tiling, its kernels compiled in
# parallel processes first (beside the conv GPU tests).
source experiments/gpu/setup.sh
export EVENTSSM_AUTOTUNE=0
w() { timeout 150 python3 experiments/bench/block.py --rep 1 --sections block --dtypes bfloat16 --depths 1 "$@" > /dev/null 2>&1; }
w --couplings Standard --schemes mamba &
w --couplings Asymmetric --schemes zoh &
w --couplings Additive --schemes zoh &
timeout 150 python3 -m pytest -m gpu tests/test_conv_gpu.py -q -p no:cacheprovider -rA > "$OUT/gpu_tests_conv.txt" 2>&1
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/gpu_tests_conv.txt" | tail -5
wait
echo "== timed, alone"
timeout 60 python3 experiments/bench/block_profile.py > "$OUT/block_profile_h200_bf16.md" 2>&1
grep -E "^\|" "$OUT/block_profile_h200_bf16.md"
