# One GPU call: the whole GPU test suite with every kernel the timed part needs compiling beside
# it (untimed), then, alone on the machine: the block profile (bf16 and fp32), the scan section
# of the block bench in fp32 (against mamba-ssm's selective_scan_fn) and the scan's HBM-floor
# fractions at (8, 4096, 1536, 16); last, Triton's cache comes back for the next call.
source experiments/gpu/setup.sh
export EVENTSSM_AUTOTUNE=0
w() { local name=$1; shift; timeout 290 "$@" > "$OUT/warm_$name.txt" 2>&1; }
w prof_bf16 python3 experiments/bench/block_profile.py --steps 1 &
w prof_fp32 python3 experiments/bench/block_profile.py --dtype float32 --steps 1 &
w scan_a python3 experiments/bench/block.py --rep 1 --sections scan --dtypes float32 --couplings Standard Asymmetric &
w scan_b python3 experiments/bench/block.py --rep 1 --sections scan --dtypes float32 --couplings Scaled Additive &
w floor python3 experiments/bench/scan.py --shapes 0 --no-torch --no-host --no-small --no-mamba --rep 1 &
timeout 290 python3 -m pytest -m gpu tests/ -n 6 -q -p no:cacheprovider -rA > "$OUT/gpu_tests.txt" 2>&1
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/gpu_tests.txt" | tail -20
wait
tail -n 2 "$OUT"/warm_*.txt | cut -c1-300
echo "== timed, alone"
timeout 60 python3 experiments/bench/block_profile.py > "$OUT/block_profile_h200_bf16.md" 2>&1
head -16 "$OUT/block_profile_h200_bf16.md"
timeout 60 python3 experiments/bench/block_profile.py --dtype float32 > "$OUT/block_profile_h200_fp32.md" 2>&1
timeout 80 python3 experiments/bench/block.py --sections scan --dtypes float32 --rep 60 --out "$OUT/scan_fp32_h200.md" > "$OUT/scan_fp32_h200_log.txt" 2>&1
grep -E "mamba-ssm" "$OUT/scan_fp32_h200_log.txt"
timeout 60 python3 experiments/bench/scan.py --shapes 0 --no-torch --no-host --no-small --no-mamba --rep 60 > "$OUT/scan_floor_h200.txt" 2>&1
tail -8 "$OUT/scan_floor_h200.txt"
rm -rf "$OUT"/triton_cache.tgz.part*
tar czf - .triton_cache | split -b 15m - "$OUT/triton_cache.tgz.part"
ls -la "$OUT" | tail -n +2 | awk '{print $5, $9}'
