# One GPU call: the block bench (experiments/bench/block.py, every section, mamba-ssm's fast path
# beside us) alone on the machine, then the GPU test suite.
source experiments/gpu/setup.sh
export EVENTSSM_AUTOTUNE=0
timeout ${BENCH_S:-330} python3 experiments/bench/block.py --rep ${REP:-100} --out "$OUT/block_h200.md" > "$OUT/block_h200_log.txt" 2>&1
tail -5 "$OUT/block_h200_log.txt"
timeout ${TESTS_S:-240} python3 -m pytest -m gpu tests/ -n 8 -q -p no:cacheprovider -rA > "$OUT/gpu_tests.txt" 2>&1
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/gpu_tests.txt" | tail -20
