"""Models built from Mamba blocks: ResidualBlock, MambaLM, EventEncoder, pooling and heads.

Legend: batch ``B``, steps ``L``, model width ``d_model``, vocabulary ``V``, value channels ``C``.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from eventssm.cache import EncoderCache
from eventssm.checks import ValueChecks
from eventssm.discretization import Discretization
from eventssm.inputs import Steps, check_activations, check_cache, check_count, step_column, validate_steps
from eventssm.mamba import InferenceCache, Mamba
from eventssm.packing import model_steps, segment_pool
from eventssm.running_pool import RunningPool
from eventssm.ssm import SelectiveSSM
from eventssm.time import check_time_scale

__all__ = [
    "SelectiveSSM",
    "ResidualBlock",
    "MambaBackbone",
    "MambaLM",
    "EventEncoder",
    "pool",
    "POOLINGS",
    "convert_mamba_state_dict",
]

POOLINGS = ("last", "mean", "time")


class ResidualBlock(nn.Module):
    """``x + Mamba(RMSNorm(x))`` (pre-norm, as in mamba-ssm's ``Block`` and transformers'
    ``MambaBlock``); submodules ``norm`` and ``mixer`` keep their checkpoint names."""

    def __init__(self, d_model: int, norm_eps: float = 1e-5, **mamba_kwargs) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(d_model, eps=norm_eps)
        self.mixer = Mamba(d_model, **mamba_kwargs)

    def forward(self, x: Tensor, integration_timesteps=None, lengths=None, inference_cache=None,
                *, timestamps=None, cu_seqlens=None, check_values: bool = True) -> Tensor:
        """``x (B, L, d_model)`` -> same (arguments: see :meth:`Mamba.forward`)."""
        return x + self.mixer(self.norm(x), integration_timesteps, lengths, inference_cache,
                              timestamps=timestamps, cu_seqlens=cu_seqlens,
                              check_values=check_values)

    def _forward(self, x: Tensor, steps: Steps, cache: InferenceCache | None) -> Tensor:
        """The block on validated input (``steps`` from :func:`~eventssm.inputs.validate_steps`)."""
        return x + self.mixer._forward(self.norm(x), steps, cache)

    def step(self, x: Tensor, cache: InferenceCache, integration_timesteps=None, *,
             check_values: bool = True) -> Tensor:
        """``x (B, 1, d_model)`` -> same, updating ``cache`` (``check_values``: see
        :meth:`Mamba.step`)."""
        return x + self.mixer.step(self.norm(x), cache, integration_timesteps,
                                   check_values=check_values)[0]

    def _step(self, x: Tensor, steps: Steps, cache: InferenceCache) -> Tensor:
        """One step on validated input: ``x (B, d_model)`` -> same."""
        return x + self.mixer._step(self.norm(x), steps, cache)


class MambaBackbone(nn.Module):
    """Stack of residual Mamba blocks with a final RMSNorm: ``(B, L, d_model) -> same``.

    Gaps are computed once from ``timestamps`` (float64) and shared by all layers.
    """

    def __init__(self, d_model: int, n_layers: int = 4, d_state: int = 16, d_conv: int = 4,
                 expand: int = 2, discretization: Discretization | str = "mamba",
                 time_scale: float = 1.0, norm_eps: float = 1e-5, **mamba_kwargs) -> None:
        super().__init__()
        if not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
        self.d_model, self.time_scale = d_model, check_time_scale(time_scale)
        self.layers = nn.ModuleList(
            ResidualBlock(d_model, norm_eps=norm_eps, d_state=d_state, d_conv=d_conv, expand=expand,
                          discretization=discretization, time_scale=time_scale, layer_idx=i, **mamba_kwargs)
            for i in range(n_layers)
        )
        self.norm_f = nn.RMSNorm(d_model, eps=norm_eps)

    def forward(self, x: Tensor, integration_timesteps=None, lengths=None, inference_cache=None,
                *, timestamps=None, cu_seqlens=None, check_values: bool = True) -> Tensor:
        """``x (B, L, d_model)`` -> same (arguments: see :meth:`Mamba.forward`; with
        ``cu_seqlens`` the ``n`` sequences are packed along L of a batch of one).

        The gaps, timestamps and lengths are validated once, here, and the same :class:`Steps`
        goes to every layer (the value checks share one host sync, which splits a compiled
        graph); ``check_values=False`` skips them (inputs validated already, or a
        CUDA-graph-captured step)."""
        check_activations(x, "x", self.norm_f.weight)
        unbatched = x.dim() == 2
        h = x[None] if unbatched else x
        if h.dim() != 3 or h.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape (batch, L, {self.d_model}) or (L, {self.d_model}), "
                             f"got {tuple(x.shape)}")
        steps = ValueChecks.at_door(check_values, lambda checks: self._steps(
            h.shape[0], h.shape[1], h.device, h.dtype, checks, integration_timesteps, lengths,
            inference_cache, timestamps, cu_seqlens))
        h = self._forward(h, steps, inference_cache)
        return h[0] if unbatched else h

    def _steps(self, batch: int, L: int, device, dtype, checks: ValueChecks, integration_timesteps,
               lengths, inference_cache, timestamps, cu_seqlens) -> Steps:
        """The :class:`Steps` of a call on ``(batch, L, d_model)`` activations of ``dtype``, after
        checking the caches; the value checks go to ``checks``."""
        if inference_cache is not None:
            self._check_caches(inference_cache, batch, device)
        warm = inference_cache is not None and inference_cache[0].seqlen_offset > 0
        return model_steps(
            batch, L, device, dtype, cu_seqlens, checks=checks, cache=inference_cache,
            last_time=inference_cache[0].last_time if warm else None,
            integration_timesteps=integration_timesteps, timestamps=timestamps, lengths=lengths,
            time_scale=self.time_scale)

    def _check_caches(self, caches, batch: int, device, name: str = "inference_cache") -> None:
        """One :class:`InferenceCache` per layer, each fit for this call (see
        :func:`~eventssm.inputs.check_cache`)."""
        if not isinstance(caches, (list, tuple)) or len(caches) != len(self.layers):
            got = f"{type(caches).__name__} of {len(caches)}" if isinstance(caches, (list, tuple)) \
                else type(caches).__name__
            raise TypeError(f"{name} must be a list of {len(self.layers)} InferenceCache (one per "
                            f"layer, from allocate_inference_cache), got {got}")
        for i, (layer, c) in enumerate(zip(self.layers, caches)):
            m = layer.mixer
            check_cache(c, batch, m.d_inner, m.d_conv, m.d_state, device, f"{name}[{i}]")

    def _forward(self, x: Tensor, steps: Steps, inference_cache=None) -> Tensor:
        """The stack on validated input: ``x (B, L, d_model)`` -> same."""
        caches = inference_cache if inference_cache is not None else [None] * len(self.layers)
        for layer, c in zip(self.layers, caches):
            x = layer._forward(x, steps, c)
        return self.norm_f(x)

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int | None = None, dtype=None):
        return [layer.mixer.allocate_inference_cache(batch_size, max_seqlen, dtype) for layer in self.layers]


class MambaLM(nn.Module):
    """Causal language model: embedding -> residual Mamba blocks -> RMSNorm -> tied LM head.

    Parameter names follow mamba-ssm's ``MambaLMHeadModel`` (``backbone.embedding``,
    ``backbone.layers.{i}.{norm,mixer}``, ``backbone.norm_f``, ``lm_head``); transformers'
    ``MambaForCausalLM`` checkpoints load through :func:`convert_mamba_state_dict` /
    :meth:`from_state_dict`.

    Args:
        vocab_size: V (e.g. 256 for bytes).
        d_model, d_state, d_conv, expand, n_layers: sizes.
        discretization: shared by all blocks (a Discretization or an lrnnx string).
        tie_embeddings: share the LM head with the embedding matrix.
        **mamba_kwargs: forwarded to every :class:`Mamba` (``dt_rank``, ``conv_bias``, ``bias``...).
    """

    def __init__(self, vocab_size: int, d_model: int, d_state: int = 16, d_conv: int = 4,
                 expand: int = 2, n_layers: int = 4, discretization: Discretization | str = "mamba",
                 tie_embeddings: bool = True, norm_eps: float = 1e-5, **mamba_kwargs) -> None:
        super().__init__()
        if not isinstance(vocab_size, int) or vocab_size < 1:
            raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
        self.vocab_size = vocab_size
        self.backbone = MambaBackbone(d_model, n_layers, d_state, d_conv, expand, discretization,
                                      norm_eps=norm_eps, **mamba_kwargs)
        self.backbone.embedding = nn.Embedding(vocab_size, d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        if tie_embeddings:
            self.lm_head.weight = self.backbone.embedding.weight
        self._init_weights(n_layers)

    def _init_weights(self, n_layers: int) -> None:
        # GPT-2 style: embeddings N(0, 0.02); residual output projections scaled by 1/sqrt(n_layers)
        nn.init.normal_(self.backbone.embedding.weight, std=0.02)
        for layer in self.backbone.layers:
            nn.init.kaiming_uniform_(layer.mixer.out_proj.weight, a=math.sqrt(5))
            with torch.no_grad():
                layer.mixer.out_proj.weight /= math.sqrt(n_layers)

    def forward(self, input_ids: Tensor, integration_timesteps=None, inference_cache=None,
                *, timestamps=None, lengths=None, cu_seqlens=None,
                check_values: bool = True) -> Tensor:
        """``input_ids (B, L)`` (or ``(L,)``) long -> logits ``(B, L, V)`` (or ``(L, V)``).

        ``cu_seqlens (n + 1,)``: ``n`` documents packed along L of a batch of one, each starting
        from a fresh state (see :meth:`MambaBackbone.forward`).

        ``check_values``: check the ids' range and the values of τ / timestamps / lengths (one
        host sync for all, see :meth:`MambaBackbone.forward`); ``False`` for a
        CUDA-graph-captured step."""
        if not isinstance(input_ids, Tensor):
            raise TypeError(f"input_ids must be an integer tensor (B, L), got {type(input_ids).__name__}")
        unbatched = input_ids.dim() == 1
        if unbatched:
            input_ids = input_ids[None]
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.long, torch.int32, torch.int64):
            raise ValueError(
                f"input_ids must be an integer tensor (B, L), got {input_ids.dtype} {tuple(input_ids.shape)}")
        emb = self.backbone.embedding.weight  # the embedded ids are the backbone's activations

        def convert(checks: ValueChecks) -> Steps:
            _add_ids_check(checks, input_ids, self.vocab_size, "input_ids")
            return self.backbone._steps(input_ids.shape[0], input_ids.shape[1], emb.device, emb.dtype,
                                        checks, integration_timesteps, lengths, inference_cache,
                                        timestamps, cu_seqlens)

        # checked before the embedding, which cannot look up an id out of range
        steps = ValueChecks.at_door(check_values, convert)
        h = self.backbone._forward(self.backbone.embedding(input_ids), steps, inference_cache)
        logits = self.lm_head(h)
        return logits[0] if unbatched else logits

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int | None = None, dtype=None):
        return self.backbone.allocate_inference_cache(batch_size, max_seqlen, dtype)

    def step(self, token: Tensor, cache, integration_timesteps=None, *,
             check_values: bool = True) -> Tensor:
        """``token (B,)`` -> logits ``(B, V)``, advancing every block's cache by one step.

        ``check_values=False`` skips the checks of the ids' range and the gap's value (host
        syncs), as a step captured in a CUDA graph needs; see :meth:`Mamba.step`.

        Raises:
            ValueError / TypeError: ``token`` not an integer ``(B,)`` tensor of ids in ``[0, V)``,
            or ``cache`` not one fitting cache per layer (see :meth:`allocate_inference_cache`).
        """
        if not isinstance(token, Tensor) or token.dtype not in (torch.int32, torch.int64) or token.dim() != 1:
            got = f"{token.dtype} {tuple(token.shape)}" if isinstance(token, Tensor) else type(token).__name__
            raise ValueError(f"token must be an integer tensor (B,) of ids, got {got}")
        def convert(checks: ValueChecks) -> Steps:
            _add_ids_check(checks, token, self.vocab_size, "token")
            self.backbone._check_caches(cache, token.shape[0], token.device, "cache")
            tau = step_column(integration_timesteps, "integration_timesteps", token.shape[0], token.device)
            return validate_steps(token.shape[0], 1, token.device, self.backbone.embedding.weight.dtype,
                                  checks=checks, integration_timesteps=tau)

        steps = ValueChecks.at_door(check_values, convert)
        return self._step(token, steps, cache)

    def _step(self, token: Tensor, steps: Steps, cache) -> Tensor:
        """One step on validated input: ``token (B,)`` -> logits ``(B, V)``."""
        x = self.backbone.embedding(token)  # (B, d_model)
        for layer, c in zip(self.backbone.layers, cache):
            x = layer._step(x, steps, c)
        return self.lm_head(self.backbone.norm_f(x))

    @torch.no_grad()
    def generate(self, input_ids: Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Prefill ``input_ids (B, L)`` through ``forward`` with a cache, then sample
        ``max_new_tokens`` one ``step`` at a time. ``temperature=0`` is greedy decoding.
        Returns ``(B, L + max_new_tokens)``."""
        if not isinstance(input_ids, Tensor):
            raise TypeError(f"input_ids must be an integer tensor (B, L), got {type(input_ids).__name__}")
        unbatched = input_ids.dim() == 1
        ids = input_ids[None] if unbatched else input_ids
        if ids.dim() != 2 or ids.shape[1] < 1:
            raise ValueError(f"input_ids must be (B, L) or (L,) with at least one token to condition "
                             f"on, got shape {tuple(input_ids.shape)}")
        check_count(max_new_tokens, "max_new_tokens")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
                math.isfinite(temperature) and temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
        check_count(top_k, "top_k", allow_none=True, minimum=1)
        cache = self.allocate_inference_cache(ids.shape[0], ids.shape[1] + max_new_tokens)
        logits = self(ids, inference_cache=cache)[:, -1]
        out = [ids]
        for i in range(max_new_tokens):
            if temperature == 0:
                nxt = logits.argmax(-1)
            else:
                logits = logits.float() / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(F.softmax(logits, -1), 1, generator=generator)[:, 0]
            out.append(nxt[:, None])
            if i + 1 < max_new_tokens:  # sampled ids are in range: nothing to validate again
                logits = self._step(nxt, Steps(), cache)
        res = torch.cat(out, dim=1)
        return res[0] if unbatched else res

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, Tensor], **kwargs) -> MambaLM:
        """Build a model from a transformers ``MambaForCausalLM`` or mamba-ssm
        ``MambaLMHeadModel`` state dict; sizes are read off the tensors' shapes. ``kwargs``
        override or add constructor arguments (e.g. ``discretization``, ``norm_eps``)."""
        sd = convert_mamba_state_dict(state_dict)
        needed = ["backbone.embedding.weight", "backbone.layers.0.mixer.A_log",
                  "backbone.layers.0.mixer.conv1d.weight", "backbone.layers.0.mixer.dt_proj.weight"]
        absent = [k for k in needed if k not in sd]
        if absent:
            raise ValueError(
                f"state_dict is not a Mamba language model's: missing {absent} (keys start with "
                f"{sorted({k.split('.')[0] for k in sd})[:5]}); expected a transformers "
                "MambaForCausalLM / MambaModel or a mamba-ssm MambaLMHeadModel state dict")
        emb = sd["backbone.embedding.weight"]
        vocab, d_model = emb.shape
        n_layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"backbone\.layers\.(\d+)\.", k)))
        p = "backbone.layers.0.mixer."
        d_inner, d_state = sd[p + "A_log"].shape
        cfg = dict(
            vocab_size=vocab, d_model=d_model, n_layers=n_layers, d_state=d_state,
            d_conv=sd[p + "conv1d.weight"].shape[-1], expand=d_inner // d_model,
            dt_rank=sd[p + "dt_proj.weight"].shape[1], conv_bias=(p + "conv1d.bias") in sd,
            bias=(p + "in_proj.bias") in sd,
            tie_embeddings="lm_head.weight" not in sd or torch.equal(sd["lm_head.weight"], emb),
        )
        if d_inner != cfg["expand"] * d_model:
            raise ValueError(f"d_inner {d_inner} is not a multiple of d_model {d_model}")
        cfg.update(kwargs)
        model = cls(**cfg)
        missing, unexpected = model.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.endswith(".rho") and k != "lm_head.weight"]
        if missing or unexpected:
            raise ValueError(f"state dict does not match: missing {missing}, unexpected {unexpected}")
        return model


def convert_mamba_state_dict(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map transformers' ``MambaForCausalLM`` names onto ours (mamba-ssm's, which need no change).

    transformers: ``backbone.embeddings.weight``; mamba-ssm and eventssm: ``backbone.embedding.weight``.
    A headless backbone (transformers' ``MambaModel``: ``embeddings.weight``, ``layers.N...``,
    ``norm_f.weight``, no ``backbone.`` prefix) gets the prefix.
    """
    if not isinstance(state_dict, dict):
        raise TypeError(f"state_dict must be a dict of tensors, got {type(state_dict).__name__}")
    headless = not any(k.startswith("backbone.") for k in state_dict) and any(
        k.startswith(("layers.", "embedding.", "embeddings.")) for k in state_dict)
    out = {}
    for k, v in state_dict.items():
        k = "backbone." + k if headless and not k.startswith("lm_head.") else k
        k = re.sub(r"^backbone\.embeddings\.", "backbone.embedding.", k)
        out[k] = v
    return out


def _add_ids_check(checks: ValueChecks, ids: Tensor, vocab_size: int, name: str) -> None:
    """Add the check that the token ids ``ids`` lie in ``[0, vocab_size)``."""
    def bad() -> Tensor:
        if not ids.numel():
            return torch.zeros((), dtype=torch.bool, device=ids.device)
        return (ids.min() < 0) | (ids.max() >= vocab_size)

    def explain() -> None:
        if bool(bad()):
            raise ValueError(f"{name} must lie in [0, {vocab_size}), got range "
                             f"[{int(ids.min())}, {int(ids.max())}]")

    checks.add(name, bad, explain)


def pool(h: Tensor, how: str, mask: Tensor | None = None, tau: Tensor | None = None) -> Tensor:
    """Pool per-step features ``h (B, L, d)`` over real steps -> ``(B, d)``.

    * ``last``: the feature at the last real step (what a causal model has seen of everything);
    * ``mean``: the mean over real steps;
    * ``time``: a time-weighted mean, each event weighted by the half-gaps on either side of it
      ``(τ[l] + τ[l+1]) / 2`` (the span of time it stands for); uniform when all gaps are 0.

    A sequence without real steps pools to 0. Packed batches: :func:`eventssm.packing.segment_pool`.
    """
    Bsz, L, _ = h.shape
    if L == 0:  # nothing to pool: 0, as for a sequence whose steps are all padding
        return h.new_zeros(Bsz, h.shape[-1])
    if mask is None:
        mask = torch.ones(Bsz, L, dtype=torch.bool, device=h.device)
    m = mask.to(h.dtype)
    if how == "last":
        n = mask.long().sum(1)
        out = h[torch.arange(Bsz, device=h.device), (n - 1).clamp(min=0)]
        # an empty sequence pools to 0, as with "mean" and "time" (and in segment_pool)
        return torch.where((n > 0)[:, None], out, torch.zeros((), dtype=h.dtype, device=h.device))
    if how == "mean":
        return (h * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1)
    if how == "time":
        if tau is None:
            return pool(h, "mean", mask)
        t = tau.to(h.dtype) * m
        nxt = torch.cat([t[:, 1:], torch.zeros_like(t[:, :1])], dim=1)
        w = 0.5 * (t + nxt) * m
        total = w.sum(1, keepdim=True)
        w = torch.where(total > 0, w / total.clamp(min=1e-30), m / m.sum(1, keepdim=True).clamp(min=1))
        return (h * w[..., None]).sum(1)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {how!r}")


def _check_unbatched(ref_name: str, ref: Tensor, **inputs) -> None:
    """Every input of an unbatched call is unbatched too: ``values (L, C)`` goes with ``marks``,
    ``timestamps`` and ``integration_timesteps`` of shape ``(L,)``, ``observed (L, C)`` and a
    single length."""
    ranks = dict(marks=1, observed=2, timestamps=1, integration_timesteps=1)
    for name, t in inputs.items():
        if t is None:
            continue
        shape = tuple(torch.as_tensor(t).shape)
        ok = len(shape) <= 1 and math.prod(shape) == 1 if name == "lengths" else len(shape) == ranks[name]
        if not ok:
            want = "a single length" if name == "lengths" else f"{ranks[name]} dimension(s)"
            raise ValueError(f"{ref_name} is unbatched {tuple(ref.shape)}, so {name} must be unbatched "
                             f"too ({want}), got shape {shape}: pass every input with a batch "
                             "dimension or none")


class _EventInputs(NamedTuple):
    """The per-event inputs of an :class:`EventEncoder` call, as passed."""

    values: Tensor | None
    marks: Tensor | None
    observed: Tensor | None
    timestamps: Tensor | None
    integration_timesteps: Tensor | None
    lengths: Tensor | None


class _Converted(NamedTuple):
    """An :class:`EventEncoder` call's inputs, shapes checked and converted (see
    ``EventEncoder._inputs``); their values are checked by the door."""

    values: Tensor | None
    marks: Tensor | None
    observed: Tensor | None
    steps: Steps
    unbatched: bool


def _add_marks_check(checks: ValueChecks, marks: Tensor, num_marks: int) -> None:
    """Add the check that ``marks`` lie in ``[0, num_marks)``."""
    def bad() -> Tensor:
        if not marks.numel():
            return torch.zeros((), dtype=torch.bool, device=marks.device)
        return (marks.min() < 0) | (marks.max() >= max(num_marks, 1))

    def explain() -> None:
        if bool(bad()):
            raise ValueError(f"marks must lie in [0, {num_marks}), "
                             f"got range [{int(marks.min())}, {int(marks.max())}]")

    checks.add("marks", bad, explain)


def _add_values_check(checks: ValueChecks, values: Tensor) -> None:
    """Add the check that ``values`` are finite (0 at padding already)."""
    def explain() -> None:
        bad = ~torch.isfinite(values)
        if bool(bad.any()):
            pos = tuple(int(i) for i in torch.nonzero(bad)[0])
            raise ValueError(
                f"values must be finite at real steps; got {values[pos].item()} at position {pos} "
                "(for missing observations pass 0 there and an observed mask, as the collate does)")

    checks.add("values", lambda: ~torch.isfinite(values).all(), explain)


def _with_batch_dim(inputs: _EventInputs) -> tuple[_EventInputs, bool]:
    """The inputs with a batch dimension, and whether the call was unbatched (``values (L, C)``,
    or ``marks (L,)`` without values: every input then gets a batch of one).

    Raises:
        TypeError: ``values``, ``marks`` or ``observed`` that is not a tensor.
        ValueError: neither values nor marks; an unbatched call with a batched input."""
    for name in ("values", "marks", "observed"):
        t = getattr(inputs, name)
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    ref = inputs.values if inputs.values is not None else inputs.marks
    if ref is None:
        raise ValueError("pass values (B, L, C) and/or marks (B, L)")
    for name, t, dims in (("values", inputs.values, "(B, L, C) or unbatched (L, C)"),
                          ("marks", inputs.marks, "(B, L) or unbatched (L,)")):
        want = (2, 3) if name == "values" else (1, 2)
        if t is not None and t.dim() not in want:
            raise ValueError(f"{name} must be {dims}, got shape {tuple(t.shape)}")
    if ref.dim() != (2 if inputs.values is not None else 1):
        return inputs, False
    _check_unbatched("values" if inputs.values is not None else "marks", ref, marks=inputs.marks,
                     observed=inputs.observed, timestamps=inputs.timestamps,
                     integration_timesteps=inputs.integration_timesteps, lengths=inputs.lengths)
    one = lambda t: None if t is None else t[None]
    return _EventInputs(
        values=one(inputs.values), marks=one(inputs.marks), observed=one(inputs.observed),
        timestamps=None if inputs.timestamps is None else torch.as_tensor(inputs.timestamps)[None],
        integration_timesteps=one(inputs.integration_timesteps),
        lengths=None if inputs.lengths is None else torch.as_tensor(inputs.lengths).reshape(1),
    ), True


def _time_kind(timestamps, integration_timesteps) -> str:
    """How a call's times come in: ``"timestamps"``, ``"integration_timesteps"`` or ``"none"``."""
    if timestamps is not None:
        return "timestamps"
    return "none" if integration_timesteps is None else "integration_timesteps"


def _check_time_input(cache: EncoderCache, timestamps, integration_timesteps, name: str) -> str:
    """The call's :func:`_time_kind`, which must be the one the cache's events came with: gaps
    formed from a mix (a gap without a time, or times after gaps) would not be those ``encode``
    forms from the whole history."""
    kind = _time_kind(timestamps, integration_timesteps)
    if cache.time_input not in (None, kind):
        raise ValueError(f"{name} holds events that came with {cache.time_input}; pass "
                         f"{cache.time_input} with every later event of these streams too (got "
                         f"{kind}), or allocate a fresh cache")
    return kind


def _carried_time(cache: EncoderCache, t: Tensor, name: str) -> Tensor:
    """``(B,)`` the time each stream's next gap is measured from: its latest event's time, or
    for a stream without events ``t (B,)`` itself (a first gap of 0, as in ``encode``).

    Raises:
        ValueError: ``t`` of another kind (integer or float) than the cache's times."""
    last = cache.last_time
    t = t.to(torch.float64) if t.dtype.is_floating_point else t.to(torch.int64)
    if t.dtype != last.dtype:
        kind = lambda d: "float" if d.is_floating_point else "integer"
        raise ValueError(f"{name} are {kind(t.dtype)} times but the cache holds {kind(last.dtype)} "
                         f"ones ({last.dtype}); pass one kind of time for the whole history")
    if t.dtype.is_floating_point:  # a padded or inactive slot may hold NaN: never a base time
        t = torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0)
    return torch.where(cache.count > 0, last, t)


def _step_active(active, batch: int, device) -> Tensor | None:
    """``active`` of :meth:`EventEncoder.step` as a ``(B,)`` bool tensor on ``device`` (None:
    every stream has an event)."""
    if active is None:
        return None
    a = torch.as_tensor(active, device=device)
    if a.dtype != torch.bool or tuple(a.shape) != (batch,):
        raise ValueError(f"active must be a bool tensor ({batch},) (True where the stream has an "
                         f"event at this step), got {a.dtype} {tuple(a.shape)}")
    return a


class EventEncoder(nn.Module):
    """Encoder for event sequences: values and/or marks -> Mamba blocks -> pooled features.

    Each event's input is ``Linear([values, observed?, log1p(τ)?]) + Embedding(mark)``; the gaps
    τ drive the discretization (event mode) and, with ``time_features``, are also an input so
    that a Standard (time-blind) discretization still sees time.

    Args:
        d_model: feature width.
        n_layers: residual Mamba blocks.
        d_input: value channels C (0: marks only).
        num_marks: number of event types (0: no marks).
        d_state, d_conv, expand: Mamba sizes.
        discretization: a Discretization or an lrnnx string.
        pooling: ``"last" | "mean" | "time"`` (see :func:`pool`).
        time_scale: the model's time unit: factor applied to every gap, whether formed from
            ``timestamps`` or passed as ``integration_timesteps``.
        dropout: on the input embedding.
        use_observed: values come with an ``observed (B, L, C)`` mask, appended to the input.
        time_features: append ``log1p(τ)`` to every event's input.
    """

    def __init__(self, d_model: int = 64, n_layers: int = 2, d_input: int = 0, num_marks: int = 0,
                 d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 discretization: Discretization | str = "mamba", pooling: str = "last",
                 time_scale: float = 1.0, dropout: float = 0.0, use_observed: bool = False,
                 time_features: bool = True, **mamba_kwargs) -> None:
        super().__init__()
        if d_input < 0 or num_marks < 0 or (d_input == 0 and num_marks == 0):
            raise ValueError(f"need d_input > 0 and/or num_marks > 0, got d_input={d_input}, num_marks={num_marks}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.d_model, self.d_input, self.num_marks = d_model, d_input, num_marks
        self.pooling, self.use_observed, self.time_features = pooling, use_observed, time_features
        self.time_scale = check_time_scale(time_scale)
        n_in = d_input * (2 if use_observed else 1) + (1 if time_features else 0)
        self.input_proj = nn.Linear(n_in, d_model) if n_in > 0 else None
        self.mark_embedding = nn.Embedding(num_marks, d_model) if num_marks > 0 else None
        self.dropout = nn.Dropout(dropout)
        self.backbone = MambaBackbone(d_model, n_layers, d_state, d_conv, expand, discretization,
                                      time_scale=time_scale, **mamba_kwargs)

    # ------------------------------------------------------------------ recurrent inference
    def allocate_inference_cache(self, batch_size: int, dtype=None) -> EncoderCache:
        """An empty :class:`~eventssm.cache.EncoderCache` for ``batch_size`` event streams (every
        block's conv window and SSM state, the running pooling, the latest times). ``dtype``: of
        the blocks' conv windows (see :meth:`Mamba.allocate_inference_cache`)."""
        w = self.backbone.norm_f.weight
        return EncoderCache(layers=self.backbone.allocate_inference_cache(batch_size, None, dtype),
                            pool=RunningPool.zeros(self.pooling, batch_size, self.d_model,
                                                   w.device, w.dtype))

    def _check_encoder_cache(self, cache, batch: int, device, name: str) -> None:
        """``cache`` an :class:`EncoderCache` of this encoder for ``batch`` streams on ``device``."""
        if not isinstance(cache, EncoderCache):
            raise TypeError(f"{name} must be an EncoderCache (from EventEncoder."
                            f"allocate_inference_cache), got {type(cache).__name__}")
        self.backbone._check_caches(cache.layers, batch, device, f"{name}.layers")
        if cache.pool.how != self.pooling or tuple(cache.pool.last.shape) != (batch, self.d_model):
            raise ValueError(f"{name} pools {cache.pool.how!r} over {tuple(cache.pool.last.shape)} but "
                             f"this call needs {self.pooling!r} over ({batch}, {self.d_model}): "
                             "allocate the cache from this encoder, for this batch")

    def step(self, values: Tensor | None = None, marks: Tensor | None = None, *,
             cache: EncoderCache, timestamps=None, integration_timesteps=None,
             observed: Tensor | None = None, active: Tensor | None = None,
             check_values: bool = True) -> tuple[Tensor, Tensor]:
        """One new event per stream of a batch of ``B``: each costs the same whatever the
        length of the history the ``cache`` holds.

        Args:
            values: ``(B, C)`` the event's values (``d_input > 0``).
            marks: ``(B,)`` integer type ids (``num_marks > 0``).
            cache: from :meth:`allocate_inference_cache`, possibly filled by :meth:`encode` /
                :meth:`forward` with ``inference_cache``; updated in place.
            timestamps: ``(B,)`` absolute times; the gap is taken from the stream's latest time
                in the cache (0 for a stream's first event), times ``time_scale``.
            integration_timesteps: ``(B,)`` the gaps themselves (times ``time_scale``), as
                ``encode`` takes them. Neither: standard mode. A cache keeps the kind its first
                events came with.
            observed: ``(B, C)`` bool, with ``use_observed``.
            active: ``(B,)`` bool, False where a stream has no event at this step: its state,
                pooling and latest time stay as they are, its feature is 0 and its inputs are
                not read (streams of different lengths step together, as padding in ``encode``).
            check_values: check marks, values and gaps (one host sync for all);
                False for inputs known to be valid (e.g. sampled events).

        Returns:
            ``(feature (B, d_model), pooled (B, d_model))``: what :meth:`encode` gives at this
            event and what :meth:`forward` gives for each stream's history so far, on the same
            events (in ``eval()``: dropout draws differ). Under autograd the cache keeps the
            graph of every step it took, as :meth:`Mamba.step`'s does: for inference run it
            under ``torch.no_grad()`` (or ``torch.inference_mode()``), where each step's cost and
            memory stay flat in the history's length.

        Raises:
            ValueError / TypeError: inputs of the wrong shape or dtype, a cache of another encoder
            or batch, times of another kind than the cache's, negative gaps, bad marks or values.
        """
        for name, t in (("values", values), ("marks", marks), ("observed", observed)):
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        ref = values if values is not None else marks
        if ref is None:
            raise ValueError("pass values (B, C) and/or marks (B,): one event per stream")
        if values is not None and values.dim() != 2:
            raise ValueError(f"step takes one event per stream: values must have shape (B, "
                             f"{self.d_input}), got {tuple(values.shape)}")
        if marks is not None and marks.shape != ref.shape[:1]:
            raise ValueError(f"step takes one event per stream: marks must have shape "
                             f"({ref.shape[0]},), got {tuple(marks.shape)}")
        col = lambda t: None if t is None else t[:, None]  # (B, ...) -> one step (B, 1, ...)
        Bsz, _, device = self._check_events(col(values), col(marks))
        self._check_encoder_cache(cache, Bsz, device, "cache")
        act = _step_active(active, Bsz, device)
        kind = _check_time_input(cache, timestamps, integration_timesteps, "cache")
        wdt = self.backbone.norm_f.weight.dtype
        lengths = None if act is None else act.long()  # an inactive stream is a padded step

        def convert(checks: ValueChecks):
            if kind == "timestamps":
                t = step_column(timestamps, "timestamps", Bsz, device)
                last = None if cache.last_time is None else _carried_time(cache, t[:, 0], "timestamps")
                steps = validate_steps(Bsz, 1, device, wdt, checks=checks, timestamps=t,
                                       lengths=lengths, last_time=last, time_scale=self.time_scale)
            else:
                tau = step_column(integration_timesteps, "integration_timesteps", Bsz, device)
                steps = validate_steps(Bsz, 1, device, wdt, checks=checks, integration_timesteps=tau,
                                       lengths=lengths, time_scale=self.time_scale)
            return (steps, *self._real_events(col(values), col(marks), steps.mask, wdt, checks))

        steps, real_values, real_marks = ValueChecks.at_door(check_values, convert)
        x = self._embed(real_values, real_marks, col(observed), steps.tau, wdt)[:, 0]  # (B, d_model)
        h = self._step_stack(x, Steps(tau=steps.tau), cache.layers, act)
        if act is not None:
            h = h.masked_fill(~act[:, None], 0.0)
        cache.pool.add_step(h, None if steps.tau is None else steps.tau[:, 0], act)
        if steps.last_time is not None:
            cache.last_time = steps.last_time
        cache.time_input = kind
        return h, cache.pool.value()

    def _step_stack(self, x: Tensor, steps: Steps, layers: list[InferenceCache],
                    active: Tensor | None) -> Tensor:
        """Every block's step and the final norm: ``x (B, d_model)`` -> same. The blocks update
        their caches in place for every row; an inactive stream's rows are put back after."""
        kept = None if active is None else [(c.conv_state.clone(), c.ssm_state.clone()) for c in layers]
        for layer, c in zip(self.backbone.layers, layers):
            x = layer._step(x, steps, c)
        if kept is not None:
            for c, (conv, ssm) in zip(layers, kept):
                c.conv_state.copy_(torch.where(active[:, None, None], c.conv_state, conv))
                c.ssm_state.copy_(torch.where(active[:, None, None], c.ssm_state, ssm))
        return self.backbone.norm_f(x)

    def _inputs(self, values, marks, observed, timestamps, integration_timesteps, lengths,
                cu_seqlens, cache: EncoderCache | None, checks: ValueChecks) -> _Converted:
        """Check the shapes and dtypes of a call's inputs (and the cache) and convert them: the
        events' values and marks (0 at padding), their :class:`~eventssm.inputs.Steps` and
        whether the input was unbatched. The value checks go to ``checks``, which the door runs
        before :meth:`_features` embeds the events. With a ``cache`` the first gap of each
        stream that has events is measured from its latest time."""
        events, unbatched = _with_batch_dim(_EventInputs(values, marks, observed, timestamps,
                                                         integration_timesteps, lengths))
        Bsz, L, device = self._check_events(events.values, events.marks)
        wdt = self.backbone.norm_f.weight.dtype
        last_time = None
        if cache is not None:
            self._check_encoder_cache(cache, Bsz, device, "inference_cache")
            _check_time_input(cache, events.timestamps, events.integration_timesteps, "inference_cache")
            ts = events.timestamps
            if ts is not None and cache.last_time is not None:
                ts = torch.as_tensor(ts, device=device)
                if ts.dim() == 2 and ts.shape[0] == Bsz and L > 0:  # else model_steps says why
                    last_time = _carried_time(cache, ts[:, 0], "timestamps")
        steps = model_steps(Bsz, L, device, wdt, cu_seqlens, checks=checks, cache=cache,
                            last_time=last_time, integration_timesteps=events.integration_timesteps,
                            timestamps=events.timestamps, lengths=events.lengths,
                            time_scale=self.time_scale)
        values, marks = self._real_events(events.values, events.marks, steps.mask, wdt, checks)
        return _Converted(values, marks, events.observed, steps, unbatched)

    def _check_events(self, values, marks) -> tuple[int, int, torch.device]:
        """Check batched ``values (B, L, C)`` and ``marks (B, L)`` against ``d_input`` and
        ``num_marks`` (shapes and dtypes: no host sync); returns ``B``, ``L`` and the device."""
        ref = values if values is not None else marks
        Bsz, L = ref.shape[:2]
        if self.d_input and values is None:
            raise ValueError(f"values (B, L, {self.d_input}) are required (d_input={self.d_input})")
        if values is not None and (values.dim() != 3 or values.shape[-1] != self.d_input):
            raise ValueError(f"values must have shape (B, L, {self.d_input}), got {tuple(values.shape)}")
        if self.num_marks and marks is None:
            raise ValueError(f"marks (B, L) are required (num_marks={self.num_marks})")
        if values is not None and values.is_complex():
            raise ValueError(f"values must be real (float, int or bool), got {values.dtype}")
        if marks is not None:
            if marks.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
                raise ValueError(f"marks must be an integer tensor of event type ids, got {marks.dtype}")
            if marks.shape != (Bsz, L):
                raise ValueError(f"marks must have shape ({Bsz}, {L}), got {tuple(marks.shape)}")
        return Bsz, L, ref.device

    def _real_events(self, values, marks, mask, wdt, checks: ValueChecks) -> tuple[Tensor | None, Tensor | None]:
        """``values`` in the weights' dtype ``wdt`` and ``marks``, each 0 at padding (outside
        ``mask (B, L)``); the checks that marks lie in ``[0, num_marks)`` and values are finite
        go to ``checks``.

        Padding may hold anything (NaN values, id -1): it is replaced (by ``masked_fill``, not a
        product: NaN·0 is NaN) before anything reads it."""
        if marks is not None:
            if mask is not None:
                marks = marks.masked_fill(~mask, 0)
            _add_marks_check(checks, marks, self.num_marks)
        if values is not None:
            values = values.to(wdt)
            if mask is not None:
                values = values.masked_fill(~mask[..., None], 0.0)
            _add_values_check(checks, values)
        return values, marks

    def _embed(self, values, marks, observed, tau, wdt) -> Tensor:
        """Each event's input ``Linear([values, observed?, log1p(τ)?]) + Embedding(mark)``,
        after dropout: ``(B, L, d_model)``. ``tau`` None (standard mode) gives ``log1p(0)``."""
        ref = values if values is not None else marks
        feats = []
        if values is not None:
            feats.append(values)
            if self.use_observed:
                if observed is None:
                    raise ValueError("observed (B, L, C) is required (use_observed=True)")
                if observed.shape != values.shape:
                    raise ValueError(f"observed must have the shape of values {tuple(values.shape)}, "
                                     f"got {tuple(observed.shape)}")
                feats.append(observed.to(wdt))
        if self.time_features:
            gaps = tau if tau is not None else torch.zeros(ref.shape[:2], device=ref.device)
            feats.append(torch.log1p(gaps.to(wdt))[..., None])
        x = self.input_proj(torch.cat(feats, -1)) if feats else 0
        if self.mark_embedding is not None:
            x = x + self.mark_embedding(marks)
        return self.dropout(x)

    def _features(self, inputs: _Converted, cache: EncoderCache | None, time_input: str) -> Tensor:
        """Backbone features ``(B, L, d_model)`` of validated inputs; with a ``cache``, the stack
        starts from its state and the cache absorbs the events (which came with ``time_input``,
        see :func:`_time_kind`)."""
        steps = inputs.steps
        x = self._embed(inputs.values, inputs.marks, inputs.observed, steps.tau,
                        self.backbone.norm_f.weight.dtype)
        h = self.backbone._forward(x, steps, None if cache is None else cache.layers)
        if cache is not None:
            cache.pool.add_chunk(h, steps.mask, steps.tau)
            if steps.last_time is not None:
                cache.last_time = steps.last_time
            cache.time_input = time_input
        return h

    def encode(self, values=None, marks=None, *, timestamps=None, integration_timesteps=None,
               lengths=None, observed=None, cu_seqlens=None, inference_cache: EncoderCache | None = None,
               check_values: bool = True) -> Tensor:
        """Per-event features ``(B, L, d_model)``; padding steps are 0. Packed input
        (``cu_seqlens``, see :meth:`forward`): ``(1, T, d_model)``, one row per event.

        ``inference_cache`` (from :meth:`allocate_inference_cache`): the events continue each
        stream's history held in the cache, which absorbs them (a prefill before :meth:`step`,
        or a history fed in chunks); right-padded input only.

        ``check_values``: see :meth:`forward`."""
        inputs = ValueChecks.at_door(check_values, lambda checks: self._inputs(
            values, marks, observed, timestamps, integration_timesteps, lengths, cu_seqlens,
            inference_cache, checks))
        h = self._features(inputs, inference_cache, _time_kind(timestamps, integration_timesteps))
        if inputs.steps.mask is not None:
            h = h.masked_fill(~inputs.steps.mask[..., None], 0.0)
        return h[0] if inputs.unbatched else h

    def forward(self, values=None, marks=None, *, timestamps=None, integration_timesteps=None,
                lengths=None, observed=None, cu_seqlens=None,
                inference_cache: EncoderCache | None = None, check_values: bool = True) -> Tensor:
        """Pooled features ``(B, d_model)`` (``(d_model,)`` for unbatched input).

        Packed input: ``cu_seqlens (n + 1,)`` int32/int64 cumulative lengths of ``n`` sequences
        laid one after another along L, ``values (1, T, C)``, ``marks``, ``observed``,
        ``timestamps`` / ``integration_timesteps`` ``(1, T)`` (no ``lengths``): the conv and
        the scan restart at every sequence start, gaps from timestamps are formed within each
        sequence, and the pooling runs per sequence (:func:`eventssm.packing.segment_pool`).
        Returns ``(n, d_model)``: the same numbers as the padded batch of the same sequences,
        without computing any padding. An empty sequence (length 0) pools to 0 in either form.

        ``check_values``: check marks, values, lengths and times (one host sync for all; a
        sync also splits a ``torch.compile`` graph). ``False`` only for inputs
        validated already, e.g. in a CUDA-graph-captured training step
        (``torch.compile(mode="reduce-overhead")``).

        ``inference_cache``: as in :meth:`encode`; the pooled features are then those of each
        stream's whole history, the cache's earlier events included."""
        inputs = ValueChecks.at_door(check_values, lambda checks: self._inputs(
            values, marks, observed, timestamps, integration_timesteps, lengths, cu_seqlens,
            inference_cache, checks))
        h = self._features(inputs, inference_cache, _time_kind(timestamps, integration_timesteps))
        steps, unbatched = inputs.steps, inputs.unbatched
        if inference_cache is not None:
            out = inference_cache.pool.value()
            return out[0] if unbatched else out
        if steps.cu_seqlens is not None:
            return segment_pool(h, self.pooling, steps.cu_seqlens, steps.tau)
        out = pool(h, self.pooling, steps.mask, steps.tau)
        return out[0] if unbatched else out
