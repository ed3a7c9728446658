"""``ringx-bench infer``: serving long prompts, context-parallel prefill and decode against tensor parallelism.

The model is ``bench model``'s decoder preset (``tiny`` on CPU), in eval mode without autograd. Each candidate
(an algorithm, or ``tp``: tensor parallelism) prefills the prompt in its layout into a sharded KV cache and
decodes with its family's schedule; docs/serving.md says what each algorithm does at decode and why. Records
are of kind ``infer`` (docs/records.md).

Timing as ``bench run``: warm-up, then every iteration one whole generation (prefill, then ``--new-tokens`` - 1
decode steps) of each candidate in rotating order; every phase's seconds are the slowest rank's, and every
sample is kept (``prefill_samples_s``: one per iteration; ``decode_samples_s``: per iteration, one per step).

--check first generates once with every candidate and compares with the unsharded model's greedy generation
(rank 0, float64 on the CPU from the served weights, no cache): in float64 the ids must be equal and every step's
logits within CHECK_TOLERANCE relative, else the candidate is recorded as failed and not timed; in other dtypes the
agreement (leading ids equal, first divergence, the reference's margin there, the logits error up to it) is recorded
and nothing fails, since a near-tie may go either way. Prompts longer than --check-max-seq are timed unchecked.

Example (2 local CPU ranks):
  mpiexec -n 2 ringx-bench infer --preset tiny --prompt-len 256,512 --new-tokens 8 --check
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

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
from ringx_drivers.points.infer import CHECK_MAX_SEQ, ServingPlan, plan_config, serving_plan
from ringx_suite.cli import Parser

PROG = "ringx-bench infer"
CHECK_TOLERANCE = 1e-9  # float64 against float64: every step's logits, relative (seen ~1e-15)


def build_parser() -> Parser:
    return model_parser(PROG, __doc__, [options.MODEL[n] for n in options.INFER_MODEL], "serving (lists are crossed)",
                        options.INFER.values(), CHECK_MAX_SEQ, formatter_class=argparse.RawDescriptionHelpFormatter)


@dataclass(frozen=True)
class ServeAt:
    """One candidate of a configuration: an algorithm (or ``tp``) at a prompt length."""

    algorithm: str
    prompt_len: int


def make_plan(given: dict, world: int, argv: list[str] | tuple = ()) -> tuple[Invocation, ServingPlan]:
    """:func:`resolve` from the options as a dict: the checked invocation and the plan (bench/points/infer.py)."""
    return Invocation.of(given, argv, settings_defaults={"check_max_seq": CHECK_MAX_SEQ}), serving_plan(given, world)


def resolve(argv: list[str] | None, world: int) -> tuple[Invocation, ServingPlan]:
    """The checked invocation and plan for ``world`` ranks; every user mistake (an unknown preset or algorithm,
    a prompt the layout cannot split, ``--new-tokens 0``, heads TP cannot split) raises UserError here, on every
    rank alike, before any process group exists."""
    argv = list(argv or [])
    valid = set(options.INFER_MODEL) | set(options.INFER) | set(options.SETTINGS) | set(options.OUTPUT) | {"inject"}
    return make_plan(given_options(build_parser(), argv, valid), world, argv)


class Timed:
    """One whole generation of a Server, timed per phase on this rank (device synchronised between phases)."""

    def __init__(self, server, prompt, device):
        self.server, self.prompt, self.device = server, prompt, device
        self.phases: list[list[float]] = []  # per call: [prefill, step 1, ...]
        self.ids: list[int] = []  # the last call's greedy ids of the first sequence

    def _sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self):
        s = self.server
        t0 = time.perf_counter()
        ids = [s.prefill(self.prompt)]
        self._sync()
        times = [time.perf_counter() - t0]
        for _ in range(s.new_tokens - 1):
            t0 = time.perf_counter()
            ids.append(s.step())
            self._sync()
            times.append(time.perf_counter() - t0)
        self.phases.append(times)
        self.ids = [int(i[0]) for i in ids]


class Serving(ModelDriver):
    """``bench infer``: every prompt length's candidates timed side by side, one generation each per round."""

    prog, command, kind = "bench infer", "infer", "infer"
    point = ServeAt

    def __init__(self, inv: Invocation, plan: ServingPlan):
        super().__init__(inv, plan, plan.dtype)

    def lengths(self) -> tuple[int, ...]:
        return self.plan.prompts

    def config(self, pt: ServeAt, rep: int, nodes: int) -> dict:
        s = self.settings
        return plan_config(self.plan, pt.algorithm, pt.prompt_len, world=self.P, nodes=nodes, repeat=rep,
                             dtype=self.dtype, kernel=s.kernel, warmup=s.warmup, iters=s.iters)

    def label(self, pt: ServeAt) -> str:
        return f"{pt.algorithm} prompt={pt.prompt_len}"

    def record_fields(self, pt: ServeAt) -> dict:
        import ringx
        from ringx_drivers.models.serving import baseline

        return {"family": pt.algorithm.split("pp")[0] if baseline(pt.algorithm)
                else ringx.ALGORITHMS[pt.algorithm].family}  # tp, or tpT of tpTppS

    def layout(self, pt: ServeAt) -> str:
        import ringx
        from ringx_drivers.models.serving import baseline

        return "replicated" if baseline(pt.algorithm) else ringx.ALGORITHMS[pt.algorithm].layout(True)

    def start(self, total: int) -> None:
        c, plan = self.plan.config, self.plan
        self.progress.note(
            f"bench infer: {plan.preset} ({c.layers} layers, d {c.d_model}, {c.heads}/{c.kv_heads} heads), "
            f"{self.dtype}, batch {plan.batch}, {plan.new_tokens} new tokens: {total} records on {self.P} ranks "
            f"(device {self.ctx.device.type}) -> {self.store.records_path}")
        self.note_machine()

    # -- inputs, check, first call -------------------------------------------------------------------------

    def inputs(self, cases: list[Case]) -> dict:
        """The configuration's model (built alike on every rank from one seed, then broadcast from rank 0) and
        prompt; each candidate's Server and its timed generation (``c.call``)."""
        import torch

        from ringx_drivers.models import serving

        cfg, dev, plan = self.plan.config, self.ctx.device, self.plan
        s = cases[0].point.prompt_len
        model = replicated_model(cfg, seed=s, device=dev, world=self.P, dtype=getattr(torch, self.dtype)).eval()
        prompt = serving.prompt_tokens(cfg, plan.batch, s, seed=s)
        for c in cases:
            self.failures.hook(c.index, "prepare")
            server = serving.Server(model, c.algorithm, batch=plan.batch, prompt_len=s, new_tokens=plan.new_tokens,
                                    kernel=self.settings.kernel)
            c.call = Timed(server, prompt, dev)
        return {"model": model, "prompt": prompt}

    def checked(self, pt: ServeAt) -> bool:
        """Whether --check verifies this point: prompts longer than --check-max-seq are timed unchecked."""
        return self.settings.check and pt.prompt_len <= self.settings.check_max_seq

    def describe_point(self, pt: ServeAt) -> str:
        unchecked = self.settings.check and not self.checked(pt)
        return f"prompt={pt.prompt_len}" + (f" (not checked: longer than --check-max-seq "
                                            f"{self.settings.check_max_seq})" if unchecked else "")

    def stages(self, c: Case, shared) -> list[Stage]:
        out = []
        if self.checked(c.point):
            out.append(Stage("checking", lambda: self.check(c, shared), False))
        elif self.settings.check:
            c.rec["checked"] = False
        out.append(Stage("the first call of", lambda: self.first_call(c), True))
        return out

    def reference(self, model, prompt, seed: int):
        """Rank 0's float64 greedy generation of the unsharded model with the served model's own weights
        (upcast, on the CPU), computed once per configuration."""
        from ringx_drivers import models
        from ringx_drivers.models import serving

        key = (self.plan.config, tuple(prompt.shape), seed, self.dtype)
        if key not in self.references:
            self.references.clear()
            ref_model = models.build(self.plan.config, seed=seed).double().eval()
            ref_model.load_state_dict(model.state_dict())  # copied into float64 on the CPU
            self.references[key] = serving.reference_generate(ref_model, prompt, self.plan.new_tokens)
        return self.references[key]

    def check(self, c: Case, shared: dict) -> None:
        """One generation keeping its logits, against the reference (rank 0 decides, every rank raises alike):
        the agreement in every dtype; in float64 ids equal and logits within CHECK_TOLERANCE, else CheckFailed."""
        from ringx_drivers.models import serving

        t0 = time.perf_counter()
        server = c.call.server
        server.keep_logits, server.logits = True, []
        failed = got = None
        try:
            got = server.generate(shared["prompt"])
        except Exception as e:  # noqa: BLE001 - raised after the verdict, which every rank waits for
            failed = e
        finally:
            server.keep_logits = False
        verdict: object = ("exception", "rank 0's generation failed")
        if self.rank == 0 and got is not None:
            try:
                ref = self.reference(shared["model"], shared["prompt"], c.point.prompt_len)
                verdict = serving.agreement(got.ids.cpu(), [g.double() for g in got.logits], ref)
            except Exception as e:  # noqa: BLE001
                verdict = ("exception", f"rank 0 could not compare with the reference: {e}")
        verdict = self.group.comm.bcast(verdict, root=0)
        server.logits = []
        if failed is not None:
            raise failed
        if isinstance(verdict, tuple):
            raise RuntimeError(verdict[1])
        a = verdict
        exact = self.dtype == "float64"
        # into the record itself, so a failed check's record says how far the ids agreed
        c.rec.update(checked=True, check_ids_equal=a.agree_tokens == self.plan.new_tokens,
                        check_agree_tokens=a.agree_tokens, check_first_divergence=a.first_divergence,
                        check_divergence_margin=a.margin, check_logits_error=a.logits_error,
                        check_tolerance=CHECK_TOLERANCE if exact else None, check_s=time.perf_counter() - t0)
        self.failures.hook(c.index, "check")
        if exact and not (a.first_divergence is None and a.logits_error <= CHECK_TOLERANCE):
            raise CheckFailed(f"check failed: {a.describe(self.plan.new_tokens)} (tolerance {CHECK_TOLERANCE:.0e})")

    def first_call(self, c: Case) -> None:
        """One untimed generation: the attention ledger, the cache's size and this candidate's peak memory."""
        from ringx_drivers.measure.memory import peak_memory, reset_peak_memory

        reset_peak_memory(self.ctx.device)
        self.failures.hook(c.index, "run")
        import torch

        import ringx
        from ringx_drivers.models import serving

        server = c.call.server
        server.stats.forward.ops.clear()  # count one generation only (not the check's)
        server.ledger.ops.clear()
        c.call()
        c.call.phases.clear()
        st = server.stats
        totals = ledger_totals(st)  # attention's traffic, then the model's (logits, ids, TP's all-reduces)
        for k in ("sent", "received", "calls"):
            totals[k] += getattr(server.ledger, k)
        if serving.baseline(c.algorithm):  # TP (and TP x PP) attends with the local kernel directly
            kern = ringx.select_kernel(self.ctx.device, getattr(torch, self.dtype), self.settings.kernel,
                                       head_dim=self.plan.config.head_dim)
            kernel, version = kern.name, kern.version()
        else:
            kernel, version = st.kernel, st.kernel_version
        c.result.update(mem=peak_memory(self.ctx.device), kv=server.kv_cache_bytes, kernel=kernel,
                        kernel_version=version or None, ids=list(c.call.ids), **totals)

    def after_timing(self, live: list[Case]) -> list[list[list[float]]]:
        """Each phase's seconds per timed iteration, the slowest rank's (exchanged once, after timing)."""
        import torch
        import torch.distributed as dist

        iters = self.settings.iters
        mine = torch.tensor([c.call.phases[-iters:] for c in live], dtype=torch.float64)  # (cands, iters, phases)
        if self.ctx.backend == "nccl":
            mine = mine.to(self.ctx.device)
        dist.all_reduce(mine, op=dist.ReduceOp.MAX)
        return mine.cpu().tolist()

    def finish(self, c: Case, samples: list[float], phases: list[list[float]], group_id: str | None,
               shared: dict) -> str:
        from ringx_drivers.models import serving
        from ringx_suite.stats import stat_fields
        from ringx_suite.store import now

        plan, votes = self.plan, c.votes
        prefill = [it[0] for it in phases]
        decode = [it[1:] for it in phases]
        steps = [t for it in decode for t in it]
        m = serving.metrics(statistics.median(prefill), steps, batch=plan.batch, prompt_len=c.point.prompt_len,
                            kv_cache_bytes=[v["kv"] for v in votes], generated=c.result["ids"])
        c.rec.update(
            written_at=now(), kernel=c.result["kernel"], kernel_version=c.result["kernel_version"], layout=c.layout,
            timing_group=group_id, samples_s=samples, **stat_fields(samples), **m,
            kv_cache_bytes_per_rank=[v["kv"] for v in votes], prefill_samples_s=prefill, decode_samples_s=decode,
            **per_rank_fields(votes), mem_peak_bytes_per_rank=[v["mem"] for v in votes])
        tpot = f", TPOT {m['tpot_s'] * 1e3:.2f} ms" if m["tpot_s"] is not None else ""
        agree = c.rec.get("check_agree_tokens")
        agree = f", ids agree {agree}/{plan.new_tokens}" if agree is not None and agree < plan.new_tokens else ""
        return f"TTFT {m['ttft_s'] * 1e3:.1f} ms{tpot}{agree}"


def main(argv: list[str] | None = None) -> int:
    def make(argv: list[str], world: int) -> Serving:
        inv, plan = resolve(argv, world)  # every user mistake stops here, before any collective
        return Serving(inv, plan)

    return mpi_main(PROG, argv, make)


if __name__ == "__main__":
    sys.exit(main())
