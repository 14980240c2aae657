# One GPU call: the GPU test suite with (parallel processes, untimed) the compilation of what the
# host-time bench needs beside it; then alone on the machine experiments/bench/block_host.py:
# device, host, wall and CUDA-graph time of a block step, mamba-ssm's fast path beside ours in
# standard mode and with every scheme in event mode, one block and a 4-layer stack.
source experiments/gpu/setup.sh
export EVENTSSM_AUTOTUNE=0
w() { local name=$1; shift; timeout 200 "$@" > "$OUT/warm_$name.txt" 2>&1; }
w std python3 experiments/bench/block.py --rep 1 --sections block --dtypes bfloat16 --depths 1 --couplings Standard --schemes mamba &
for s in mamba zoh bilinear dirac; do
  w $s python3 experiments/bench/block.py --rep 1 --sections block --dtypes bfloat16 --depths 1 --couplings Asymmetric --schemes $s &
done
if [ -n "${TESTS:-}" ]; then
  timeout 280 python3 -m pytest -m gpu tests/ -n 6 -q -p no:cacheprovider -rA > "$OUT/gpu_tests.txt" 2>&1
  grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/gpu_tests.txt" | tail -20
fi
wait
echo "== timed, alone"
timeout ${HOST_S:-300} python3 experiments/bench/block_host.py ${HOST_ARGS:-} > "$OUT/block_host_h200.md" 2>&1
grep -E "^\||^## " "$OUT/block_host_h200.md"
