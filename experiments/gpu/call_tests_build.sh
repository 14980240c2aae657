# One GPU call: the GPU test suite, with the anchors' CUDA extensions building beside it; the
# builds come back split in 15 MiB pieces (anchors.tgz.part*: put them in .anchor_builds/ and
# carry that), so that a later call (experiments/gpu/setup.sh) starts from them.
source experiments/gpu/setup.sh
(
  export TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=8
  timeout 480 python3 .anchors/tools/build_anchors.py build causal .anchors /tmp/anchors/causal > /tmp/build_causal.txt 2>&1 &
  timeout 480 python3 .anchors/tools/build_anchors.py build mamba .anchors /tmp/anchors/mamba > /tmp/build_mamba.txt 2>&1
  wait
  { tail -5 /tmp/build_causal.txt; tail -5 /tmp/build_mamba.txt; find /tmp/anchors -name "*.so" -exec ls -la {} \; ; } > "$OUT/builds.txt"
  (cd /tmp && tar czf - --exclude='*.o' --exclude='*.ninja*' --exclude='build.ninja' anchors) | split -b 15m - "$OUT/anchors.tgz.part"
) &
EVENTSSM_AUTOTUNE=0 timeout 470 python3 -m pytest -m gpu tests/ -n 4 -q -p no:cacheprovider -rA 2>&1 | tee "$OUT/gpu_tests.txt" | grep -v "^PASSED" | tail -60
wait
ls -la "$OUT"; cat "$OUT/builds.txt"
