# One GPU call: compile (in parallel, untimed) what the timed part needs, with the accuracy GPU
# tests beside it; then, alone, the scan section of the block bench and the block profile.
source experiments/gpu/setup.sh
export EVENTSSM_AUTOTUNE=0
warm() { timeout 230 python3 experiments/bench/block.py --rep 1 "$@" > /dev/null 2>&1; }
warm --sections scan --dtypes float32 --couplings Standard Asymmetric &
warm --sections scan --dtypes float32 --couplings Scaled Additive &
warm --sections scan --dtypes bfloat16 --couplings Standard Asymmetric &
warm --sections scan --dtypes bfloat16 --couplings Scaled Additive &
warm --sections block --dtypes bfloat16 --depths 1 --couplings Standard Asymmetric Additive --schemes mamba zoh &
timeout 230 python3 -m pytest -m gpu tests/test_kernels.py tests/test_packed.py -k "x_from_tiny or softplus or zoh_coeff or packed" -q -s -p no:cacheprovider > "$OUT/gpu_tests_accuracy.txt" 2>&1
grep -E "x range|softplus max|passed|failed|FAILED" "$OUT/gpu_tests_accuracy.txt" | cut -c1-400
wait
echo "== timed"
timeout 110 python3 experiments/bench/block.py --sections scan --rep 100 --out "$OUT/scan_h200.md" > "$OUT/scan_h200_log.txt" 2>&1
grep -E "mamba-ssm|zoh|bilinear" "$OUT/scan_h200_log.txt" | head -40
timeout 60 python3 experiments/bench/block_profile.py > "$OUT/block_profile_h200.md" 2>&1
cat "$OUT/block_profile_h200.md" | head -30
