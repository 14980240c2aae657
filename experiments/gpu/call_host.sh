# One GPU call: compile (parallel processes, untimed) what the host-time bench needs, then alone
# on the machine experiments/bench/block_host.py: device, host and wall time of a block step,
# mamba-ssm's fast path beside ours in standard mode and with every scheme in event mode, with
# autograd's threaded engine and single-threaded, in interleaved rounds; cProfile per model.
source experiments/gpu/setup.sh
export EVENTSSM_AUTOTUNE=0
w() { local name=$1; shift; timeout 200 "$@" > "$OUT/warm_$name.txt" 2>&1; }
w std python3 experiments/bench/block.py --rep 1 --sections block --dtypes bfloat16 --depths 1 --couplings Standard --schemes mamba &
for s in mamba zoh bilinear dirac; do
  w $s python3 experiments/bench/block.py --rep 1 --sections block --dtypes bfloat16 --depths 1 --couplings Asymmetric --schemes $s &
done
wait
echo "== timed, alone"
timeout ${HOST_S:-300} python3 experiments/bench/block_host.py ${HOST_ARGS:-} > "$OUT/block_host_h200.md" 2>&1
cat "$OUT/block_host_h200.md"
