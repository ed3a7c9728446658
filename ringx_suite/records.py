"""The one definition of each record kind in a campaign store.

The store's validation, the analysis column types and the schema tables of
``docs/records.md`` are all derived from the field lists below, so a field
is added, typed and documented in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "skipped")
_NUM = (int, float)
_NONE = type(None)

# How analysis types a column: "int" -> Int64, "float" -> float64, "str" -> string, "bool" -> boolean.
COLUMN_DTYPES = {"int": "Int64", "float": "float64", "str": "string", "bool": "boolean"}


@dataclass(frozen=True)
class Field:
    name: str
    types: type | tuple  # accepted JSON value types
    meaning: str
    when: str = "always"  # "always", "ok" (timed records only) or "optional"
    column: str | None = None  # analysis column type (a COLUMN_DTYPES key); None: left as read
    config: bool = False  # part of the configuration hashed into `key`

    @property
    def type_name(self) -> str:
        types = self.types if isinstance(self.types, tuple) else (self.types,)
        names = {int: "int", float: "float", str: "str", bool: "bool", list: "list", dict: "dict", _NONE: "null"}
        return " or ".join(dict.fromkeys(names[t] for t in types))


def F(name, types, meaning, when="always", column=None, config=False) -> Field:  # noqa: N802 - a table row
    return Field(name, types, meaning, when, column, config)


COMMON = (
    F("schema", int, f"record schema version ({SCHEMA_VERSION})"),
    F("kind", str, "`attention`, `collective`, `kernel`, `model` or `infer`", column="str"),
    F("campaign", str, "campaign name"),
    F("tag", (str, _NONE), "free label from `--tag`", "optional", "str"),
    F("run_id", str, "the run that wrote it: `runs/<run_id>.json` holds its provenance"),
    F("key", str, "hash of the configuration fields (resume)"),
    F("status", str, "`ok`, `failed` (not timed; see `error`) or `skipped` (cannot run here)", column="str"),
    F("error", (str, _NONE), "why it failed or was skipped, naming the rank(s)", column="str"),
    F("failure", (str, _NONE), "`exception`, `oom` (out of memory, or refused by the memory estimate before "
      "allocating), `check` (wrong results), `timeout` (a rank died or hung)", "optional", "str"),
    F("failed_ranks", list, "ranks that reported the failure; for `timeout`, the ranks that did not report "
      "(empty where unknown)", "optional"),
    F("written_at", str, "ISO-8601 time"),
    F("world_size", int, "ranks of the run", column="int", config=True),
    F("nodes", int, "distinct nodes of the run", column="int", config=True),
    F("warmup", int, "untimed iterations", column="int", config=True),
    F("iters", int, "timed iterations", column="int", config=True),
    F("samples_s", list, "seconds of every timed iteration, each the **slowest rank's**", "ok"),
    F("median_s", _NUM, "median of `samples_s`", "ok", "float"),
    F("min_s", _NUM, "minimum of `samples_s`", "ok", "float"),
    F("max_s", _NUM, "maximum of `samples_s`", "ok", "float"),
    F("mean_s", _NUM, "mean of `samples_s`", "ok", "float"),
    F("std_s", _NUM, "standard deviation of `samples_s`", "ok", "float"),
    F("p10_s", _NUM, "10th percentile of `samples_s` (interpolated)", "ok", "float"),
    F("p90_s", _NUM, "90th percentile of `samples_s` (interpolated)", "ok", "float"),
)

# The mask of an attention, kernel or model record (ringx_suite/masks.py writes them; records older than these
# fields, or written without --mask, lack them and read as `causal`'s full/causal).
MASK = (
    F("mask", str, "the mask's text form (ringx.Mask; past 60 characters abbreviated with its digest)", "optional",
      "str", True),
    F("mask_lengths", list, "the document lengths, exactly (document masks given literally or of up to 64 "
      "documents)", "optional"),
    F("mask_digest", str, "ringx.Mask.digest() of the exact mask, when its lengths are too many to keep",
      "optional", "str"),
    F("mask_spec", str, "the `--mask` distribution it was drawn from (`docs:lognormal:MEAN`, ...)", "optional",
      "str"),
    F("mask_seed", int, "the seed of that draw (ringx_suite.masks.parse(spec, seq, seed) redraws it)", "optional",
      "int"),
)

ATTENTION = (
    F("algorithm", str, "a ringx algorithm, or a plugin: the field's (`tcp-*`, `rfa-*`) or a user's", column="str",
      config=True),
    F("family", str, "`ring`, `ringx`, `ulysses`, `peer` (the field's implementations) or `plugin` (a user's); "
      "`external` in records before plugins", column="str"),
    F("plugin_source", str, "a plugin's origin: `entry point MODULE:ATTR` or `--plugin SPEC`", "optional", "str"),
    F("implausible", list, "why the measurement cannot be right (above the device's peak TFLOP/s, given or known "
      "for the GPU; a rank sending faster than `link_gb_per_s`); `summary` marks its cells with !", "optional"),
    F("seq", int, "global tokens", column="int", config=True),
    F("seq_per_rank", int, "tokens per rank", column="int", config=True),
    F("scaling", str, "`strong` (global length given) or `weak` (length per rank given)", column="str", config=True),
    F("batch", int, "batch size", column="int", config=True),
    F("heads", int, "query heads", column="int", config=True),
    F("kv_heads", int, "key/value heads", column="int", config=True),
    F("head_dim", int, "head dimension", column="int", config=True),
    F("dtype", str, "`float32`, `float64`, `bfloat16` or `float16`", column="str", config=True),
    F("causal", bool, "causal masking", column="bool", config=True),
    F("mode", str, "`fwd` or `fwd+bwd`", column="str", config=True),
    F("repeat", int, "repeat index of the configuration", column="int", config=True),
    F("kernel_requested", (str, _NONE), "local kernel asked for (null: automatic)", "optional", "str", True),
    F("device", str, "`cpu` or `cuda` (null in records older than this field)", "optional", "str"),
    F("timing_group", (str, _NONE), "id shared by the records timed side by side (their samples are paired: "
      "sample i of each was taken in the same round)", "optional", "str"),
    F("kernel", str, "local kernel that ran (`torch-cpu`, `torch-cudnn`, ...)", "ok", "str"),
    F("kernel_version", (str, _NONE), "the kernel's library version", "optional", "str"),
    F("layout", str, "the sequence layout", "ok", "str"),
    F("flops", _NUM, "FLOPs of one call over all ranks (`flops_convention`)", "ok", "float"),
    F("flops_convention", str, "how `flops` is counted (ringx/flops.py)", "ok"),
    F("tflops_per_rank", _NUM, "`flops / world_size / median_s / 1e12`", "ok", "float"),
    F("peak_tflops", (int, float, _NONE), "the device's published peak (null on CPUs: no MFU without a real peak)",
      "optional", "float"),
    F("mfu", (int, float, _NONE), "`tflops_per_rank / peak_tflops`", "optional", "float"),
    F("link_gb_per_s", _NUM, "the link bandwidth (GB/s) the bytes per second were checked against "
      "(`--link-gb-per-s`, a sweep's profile)", "optional", "float"),
    F("bytes_sent_per_rank", list, "payload bytes sent by each rank in one call (ringx ledger)", "ok"),
    F("bytes_received_per_rank", list, "payload bytes received by each rank in one call", "ok"),
    F("comm_calls_per_rank", list, "communication calls of each rank in one call", "ok"),
    F("mem_peak_bytes_per_rank", list, "peak device memory (GPU) or peak RSS (CPU) of each rank", "ok"),
    F("call_peak_bytes_per_rank", list, "peak bytes of the tensors one call allocates, per rank: what the attention "
      "itself costs (ringx.memory.measure: a dispatch-mode count on CPU, the CUDA allocator's peak on GPUs), "
      "measured on one extra call after the timed rounds", "optional"),
    F("overlap_fraction", (int, float, _NONE), "with `--trace`: communication time hidden under compute "
      "(ringx.timeline.overlap_fraction) in one extra traced call after the timed rounds, of the slowest rank "
      "(the one whose traced call took longest)", "optional", "float"),
    F("overlap_fraction_per_rank", list, "with `--trace`: each rank's overlap_fraction", "optional"),
    F("ledger_rank0", (dict, _NONE), "rank 0's ledger by operation, `forward` and `backward`", "optional"),
    F("check_max_error", _NUM, "with `--check`: largest relative error of out, dQ, dK, dV against float64",
      "optional", "float"),
    F("check_tolerance", _NUM, "the tolerance of the check for the dtype", "optional", "float"),
    F("check_seq", int, "sequence length the check ran at", "optional", "int"),
    F("check_s", _NUM, "seconds this rank spent checking (the float64 reference is shared by the configuration's "
      "algorithms: the first pays for it)", "optional", "float"),
)

COLLECTIVE = (
    F("op", str, "`broadcast`, `reduce`, `all_reduce`, `all_gather`, `reduce_scatter`, `all_to_all`, `sendrecv`",
      column="str", config=True),
    F("level", str, "the ranks it ran over: `world` (all in one group), `intra` (each node's ranks in their own "
      "group, all nodes at once) or `inter` (the ranks of each local rank across the nodes in their own group, all at "
      "once). Written on every record since it exists; older records lack it and read as `world`. Hashed into `key` "
      "except at `world` (older campaigns resume)", "optional", "str", True),
    F("group_size", int, "ranks in the op's group (`world_size` at `world`): `busbw_factor` is of this size. Written "
      "on every record since it exists; older records lack it and read as `world_size`", "optional", "int", True),
    F("bytes", int, "nccl-tests' size: the buffer (gathered output for all_gather, input for reduce_scatter)",
      column="int", config=True),
    F("dtype", str, "element type", column="str", config=True),
    F("busbw_factor", _NUM, "n = `group_size`: all_reduce 2(n-1)/n; all_gather, reduce_scatter, all_to_all "
      "(n-1)/n; others 1", column="float"),
    F("algbw_GBps", _NUM, "bytes / median / 1e9", "ok", "float"),
    F("busbw_GBps", _NUM, "algbw x busbw_factor", "ok", "float"),
)

KERNEL = (
    F("kernel", str, "local kernel (`torch-cudnn`, `flash-attn`, `torch-cpu`, ...)", column="str", config=True),
    F("kernel_version", (str, _NONE), "the kernel's library version", "optional", "str"),
    F("direction", str, "`fwd` or `bwd` (the backward alone, given the forward's out and LSE)", column="str",
      config=True),
    F("seq", int, "block length: queries = keys", column="int", config=True),
    F("batch", int, "batch size", column="int", config=True),
    F("heads", int, "query heads", column="int", config=True),
    F("kv_heads", int, "key/value heads (GQA ratio = heads / kv_heads)", column="int", config=True),
    F("head_dim", int, "head dimension", column="int", config=True),
    F("dtype", str, "element type", column="str", config=True),
    F("causal", bool, "a causal (diagonal) block", column="bool", config=True),
    F("device", str, "`cpu` or `cuda`", column="str"),
    F("device_name", (str, _NONE), "the device's name (GPU model)", "optional", "str"),
    F("flops", _NUM, "FLOPs of one call (`flops_convention`)", "ok", "float"),
    F("flops_convention", str, "how `flops` is counted (ringx/flops.py)", "ok"),
    F("tflops", _NUM, "`flops / median_s / 1e12`", "ok", "float"),
)

# A training step's timed phases, in the order they run: a model record has `{phase}_s` for each and
# `phase_samples_s` keyed by them (bench drivers time them; analysis tabulates them).
MODEL_PHASES = ("forward", "backward", "grad_allreduce", "optimizer")

MODEL = (
    F("algorithm", str, "the attention of every layer: a ringx algorithm, or a plugin (the field's or a user's)",
      column="str", config=True),
    F("family", str, "`ring`, `ringx`, `ulysses`, `peer` (the field's implementations) or `plugin` (a user's)",
      column="str"),
    F("plugin_source", str, "a plugin's origin: `entry point MODULE:ATTR` or `--plugin SPEC`", "optional", "str"),
    F("model", str, "the preset the model started from (`tiny`, `tiny-vit`, `llama3-8b`, `vit-l`; bench/models/)",
      column="str", config=True),
    F("arch", str, "`decoder` (causal LM loss) or `vit` (non-causal encoder, per-patch regression)", column="str",
      config=True),
    F("layers", int, "transformer layers", column="int", config=True),
    F("d_model", int, "model width", column="int", config=True),
    F("heads", int, "query heads", column="int", config=True),
    F("kv_heads", int, "key/value heads", column="int", config=True),
    F("mlp", int, "SwiGLU hidden size", column="int", config=True),
    F("vocab", int, "decoder vocabulary (unused by a vit)", column="int", config=True),
    F("patch_dim", int, "vit: values per patch (unused by a decoder)", column="int", config=True),
    F("rope_theta", _NUM, "rotary embedding base", column="float", config=True),
    F("norm_eps", _NUM, "RMSNorm epsilon", column="float", config=True),
    F("seq", int, "global tokens per sequence", column="int", config=True),
    F("seq_per_rank", int, "tokens per rank", column="int", config=True),
    F("scaling", str, "`strong` (global length given) or `weak` (length per rank given)", column="str", config=True),
    F("batch", int, "sequences per step", column="int", config=True),
    F("dtype", str, "`float32`, `float64`, or `bfloat16` (autocast over float32 weights)", column="str", config=True),
    F("causal", bool, "causal attention (the decoder)", column="bool", config=True),
    F("hf", str, "`--hf`/`--hf-config`: the transformers model (its architecture, or the config file's name); `arch` "
      "is then its architecture (`llama`, `qwen3`, `mistral`, `gpt-oss`) and `model` `hf:NAME`", "optional", "str",
      True),
    F("hf_config", dict, "`--hf`: the transformers config's attention and MoE fields that ran (`sliding_window`, "
      "`layer_types`, experts, `model_type`)", "optional", config=True),
    F("layer_masks", list, "`--layer-masks`: each layer pattern's mask text, the layers cycling through them "
      "(layer i under entry i mod its length); `mask` is then `layers:A/B/...`", "optional", config=True),
    F("checkpoint", bool, "activation checkpointing: each layer recomputed in the backward", column="bool",
      config=True),
    F("repeat", int, "repeat index of the configuration", column="int", config=True),
    F("kernel_requested", (str, _NONE), "local kernel asked for (null: automatic)", "optional", "str", True),
    F("device", str, "`cpu` or `cuda`", column="str"),
    F("lr", _NUM, "AdamW learning rate", column="float"),
    F("timing_group", (str, _NONE), "id shared by the records timed side by side (paired samples)", "optional",
      "str"),
    F("kernel", str, "local attention kernel that ran", "ok", "str"),
    F("kernel_version", (str, _NONE), "the kernel's library version", "optional", "str"),
    F("layout", str, "the sequence layout of the step", "ok", "str"),
    F("forward_s", _NUM, "median seconds of the forward (loss included), the slowest rank's per iteration", "ok",
      "float"),
    F("backward_s", _NUM, "median seconds of autograd's backward (attention's collectives included)", "ok", "float"),
    F("grad_allreduce_s", _NUM, "median seconds of summing the gradients over the ranks (0 work at one rank)", "ok",
      "float"),
    F("optimizer_s", _NUM, "median seconds of the AdamW step and zeroing the gradients", "ok", "float"),
    F("phase_samples_s", dict, f"{', '.join(f'`{ph}`' for ph in MODEL_PHASES)}: seconds of every timed "
      "iteration, each the slowest rank's for that phase", "ok"),
    F("tokens_per_s_per_rank", _NUM, "`batch * seq / world_size / median_s`", "ok", "float"),
    F("params", int, "parameters of the model", "ok", "int"),
    F("params_flops", int, "N of the FLOP convention: weights of matrix multiplies (not the input embedding table, "
      "norms or biases)", "ok", "int"),
    F("flops_per_token", _NUM, "model FLOPs per token of one step (`flops_convention`)", "ok", "float"),
    F("flops", _NUM, "model FLOPs of one step over all ranks: `flops_per_token * batch * seq`", "ok", "float"),
    F("flops_convention", str, "how `flops` is counted (ringx/flops.py MODEL_CONVENTION)", "ok"),
    F("tflops_per_rank", _NUM, "`flops / world_size / median_s / 1e12`", "ok", "float"),
    F("peak_tflops", (int, float, _NONE), "the GPU's published peak (null on CPUs: no MFU)", "optional", "float"),
    F("mfu", (int, float, _NONE), "`tflops_per_rank / peak_tflops`", "optional", "float"),
    F("bytes_sent_per_rank", list, "attention payload bytes sent by each rank in one step, every layer, forward "
      "and backward (ringx ledger)", "ok"),
    F("bytes_received_per_rank", list, "attention payload bytes received by each rank in one step", "ok"),
    F("comm_calls_per_rank", list, "attention communication calls of each rank in one step", "ok"),
    F("comm_not_counted", list, "a plugin's communication ops the dispatcher's counter has no rule for (their "
      "bytes are missing from the counts above)", "optional"),
    F("grad_allreduce_bytes", int, "bytes of gradients all-reduced per step (0 at one rank)", "ok", "int"),
    F("mem_peak_bytes_per_rank", list, "peak device memory (GPU) or peak RSS (CPU) of each rank over one step", "ok"),
    F("check_loss_error", _NUM, "with `--check`: |loss - ref| / |ref| against the unsharded float64 model",
      "optional", "float"),
    F("check_grad_error", _NUM, "with `--check`: the largest max|g - ref| / max|ref| over the parameters",
      "optional", "float"),
    F("check_worst_param", str, "the parameter with the largest gradient error", "optional", "str"),
    F("check_loss", _NUM, "the reference's loss", "optional", "float"),
    F("check_tolerance", _NUM, "the check's tolerance (relative)", "optional", "float"),
    F("check_seq", int, "sequence length the check ran at", "optional", "int"),
    F("check_s", _NUM, "seconds this rank spent checking (the reference is computed once per configuration)",
      "optional", "float"),
)

INFER = (
    F("algorithm", str, "a ringx algorithm (prefill and decode) or `tp` (Megatron tensor parallelism)", column="str",
      config=True),
    F("family", str, "`ring`, `ringx`, `ulysses` or `tp`", column="str"),
    F("model", str, "the decoder preset the model started from (`tiny`, `llama3-8b`; bench/models/)", column="str",
      config=True),
    F("layers", int, "transformer layers", column="int", config=True),
    F("d_model", int, "model width", column="int", config=True),
    F("heads", int, "query heads", column="int", config=True),
    F("kv_heads", int, "key/value heads", column="int", config=True),
    F("mlp", int, "SwiGLU hidden size", column="int", config=True),
    F("vocab", int, "vocabulary", column="int", config=True),
    F("rope_theta", _NUM, "rotary embedding base", column="float", config=True),
    F("norm_eps", _NUM, "RMSNorm epsilon", column="float", config=True),
    F("prompt_len", int, "prompt tokens per sequence", column="int", config=True),
    F("batch", int, "sequences served together", column="int", config=True),
    F("new_tokens", int, "greedy tokens generated per sequence (the prefill's, then one per decode step)",
      column="int", config=True),
    F("dtype", str, "weights and activations: `float32`, `float64`, `bfloat16` or `float16`", column="str",
      config=True),
    F("repeat", int, "repeat index of the configuration", column="int", config=True),
    F("kernel_requested", (str, _NONE), "local kernel asked for (null: automatic)", "optional", "str", True),
    F("device", str, "`cpu` or `cuda`", column="str"),
    F("timing_group", (str, _NONE), "id shared by the records timed side by side (paired samples)", "optional",
      "str"),
    F("kernel", str, "local attention kernel that ran", "ok", "str"),
    F("kernel_version", (str, _NONE), "the kernel's library version", "optional", "str"),
    F("layout", str, "the prompt's sequence layout (`replicated` for tp)", "ok", "str"),
    F("ttft_s", _NUM, "time to first token: the median prefill (prompt in, first ids out), the slowest rank's",
      "ok", "float"),
    F("tpot_s", (int, float, _NONE), "time per output token: the median decode step over every iteration (null "
      "with one new token)", "optional", "float"),
    F("prefill_tokens_per_s", _NUM, "`batch * prompt_len / ttft_s`", "ok", "float"),
    F("decode_tokens_per_s", (int, float, _NONE), "`batch * steps / their total seconds`", "optional", "float"),
    F("kv_cache_bytes", int, "the largest rank's cached K and V bytes at the end (every layer)", "ok", "int"),
    F("kv_cache_bytes_per_rank", list, "every rank's cached K and V bytes at the end", "ok"),
    F("generated", list, "the greedy token ids of the first sequence", "ok"),
    F("prefill_samples_s", list, "seconds of every timed prefill, each the slowest rank's", "ok"),
    F("decode_samples_s", list, "per timed iteration, the seconds of each decode step, each the slowest rank's",
      "ok"),
    F("bytes_sent_per_rank", list, "payload bytes each rank sent in one generation (attention's ledger, then the "
      "model's: logits, ids, TP's all-reduces)", "ok"),
    F("bytes_received_per_rank", list, "payload bytes each rank received in one generation", "ok"),
    F("comm_calls_per_rank", list, "communication calls of each rank in one generation", "ok"),
    F("mem_peak_bytes_per_rank", list, "peak device memory (GPU) or peak RSS (CPU) of each rank over one "
      "generation", "ok"),
    F("checked", bool, "with `--check`: whether this point was checked (false: its prompt is longer than "
      "`--check-max-seq`, so it was timed without the reference)", "optional", "bool"),
    F("check_ids_equal", bool, "with `--check`: every generated id equals the unsharded float64 model's greedy "
      "generation (from the same weights)", "optional", "bool"),
    F("check_agree_tokens", int, "with `--check`: how many leading generated ids equal the reference's (in every "
      "sequence); `new_tokens` when all do", "optional", "int"),
    F("check_first_divergence", (int, _NONE), "with `--check`: the first generated position whose ids differ "
      "(null: none)", "optional", "int"),
    F("check_divergence_margin", (int, float, _NONE), "with `--check`: the reference's top-1 minus top-2 logit at "
      "the first divergence (the smallest over the diverging sequences; null: no divergence): a near-tie when "
      "small against `check_logits_error` x the logits' scale", "optional", "float"),
    F("check_logits_error", _NUM, "with `--check`: the largest max|logits - ref| / max|ref| over the steps whose "
      "inputs agree with the reference's (every step, or those up to and including the first divergence)",
      "optional", "float"),
    F("check_tolerance", (int, float, _NONE), "the check's tolerance in float64 (null in other dtypes: agreement "
      "is reported, not enforced)", "optional", "float"),
    F("check_s", _NUM, "seconds this rank spent checking", "optional", "float"),
)

KINDS: dict[str, tuple[Field, ...]] = {"attention": COMMON + ATTENTION + MASK, "collective": COMMON + COLLECTIVE,
                                       "kernel": COMMON + KERNEL + MASK, "model": COMMON + MODEL + MASK,
                                       "infer": COMMON + INFER}


def validate(rec: object) -> list[str]:
    """Problems with a record against its kind's fields ([] when valid)."""
    if not isinstance(rec, dict):
        return [f"not a JSON object ({type(rec).__name__})"]
    fields = KINDS.get(rec.get("kind"))
    if fields is None:
        return [f"unknown kind {rec.get('kind')!r}"]
    problems = []
    if rec.get("schema") != SCHEMA_VERSION:
        problems.append(f"schema {rec.get('schema')!r} != {SCHEMA_VERSION}")
    if rec.get("status") not in STATUSES:
        problems.append(f"status {rec.get('status')!r} not in {STATUSES}")
    ok = rec.get("status") == "ok"
    for f in fields:
        required = f.when == "always" or (f.when == "ok" and ok)
        if f.name not in rec:
            if required:
                problems.append(f"missing {f.name}")
            continue
        v = rec[f.name]
        bad_type = not isinstance(v, f.types) or (isinstance(v, bool) and bool not in _tuple(f.types))
        if bad_type and (required or v is not None):
            problems.append(f"{f.name} has type {type(v).__name__}")
    return problems


def _tuple(t) -> tuple:
    return t if isinstance(t, tuple) else (t,)


def config_fields(kind: str) -> list[str]:
    """The fields whose values make up a record's configuration (hashed into its key)."""
    return [f.name for f in KINDS[kind] if f.config]


def column_types() -> dict[str, str]:
    """Column -> pandas dtype for every typed field of every kind."""
    return {f.name: COLUMN_DTYPES[f.column] for fields in KINDS.values() for f in fields if f.column}


def schema_markdown(kind: str) -> str:
    """The field table of one kind, as docs/records.md shows it."""
    own = {f.name for f in COMMON} if kind != "common" else set()
    fields = COMMON if kind == "common" else tuple(f for f in KINDS[kind] if f.name not in own)
    when = {"always": "always", "ok": "when ok", "optional": "optional"}
    lines = ["| field | type | present | meaning |", "|---|---|---|---|"]
    lines += [f"| `{f.name}` | {f.type_name} | {when[f.when]} | {f.meaning}{' (configuration)' if f.config else ''} |"
              for f in fields]
    return "\n".join(lines)


# The configuration algorithms are compared at: a speedup pairs two algorithms with equal values of these.
COMPARE_BY = ("world_size", "nodes", "seq", "seq_per_rank", "scaling", "batch", "heads", "kv_heads", "head_dim",
              "dtype", "causal", "mask", "mode")



def compare_value(rec: dict, key: str):
    """``rec[key]`` for grouping by a COMPARE_BY key; records from before masks had no `mask` field: theirs is
    `causal` or `full` after their `causal` flag."""
    if key == "mask" and rec.get("mask") is None:
        return "causal" if rec.get("causal") else "full"
    return rec.get(key)


# The same for model records: the steps of two algorithms compare at equal values of these.
MODEL_COMPARE_BY = ("world_size", "nodes", "model", "arch", "layers", "d_model", "heads", "kv_heads", "mlp", "vocab",
                    "patch_dim", "seq", "seq_per_rank", "scaling", "batch", "dtype", "causal", "mask", "checkpoint")

# The same for infer records (bench infer): two candidates' generations compare at equal values of these.
INFER_COMPARE_BY = ("world_size", "nodes", "model", "layers", "d_model", "heads", "kv_heads", "mlp", "vocab",
                    "prompt_len", "batch", "new_tokens", "dtype", "kernel_requested", "warmup", "iters")

# Collective records' levels in the order tables and figures show them (all ranks, within nodes, across nodes).
LEVEL_ORDER = {"world": 0, "intra": 1, "inter": 2}
