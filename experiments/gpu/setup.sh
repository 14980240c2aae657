# Source this at the top of a command on the GPU machine (a bare copy of the repository, no
# install, no network): puts the checkout on PYTHONPATH (eventssm and its subpackages), installs the carried pure-Python wheels (.whl/: jsonargparse, aeon, ...) into /tmp/site and
# points Triton's cache at the carried .triton_cache (compiled kernels from an earlier call).
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>&1 | tail -2
fi
export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
# Triton's compiled kernels from an earlier call (triton_cache.tgz.part*), when carried
if compgen -G ".triton_parts/triton_cache.tgz.part*" > /dev/null && [ ! -d .triton_cache ]; then
  cat .triton_parts/triton_cache.tgz.part* | tar xzf -
fi
mkdir -p .triton_cache
export TRITON_CACHE_DIR="$PWD/.triton_cache"
# The anchors' CUDA builds, brought back in pieces by an earlier call (anchors.tgz.part*).
if compgen -G ".anchor_builds/anchors.tgz.part*" > /dev/null && [ ! -d /tmp/anchors ]; then
  cat .anchor_builds/anchors.tgz.part* | tar xzf - -C /tmp
fi
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
if [ -d /tmp/anchors ]; then  # the anchors' Python wrappers and extensions (ANCHORS.md)
  export PYTHONPATH="$PYTHONPATH:$PWD/.anchors/py:/tmp/anchors/causal:/tmp/anchors/mamba"
fi
