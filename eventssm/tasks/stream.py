"""Online inference: events pushed one at a time into many streams, each stream's state kept, and
the model's answers for any stream at any moment.

Legend: events of a push ``n``, streams asked about ``n``, query times per stream ``Q``, event
types ``K``, features ``d`` (``d_model``), value channels ``C``, sampled futures ``S``, sampled
events per future ``E``.

An :class:`EventStream` holds one :class:`~eventssm.EncoderCache` whose rows are the streams: a
stream (any hashable key) gets a row when its first event arrives. A push advances only the rows
of the streams it names (one recurrent :meth:`EventEncoder.step` on those rows, or for several
events per stream one ``encode`` of the chunk continuing their state), so an event costs the same
whatever the history's length and however many other streams are held. The answers are those of
the task's batch forward on each stream's history so far (``tests/test_event_stream.py``).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import torch
from torch import Tensor

from eventssm.cache import EncoderCache
from eventssm.models import EventEncoder
from eventssm.tasks.sequence import EventClassifier, EventRegressor
from eventssm.tasks.tpp import EventTPP
from eventssm.tpp_sampler import sample_after

__all__ = ["EventStream"]

_MODELS = (EventTPP, EventClassifier, EventRegressor, EventEncoder)


class EventStream:
    """Event streams fed online to a trained model.

    ``model``: an :class:`~eventssm.tasks.EventTPP` (intensities, densities, the next event,
    sampled futures), an :class:`~eventssm.tasks.EventClassifier` or
    :class:`~eventssm.tasks.EventRegressor` (the running prediction) or a bare
    :class:`~eventssm.EventEncoder` (features). The model is put in ``eval()`` mode (dropout off:
    the answers are the batch forward's) and is not trained through the stream.

    Args:
        model: see above; its parameters' device and dtype are the stream's.
        capacity: the most streams held at once; a push that would add one more raises. None:
            the state grows (doubling) as new streams arrive.
        integer_times: times are integers (int64, e.g. nanoseconds since an epoch: gaps exact);
            otherwise every time is taken as float64. One kind for the stream's lifetime.
        compile: run the one-event step (a push with one event per stream) under
            ``torch.compile``: its few dozen small tensor ops per block fuse into a few kernels,
            which is most of a push's cost at small batch sizes (docs/tpp.md gives the measured
            latency). The first push compiles (tens of seconds on a small CPU); the answers are
            the eager step's to float rounding.

    A stream's times must not decrease (a tie is a gap of 0, as in a batch). Every push is
    checked before any state changes, so a push that raises leaves every stream as it was.
    """

    def __init__(self, model, *, capacity: int | None = None, integer_times: bool = False,
                 compile: bool = False) -> None:
        if not isinstance(model, _MODELS):
            raise TypeError("model must be an EventTPP, EventClassifier, EventRegressor or "
                            f"EventEncoder, got {type(model).__name__}")
        if capacity is not None and (not isinstance(capacity, int) or capacity < 1):
            raise ValueError(f"capacity must be a positive int or None, got {capacity!r}")
        if getattr(model, "ensemble", 1) > 1:
            raise ValueError(f"EventStream streams one encoder; this classifier is an ensemble of "
                             f"{model.ensemble} members (train it with ensemble=1 to stream it)")
        if not isinstance(compile, bool):
            raise TypeError(f"compile must be True or False, got {compile!r}")
        self.model = model.eval()
        self.encoder: EventEncoder = model if isinstance(model, EventEncoder) else model.encoder
        # torch's automatic dynamic shapes: a second number of streams per push recompiles once
        # with symbolic sizes. (dynamic=True would also make the model's float constants
        # symbolic, and their checks would split the step into graphs again.)
        self._advance = torch.compile(self._advance_rows) if compile else self._advance_rows
        self.capacity = capacity
        self.time_dtype = torch.int64 if integer_times else torch.float64
        w = self.encoder.backbone.norm_f.weight
        self.device, self.dtype = w.device, w.dtype
        with torch.no_grad():
            self.cache: EncoderCache = self.encoder.allocate_inference_cache(capacity or 8)
        self._slots: dict[Hashable, int] = {}  # stream key -> row of the cache
        self._free: list[int] = []  # rows of dropped streams, reused first
        self._next_row = 0  # rows from here on have never been used
        # each stream's latest time as a Python number: a push is checked on the host, without
        # a round of small device ops per event
        self._last: dict[Hashable, float | int] = {}

    # ------------------------------------------------------------------ streams
    @property
    def streams(self) -> list:
        """The keys of the streams held, in order of arrival."""
        return list(self._slots)

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key) -> bool:
        return key in self._slots

    def drop(self, stream_ids) -> None:
        """Forget streams (their rows are reused by the next new streams)."""
        rows = self._rows(stream_ids)
        self.cache.clear(rows)
        for key in _keys(stream_ids):
            self._free.append(self._slots.pop(key))
            del self._last[key]

    def count(self, stream_ids) -> Tensor:
        """``(n,)`` int64: events each stream has absorbed."""
        return self.cache.count[self._rows(stream_ids)]

    def last_time(self, stream_ids) -> Tensor:
        """``(n,)`` the time of each stream's latest event (float64, or int64 with
        ``integer_times``)."""
        return self.cache.last_time[self._rows(stream_ids)]

    # ------------------------------------------------------------------ events in
    @torch.no_grad()
    def push(self, stream_ids, times, marks=None, values=None, observed=None) -> None:
        """Absorb ``n`` events, the ``i``-th in stream ``stream_ids[i]`` at ``times[i]``.

        A stream seen for the first time is created. A stream may appear several times in one
        push: its events are then taken in the order given (a whole table can be replayed in
        one push, or one event at a time).

        Args:
            stream_ids: ``n`` hashable keys (a list, tuple, array or 1-D tensor; a single key goes
                in a list).
            times: ``(n,)`` event times, in the data's unit (the model's ``time_scale`` is
                applied to the gaps, as in training).
            marks: ``(n,)`` integer types in ``[0, num_marks)`` (models with marks).
            values: ``(n, C)`` values (models with ``d_input``). With ``use_observed``, NaN marks
                a missing value (as the collate reads it) unless ``observed`` is given.
            observed: ``(n, C)`` bool, with ``use_observed``.

        Raises:
            ValueError: a time before its stream's latest time (naming the stream), non-finite
                times or values, marks out of range, inputs of the wrong shape, a full stream.
            TypeError: a stream id that is not hashable, or a single string for ``stream_ids``.
        """
        keys = _keys(stream_ids)
        n = len(keys)
        if n == 0:
            return
        t = self._times(times, n)
        mk, val, obs = self._event_inputs(marks, values, observed, n)
        rank, prev = _order(keys)
        t_host = t.tolist()
        self._check(keys, t_host, mk, val, obs, prev)
        rows = self._rows_for(keys)
        if max(rank) == 0:
            self._step(rows, t, mk, val, obs)
        else:
            self._chunk(keys, rows, rank, t, mk, val, obs)
        self._last.update(zip(keys, t_host))  # a stream's last event in the push is its latest

    def _step(self, rows: list[int], t, mk, val, obs) -> None:
        """One event for each of the streams ``rows`` (distinct): a recurrent step on their rows."""
        self._advance(torch.tensor(rows, device=self.device), t, mk, val, obs)

    def _advance_rows(self, idx: Tensor, t, mk, val, obs) -> None:
        """The step of :meth:`_step` on rows ``idx (n,)``: their states out of the shared cache,
        one event each, and back (what ``compile`` compiles as one graph)."""
        sub = self.cache.select(idx)
        self.encoder.step(values=val, marks=mk, observed=obs, cache=sub, timestamps=t,
                          check_values=False)
        self.cache.put(idx, sub)

    def _chunk(self, keys: list, rows: list[int], rank: list[int], t, mk, val, obs) -> None:
        """Several events per stream: one right-padded chunk per stream, encoded on their rows."""
        first: dict = {}
        for key, row in zip(keys, rows):
            first.setdefault(key, (len(first), row))
        col = torch.tensor(rank, device=self.device)
        row_of = torch.tensor([first[k][0] for k in keys], device=self.device)
        S, Lc = len(first), max(rank) + 1
        lengths = torch.zeros(S, dtype=torch.long, device=self.device).index_add_(
            0, row_of, torch.ones_like(row_of))
        ts = torch.zeros(S, Lc, dtype=t.dtype, device=self.device)
        ts[row_of, col] = t
        pad = torch.arange(Lc, device=self.device)[None] >= lengths[:, None]
        ts = torch.where(pad, ts.gather(1, (lengths - 1)[:, None]), ts)  # padding repeats the last time

        def padded(x, fill):
            if x is None:
                return None
            out = torch.full((S, Lc, *x.shape[1:]), fill, dtype=x.dtype, device=self.device)
            out[row_of, col] = x
            return out

        idx = torch.tensor([r for _, r in first.values()], device=self.device)
        sub = self.cache.select(idx)
        self.encoder.encode(values=padded(val, 0), marks=padded(mk, 0), observed=padded(obs, False),
                            timestamps=ts, lengths=lengths, inference_cache=sub, check_values=False)
        self.cache.put(idx, sub)

    # ------------------------------------------------------------------ answers
    @torch.no_grad()
    def features(self, stream_ids) -> Tensor:
        """``(n, d)`` each stream's latest event's features (``encode`` at that event)."""
        return self.cache.pool.last[self._rows(stream_ids)]

    @torch.no_grad()
    def pooled(self, stream_ids) -> Tensor:
        """``(n, d)`` each stream's pooled features (the encoder's ``forward`` on its history)."""
        return self.cache.pool.value()[self._rows(stream_ids)]

    @torch.no_grad()
    def predict(self, stream_ids) -> Tensor:
        """The running prediction on each stream's history: class probabilities ``(n, classes)``
        of an :class:`EventClassifier` (of the next event, for a ``per_event`` one), or the
        regression output ``(n, d_target)`` of an :class:`EventRegressor` (per sequence)."""
        if isinstance(self.model, EventClassifier):
            h = self.features(stream_ids) if self.model.per_event else self.pooled(stream_ids)
            logits = self.model.head(h)
            # at least float32, as the task's predict_step (a float64 model stays float64)
            return (logits if logits.dtype == torch.float64 else logits.float()).softmax(-1)
        if isinstance(self.model, EventRegressor):
            return self.model.head(self.pooled(stream_ids))
        raise TypeError(f"predict is for EventClassifier and EventRegressor, not "
                        f"{type(self.model).__name__}" + (
                            ": ask next_event, intensity or density" if self._tpp else ""))

    @torch.no_grad()
    def forecast(self, stream_ids, query_times) -> Tensor:
        """An :class:`EventRegressor`'s forecasts ``(n, Q, d_target)`` at ``query_times (n, Q)``
        after each stream's latest event (non-decreasing along Q), as its forward on a batch with
        ``query_times`` gives them: each query is an unobserved event stepped on a copy of the
        stream's state (the stream itself is not advanced)."""
        if not isinstance(self.model, EventRegressor) or not self.model.use_observed:
            raise TypeError("forecast is for an EventRegressor with use_observed=True (its query "
                            "steps are unobserved events)")
        keys = _keys(stream_ids)
        rows = self._rows(keys)
        q = self._query_times(keys, rows, query_times, "query_times")  # (n, Q)
        if q.shape[1] > 1 and bool((q.diff(dim=1) < 0).any()):
            raise ValueError("query_times must not decrease along each row (the queries are "
                             "successive unobserved events)")
        sub = self.cache.select(rows)
        n, C = len(keys), self.encoder.d_input
        zeros = torch.zeros(n, C, dtype=self.dtype, device=self.device)
        unseen = torch.zeros(n, C, dtype=torch.bool, device=self.device)
        marks = torch.zeros(n, dtype=torch.long, device=self.device) if self.encoder.num_marks else None
        out = []
        for j in range(q.shape[1]):
            f, _ = self.encoder.step(values=zeros, marks=marks, observed=unseen, cache=sub,
                                     timestamps=q[:, j], check_values=False)
            out.append(self.model.head(f))
        return torch.stack(out, 1) if out else zeros.new_zeros(n, 0, self.model.head.out_features)

    @torch.no_grad()
    def intensity(self, stream_ids, t) -> Tensor:
        """Type intensities ``λ_k(t)`` of each stream's next event at times ``t`` (absolute, at
        or after the stream's latest event, no event in between): ``t`` a number (every stream),
        ``(n,)`` -> ``(n, K)``, or ``(n, Q)`` -> ``(n, Q, K)``. The mixture head gives its hazard."""
        h, s, squeeze = self._tpp_query(stream_ids, t)
        lam = self.model.head.intensity(h, s)  # (n, Q, K)
        return lam[:, 0] if squeeze else lam

    @torch.no_grad()
    def density(self, stream_ids, t) -> Tensor:
        """The next event's density ``p(t, k)`` (no event before ``t``, the next one at ``t`` of
        type ``k``): shapes as :meth:`intensity`. It is ``exp`` of the task's per-event
        log-likelihood ``time part + type part``, computed by the same head."""
        h, s, squeeze = self._tpp_query(stream_ids, t)
        n, Q = s.shape
        K = self.model.num_marks
        hq = h[:, None, None].expand(n, Q, K, h.shape[-1])
        k = torch.arange(K, device=self.device).expand(n, Q, K)
        time_ll, type_ll = self.model.head.log_likelihood(hq, s[..., None].expand(n, Q, K), k)
        dens = (time_ll + type_ll).exp()
        return dens[:, 0] if squeeze else dens

    @torch.no_grad()
    def survival(self, stream_ids, t) -> Tensor:
        """``P(no event before t)`` after each stream's latest event: ``(n,)`` or ``(n, Q)``."""
        h, s, squeeze = self._tpp_query(stream_ids, t)
        S = self.model.head.log_survival(h[:, None].expand(*s.shape, h.shape[-1]), s).exp()
        return S[:, 0] if squeeze else S

    @torch.no_grad()
    def next_event(self, stream_ids) -> dict:
        """The next event's prediction for each stream, as the task's ``predict`` gives it:
        ``{"gap" (n,), "time" (n,) float64, "type_probs" (n, K)}``: the predicted gap (the
        predictive mean or median, the model's ``time_prediction``), the time it points at
        (latest time + gap) and the type probabilities."""
        keys = _keys(stream_ids)
        h = self._tpp_features(keys)
        gap, probs = self.model.head.predict(h)
        return {"gap": gap, "time": self.last_time(keys).double() + gap.double(),
                "type_probs": probs}

    @torch.no_grad()
    def sample_futures(self, stream_ids, horizon: float, n_samples: int = 1,
                       max_events: int = 64, generator: torch.Generator | None = None) -> dict:
        """``n_samples`` futures of each stream up to ``horizon`` past its latest event, drawn with
        the linear-time sampler (:func:`eventssm.tpp_sampler.sample_after`) from a copy of its
        state (the streams are not advanced). With the same ``generator``, the draws of
        ``EventTPP.sample_futures`` on the same histories.

        Returns ``{"times" (n, S, E) float64, "marks" (n, S, E), "mask" (n, S, E)}``, ``E =
        max_events``: absolute times, ``mask`` marking real events."""
        if not horizon > 0 or n_samples < 1 or max_events < 1:
            raise ValueError(f"need horizon > 0, n_samples >= 1, max_events >= 1; got {horizon}, "
                             f"{n_samples}, {max_events}")
        keys = _keys(stream_ids)
        h = self._tpp_features(keys)
        rows = self._rows(keys).repeat_interleave(n_samples)
        sub = self.cache.select(rows)
        sub.last_time = sub.last_time.double()  # sampled times are float64 (an int clock too)
        out = sample_after(self.encoder, self.model.head, sub, h.repeat_interleave(n_samples, 0),
                           sub.last_time.clone(), horizon=horizon, max_events=max_events,
                           generator=generator)
        shape = (len(keys), n_samples, max_events)
        return {k: v.reshape(shape) for k, v in zip(("times", "marks", "mask"), out)}

    # ------------------------------------------------------------------ internals
    @property
    def _tpp(self) -> bool:
        return isinstance(self.model, EventTPP)

    def _tpp_features(self, keys: list) -> Tensor:
        if not self._tpp:
            raise TypeError(f"the next event's distribution needs an EventTPP, not "
                            f"{type(self.model).__name__}" + (
                                "" if isinstance(self.model, EventEncoder) else ": ask predict"))
        return self.features(keys)

    def _tpp_query(self, stream_ids, t) -> tuple[Tensor, Tensor, bool]:
        """``(h (n, d), s (n, Q) gaps since each stream's latest event, squeeze)``."""
        keys = _keys(stream_ids)
        h = self._tpp_features(keys)
        rows = self._rows(keys)
        t = _tensor(t).to(self.device)
        squeeze = t.dim() <= 1
        if t.dim() == 0:
            t = t.expand(len(keys))
        if squeeze and t.shape != (len(keys),):
            raise ValueError(f"t must be a number, ({len(keys)},) or ({len(keys)}, Q) for "
                             f"{len(keys)} streams, got {tuple(t.shape)}")
        q = self._query_times(keys, rows, t[:, None] if squeeze else t, "t")
        last = self.cache.last_time[rows]
        s = (q - last[:, None]).to(torch.float64)  # an integer clock subtracts exactly first
        return h, s.to(h.dtype if h.dtype == torch.float64 else torch.float32), squeeze

    def _query_times(self, keys: list, rows: Tensor, q, name: str) -> Tensor:
        """``q (n, Q)`` on the stream's clock, each at or after its stream's latest time."""
        q = _tensor(q).to(self.device)
        if q.dim() != 2 or q.shape[0] != len(keys):
            raise ValueError(f"{name} must have shape ({len(keys)}, Q) (one row per stream), got "
                             f"{tuple(q.shape)}")
        if self.time_dtype == torch.int64 and not q.dtype.is_floating_point:
            q = q.to(torch.int64)
        else:
            q = q.to(torch.float64)
        last = self.cache.last_time[rows].to(q.dtype)
        bad = ~(q >= last[:, None])  # NaN too
        if bool(bad.any()):
            i, j = (int(x) for x in torch.nonzero(bad)[0])
            raise ValueError(f"{name}: stream {keys[i]!r} is asked about time {q[i, j].item()}, "
                             f"before its latest event at {last[i].item()}")
        return q

    def _rows(self, stream_ids) -> Tensor:
        """``(n,)`` the cache rows of known streams (KeyError naming an unknown one)."""
        rows = []
        for key in _keys(stream_ids):
            row = self._slots.get(key)
            if row is None:
                raise KeyError(f"no stream {key!r} (streams are created by push)")
            rows.append(row)
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def _rows_for(self, keys: list) -> list[int]:
        """The rows of ``keys``, new streams given rows (reused, or the cache grown)."""
        new = list(dict.fromkeys(k for k in keys if k not in self._slots))
        used = len(self._slots)
        if self.capacity is not None and used + len(new) > self.capacity:
            raise ValueError(f"EventStream is full: capacity {self.capacity} streams, {used} held, "
                             f"{len(new)} new in this push (first new: {new[0]!r}); drop streams or "
                             "make a stream with a larger capacity")
        short = len(new) - len(self._free) - (self.cache.batch_size - self._next_row)
        if short > 0:
            size = self.cache.batch_size
            while size < self.cache.batch_size + short:
                size *= 2
            self.cache = self.cache.extended(size)
        for key in new:
            if self._free:
                self._slots[key] = self._free.pop()
            else:
                self._slots[key] = self._next_row
                self._next_row += 1
        return [self._slots[k] for k in keys]

    def _times(self, times, n: int) -> Tensor:
        t = _tensor(times)
        if t.shape != (n,):
            raise ValueError(f"times must have shape ({n},) (one per stream id), got {tuple(t.shape)}")
        if self.time_dtype == torch.int64 and (t.dtype.is_floating_point or t.dtype == torch.bool):
            raise ValueError(f"times must be integers (integer_times=True), got {t.dtype}")
        if not (t.dtype.is_floating_point or t.dtype in (torch.int64, torch.int32, torch.int16,
                                                          torch.int8, torch.uint8)):
            raise ValueError(f"times must be numbers, got {t.dtype}")
        return t.to(device=self.device, dtype=self.time_dtype)

    def _event_inputs(self, marks, values, observed, n: int):
        """``marks (n,)``, ``values (n, C)``, ``observed (n, C)`` checked against the model
        (shapes and dtypes) and moved to its device; NaN values read as unobserved with
        ``use_observed``."""
        enc = self.encoder
        if enc.num_marks and marks is None:
            raise ValueError(f"marks (n,) are required (the model has {enc.num_marks} event types)")
        if not enc.num_marks and marks is not None:
            raise ValueError("this model takes no marks (num_marks=0); pass values only")
        if enc.d_input and values is None:
            raise ValueError(f"values (n, {enc.d_input}) are required (d_input={enc.d_input})")
        if not enc.d_input and values is not None:
            raise ValueError("this model takes no values (d_input=0); pass marks only")
        if observed is not None and not enc.use_observed:
            raise ValueError("observed is only for a model with use_observed=True")
        mk = val = obs = None
        if marks is not None:
            mk = _tensor(marks).to(self.device)
            if mk.shape != (n,) or mk.dtype.is_floating_point or mk.dtype == torch.bool:
                raise ValueError(f"marks must be {n} integers (one per stream id), got "
                                 f"{mk.dtype} {tuple(mk.shape)}")
            mk = mk.long()
        if values is not None:
            val = _tensor(values).to(self.device)
            if val.shape != (n, enc.d_input):
                raise ValueError(f"values must have shape ({n}, {enc.d_input}), got {tuple(val.shape)}")
            val = val.to(self.dtype)
            if enc.use_observed:
                obs = (torch.isfinite(val) if observed is None
                       else _tensor(observed).to(self.device))
                if obs.shape != val.shape or obs.dtype != torch.bool:
                    raise ValueError(f"observed must be a bool tensor {tuple(val.shape)}, got "
                                     f"{obs.dtype} {tuple(obs.shape)}")
                val = val.masked_fill(~obs, 0.0)  # what is unobserved is not read (NaN -> 0)
        return mk, val, obs

    def _check(self, keys: list, t: list, mk, val, obs, prev: list[int]) -> None:
        """Raise, naming the stream and the event, at the first event of the push whose time is
        before its stream's previous one (in this push, or held) or not finite, whose mark is out
        of range, or whose values are not finite. Times and marks are checked on the host; values
        with one device op."""
        K = self.encoder.num_marks
        marks = mk.tolist() if mk is not None else None
        bad_value = -1
        if val is not None:
            rows = (~torch.isfinite(val).all(-1)).nonzero()
            bad_value = int(rows[0]) if rows.numel() else -1
        for i, (key, x) in enumerate(zip(keys, t)):
            where = f"(event {i} of this push)"
            if x != x or x in (float("inf"), float("-inf")):
                raise ValueError(f"stream {key!r}: time {x} is not finite {where}")
            before = t[prev[i]] if prev[i] >= 0 else self._last.get(key)
            if before is not None and x < before:
                which = "its previous event in this push" if prev[i] >= 0 else "its latest event"
                raise ValueError(f"stream {key!r}: time {x} is before {which} at {before} "
                                 f"{where}; a stream's times must not decrease")
            if marks is not None and not 0 <= marks[i] < K:
                raise ValueError(f"stream {key!r}: mark {marks[i]} is outside [0, {K}) {where}")
            if i == bad_value:
                what = ("non-finite values where observed is True" if obs is not None else
                        "non-finite values (a model with use_observed=True reads NaN as missing)")
                raise ValueError(f"stream {key!r}: {what} {val[i].tolist()} {where}")


def _tensor(x) -> Tensor:
    """A tensor of ``x`` (a tensor, a number, a list, a numpy array or a pandas Series)."""
    return x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))


def _keys(stream_ids) -> list:
    """``stream_ids`` as a list of keys (a tensor or array as Python scalars)."""
    if isinstance(stream_ids, (str, bytes)):
        raise TypeError(f"stream_ids must be a sequence of keys; for one stream pass "
                        f"[{stream_ids!r}]")
    if isinstance(stream_ids, Tensor) or hasattr(stream_ids, "tolist"):  # tensors, numpy, pandas
        stream_ids = stream_ids.tolist()
    if not isinstance(stream_ids, Sequence):
        stream_ids = list(stream_ids)
    for i, key in enumerate(stream_ids):
        if not isinstance(key, Hashable):
            raise TypeError(f"stream_ids[{i}] = {key!r} is not hashable: a stream id must be "
                            "usable as a dict key (str, int, tuple, ...)")
    return list(stream_ids)


def _order(keys: list) -> tuple[list[int], list[int]]:
    """For each event of a push: how many earlier events of its stream the push holds (its
    column in the stream's chunk), and the index of the previous one (-1: none)."""
    rank, prev, seen = [], [], {}
    for i, key in enumerate(keys):
        r, p = seen.get(key, (0, -1))
        rank.append(r)
        prev.append(p)
        seen[key] = (r + 1, i)
    return rank, prev
