"""Check an algorithm on this machine against float64 full attention (``bench run --check``).

The float64 ground truth of one configuration (:class:`Reference`: inputs, out, lse and
the gradients of q, k, v) is computed once and reused by every algorithm checked on it;
:func:`reference` keeps the last few in a cache keyed by configuration, seed and device.
It is computed query-chunk by query-chunk, so its memory is O(S) (plus a fixed chunk
budget), never an S x S score matrix, and on the run's device when that device does
float64 at a useful rate (:func:`float64_fast`), else on the CPU.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .algorithms import ALGORITHMS
from .api import attention
from .layouts import shard
from .mask import Mask

Tensor = torch.Tensor

# Max |x - ref| / max(1, max|ref|) allowed per dtype.
TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 5e-2, torch.float16: 1e-2}
DEVICE_ENV = "RINGX_CHECK_DEVICE"  # "cpu": reference on the CPU; "device": on the run's device, whatever it is
CACHE_SIZE = 2  # references kept (each holds 9 tensors of the full sequence in float64)
QUANTITIES = ("out", "lse", "dq", "dk", "dv")
FULL_RATE_FP64 = {(6, 0), (7, 0), (8, 0), (9, 0), (10, 0)}  # NVIDIA compute capabilities of the datacenter parts


def float64_fast(device: torch.device) -> bool:
    """Whether ``device`` does float64 at a useful rate, so the reference is best computed there.

    CPU: yes. NVIDIA: compute capability 6.0, 7.0, 8.0, 9.0 or 10.0 (P100, V100, A100,
    H100/H200, B200: the datacenter parts with FP64 at a third of the FP32 rate or better);
    the others (8.6, 8.9, 12.0: consumer and workstation cards; Jetson; 10.3) run float64 at
    1/32 to 1/64 and lose to the host. AMD: CDNA parts (gfx908 MI100, gfx90a MI200, gfx94x
    MI300) yes, others no.
    ``RINGX_CHECK_DEVICE`` overrides the rule (see :func:`reference_device`).
    """
    if device.type == "cpu":
        return True
    if device.type != "cuda":
        return False
    props = torch.cuda.get_device_properties(device)
    if torch.version.hip is not None:
        arch = getattr(props, "gcnArchName", "") or ""
        return arch.startswith(("gfx908", "gfx90a", "gfx94", "gfx95"))
    return (props.major, props.minor) in FULL_RATE_FP64


def reference_device(device: torch.device) -> torch.device:
    """Where the reference for a run on ``device`` is computed: ``device`` if :func:`float64_fast`,
    else the CPU; ``RINGX_CHECK_DEVICE=cpu`` or ``=device`` forces one or the other."""
    forced = os.environ.get(DEVICE_ENV, "").strip().lower()
    if forced == "cpu":
        return torch.device("cpu")
    if forced == "device" or float64_fast(device):
        return device
    return torch.device("cpu")


@dataclass(frozen=True)
class Config:
    """One checked configuration: the global problem and the seed of its inputs. ``causal``: True/False, or a
    :class:`ringx.Mask` (full and causal masks are kept as the bools, so they share one reference)."""

    causal: bool | Mask
    batch: int
    seq: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype: torch.dtype
    seed: int = 0


@dataclass
class Reference:
    """Float64 ground truth of one :class:`Config` on ``device``: the inputs (already rounded
    to the tested dtype, so only the algorithm's error is measured) and the full results."""

    config: Config
    device: torch.device
    q: Tensor
    k: Tensor
    v: Tensor
    dout: Tensor
    out: Tensor
    lse: Tensor  # (batch, heads, seq)
    dq: Tensor
    dk: Tensor
    dv: Tensor


def inputs(cfg: Config) -> list[Tensor]:
    """q, k, v, dout for ``cfg`` in float64 on the CPU, rounded through ``cfg.dtype``.

    Drawn from one CPU generator seeded with ``cfg.seed``: the same on every rank and device.
    """
    g = torch.Generator().manual_seed(cfg.seed)
    full = [torch.randn(cfg.batch, cfg.seq, h, cfg.head_dim, generator=g, dtype=torch.float64)
            for h in (cfg.heads, cfg.kv_heads, cfg.kv_heads, cfg.heads)]
    return [t.to(cfg.dtype).double() for t in full]


def full_attention(q: Tensor, k: Tensor, v: Tensor, dout: Tensor, causal: bool | Mask, scale: float,
                   budget: int | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """out, lse (B, H, S), dq, dk, dv of exact softmax attention, in the inputs' dtype (float64 here).

    ``causal``: True/False or a :class:`ringx.Mask` (its dense visibility per chunk; a row that sees no key
    gives out 0 and LSE -inf).

    Queries go in chunks of at most ``budget`` score elements (default 2^24 on CPU, 2^27
    on a GPU); a causal chunk only reads the keys it can see. Memory: O(S) plus a few
    chunk-sized buffers.
    """
    b, s, h, d = q.shape
    hk = k.shape[2]
    g = h // hk
    if budget is None:
        budget = 2**24 if q.device.type == "cpu" else 2**27
    rows = max(1, budget // (b * h * s))
    mask = None
    if isinstance(causal, Mask):
        mask, causal = (None, causal.plain) if causal.plain is not None else (causal, False)
    kk, vv = k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)  # (b, hk, s, d)
    out, dq = torch.empty_like(q), torch.empty_like(q)
    lse = torch.empty(b, h, s, dtype=q.dtype, device=q.device)
    dk, dv = torch.zeros_like(k), torch.zeros_like(v)
    for lo in range(0, s, rows):
        hi = min(s, lo + rows)
        n, keys = hi - lo, (hi if causal else s)
        kc, vc = kk[:, :, :keys], vv[:, :, :keys]
        qc = q[:, lo:hi].reshape(b, n, hk, g, d).permute(0, 2, 3, 1, 4)  # (b, hk, g, n, d)
        sc = torch.einsum("bhgnd,bhkd->bhgnk", qc, kc) * scale
        if causal:
            above = torch.arange(keys, device=q.device) > torch.arange(lo, hi, device=q.device)[:, None]
            sc.masked_fill_(above, float("-inf"))
        if mask is not None:
            seen = mask.visible(torch.arange(lo, hi), torch.arange(keys)).to(q.device)
            sc.masked_fill_(~seen, float("-inf"))
        lc = sc.logsumexp(-1)  # (b, hk, g, n)
        p = torch.exp(sc - lc.unsqueeze(-1))
        if mask is not None:
            p = p.nan_to_num(0.0)  # rows that see nothing: exp(-inf - -inf)
        oc = torch.einsum("bhgnk,bhkd->bhgnd", p, vc)
        out[:, lo:hi] = oc.permute(0, 3, 1, 2, 4).reshape(b, n, h, d)
        lse[:, :, lo:hi] = lc.reshape(b, h, n)
        do = dout[:, lo:hi].reshape(b, n, hk, g, d).permute(0, 2, 3, 1, 4)
        ds = p * (torch.einsum("bhgnd,bhkd->bhgnk", do, vc) - (do * oc).sum(-1, keepdim=True)) * scale
        dq[:, lo:hi] = torch.einsum("bhgnk,bhkd->bhgnd", ds, kc).permute(0, 3, 1, 2, 4).reshape(b, n, h, d)
        dk[:, :keys] += torch.einsum("bhgnk,bhgnd->bkhd", ds, qc)
        dv[:, :keys] += torch.einsum("bhgnk,bhgnd->bkhd", p, do)
    return out, lse, dq, dk, dv


def compute(cfg: Config, device: torch.device) -> Reference:
    """The float64 :class:`Reference` of ``cfg``, computed on ``device`` (no cache)."""
    q, k, v, dout = (t.to(device) for t in inputs(cfg))
    results = full_attention(q, k, v, dout, cfg.causal, cfg.head_dim**-0.5)
    return Reference(cfg, device, q, k, v, dout, *results)


_CACHE: OrderedDict[tuple[Config, torch.device], Reference] = OrderedDict()


def _plain(causal: bool | Mask) -> bool | Mask:
    """full and causal masks as their bools (one cache entry for both spellings)."""
    if isinstance(causal, Mask):
        return causal if causal.plain is None else causal.plain
    return bool(causal)


def reference(causal: bool | Mask, batch: int, seq: int, heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype,
              seed: int = 0, device: torch.device | None = None) -> Reference:
    """The float64 reference of one configuration, for a run on ``device`` (default CPU).

    Computed on :func:`reference_device` of ``device`` the first time and then served from
    a cache of the last :data:`CACHE_SIZE` configurations, so every algorithm checked on
    the same configuration and seed shares it.
    """
    cfg = Config(_plain(causal), batch, seq, heads, kv_heads, head_dim, dtype, seed)
    where = reference_device(device if device is not None else torch.device("cpu"))
    key = (cfg, where)
    ref = _CACHE.get(key)
    if ref is None:
        ref = _CACHE[key] = compute(cfg, where)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return ref


def clear_cache() -> None:
    """Drop the cached references (they hold full-sequence float64 tensors)."""
    _CACHE.clear()


def _error(got: Tensor, want: Tensor) -> float:
    got = got.detach().to(device=want.device, dtype=torch.float64)
    return ((got - want).abs().max() / want.abs().max().clamp(min=1.0)).item()


def _as_mask(causal: bool | Mask) -> Mask:
    return causal if isinstance(causal, Mask) else Mask.causal() if causal else Mask.full()


def errors(ref: Reference, algorithm: str, device: torch.device, kernel: str | None = None,
           group: dist.ProcessGroup | None = None, fn=None, layout: str | None = None,
           mask: Mask | None = None) -> dict[str, float]:
    """This rank's relative error of each quantity (out, lse, dq, dk, dv) against ``ref``.

    Runs ``ringx.attention`` (or ``fn(q, k, v)`` in its ``layout``; then there is no lse)
    on this rank's shard of the reference inputs in the configuration's dtype on ``device``,
    under ``mask`` (default: the reference's; another mask is how a test shows the check catches one).
    """
    cfg = ref.config
    P, r = dist.get_world_size(group), dist.get_rank(group)
    m = _as_mask(cfg.causal if mask is None else mask)
    layout = layout or ALGORITHMS[algorithm].layout(mask=m)

    def mine(t: Tensor, dim: int = 1) -> Tensor:
        return shard(t, layout, r, P, dim=dim, mask=m)

    q, k, v = (mine(t).to(dtype=cfg.dtype, device=device).requires_grad_() for t in (ref.q, ref.k, ref.v))
    lse = None
    if fn is not None:
        out = fn(q, k, v)
    else:
        out, lse = attention(q, k, v, algorithm=algorithm, mask=m, kernel=kernel, group=group, return_lse=True)
    out.backward(mine(ref.dout).to(dtype=cfg.dtype, device=device))
    errs = {"out": _error(out, mine(ref.out))}
    if lse is not None:
        errs["lse"] = _error(lse, mine(ref.lse, dim=2))
    errs.update(dq=_error(q.grad, mine(ref.dq)), dk=_error(k.grad, mine(ref.dk)), dv=_error(v.grad, mine(ref.dv)))
    return errs


def check(ref: Reference, algorithm: str, device: torch.device, kernel: str | None = None,
          group: dist.ProcessGroup | None = None, fn=None, layout: str | None = None,
          mask: Mask | None = None) -> float:
    """Largest relative error of :func:`errors` over all quantities and all ranks (the same on every rank)."""
    err = max(errors(ref, algorithm, device, kernel, group, fn, layout, mask).values())
    worst = torch.tensor([err], dtype=torch.float64, device=device)
    dist.all_reduce(worst, op=dist.ReduceOp.MAX, group=group)
    return worst.item()


def max_error(algorithm: str, causal: bool, batch: int, seq: int, heads: int, kv_heads: int, head_dim: int,
              dtype: torch.dtype, device: torch.device, kernel: str | None = None,
              group: dist.ProcessGroup | None = None, seed: int = 0, fn=None, layout: str | None = None) -> float:
    """Largest relative error of out, lse, dQ, dK, dV over all ranks' shards (the same on every rank).

    ``fn(q, k, v)`` with its ``layout`` replaces ``ringx.attention`` to check an outside implementation.
    The reference comes from :func:`reference`: computed once per configuration and seed.
    """
    ref = reference(causal, batch, seq, heads, kv_heads, head_dim, dtype, seed, device)
    return check(ref, algorithm, device, kernel, group, fn, layout)
