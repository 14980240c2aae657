"""Static instruction counts of the scan kernels, compiled for sm_90 on a machine without a GPU.

Triton compiles for any target without a device (``triton.compile(ASTSource(...),
target=GPUTarget("cuda", 90, 32))``) and ships ``cuobjdump``: this prints, for the forward and
the backward scan at the Mamba block's specialisation (D = 1536, N = 16, G = 1, z, D skip, bias,
softplus), every scheme in standard and event (asymmetric) mode: registers, spill bytes, SASS
instructions of the whole kernel and its MUFU (ex2/rcp/lg2) and FMA-pipe counts, and the
difference from the mamba scheme. The kernels unroll K steps × N/S states twice (a masked and an
unmasked path), so a scheme's per-state cost shows in the totals times a constant.

    python experiments/bench/sass.py                       # the kernels of this checkout
    python experiments/bench/sass.py --kernels-from DIR    # a copy of another version's eventssm/kernels/

Counts are not times (issue rate, latency and occupancy decide those); they are what a change of
formulas can be judged by before a GPU run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

FMA_PIPE = ("FFMA", "FMUL", "FADD", "FSEL", "FSETP", "FMNMX")


def load_kernels(path: str | None):
    if path is None:
        import eventssm.kernels as k  # noqa: F401

        return (importlib.import_module("eventssm.kernels.selective_scan_fwd"),
                importlib.import_module("eventssm.kernels.selective_scan_bwd"))
    name = "kernels_under_test"
    spec = importlib.util.spec_from_file_location(name, os.path.join(path, "__init__.py"),
                                                  submodule_search_locations=[path])
    pkg = importlib.util.module_from_spec(spec)
    sys.modules[name] = pkg
    spec.loader.exec_module(pkg)
    return (importlib.import_module(f"{name}.selective_scan_fwd"),
            importlib.import_module(f"{name}.selective_scan_bwd"))


def jit_of(kernel):
    while not hasattr(kernel, "arg_names") or not hasattr(kernel, "src"):
        kernel = kernel.fn
    return kernel


def compile_counts(kernel, sig: dict, consts: dict, num_warps: int, maxnreg=None):
    fn = jit_of(kernel)
    full = {}
    for a in fn.arg_names:
        if a in consts:
            full[a] = "constexpr"
        else:
            full[a] = sig[a]
    attrs = {(fn.arg_names.index(a),): [["tt.divisibility", 16]]
             for a, t in full.items() if t.startswith("*")}
    opts = {"num_warps": num_warps}
    if maxnreg:
        opts["maxnreg"] = maxnreg
    c = triton.compile(ASTSource(fn, full, consts, attrs), target=GPUTarget("cuda", 90, 32),
                       options=opts)
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(c.asm["cubin"])
        path = f.name
    tool = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump")
    res = subprocess.run([tool, "-res-usage", path], capture_output=True, text=True).stdout
    sass = subprocess.run([tool, "-sass", path], capture_output=True, text=True).stdout
    os.unlink(path)
    ops = Counter(o.split(".")[0] for o in
                  re.findall(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", sass))
    reg = int(re.search(r"REG:(\d+)", res).group(1))
    spill = int(re.search(r"STACK:(\d+)", res).group(1))
    return dict(reg=reg, spill=spill, sass=sum(ops.values()), mufu=ops["MUFU"],
                fma=sum(ops[k] for k in FMA_PIPE))


def fwd_case(mod, scheme, coupling, dtype, D=1536, N=16, K=4, S=4):
    t = {"float32": "*fp32", "bfloat16": "*bf16"}[dtype]
    sig = dict(u=t, delta=t, delta_bias="*fp32", A="*fp32", B=t, C=t, Dskip="*fp32", z=t,
               tau="*fp32", rate="*fp32", h0="*fp32", y=t, last="*fp32", ckpt="*fp32",
               cu_seqlens="*i32", chunk_offsets="*i32", L="i32")
    consts = dict(D=D, N=N, G=1, CK=128, SCHEME=scheme, COUPLING=coupling, SOFTPLUS=True,
                  HAS_BIAS=True, HAS_D=True, HAS_Z=True, HAS_H0=False, STORE_LAST=False,
                  SAVE_CKPT=True, IS_VARLEN=False, DTYPE_KEY=dtype, S=S, BD=32 // S,
                  VEC=16 if dtype == "float32" else 8,
                  K=K, SPLIT_GROUPS=False, EVEN_D=True, PF_DIST=4, h0=None, last=None,
                  cu_seqlens=None)
    if "SZ" in jit_of(mod.selective_scan_fwd_kernel).arg_names:  # row strides (contiguous here)
        consts.update(SZ=D, SBC=N)
    if coupling == 0:
        consts.update(tau=None)
    if coupling != 1:
        consts.update(rate=None)
    return compile_counts(mod.selective_scan_fwd_kernel, sig, consts, 1)


def bwd_case(mod, scheme, coupling, dtype, D=1536, N=16, K=4, S=4):
    t = {"float32": "*fp32", "bfloat16": "*bf16"}[dtype]
    sig = dict(u=t, delta=t, delta_bias="*fp32", A="*fp32", B=t, C=t, Dskip="*fp32", z=t,
               tau="*fp32", rate="*fp32", ckpt="*fp32", scratch="*fp32", dy=t, dlast="*fp32",
               du=t, ddelta=t, dA="*fp32", dBC="*fp32", dDskip="*fp32", dz=t, dbias="*fp32",
               drate="*fp32", dtau="*fp32", dh0="*fp32", cu_seqlens="*i32",
               chunk_offsets="*i32", L="i32")
    consts = dict(D=D, N=N, G=1, CK=128, SLOTS=64, SCHEME=scheme, COUPLING=coupling,
                  SOFTPLUS=True, HAS_BIAS=True, HAS_D=True, HAS_Z=True, HAS_DLAST=False,
                  STORE_DH0=False, TAU_GRAD=False, IS_VARLEN=False, DTYPE_KEY=dtype, S=S,
                  BD=32 // S, VEC=16 if dtype == "float32" else 8, K=K, SPLIT_GROUPS=False,
                  EVEN_D=True, PF_DIST=4,
                  dlast=None, dh0=None, cu_seqlens=None)
    if "SZ" in jit_of(mod.selective_scan_bwd_kernel).arg_names:
        consts.update(SZ=D, SBC=N)
    if "SDZ" in jit_of(mod.selective_scan_bwd_kernel).arg_names:
        consts.update(SDZ=D)
    if coupling == 0:
        consts.update(tau=None)
    if coupling != 1:
        consts.update(rate=None)
    return compile_counts(mod.selective_scan_bwd_kernel, sig, consts, 1, maxnreg=168)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kernels-from", help="a directory holding another version of eventssm/kernels/")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--schemes", nargs="+", default=["mamba", "zoh", "bilinear", "dirac"])
    ap.add_argument("--which", nargs="+", default=["forward", "backward"])
    ap.add_argument("--modes", nargs="+", default=["standard", "event"])
    args = ap.parse_args()
    fwd, bwd = load_kernels(args.kernels_from)
    ids = {"mamba": 0, "zoh": 1, "bilinear": 2, "dirac": 3}
    print(f"sm_90 static counts, D=1536 N=16 K=4 S=4, {args.dtype}, z/D/bias/softplus "
          f"({args.kernels_from or 'this checkout'})")
    print("| kernel | scheme | mode | registers | spill B | SASS | MUFU | FMA-pipe | SASS vs mamba |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, case in (("forward", fwd_case), ("backward", bwd_case)):
        if name not in args.which:
            continue
        mod = fwd if name == "forward" else bwd
        for coupling, mode in ((0, "standard"), (1, "event")):
            if mode not in args.modes:
                continue
            base = None
            for s in args.schemes:
                r = case(mod, ids[s], coupling, args.dtype)
                base = base or (r["sass"] if s == "mamba" else None)
                ratio = f"{r['sass'] / base:.2f}" if base else "-"
                print(f"| {name} | {s} | {mode} | {r['reg']} | {r['spill']} | {r['sass']} | "
                      f"{r['mufu']} | {r['fma']} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
