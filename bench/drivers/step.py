"""``ringx-bench model``: a whole training step with the sequence sharded over the ranks.

Context parallelism as users run it: every rank holds the whole model (weights replicated) and its shard of
the sequence in the algorithm's layout; every attention layer calls ``ringx.attention`` with that algorithm;
the gradients are summed over the ranks by one bucketed all-reduce, then AdamW steps. The model
is a Llama-3-shaped decoder or a ViT encoder, from a preset overridden by flags or a
TOML/JSON file (--config). Rotary positions are each token's global position under the layout, next-token
labels are shifted on the global sequence before sharding, and the loss is the mean over global tokens.

All algorithms of one configuration are timed side by side as in `bench run` (warm-up, then every iteration
one step of each in rotating order, the slowest rank's time kept, every sample stored). Each record also
holds the forward, backward, gradient all-reduce and optimizer times (each the slowest rank's), tokens/s
per rank, model FLOPs per token (6N + attention, as PaLM counts), MFU against a GPU's published peak
(--peak-tflops or --machine; none on CPUs) and peak memory per rank.

--check first compares, for every algorithm, the loss and every parameter's gradient of one step in float64
with the same model run unsharded on one process in float64 on the CPU (plain attention; tolerance
CHECK_TOLERANCE, relative). A failing algorithm is recorded as failed and not timed.

Plugins (docs/plugins.md), installed ones named in --algorithms or given by --plugin, train as ours do: every
attention layer calls the plugin on this rank's shard, in its layout; the bytes of their attention (forward and
backward, not the gradient all-reduce) are counted at the dispatcher during the first step. One that cannot run
(it cannot be loaded, raises, returns the wrong shape, does not take a layer's mask) is recorded so in one line and
the others go on. --hf models take ringx's algorithms only.

Example (2 local CPU ranks):
  mpiexec -n 2 ringx-bench model --preset tiny --seq 1024,2048 --algorithms ring,ringx3,ringx4o --check
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace

from ringx_drivers import options
from ringx_drivers.driver import (
    Case,
    Invocation,
    ModelDriver,
    Stage,
    given_options,
    ledger_totals,
    model_parser,
    mpi_main,
    per_rank_fields,
    replicated_model,
)
from ringx_drivers.measure.failures import CheckFailed
from ringx_drivers.measure.ranks import describe
from ringx_drivers.points.step import CHECK_MAX_SEQ, POINT, ModelPlan, model_plan, plan_config
from ringx_suite.cli import Parser, UserError, split_list
from ringx_suite.records import MODEL_PHASES

PROG = "ringx-bench model"
CHECK_TOLERANCE = 1e-9  # float64 against float64: relative error of the loss and of each gradient (seen ~1e-14)
BUCKET = 1 << 25  # elements per gradient all-reduce


def build_parser() -> Parser:
    from ringx_suite.plugins import FLAG_HELP

    p = model_parser(PROG, __doc__, options.MODEL.values(), "points (lists are crossed)",
                     [options.PARAMS[k] for k in POINT], CHECK_MAX_SEQ)
    p.add_argument("--plugin", help=FLAG_HELP)
    return p


def make_plan(given: dict, world: int, argv: list[str] | tuple = (), external: dict | None = None
              ) -> tuple[Invocation, options.ModelOptions, ModelPlan]:
    """:func:`resolve` from the options as a dict: the checked invocation (with --machine's peak for MFU), and
    the model options and plan (bench/points/step.py ``model_plan``; ``external``: the plugins by name)."""
    inv = Invocation.of(given, argv, settings_defaults={"check_max_seq": CHECK_MAX_SEQ})
    mo, plan = model_plan(given, world, external)
    if mo.machine and inv.settings.peak_tflops is None:
        from ringx_drivers.sweeps.profiles import load_profile

        try:
            prof = load_profile(mo.machine)
        except ValueError as e:
            raise UserError(str(e)) from None
        # a CPU has no published peak
        inv = replace(inv, settings=replace(inv.settings, peak_tflops=prof.peak_tflops if prof.gpus_per_node
                                            else None))
    return inv, mo, plan


def resolve(argv: list[str] | None, world: int) -> tuple[Invocation, options.ModelOptions, ModelPlan, dict]:
    """Flags over the config file over the preset: the checked invocation, model options and plan for ``world``
    ranks, and the plugins by name (loaded here, on every rank alike).

    Every mistake (unknown preset, heads that do not divide, a sequence the layouts cannot split over
    ``world`` ranks) raises UserError here, on every rank alike, before any process group exists.
    """
    from ringx_suite import plugins

    argv = list(argv or [])
    valid = set(options.MODEL) | set(POINT) | set(options.SETTINGS) | set(options.OUTPUT) | {"inject", "plugin"}
    given = given_options(build_parser(), argv, valid)
    named = options.value(options.PARAMS["algorithms"], given.get("algorithms"), "", many=True) or []
    external = plugins.load_apart(named, split_list(given.get("plugin") or ""), PROG)
    return (*make_plan(given, world, argv, external), external)


# ---------------------------------------------------------------------------------------------------------
# The step, shared by the timing, --check and the tests


@dataclass
class LocalBatch:
    inputs: object  # this rank's tokens (decoder) or patches (vit)
    targets: object  # their labels / regression targets
    positions: object  # their global positions (RoPE)
    n_global: int  # what the global mean divides by


def shard_batch(inputs, targets, n_global: int, layout: str, rank: int, world: int, device=None) -> LocalBatch:
    """This rank's share of a global batch in ``layout``: inputs, targets (already shifted on the global
    sequence) and the tokens' global positions, all cut by the same ``ringx.shard``."""
    import torch

    import ringx

    seq = inputs.shape[1]
    pos = ringx.shard(torch.arange(seq)[None], layout, rank, world)[0]
    return LocalBatch(*(ringx.shard(t, layout, rank, world).to(device or "cpu") for t in (inputs, targets)),
                      pos.to(device or "cpu"), n_global)


def make_attend(algorithm: str, causal: bool, kernel=None, ulysses_degree=None, state=None, masks=None,
                plugin=None):
    """``attend(q, k, v)`` through ``ringx.attention``, or through ``plugin`` (a ringx_suite.plugins.Plugin: its
    contract's call over the world group), outside autocast (its inputs are already in the compute dtype).
    ``state`` (a dict) may carry ``stats`` (a CallStats) and ``validate`` per call. ``masks`` (ringx.Mask, the
    layers cycling through them): one attend per mask, the list the model takes."""
    from ringx.mask import as_mask

    if plugin is not None:
        whole = masks or [as_mask(causal=causal)]
        got = [_plugin_attend(plugin, m) for m in whole]
        return got if masks else got[0]
    if masks:
        return [_ringx_attend(algorithm, {"mask": m}, kernel, ulysses_degree, state) for m in masks]
    return _ringx_attend(algorithm, {"causal": causal}, kernel, ulysses_degree, state)


def _uncast(q):
    """Outside autocast: attention's inputs are already in the compute dtype."""
    import torch

    dev = q.device.type
    return torch.autocast(dev, enabled=False) if torch.is_autocast_enabled(dev) else nullcontext()


def _ringx_attend(algorithm: str, masking: dict, kernel, ulysses_degree, state):
    import ringx

    state = state if state is not None else {}

    def attend(q, k, v):
        with _uncast(q):
            return ringx.attention(q, k, v, algorithm=algorithm, **masking, kernel=kernel,
                                   ulysses_degree=ulysses_degree, stats=state.get("stats"),
                                   validate=state.get("validate", True))
    return attend


def _plugin_attend(plugin, mask):
    import torch.distributed as dist

    def attend(q, k, v):
        with _uncast(q):
            return plugin.call(q, k, v, mask, dist.group.WORLD)
    return attend


def allreduce_grads(params, group=None, bucket: int = BUCKET) -> None:
    """Sum every parameter's gradient over the group, in buckets of about ``bucket`` elements."""
    import torch
    import torch.distributed as dist

    if dist.get_world_size(group) == 1:
        return
    pending, n = [], 0
    for p in params:
        if p.grad is None:  # every rank must contribute the same buffers
            p.grad = torch.zeros_like(p)
        pending.append(p.grad)
        n += p.grad.numel()
        if n >= bucket:
            _reduce(pending, group)
            pending, n = [], 0
    if pending:
        _reduce(pending, group)


def _reduce(grads, group) -> None:
    import torch
    import torch.distributed as dist

    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, group=group)
    at = 0
    for g in grads:
        g.copy_(flat[at:at + g.numel()].view_as(g))
        at += g.numel()


def reference_step(cfg, batch: int, seq: int, seed: int, masks=None):
    """(loss, {name: gradient}): one step of the unsharded model in float64 on the CPU, plain attention, no
    checkpointing (whatever the checked step does); ``masks``: the layers' masks (cycled), dense."""
    import torch

    from ringx_drivers import models

    m = models.build(cfg, seed).double()
    inputs, targets, n = global_batch64(cfg, batch, seq, seed)
    attend = [models.plain_attention(x) for x in masks] if masks else models.plain_attention(cfg.causal)
    loss = m.loss(inputs, targets, torch.arange(seq), attend, n)
    loss.backward()
    return loss.item(), {k: p.grad for k, p in m.named_parameters()}


def global_batch64(cfg, batch: int, seq: int, seed: int):

    from ringx_drivers import models

    inputs, targets, n = models.global_batch(cfg, batch, seq, seed)
    if inputs.is_floating_point():
        inputs, targets = inputs.double(), targets.double()
    return inputs, targets, n


def sharded_step(model, cfg, batch: int, seq: int, seed: int, algorithm: str, layout: str, device, kernel=None,
                 ulysses_degree=None, group=None, masks=None, plugin=None):
    """(global loss, {name: summed gradient}) of one sharded step of ``model`` (float64 on this rank's
    device), its attention ``algorithm``'s or ``plugin``'s; every rank of the group calls it together. The model's
    gradients are left set."""
    import torch.distributed as dist

    rank, world = dist.get_rank(group), dist.get_world_size(group)
    model.zero_grad(set_to_none=True)
    inputs, targets, n = global_batch64(cfg, batch, seq, seed)
    lb = shard_batch(inputs, targets, n, layout, rank, world, device)
    loss = model.loss(lb.inputs, lb.targets, lb.positions,
                      make_attend(algorithm, cfg.causal, kernel, ulysses_degree, masks=masks, plugin=plugin),
                      lb.n_global)
    loss.backward()
    total = loss.detach().clone()
    dist.all_reduce(total, group=group)
    allreduce_grads(list(model.parameters()), group)
    return total.item(), {k: p.grad for k, p in model.named_parameters()}


def compare(loss: float, grads: dict, ref_loss: float, ref_grads: dict) -> tuple[float, float, str]:
    """(relative loss error, largest relative gradient error, the parameter it is in).

    A gradient's error is max|g - ref| / max|ref| over that parameter's tensor (its own scale)."""
    loss_err = abs(loss - ref_loss) / max(abs(ref_loss), 1e-300)
    worst, where = 0.0, ""
    for name, ref in ref_grads.items():
        g = grads[name].detach().cpu().double()
        err = ((g - ref).abs().max() / ref.abs().max().clamp_min(1e-300)).item()
        if not err <= worst:  # NaN counts as the worst
            worst, where = err, name
    return loss_err, worst, where


# ---------------------------------------------------------------------------------------------------------
# Running on every rank


@dataclass(frozen=True)
class StepAt:
    """One candidate of a step configuration: its algorithm at a global sequence length."""

    algorithm: str
    seq: int


class Step:
    """One training step of one algorithm on the shared model: forward, backward, all-reduce, AdamW.

    Each call appends this rank's seconds per phase (device synchronised between phases). ``counting``: a
    ringx.traffic.Traffic the forward and backward run under (a plugin's attention bytes), the all-reduce outside."""

    def __init__(self, model, opt, batch: LocalBatch, attend, state: dict, device, dtype: str):
        self.model, self.opt, self.batch, self.attend, self.state = model, opt, batch, attend, state
        self.device, self.dtype = device, dtype
        self.params = list(model.parameters())
        self.phases: list[tuple[float, ...]] = []
        self.counting = None

    def _sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self):
        import torch

        b = self.batch
        cast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.dtype == "bfloat16"
                else nullcontext())
        counting = self.counting or nullcontext()
        t0 = time.perf_counter()
        with counting, cast:
            loss = self.model.loss(b.inputs, b.targets, b.positions, self.attend, b.n_global)
        self._sync()
        t1 = time.perf_counter()
        with counting:
            loss.backward()
        self._sync()
        t2 = time.perf_counter()
        allreduce_grads(self.params)
        self._sync()
        t3 = time.perf_counter()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self._sync()
        self.phases.append((t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3))
        return loss


class TrainingStep(ModelDriver):
    """``bench model``: every sequence's algorithms timed side by side, one training step each per round."""

    prog, command, kind = "bench model", "model", "model"
    point = StepAt

    def __init__(self, inv: Invocation, model: options.ModelOptions, plan: ModelPlan, external: dict | None = None):
        super().__init__(inv, plan, model.dtype)
        self.model, self.external = model, external or {}

    # -- points and records --------------------------------------------------------------------------------

    def lengths(self) -> tuple[int, ...]:
        return self.plan.seqs

    def config(self, pt: StepAt, rep: int, nodes: int) -> dict:
        s = self.settings
        return plan_config(self.plan, pt.algorithm, pt.seq, world=self.P, nodes=nodes, repeat=rep, dtype=self.dtype,
                           checkpoint=self.model.checkpoint, kernel=s.kernel, warmup=s.warmup, iters=s.iters)

    def label(self, pt: StepAt) -> str:
        m = self.plan.mask_fields(pt.seq).get("mask")
        return f"{pt.algorithm} seq={pt.seq}" + (f" {m}" if m else "")

    def record_fields(self, pt: StepAt) -> dict:
        import ringx

        ext = self.own(pt)
        return {**(ext.record_fields() if ext else {"family": ringx.ALGORITHMS[pt.algorithm].family}),
                "lr": self.model.lr}

    def own(self, pt: StepAt):
        return self.external.get(pt.algorithm)

    def layout(self, pt: StepAt) -> str:
        import ringx

        m = self.plan.layout_mask(pt.seq)
        ext = self.own(pt)
        if ext:
            return ext.layout(m if isinstance(m, bool) else m.causal_layout)
        return ringx.ALGORITHMS[pt.algorithm].layout(m) if isinstance(m, bool) else \
            ringx.ALGORITHMS[pt.algorithm].layout(mask=m)

    def unrunnable(self, pt: StepAt):
        """A plugin that could not be loaded, is not available here or does not take a layer's mask."""
        from ringx.mask import as_mask

        ext = self.own(pt)
        if not ext:
            return None
        c = self.plan.config
        masks = self.plan.masks_at(pt.seq) or [as_mask(causal=c.causal)]
        return ext.refusal(self.ctx.device.type, masks)

    def start(self, total: int) -> None:
        c, plan = self.plan.config, self.plan
        self.progress.note(
            f"bench model: {plan.preset} ({c.arch}, {c.layers} layers, d {c.d_model}, {c.heads}/{c.kv_heads} heads, "
            f"MLP {c.mlp}), {self.dtype}{', checkpointed' if self.model.checkpoint else ''}: {total} records on "
            f"{self.P} ranks (device {self.ctx.device.type}) -> {self.store.records_path}")
        self.note_machine()
        if self.ctx.device.type == "cpu" and self.settings.peak_tflops:
            self.progress.note("bench model: no MFU on CPUs (a CPU has no published peak); --peak-tflops ignored")

    # -- the stages: check, build, first steps, timed steps -------------------------------------------------

    def check_group(self, cases: list[Case]) -> list[Case]:
        return self.check_all(cases) if self.settings.check else cases

    def stages(self, c: Case, shared) -> list[Stage]:
        return [Stage("the first call of", lambda: self.first_call(c), True)]

    def release(self, cases: list[Case]) -> None:
        for c in cases:
            c.call = None
        self.free()

    def free(self) -> None:
        import gc

        import torch

        gc.collect()
        if self.ctx.device.type == "cuda":
            torch.cuda.empty_cache()

    def check_seq(self, cases: list[Case]) -> int:
        import ringx
        from ringx_suite.masks import is_distribution

        div = math.lcm(*(ringx.layouts.global_divisor(c.layout, self.P) for c in cases))
        seq, p = cases[0].point.seq, self.plan
        literal = [m for x, m in zip(p.layer_masks or (p.mask,), p.masks_at(seq) or ())
                   if m.seq_len is not None and not is_distribution(x)]
        if literal:
            return seq  # documents (or groups, slices) given literally fit this length only
        cs = min(seq, self.settings.check_max_seq)
        return max(cs - cs % div, div)

    def check_all(self, cases: list[Case]) -> list[Case]:
        """--check: every algorithm's float64 step against the unsharded float64 reference (computed once per
        configuration, by rank 0, on the CPU). Returns the cases that passed."""

        from ringx_drivers import models
        from ringx_drivers.models import hf

        cfg, plan, dev = self.plan.config, self.plan, self.ctx.device
        cs = self.check_seq(cases)
        masks = plan.masks_at(cs)  # a drawn document mask is drawn again for the check's length
        model, err = None, None
        try:
            model = (hf.build(cfg.hf, seed=cs).to(dev) if self.is_hf else
                     models.build(cfg, seed=cs, checkpoint=self.model.checkpoint).double().to(dev))
        except Exception as e:  # noqa: BLE001
            err = describe(e)
        if not self.failures.settle_all(cases, err, "building the check model of", broke_group=False):
            return []
        passed = []
        for c in cases:
            def run(c=c):
                t0 = time.perf_counter()
                got = failed = None
                try:
                    if self.is_hf:
                        batch = [t.to(dev) for t in hf.global_batch(cfg.hf, plan.batch, cs, cs)]
                        got = hf.sharded_step(cfg.hf, *batch, cs, c.algorithm, kernel=self.settings.kernel,
                                              model=model)[:2]
                    else:
                        got = sharded_step(model, cfg, plan.batch, cs, cs, c.algorithm, c.layout, dev,
                                           self.settings.kernel, masks=masks, plugin=c.own)
                except Exception as e:  # noqa: BLE001 - raised after the verdict, which every rank waits for
                    failed = e
                verdict = ("exception", "rank 0's sharded step failed")
                if self.rank == 0 and got is not None:
                    try:
                        key = (cfg, plan.batch, cs, masks)
                        if key not in self.references:
                            self.references.clear()
                            self.references[key] = (
                                hf.reference_step(cfg.hf, *hf.global_batch(cfg.hf, plan.batch, cs, cs), cs)[:2]
                                if self.is_hf else reference_step(cfg, plan.batch, cs, cs, masks))
                        ref_loss, ref_grads = self.references[key]
                        verdict = (*compare(got[0], got[1], ref_loss, ref_grads), ref_loss)
                    except Exception as e:  # noqa: BLE001 - the other ranks wait for the verdict
                        verdict = describe(e)
                verdict = self.group.comm.bcast(verdict, root=0)
                if failed is not None:
                    raise failed
                if len(verdict) == 2:
                    raise RuntimeError(f"rank 0 could not compute the float64 reference: {verdict[1]}")
                loss_err, grad_err, worst, ref_loss = verdict
                c.result.update(check_loss_error=loss_err, check_grad_error=grad_err, check_worst_param=worst,
                                check_loss=ref_loss, check_tolerance=CHECK_TOLERANCE, check_seq=cs,
                                check_s=time.perf_counter() - t0)
                self.failures.hook(c.index, "check")
                if not (loss_err <= CHECK_TOLERANCE and grad_err <= CHECK_TOLERANCE):
                    raise CheckFailed(f"check failed at seq {cs}: loss error {loss_err:.2e}, gradient error "
                                      f"{grad_err:.2e} ({worst}) > {CHECK_TOLERANCE:.0e}")
            if self.failures.stage(c, run, "checking", broke_group=False):
                passed.append(c)
        del model
        model = None
        self.free()
        return passed

    def inputs(self, cases: list[Case]) -> dict:
        """The configuration's model and AdamW (shared by its algorithms: the same shapes, one copy in memory),
        replicated from rank 0, and each algorithm's shard of one global batch (its step, ``c.call``)."""
        import torch

        from ringx_drivers import models

        cfg, dev = self.plan.config, self.ctx.device
        seq = cases[0].point.seq
        if self.is_hf:
            return self.hf_inputs(cases)
        model = replicated_model(cfg, seed=seq, device=dev, world=self.P, checkpoint=self.model.checkpoint,
                                 dtype=torch.float64 if self.dtype == "float64" else None)
        opt = torch.optim.AdamW(model.parameters(), lr=self.model.lr, betas=(0.9, 0.95), weight_decay=0.1,
                                **({"fused": True} if dev.type == "cuda" else {}))
        inputs, targets, n = models.global_batch(cfg, self.plan.batch, seq, seed=seq)
        if self.dtype == "float64" and inputs.is_floating_point():
            inputs, targets = inputs.double(), targets.double()
        import ringx

        for c in cases:
            self.failures.hook(c.index, "prepare")
            c.stats = None if c.own else ringx.CallStats()
            state = {"stats": c.stats, "validate": True}
            lb = shard_batch(inputs, targets, n, c.layout, self.rank, self.P, dev)
            c.call = Step(model, opt, lb, make_attend(c.algorithm, cfg.causal, self.settings.kernel, state=state,
                                                      masks=self.plan.masks_at(seq), plugin=c.own),
                          state, dev, self.dtype)
        return {"model": model, "opt": opt, "params": models.count_params(model),
                "grad_bytes": sum(p.numel() * p.element_size() for p in model.parameters())}

    @property
    def is_hf(self) -> bool:
        """A transformers model (--hf, --hf-config): bench/models/hf.py builds and steps it."""
        from ringx_drivers.models.hf import is_hf

        return is_hf(self.plan.config)

    def hf_inputs(self, cases: list[Case]) -> dict:
        """:meth:`inputs` of a transformers model: the same weights on every rank (one seed, drawn on the CPU), its
        batch sharded by ringx.integrations.transformers in each algorithm's layout."""
        import torch

        import ringx
        from ringx.integrations import transformers as rxt
        from ringx_drivers.models import hf

        cfg, dev, seq = self.plan.config, self.ctx.device, cases[0].point.seq
        model = hf.build(cfg.hf, seed=seq, dtype=torch.float64 if self.dtype == "float64" else torch.float32)
        model = model.to(dev)
        if self.model.checkpoint:
            model.gradient_checkpointing_enable() if not hasattr(model, "activation_checkpointing_enable") \
                else model.activation_checkpointing_enable()
        opt = torch.optim.AdamW(model.parameters(), lr=self.model.lr, betas=(0.9, 0.95), weight_decay=0.1,
                                **({"fused": True} if dev.type == "cuda" else {}))
        ids, pos, labels = hf.global_batch(cfg.hf, self.plan.batch, seq, seed=seq)
        for c in cases:
            self.failures.hook(c.index, "prepare")
            c.stats = ringx.CallStats()
            state = {"stats": c.stats, "validate": True}
            cp = rxt.parallelize(model, c.algorithm, kernel=self.settings.kernel)
            sb = cp.shard(ids.to(dev), pos.to(dev), labels.to(dev))
            lb = LocalBatch(sb.input_ids, sb.labels, sb.position_ids, sb.n_valid)
            c.call = Step(hf.StepModel(model, sb, state), opt, lb, None, state, dev, self.dtype)
        total, _ = cfg.counts()
        return {"model": model, "opt": opt, "params": total,
                "grad_bytes": sum(p.numel() * p.element_size() for p in model.parameters())}

    def first_call(self, c: Case) -> None:
        """One untimed step: fills the attention ledger and measures this algorithm's peak memory. A plugin's bytes
        are counted at the dispatcher (its forward and backward, not the all-reduce) in one more untimed step, as
        bench run counts one: its first call may set things up."""
        from ringx.traffic import Traffic
        from ringx_drivers.measure.memory import peak_memory, reset_peak_memory

        reset_peak_memory(self.ctx.device)
        self.failures.hook(c.index, "run")
        c.call()
        mem = peak_memory(self.ctx.device)
        c.call.state.update(stats=None, validate=False)  # the timed steps: no ledger, no input exchange
        st = c.stats
        if st:
            c.result.update(kernel=st.kernel, kernel_version=st.kernel_version, **ledger_totals(st))
        else:
            c.call.counting = counted = Traffic()
            try:
                c.call()
            finally:
                c.call.counting = None
            lg = counted.ledger
            c.result.update(kernel=c.algorithm, kernel_version=None, sent=lg.sent, received=lg.received,
                            calls=lg.calls, not_counted=sorted(counted.unknown))
        c.call.phases.clear()
        c.result.update(mem=mem)

    def after_timing(self, live: list[Case]) -> list[dict[str, list[float]]]:
        """Each phase's seconds per timed iteration, the slowest rank's (exchanged once, after timing)."""
        import torch
        import torch.distributed as dist

        iters = self.settings.iters
        mine = torch.tensor([c.call.phases[-iters:] for c in live], dtype=torch.float64)  # (algos, iters, phases)
        if self.ctx.backend == "nccl":
            mine = mine.to(self.ctx.device)
        dist.all_reduce(mine, op=dist.ReduceOp.MAX)
        every = mine.cpu().tolist()
        return [{ph: [it[j] for it in per] for j, ph in enumerate(MODEL_PHASES)} for per in every]

    def finish(self, c: Case, samples: list[float], phases: dict, group_id: str | None, shared: dict) -> str:
        import statistics

        from ringx.flops import MODEL_CONVENTION
        from ringx_drivers.points.step import flops_per_token
        from ringx_suite.stats import stat_fields
        from ringx_suite.store import now

        cfg, plan, votes, seq = self.plan.config, self.plan, c.votes, c.point.seq
        fields = stat_fields(samples)
        med = fields["median_s"]
        per_token, n_flops = flops_per_token(cfg, seq, plan.masks_at(seq))
        flops = per_token * plan.batch * seq
        tflops = flops / self.P / med / 1e12
        peak = self.settings.peak_tflops if self.ctx.device.type == "cuda" else None
        c.rec.update(
            written_at=now(), kernel=c.result["kernel"], kernel_version=c.result["kernel_version"], layout=c.layout,
            timing_group=group_id, samples_s=samples, **fields,
            **{f"{ph}_s": statistics.median(phases[ph]) for ph in MODEL_PHASES}, phase_samples_s=phases,
            tokens_per_s_per_rank=plan.batch * seq / self.P / med,
            params=shared["params"], params_flops=n_flops, flops_per_token=per_token, flops=flops,
            flops_convention=MODEL_CONVENTION, tflops_per_rank=tflops, peak_tflops=peak,
            mfu=tflops / peak if peak else None, **per_rank_fields(votes),
            grad_allreduce_bytes=shared["grad_bytes"] if self.P > 1 else 0,
            mem_peak_bytes_per_rank=[v["mem"] for v in votes],
            **({"comm_not_counted": c.result["not_counted"]} if c.result.get("not_counted") else {}),
            **{k: v for k, v in c.result.items() if k.startswith("check_")})
        ms = {ph: statistics.median(phases[ph]) * 1e3 for ph in MODEL_PHASES}
        return (f"{med * 1e3:.1f} ms/step (fwd {ms['forward']:.1f}, bwd {ms['backward']:.1f}, all-reduce "
                f"{ms['grad_allreduce']:.1f}, AdamW {ms['optimizer']:.1f}), {plan.batch * seq / self.P / med:.0f} "
                "tokens/s per rank")


def main(argv: list[str] | None = None) -> int:
    def make(argv: list[str], world: int) -> TrainingStep:
        inv, model, plan, external = resolve(argv, world)  # every user mistake stops here, before any collective
        return TrainingStep(inv, model, plan, external)

    return mpi_main(PROG, argv, make)


if __name__ == "__main__":
    sys.exit(main())
