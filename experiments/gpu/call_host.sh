# One GPU call: compile (two processes, untimed) what the host-time bench needs, then alone on
# the machine: experiments/bench/block_host.py (host vs device time, cProfile), and the bf16
# one-block rows of the block bench three times over (how much single runs vary).
source experiments/gpu/setup.sh
export EVENTSSM_AUTOTUNE=0
w() { local name=$1; shift; timeout 200 "$@" > "$OUT/warm_$name.txt" 2>&1; }
for c in Standard Asymmetric; do for s in mamba zoh; do
  w $c$s python3 experiments/bench/block.py --rep 1 --sections block --dtypes bfloat16 --depths 1 --couplings $c --schemes $s &
done; done
wait
tail -n 3 "$OUT"/warm_Standardmamba.txt | cut -c1-200
echo "== timed, alone"
timeout 150 python3 experiments/bench/block_host.py > "$OUT/block_host_h200.md" 2>&1
cat "$OUT/block_host_h200.md"
for i in 1 2 3; do
  timeout 60 python3 experiments/bench/block.py --rep 100 --sections block --dtypes bfloat16 --depths 1 --couplings Standard Asymmetric --schemes mamba zoh 2>&1 | grep "^| block"
done > "$OUT/block_repeat_h200.txt"
cat "$OUT/block_repeat_h200.txt"
