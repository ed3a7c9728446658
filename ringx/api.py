"""``ringx.attention``: context-parallel attention on this rank's shard."""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from . import algorithms, kernels, launch, timeline
from .algorithms.base import Ctx
from .comm import NO_LEDGER, Comm, Ledger, all_gather_flat, all_max
from .errors import RingxInputError
from .kernels import select_kernel
from .mask import Mask, as_mask
from .merge import sink_grad, with_sink
from .topology import Topology

Tensor = torch.Tensor
DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)


@dataclass
class CallStats:
    """Filled in by :func:`attention` (and later by its backward): what ran and what moved."""

    algorithm: str = ""
    layout: str = ""
    kernel: str = ""
    ulysses_degree: int = 0  # 0: the algorithm has none
    mask: str = ""  # the mask's text form (ringx.Mask.parse reads it back)
    kernel_version: str = ""  # the kernel's library and version, e.g. "torch 2.13.0, cuDNN 91900"
    forward: Ledger = field(default_factory=Ledger)
    backward: Ledger = field(default_factory=Ledger)


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, sinks, algo, fwd_ctx, bwd_ctx):
        if timeline.ON:
            timeline.reset_steps()
        out, lse = algo.forward(fwd_ctx, q, k, v)
        if sinks is not None:  # the rows' results are final here: the sink is their last merge, and moves nothing
            out, lse = with_sink(out, lse, sinks)
        if out.dtype != q.dtype:
            out = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, out, lse, sinks)
        ctx.algo, ctx.bwd_ctx = algo, bwd_ctx
        ctx.mark_non_differentiable(lse)
        ctx.set_materialize_grads(False)  # no zero-filled gradient for the LSE nobody differentiates
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse, sinks = ctx.saved_tensors
        if dout is None:  # every rank must still take part in the backward's collectives
            dout = torch.zeros_like(out)
        if timeline.ON:
            timeline.reset_steps()
        # with a sink, out and lse include it: the blocks' gradients are then exact as they are
        dq, dk, dv = ctx.algo.backward(ctx.bwd_ctx, dout.contiguous(), q, k, v, out, lse)
        dsinks = sink_grad(dout, out, lse, sinks) if sinks is not None and ctx.needs_input_grad[3] else None
        return _as(dq, q.dtype), _as(dk, k.dtype), _as(dv, v.dtype), dsinks, None, None, None


def _as(x: Tensor, dtype: torch.dtype) -> Tensor:
    return x if x.dtype == dtype else x.to(dtype)


class _Solo(torch.autograd.Function):
    """One rank, full or causal attention: the one kernel call every algorithm's schedule comes to there, forward and
    backward (the same call on the same tensors, so the same bits), without building the schedule around it."""

    @staticmethod
    def forward(ctx, q, k, v, p, group):
        out, lse = p.kern.forward(q, k, v, p.plain, p.scale)
        out = _as(out, q.dtype)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.p, ctx.group = p, group
        ctx.mark_non_differentiable(lse)
        ctx.set_materialize_grads(False)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse = ctx.saved_tensors
        p = ctx.p
        dout = torch.zeros_like(out) if dout is None else dout.contiguous()
        if timeline.ON:  # recording: the algorithm's own pass, which marks its steps
            timeline.reset_steps()
            dq, dk, dv = p.algo.backward(p.ctx(ctx.group, NO_LEDGER, {}), dout, q, k, v, out, lse)
        else:
            dq, dk, dv = p.kern.backward(dout, q, k, v, out, lse, p.plain, p.scale)
        return _as(dq, q.dtype), _as(dk, k.dtype), _as(dv, v.dtype), None, None


def attention(q: Tensor, k: Tensor, v: Tensor, *, algorithm: str, mask: Mask | str | None = None,
              causal: bool | None = None, softmax_scale: float | None = None, group: dist.ProcessGroup | None = None,
              return_lse: bool = False, kernel: str | None = None, stats: CallStats | None = None,
              validate: bool = True, topology: Topology | None = None,
              ulysses_degree: int | None = None, inner_ring: int | None = None,
              sinks: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """Exact softmax attention of this rank's queries over the whole distributed sequence.

    ``q`` is (batch, seq_local, heads, head_dim) and ``k``/``v`` are
    (batch, seq_local, kv_heads, head_dim), already sharded in the algorithm's
    layout (``ringx.shard``; see ``ringx.ALGORITHMS[name].layout(mask=m)``).
    ``mask`` is a :class:`ringx.Mask` (or its text form); ``causal=True/False`` is
    shorthand for ``Mask.causal()``/``Mask.full()``; give exactly one of them. Every
    rank must pass the same mask (checked with the other inputs).
    Returns ``out`` shaped like ``q`` in its dtype, and with ``return_lse`` the
    log-sum-exp (batch, heads, seq_local) in float32 (float64 for float64 input).
    Differentiable in q, k, v.

    ``sinks`` (heads,) are attention-sink logits (gpt-oss): each head's softmax has one more
    column, of logit ``sinks[h]`` and value 0; the LSE returned includes it. Differentiable:
    each rank's ``sinks.grad`` is its rows' share, so the sum over ranks is the whole gradient
    (what a training framework's all-reduce of a replicated parameter's gradients does). Every
    rank passes its replica; nothing more is communicated.

    ``kernel`` overrides the local kernel choice; ``stats`` (a :class:`CallStats`)
    receives the kernel used (and its library version) and the forward and
    backward communication ledgers. With ``validate`` (default) the ranks first
    compare their inputs at every call (a digest's maximum over the ranks: a few bytes,
    log2(P) rounds; the whole signatures only when they differ) so that a bad input raises
    :class:`RingxInputError` on every rank instead of leaving some rank waiting in
    a collective (at one rank nothing is exchanged); ``validate=False`` skips it. Tensors
    must be on a device the group's backend moves: CPU for gloo, CUDA for NCCL.

    The hierarchical algorithms (``ringx3b``, ``ulysses``, ``usp``, ``usp-ringx``) use
    ``topology`` (a :class:`ringx.topology.Topology` of ``group``: which ranks share a node);
    by default ``ringx.launch.topology(group)``, made once per group and kept, whose
    intra-/inter-node process groups are built by the first call that needs them, never
    per call (``RINGX_RANKS_PER_NODE`` simulates nodes). ``ulysses_degree`` (``usp``,
    ``usp-ringx``) is the Ulysses group size u, the ring across groups has P/u ranks;
    by default u is the ranks per node; it must divide P and the query heads, and the
    causal layout ``zigzag-u{u}`` depends on it (``ALGORITHMS[name].layout(causal, u)``).
    ``inner_ring`` (``double-ring``) is the size of its inner rings, consecutive ranks of a node;
    it must divide the ranks per node, its default.
    """
    pg = dist.group.WORLD if group is None else group  # the group object: what a plan is kept for
    if not dist.is_available() or pg is None or not dist.is_initialized():
        raise RingxInputError(
            "torch.distributed is not initialised: call ringx.launch.init() under mpiexec/srun, "
            "or torch.distributed.init_process_group(), before ringx.attention")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise RingxInputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    p = _plan(q, k, v, algorithm, mask, causal, softmax_scale, kernel, group, pg, topology, ulysses_degree,
              inner_ring)
    problem = p.problem or sinks_problem(sinks, q)  # sinks are a tensor of the call: checked at every call
    if validate and p.world > 1:
        _check(p, group, problem)  # every rank exchanges, at every call: nothing here depends on this rank's cache
    elif problem:
        raise RingxInputError(problem)
    p.prepare(group, topology, ulysses_degree, inner_ring)  # after the agreement: building a topology is collective
    if stats is not None:
        stats.algorithm, stats.layout, stats.kernel, stats.kernel_version = p.name, p.layout, p.kern.name, p.version
        stats.ulysses_degree, stats.mask = p.degree or 0, p.mask_text
    if p.world == 1 and p.plain is not None and sinks is None and not timeline.ON:
        # One rank, full or causal: every algorithm's whole schedule is this one kernel call on the whole shard.
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
            out, lse = _Solo.apply(q, k, v, p, group)
        else:
            out, lse = p.kern.forward(q, k, v, p.plain, p.scale)
            out = _as(out, q.dtype)
        return (out, lse) if return_lse else out
    fwd, bwd = (stats.forward, stats.backward) if stats is not None else (NO_LEDGER, NO_LEDGER)
    stash: dict = {}  # what this call's forward keeps for its backward
    out, lse = _Attention.apply(q.contiguous(), k.contiguous(), v.contiguous(), sinks, p.algo,
                                p.ctx(group, fwd, stash, sinks), p.ctx(group, bwd, stash, sinks))
    return (out, lse) if return_lse else out


class _Plan:
    """One rank's answer for one configuration of a call: what is wrong with its input, or what the call needs.

    Made by the first call of a configuration (:func:`_plan`'s key: shapes, dtypes, devices, algorithm, mask, scale,
    kernel, group, topology, degree, inner ring) and kept. It decides nothing about communication: the input exchange
    runs at every call whether or not the plan was found here, so ranks whose caches differ still meet. What needs
    the agreement first (the topology, whose first build is collective) is added by :meth:`prepare`.
    """

    __slots__ = ("problem", "world", "rank", "moves", "mask", "mask_text", "plain", "causal", "name", "algo", "kern",
                 "version", "scale", "inner", "sig", "digest", "device", "heads", "ready", "topo", "degree", "layout")

    def __init__(self, q, k, v, algorithm, mask, causal, softmax_scale, kernel, group, topology, ulysses_degree,
                 inner_ring):
        self.world, self.rank = dist.get_world_size(group), dist.get_rank(group)
        self.moves = backend_device_types(group)
        try:
            m, problem = as_mask(mask, causal), ""
        except RingxInputError as e:  # told to every rank like any other bad input
            m, problem = None, str(e)
        self.problem = (problem or _local_problem(q, k, v, algorithm, m, softmax_scale, kernel, self.world, self.moves)
                        or _degree_problem(q, k, algorithm, self.world, ulysses_degree, topology, group)
                        or _inner_problem(algorithm, inner_ring))
        self.sig = _signature(q, k, v, algorithm, m, softmax_scale, self.problem, ulysses_degree, inner_ring)
        self.digest = digest(self.sig[1:len(self.sig) - _MSG])  # the configuration; a problem raises the flag
        self.device, self.heads = q.device, q.shape[2] if q.dim() == 4 else 0
        self.ready = False
        if self.problem:
            return
        self.mask, self.mask_text, self.plain, self.causal = m, str(m), m.plain, m.causal_layout
        self.name, self.algo, self.inner = algorithm, algorithms.ALGORITHMS[algorithm], inner_ring
        self.kern = select_kernel(q.device, q.dtype, kernel, head_dim=q.shape[-1])
        self.version = self.kern.version()
        self.scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
        self.topo = self.degree = None

    def prepare(self, group, topology, ulysses_degree, inner_ring) -> None:
        """The topology, the Ulysses degree and the layout (once; after the ranks agreed on the input)."""
        if self.ready:
            return
        algo = self.algo
        if algo.topology:
            topo = topology if topology is not None else launch.topology(group)
            try:
                rpn = None if algo.ulysses == "all" else topo.ranks_per_node  # the others need regular nodes
            except ValueError as e:  # the same on every rank: so is the node layout
                raise RingxInputError(str(e)) from None
            degree = algo.degree(self.world, ulysses_degree, rpn)
            if algo.inner_ring and inner_ring is not None and rpn % inner_ring:  # the same on every rank
                raise RingxInputError(f"{self.name}: inner_ring={inner_ring} does not divide the {rpn} ranks per node")
            if degree is not None and self.heads % degree:  # a default degree the heads do not fit
                raise RingxInputError(_heads_message(self.name, self.heads, degree))
            self.topo, self.degree = topo, degree
        self.layout = algo.layout(ulysses_degree=self.degree, mask=self.mask)
        self.ready = True

    def ctx(self, group, ledger: Ledger, stash: dict, sinks: Tensor | None = None) -> Ctx:
        """The context of one pass, counting into ``ledger``."""
        return Ctx(Comm(group, ledger, rank=self.rank, world=self.world), self.kern, self.layout, self.causal,
                   self.scale, self.algo.overlap, self.topo, self.degree, stash, self.mask, self.inner, sinks)

    def signature(self, problem: str) -> list[int]:
        """The whole signature (:func:`_signature`) of this configuration with ``problem``."""
        if problem == self.problem:
            return self.sig
        return [int(bool(problem)), *self.sig[1:len(self.sig) - _MSG], *_message(problem)]


_PLANS: dict[tuple, _Plan] = {}
_MAX_PLANS = 256  # configurations kept (a model has a few; the cache starts again beyond)


def _plan(q, k, v, algorithm, mask, causal, softmax_scale, kernel, group, pg, topology, ulysses_degree,
          inner_ring) -> _Plan:
    """The :class:`_Plan` of this call's configuration on ``pg`` (``group`` resolved), made once."""
    key = (q.shape, k.shape, v.shape, q.dtype, k.dtype, v.dtype, q.device, k.device, v.device, algorithm, mask, causal,
           softmax_scale, kernel, pg, topology, ulysses_degree, inner_ring,
           # 1 == 1.0 == True: the types keep True from answering for 1, which one of them refuses
           type(causal), type(softmax_scale), type(ulysses_degree), type(inner_ring))
    try:
        p = _PLANS.get(key)
    except TypeError:  # something unhashable (e.g. algorithm given as a list): a plan for this call only
        return _Plan(q, k, v, algorithm, mask, causal, softmax_scale, kernel, group, topology, ulysses_degree,
                     inner_ring)
    if p is None:
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        p = _PLANS[key] = _Plan(q, k, v, algorithm, mask, causal, softmax_scale, kernel, group, topology,
                                ulysses_degree, inner_ring)
    return p


kernels._ON_CLEAR.append(_PLANS.clear)  # a plan holds the kernel choice
launch.ON_FINALIZE.append(_PLANS.clear)  # and maybe a topology, whose groups die with the process group


def backend_device_types(group: dist.ProcessGroup | None = None) -> frozenset[str] | None:
    """Device types whose tensors the group's backend moves, or None for a backend ringx does not know.

    gloo counts as CPU only: with CUDA tensors it aborts the process (seen on an H100 node).
    """
    backend = str(dist.get_backend(group))
    if ":" in backend:  # one backend per device type, e.g. "cpu:gloo,cuda:nccl"
        return frozenset(part.split(":")[0] for part in backend.split(","))
    return _BACKEND_DEVICES.get(backend)


_BACKEND_DEVICES = {"gloo": frozenset({"cpu"}), "nccl": frozenset({"cuda"})}


def _local_problem(q, k, v, algorithm, causal, scale, kernel, world, moves=None) -> str:
    """What is wrong with this rank's input, or ''."""
    key = (q.shape, k.shape, v.shape, q.dtype, k.dtype, v.dtype, q.device, k.device, v.device, algorithm, causal,
           scale, kernel, world, moves)
    try:
        return _problem_cached(*key)
    except TypeError:  # something unhashable (e.g. algorithm given as a list): check it without the cache
        return _problem(*key)


def _problem(qs, ks, vs, qt, kt, vt, qd, kd, vd, algorithm, causal, scale, kernel, world, moves) -> str:
    """The checks of _local_problem, on the tensors' shapes, dtypes and devices (the same inputs give the
    same answer, so repeated calls with one configuration are answered from a cache). ``causal``: the call's
    Mask (or True/False)."""
    if isinstance(causal, bool):
        causal = Mask.causal() if causal else Mask.full()
    try:
        algo = algorithms.get(algorithm, causal)
    except ValueError as e:
        return str(e)
    if len(qs) != 4 or len(ks) != 4 or len(vs) != 4:
        return (f"q, k, v must be 4-D (batch, seq_local, heads, head_dim); got {len(qs)}-D, "
                f"{len(ks)}-D, {len(vs)}-D")
    if ks != vs:
        return f"k and v must have the same shape, got {tuple(ks)} and {tuple(vs)}"
    if qs[0] != ks[0] or qs[1] != ks[1] or qs[3] != ks[3]:
        return (f"q {tuple(qs)} and k/v {tuple(ks)} must agree in batch, local sequence "
                "length and head_dim")
    if ks[2] == 0 or qs[2] % ks[2]:
        return (f"q has {qs[2]} heads and k/v have {ks[2]}: the q heads must be a "
                "multiple of the k/v heads (GQA/MQA)")
    if qt != kt or qt != vt:
        return f"q, k, v must share one dtype, got {qt}, {kt}, {vt}"
    if qt not in DTYPES:
        return f"dtype {qt} is not supported; use one of {', '.join(map(str, DTYPES))}"
    if qd != kd or qd != vd:
        return f"q, k, v must be on one device, got {qd}, {kd}, {vd}"
    if moves is not None and qd.type not in moves:
        there = " or ".join(sorted(moves))
        return (f"q, k, v are on {qd.type} but this process group's backend moves {there} tensors: put them "
                f"on {there}, or start a group for {qd.type} tensors (ringx.launch.init(device={qd.type!r}))")
    if min(qs) == 0:
        return f"empty input: q has shape {tuple(qs)}"
    mask_problem = causal.problem(qs[1] * world)
    if mask_problem:
        return mask_problem
    causal = causal.causal_layout
    div = algo.local_divisor(causal)
    if qs[1] % div:
        return (f"local sequence length {qs[1]} must be a multiple of {div} for the "
                f"{algo.causal_layout if causal else algo.noncausal_layout} layout of {algorithm} "
                f"(global length a multiple of {div * world})")
    if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        return f"softmax_scale must be a positive finite number, got {scale!r}"
    try:
        select_kernel(qd, qt, kernel, head_dim=qs[3])
    except ValueError as e:
        return str(e)
    return ""


_problem_cached = functools.lru_cache(maxsize=256)(_problem)
kernels._ON_CLEAR.append(_problem_cached.cache_clear)


def _heads_message(algorithm: str, heads: int, degree: int) -> str:
    others = ", ".join(n for n in algorithms.ALGORITHMS if not algorithms.ALGORITHMS[n].ulysses)
    return (f"{algorithm}: {heads} query heads do not divide by the Ulysses degree {degree}; use usp/usp-ringx "
            f"with a ulysses_degree dividing {heads}, or one of {others}")


def _degree_problem(q, k, algorithm, world, degree, topology, group) -> str:
    """What is wrong with the Ulysses degree or topology asked for, or '' (checks needing no topology)."""
    algo = algorithms.ALGORITHMS[algorithm]
    if degree is not None:
        if algo.ulysses != "node":
            return (f"ulysses_degree applies to {', '.join(algorithms.ulysses_names())}, not to {algorithm}")
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1 or world % degree:
            return f"ulysses_degree={degree!r} must be a positive integer dividing the {world} ranks"
    fixed = algo.degree(world, degree, None)
    if fixed is not None and q.shape[2] % fixed:
        return _heads_message(algorithm, q.shape[2], fixed)
    if topology is not None:
        if not topology.builds_groups or topology.group is not group:
            return "topology must be made for this group, with process groups (not Topology.simulated)"
        if (topology.world, topology.rank) != (world, dist.get_rank(group)):
            return (f"topology describes rank {topology.rank} of {topology.world}, but this is rank "
                    f"{dist.get_rank(group)} of {world} in the group")
    return ""


def sinks_problem(sinks, q) -> str:
    """What is wrong with the ``sinks`` given, or ''."""
    if sinks is None:
        return ""
    if not isinstance(sinks, torch.Tensor) or sinks.dim() != 1 or not sinks.is_floating_point():
        got = (f"a {sinks.dtype} tensor of shape {tuple(sinks.shape)}" if isinstance(sinks, torch.Tensor)
               else type(sinks).__name__)
        return f"sinks must be a 1-D floating-point tensor of one logit per query head, got {got}"
    if sinks.shape[0] != q.shape[2] or sinks.device != q.device:
        return (f"sinks must hold one logit per query head ({q.shape[2]}) on q's device ({q.device}), got "
                f"{sinks.shape[0]} on {sinks.device}")
    return ""


def _inner_problem(algorithm: str, inner_ring) -> str:
    """What is wrong with the ``inner_ring`` asked for, or '' (whether it divides a node is checked later)."""
    if inner_ring is None:
        return ""
    if not algorithms.ALGORITHMS[algorithm].inner_ring:
        return f"inner_ring applies to {', '.join(algorithms.inner_ring_names())}, not to {algorithm}"
    if isinstance(inner_ring, bool) or not isinstance(inner_ring, int) or inner_ring < 1:
        return f"inner_ring={inner_ring!r} must be a positive integer dividing the ranks per node"
    return ""


_MSG = 240  # bytes of error text shared with the other ranks
# What the ranks must agree on: (name, number of int64 slots).
_FIELDS = (("dtype", 1), ("device type", 1), ("algorithm", 1), ("causal", 1), ("mask", 2), ("softmax_scale", 1),
           ("q shape", 4), ("k shape", 4), ("v shape", 4), ("ulysses_degree", 1),
           ("inner_ring", 1))


def _signature(q, k, v, algorithm, mask: Mask | None, scale, problem: str, degree=None, inner=None) -> list[int]:
    """[problem flag] + the _FIELDS values + the problem text as bytes."""
    names = list(algorithms.ALGORITHMS)
    digest = int(mask.digest(), 16) if mask is not None else 0
    values = [
        DTYPES.index(q.dtype) if q.dtype in DTYPES else 99,
        {"cpu": 1, "cuda": 2}.get(q.device.type, 3),
        names.index(algorithm) if algorithm in names else 99,
        {False: 0, True: 1}.get(mask.plain, 2) if mask is not None else 0,  # full, causal, other
        digest >> 32, digest & 0xFFFFFFFF,  # the mask's digest, in two int64 slots
        int(round((scale or 0.0) * 1e9)),
        *[x for t in (q, k, v) for x in (list(t.shape)[:4] + [0] * 4)[:4]],
        degree if isinstance(degree, int) else 0,
        inner if isinstance(inner, int) else 0,
    ]
    return [int(bool(problem))] + values + _message(problem)


def _message(problem: str) -> list[int]:
    """A problem's text as the signature's last _MSG slots."""
    return list(problem.encode()[:_MSG].ljust(_MSG, b"\0"))


def _check(p: _Plan, group, problem: str) -> None:
    """Return if every rank's input is good and they agree, else raise the same RingxInputError on every rank: the
    cheap check of :func:`agreed`, and only when it fails (on every rank alike) the exchange of the whole signatures
    that says what (:func:`_agree`)."""
    pg, device = exchange_group(group, p.moves, p.device)
    if not agreed(bool(problem), p.digest, pg, device):
        _agree(p.signature(problem), pg, device)


def digest(values) -> int:
    """A 62-bit digest of ``values`` (their repr): the same on every machine, and it and its negation fit an int64."""
    return int.from_bytes(hashlib.blake2b(repr(values).encode(), digest_size=8).digest(), "little") >> 2


def agreed(problem: bool, digest_: int, group, device: torch.device) -> bool:
    """Whether no rank has a problem and every rank's digest is the same, answered alike on every rank.

    One maximum over the ranks of three integers (the problem flag, the digest and the digest negated: every digest
    is the same iff the largest equals the smallest), so it costs a few bytes whatever the signature: on CPU tensors
    ``comm.all_max`` (log2(P) rounds), else a collective on ``device``. Two different signatures pass only if their
    digests collide."""
    mine = [int(problem), digest_, -digest_]
    if device.type == "cpu":
        flag, top, neg_bottom = all_max(mine, group)
    else:  # a backend ringx does not know: a collective on the inputs' device
        t = torch.tensor(mine, dtype=torch.int64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
        flag, top, neg_bottom = t.tolist()
    return not flag and top == -neg_bottom


def exchange_group(group, moves: frozenset[str] | None, device: torch.device
                   ) -> tuple[dist.ProcessGroup | None, torch.device]:
    """Where an input check travels: CPU tensors over the group when its backend moves them, else over its gloo twin
    (``launch.cpu_group``, made once), so a check never synchronises a device; a backend ringx does not know
    (``moves`` None): the group, on the inputs' ``device``."""
    if moves is None:
        return group, device
    if "cpu" in moves:
        return group, _CPU
    return launch.cpu_group(group), _CPU


_CPU = torch.device("cpu")


def _agree(sig: list[int], group, device: torch.device) -> None:
    """Exchange input signatures; raise the same RingxInputError on every rank if any is bad."""
    world = dist.get_world_size(group)
    mine = torch.tensor(sig, dtype=torch.int64, device=device)
    every = torch.empty(world * len(sig), dtype=torch.int64, device=device)
    all_gather_flat(every, mine, group=group)
    rows = every.view(world, len(sig)).cpu().tolist()
    bad = [(r, bytes(row[-_MSG:]).rstrip(b"\0").decode(errors="replace")) for r, row in enumerate(rows) if row[0]]
    if bad:
        detail = "; ".join(f"rank {r}: {m}" for r, m in bad)
        raise RingxInputError(f"ringx.attention rejected the input ({detail})")
    for r, row in enumerate(rows[1:], start=1):
        at = 1
        for name, width in _FIELDS:
            mine_v, ref_v = row[at:at + width], rows[0][at:at + width]
            if mine_v != ref_v:
                raise RingxInputError(
                    f"ringx.attention: {name} differs across ranks: rank 0 has {_show(name, ref_v)}, "
                    f"rank {r} has {_show(name, mine_v)}")
            at += width


def _show(name: str, vals: list[int]):
    if name == "dtype":
        return str(DTYPES[vals[0]]) if vals[0] < len(DTYPES) else "?"
    if name == "algorithm":
        names = list(algorithms.ALGORITHMS)
        return names[vals[0]] if vals[0] < len(names) else "?"
    if name == "device type":
        return {1: "cpu", 2: "cuda"}.get(vals[0], "other")
    if name == "softmax_scale":
        return vals[0] / 1e9
    if name == "causal":
        return {0: False, 1: True}.get(vals[0], "a mask other than full/causal")
    if name == "mask":
        return f"digest {(vals[0] << 32 | vals[1]):016x}"
    return tuple(vals) if len(vals) > 1 else vals[0]
