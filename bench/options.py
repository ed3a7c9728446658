"""The one definition of every benchmark option: default, help, type and bounds.

Two kinds:
- parameters (``PARAMS``): the axes of a point (algorithm, sequence, heads, ...);
  lists are crossed into points by ``bench run`` flags and sweep files alike;
- settings (``SETTINGS``): how points are measured (iterations, check, timeout, ...);
- output (``OUTPUT``): where records go and what is printed (out, campaign, tag, retry_failed, quiet), the
  same flags for every driver.

Drivers read them typed, as the frozen dataclasses :class:`Settings`, :class:`Output` and (``bench model``)
:class:`ModelOptions`, each built from its table by :func:`typed`, so a field exists exactly when its option does.

``bench run``'s flags, a ``--config`` file, a sweep file's ``[bench]`` and
``[params]`` tables, ``bench quick``'s flags and the points of a job are all read
through :func:`value` and written back with :func:`to_argv`, so a value means
the same wherever it is given, and a bad one is refused with the same message
before anything runs.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass, field, make_dataclass

from ringx_suite.cli import UserError
from ringx_suite.dtypes import DTYPES
from ringx_suite.masks import HELP, split_specs

MODES = ("fwd", "fwd+bwd")
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("auto", "gloo", "nccl")
MAX_ITERS = 100_000  # a typo guard: 10**12 iterations is never meant
MAX_TIMEOUT_S = 24 * 3600.0


@dataclass(frozen=True)
class Option:
    name: str  # python name; the flag is --name-with-dashes, the TOML key the name
    default: object
    help: str
    kind: type  # int, float, bool or str (a parameter's value may be a list of these)
    low: float | None = None  # inclusive lower bound
    high: float | None = None  # inclusive upper bound
    choices: tuple | None = None
    nullable: bool = False  # None is a valid value (automatic / not set)
    check: Callable[[object], str] | None = None  # extra rule: '' or the problem
    split: Callable[[str], list[str]] | None = None  # a list's text into items (default: at commas)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _p(name, default, help, kind, **kw) -> Option:  # noqa: A002 - argparse's word
    return Option(name, default, help, kind, **kw)


PARAMS: dict[str, Option] = {o.name: o for o in (
    _p("algorithms", None, "comma-separated names (default: every algorithm supporting the masking)", str,
       nullable=True),
    _p("seq", None, "global sequence length(s): strong scaling (default 2048)", int, low=1, nullable=True),
    _p("seq_per_rank", None, "sequence length(s) per rank: weak scaling (global = this x ranks)", int, low=1,
       nullable=True),
    _p("batch", 1, "batch size", int, low=1, high=1 << 20),
    _p("heads", 8, "query heads", int, low=1, high=1 << 16),
    _p("kv_heads", None, "key/value heads (default: = heads; fewer for GQA/MQA)", int, low=1, high=1 << 16,
       nullable=True),
    _p("head_dim", 64, "head dimension", int, low=1, high=1024),
    _p("dtype", "float32", "element type (float32/float64 on CPUs, bfloat16/float16 on GPUs)", str, choices=DTYPES),
    _p("causal", True, "causal masking: true, false, or both as 'true,false' (--causal true is --mask causal, "
       "false is --mask full)", bool),
    _p("mask", None, "attention mask(s), replacing --causal: " + HELP + "; several as 'causal,window:4096'; drawn "
       "documents once per sequence length and mask, from --mask-seed (default: --causal's)", str, nullable=True,
       split=split_specs),
    _p("mode", "fwd+bwd", "fwd or fwd+bwd", str, choices=MODES),
)}

SETTINGS: dict[str, Option] = {o.name: o for o in (
    _p("warmup", 2, "untimed iterations per configuration", int, low=0, high=MAX_ITERS),
    _p("iters", 10, "timed iterations per configuration (every algorithm of it takes turns in each)", int, low=1,
       high=MAX_ITERS),
    _p("repeats", 1, "records per configuration and algorithm", int, low=1, high=1000),
    _p("check", False, "before timing, compare each algorithm with float64 attention; failing ones are "
       "recorded, not timed", bool),
    _p("trace", False, "bench run: after the timed rounds, record one more call per algorithm on the timeline and "
       "store its overlap_fraction (never inside the timed rounds; the trace files: bench trace)", bool),
    _p("mask_seed", None, "seed of the document lengths --mask draws from a distribution (default 0; bench infer "
       "takes no mask and ignores it)", int, low=0,
       high=2**63 - 1, nullable=True),
    _p("check_max_seq", 2048, "largest sequence the check uses: bench run and bench model check longer points at "
       "this length; bench infer times longer prompts unchecked (checked: false)", int, low=1, high=1 << 22),
    _p("timeout", 300.0, "seconds a rank waits on its peers before the run stops", float, low=1.0,
       high=MAX_TIMEOUT_S),
    _p("kernel", None, "force a local kernel (default: the fastest exact one for the device)", str, nullable=True),
    _p("peak_tflops", None, "the device's published peak TFLOP/s for MFU (e.g. 989 for H100 SXM bf16); "
       "no MFU without it", float, low=1e-3, high=1e6, nullable=True),
    _p("link_gb_per_s", None, "the fastest link a rank sends on, GB/s (a sweep: its profile's [model]): a record whose "
       "rank sends more bytes per second is flagged implausible", float, low=1e-3, high=1e6, nullable=True),
    _p("device", "auto", "where to run: cpu, cuda or auto (cuda when present)", str, choices=DEVICES),
    _p("backend", "auto", "torch.distributed backend: gloo, nccl or auto (nccl on GPUs)", str, choices=BACKENDS),
)}


OUTPUT: dict[str, Option] = {o.name: o for o in (
    _p("out", "runs", "output root: records go to OUT/CAMPAIGN/", str),
    _p("campaign", "default", "campaign name, a plain directory name", str),
    _p("tag", None, "free-form label stored in every record", str, nullable=True),
    _p("retry_failed", False, "re-run configurations recorded as failed", bool),
    _p("quiet", False, "no progress output (by default rank 0 prints a line per point)", bool),
)}


def _one(o: Option, v, where: str):
    where = f"{where}: " if where else ""
    if v is None:
        if o.nullable:
            return None
        raise UserError(f"{where}{o.name} needs a value")
    try:
        if o.kind is bool:
            from ringx_suite.cli import parse_bool

            x = parse_bool(v)
        elif o.kind is int:
            if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
                raise ValueError
            x = int(v)
        elif o.kind is float:
            if isinstance(v, bool):
                raise ValueError
            x = float(v)
        else:
            if not isinstance(v, str):
                raise ValueError
            x = v.strip()
    except (TypeError, ValueError):
        kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[o.kind]
        raise UserError(f"{where}{o.name} must be {kind}, got {v!r}") from None
    if isinstance(x, float) and not math.isfinite(x):
        raise UserError(f"{where}{o.name} must be a finite number, got {v!r}")
    if o.choices and x not in o.choices:
        raise UserError(f"{where}{o.name} {x!r}: choose one of {', '.join(o.choices)}")
    if o.low is not None and x < o.low:
        raise UserError(f"{where}{o.name} must be >= {_number(o.low)}, got {v!r}")
    if o.high is not None and x > o.high:
        raise UserError(f"{where}{o.name} must be <= {_number(o.high)}, got {v!r}")
    if o.check:
        problem = o.check(x)
        if problem:
            raise UserError(f"{where}{o.name}: {problem}")
    return x


def _number(x: float) -> str:
    """A bound as users write it: integers as integers (16777216, not 1.67772e+07)."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def value(o: Option, v, where: str = "option", many: bool = False):
    """``v`` (a CLI string, a TOML value or a list of them) checked against the option.

    With ``many`` (parameters) the result is a list: 'a,b', ['a', 'b'] and 'a' all work.
    """
    if not many:
        return _one(o, v, where)
    if v is None:
        return None
    from ringx_suite.cli import split_list

    if isinstance(v, str) and o.split:
        items = o.split(v)
    else:
        items = split_list(v) if isinstance(v, str | list) else [v]
    if not items:
        raise UserError(f"{where + ': ' if where else ''}{o.name} is empty")
    return [_one(o, x, where) for x in items]


def add_arguments(parser: argparse.ArgumentParser, options, defaults: dict | None = None) -> None:
    """One flag per option; the default shown in --help comes from the definition (or ``defaults``)."""
    for o in options:
        d = (defaults or {}).get(o.name, o.default)
        shown = "" if d is None else f" (default: {str(d).lower() if isinstance(d, bool) else d})"
        if o.kind is bool and o.name not in PARAMS:  # a switch (a parameter's bool takes values to cross)
            parser.add_argument(o.flag, action="store_true", default=None, help=o.help + shown)
        else:
            parser.add_argument(o.flag, default=None, metavar=o.name.upper(), help=o.help + shown)


def settings(given: dict, where: str) -> dict:
    """Every setting: the given ones checked, the others at their defaults."""
    return {n: value(o, given.get(n, o.default), where) for n, o in SETTINGS.items()}


def typed(name: str, table: dict[str, Option], doc: str):
    """A frozen dataclass with one field per option of ``table`` (its kind, its default), and ``of(given)``: the
    given values checked (flags' strings, TOML values), the others at their defaults."""
    cls = make_dataclass(name, [(o.name, o.kind | None if o.nullable or o.default is None else o.kind,
                                 field(default=o.default)) for o in table.values()], frozen=True)
    cls.__doc__ = doc
    cls.__module__ = __name__

    def of(given: dict, where: str = "", defaults: dict | None = None):
        d = defaults or {}
        return cls(**{n: value(o, given.get(n, d.get(n, o.default)), where) for n, o in table.items()})
    cls.of = staticmethod(of)
    return cls


Settings = typed("Settings", SETTINGS, "How points are measured (``SETTINGS``): iterations, check, timeout, ...")
Output = typed("Output", OUTPUT, "Where a driver's records go and what it prints (``OUTPUT``).")


def to_argv(values: dict, keep_defaults: bool = False) -> list[str]:
    """Flags for ``bench run`` reproducing ``values`` (settings); defaults spelled out with ``keep_defaults``
    (a job script says exactly what it runs, whatever later defaults become)."""
    out = []
    for name, v in values.items():
        o = SETTINGS[name]
        if v is None or (v == o.default and not keep_defaults) or (o.choices and v == "auto"):
            continue
        if o.kind is bool:
            if v:
                out.append(o.flag)
        else:
            out += [o.flag, str(v)]
    return out


# ``bench model``: the model and how its step runs. The model fields default to the preset's (None); the
# points take `algorithms`, `seq`/`seq_per_rank` and `batch` from PARAMS, the measurement the SETTINGS.
MODEL_PRESETS = ("tiny", "tiny-vit", "llama3-8b", "vit-l", "ra-sp")  # bench/models/transformer.py PRESETS
MODEL_DTYPES = ("auto", "float32", "float64", "bfloat16")
HF_ARCHS = ("llama", "qwen3", "mistral", "gpt-oss")  # bench/models/hf.py ARCHS

MODEL: dict[str, Option] = {o.name: o for o in (
    _p("preset", "tiny", "model preset: tiny and tiny-vit (CPU), llama3-8b (4 layers of Llama-3-8B), vit-l, "
       "ra-sp (RA+SP's 4-layer dense model)", str, choices=MODEL_PRESETS),
    _p("hf", None, "a transformers model in place of the preset: llama, qwen3, mistral or gpt-oss (tiny sizes; the "
       "size flags override them; docs/transformers.md)", str, choices=HF_ARCHS, nullable=True),
    _p("hf_config", None, "a transformers config.json (a causal LM of --hf's architectures), or a published one by "
       "name: llama3-8b, mistral-7b, qwen3-32b, gpt-oss-20b; the size flags override it", str, nullable=True),
    _p("arch", None, "decoder (causal LM) or vit (non-causal encoder) (default: the preset's)", str,
       choices=("decoder", "vit"), nullable=True),
    _p("layers", None, "transformer layers (default: the preset's)", int, low=1, high=1 << 12, nullable=True),
    _p("d_model", None, "model width (default: the preset's)", int, low=2, high=1 << 17, nullable=True),
    _p("heads", None, "query heads (default: the preset's)", int, low=1, high=1 << 12, nullable=True),
    _p("kv_heads", None, "key/value heads (default: the preset's)", int, low=1, high=1 << 12, nullable=True),
    _p("mlp", None, "SwiGLU hidden size (default: the preset's)", int, low=1, high=1 << 20, nullable=True),
    _p("vocab", None, "decoder vocabulary (default: the preset's)", int, low=2, high=1 << 24, nullable=True),
    _p("patch_dim", None, "vit: values per patch (default: the preset's)", int, low=1, high=1 << 20, nullable=True),
    _p("rope_theta", None, "rotary embedding base (default: the preset's)", float, low=1.0, high=1e12,
       nullable=True),
    _p("dtype", "auto", "float32, float64, or bfloat16 (autocast over float32 weights); auto: bfloat16 on GPUs, "
       "float32 on CPUs", str, choices=MODEL_DTYPES),
    _p("layer_masks", None, "a per-layer mask pattern the layers cycle through, e.g. 'window:4096,causal' "
       "(Gemma-style local and global layers; specs as --mask's); in place of --mask", str, nullable=True,
       split=split_specs),
    _p("checkpoint", False, "activation checkpointing: recompute each layer in the backward", bool),
    _p("lr", 1e-5, "AdamW learning rate", float, low=0.0, high=1.0),
    _p("machine", None, "a profile (jobs/profiles/NAME.toml) whose GPU peak gives MFU (or --peak-tflops)", str,
       nullable=True),
)}

ModelOptions = typed("ModelOptions", MODEL, "``bench model``'s model and step options (``MODEL``); None: the preset's.")


# ``bench infer``: serving's points (the model's options are MODEL's, less those of training).
INFER_DTYPES = ("auto", "float32", "float64", "bfloat16", "float16")

INFER: dict[str, Option] = {o.name: o for o in (
    _p("algorithms", None, "comma-separated ringx algorithms, `tp` (tensor parallelism) and `tp{T}pp{S}` (T-way "
       "TP in each of S pipeline stages, T x S = ranks); default: ring, zigzag, ringx1, ringx3, ringx4, ulysses, tp",
       str, nullable=True),
    _p("prompt_len", None, "prompt length(s) in tokens (default 256)", int, low=1, high=1 << 24, nullable=True),
    _p("batch", 1, "sequences served together", int, low=1, high=1 << 16),
    _p("new_tokens", 8, "greedy tokens generated per sequence (the prefill's, then one per decode step)", int,
       low=1, high=1 << 20),
    _p("dtype", "auto", "weights and activations: float32, float64, bfloat16, float16; auto: bfloat16 on GPUs, "
       "float32 on CPUs", str, choices=INFER_DTYPES),
)}
INFER_MODEL = tuple(n for n in MODEL if n not in ("arch", "patch_dim", "dtype", "checkpoint", "lr", "machine",
                                               "layer_masks", "hf", "hf_config"))
