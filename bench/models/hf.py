"""transformers models for ``bench model --hf``: configs from transformers' own config classes, random weights.

Nothing is downloaded: an architecture's config is its class's defaults with tiny sizes (``TINY``), or a config.json
(the published architectures' in bench/models/hf/, or a user's file), with ``bench model``'s size flags over it.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent / "hf"
# --hf NAME -> (transformers config class, model_type a config.json names it by)
ARCHS = {"llama": ("LlamaConfig", "llama"), "qwen3": ("Qwen3Config", "qwen3"), "mistral": ("MistralConfig", "mistral"),
         "gpt-oss": ("GptOssConfig", "gpt_oss")}
TYPES = {t: a for a, (_, t) in ARCHS.items()}
# Tiny sizes (CPU): each architecture's attention features show at a few dozen tokens (windows of 6 keys).
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 8, "intermediate_size": 48, "vocab_size": 96, "max_position_embeddings": 1 << 20}
TINY_ARCH = {"mistral": {"sliding_window": 6},
             # YaRN's factor 32 over its 4096 original positions: 131072 (no mismatch warning)
             "gpt-oss": {"sliding_window": 6, "num_local_experts": 4, "num_experts_per_tok": 2,
                         "max_position_embeddings": 131072},
             "llama": {}, "qwen3": {}}
# bench model's size flags (options.MODEL) -> the config field they set
FLAGS = {"layers": "num_hidden_layers", "d_model": "hidden_size", "heads": "num_attention_heads",
         "kv_heads": "num_key_value_heads", "mlp": "intermediate_size", "vocab": "vocab_size",
         "rope_theta": "rope_theta"}
PUBLISHED = tuple(sorted(p.stem for p in HERE.glob("*.json")))  # configs committed here, by name


def config_file(name_or_path: str) -> Path:
    """A committed config's path by name (``qwen3-32b``), or the user's file."""
    p = HERE / f"{name_or_path}.json"
    return p if name_or_path in PUBLISHED else Path(name_or_path)


def read_config(path: str | Path) -> tuple[str, dict]:
    """(architecture, fields) of a config.json; ValueError in one line for a file that is not one ``--hf`` runs."""
    p = config_file(str(path))
    try:
        data = json.loads(Path(p).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"--hf-config {path}: cannot read it as JSON ({e.__class__.__name__}: {e})") from None
    kind = data.get("model_type") if isinstance(data, dict) else None
    if kind not in TYPES:
        raise ValueError(f"--hf-config {path}: model_type {kind!r} is not one of {', '.join(TYPES)}")
    return TYPES[kind], data


def make_config(arch: str | None, path: str | None = None, overrides: dict | None = None):
    """The transformers config of ``--hf ARCH`` (tiny sizes) or ``--hf-config PATH``, with ``bench model``'s size
    flags (``FLAGS``' keys; None: the config's) over it. Float64-exact settings: no dropout; weights untied where
    the config leaves it open."""
    import transformers

    if path is not None:
        arch_of_file, fields = read_config(path)
        if arch is not None and arch != arch_of_file:
            raise ValueError(f"--hf {arch} and --hf-config {path} ({arch_of_file}) name different architectures")
        arch, fields = arch_of_file, {k: v for k, v in fields.items() if k not in ("architectures", "torch_dtype",
                                                                                   "dtype", "transformers_version")}
    else:
        if arch not in ARCHS:
            raise ValueError(f"--hf {arch!r}: choose one of {', '.join(ARCHS)}")
        fields = {**TINY, **TINY_ARCH[arch]}
    over = {FLAGS[k]: v for k, v in (overrides or {}).items() if k in FLAGS and v is not None}
    if "rope_theta" in over:  # transformers 5 keeps it in rope_parameters
        fields["rope_parameters"] = {**(fields.get("rope_parameters") or {"rope_type": "default"}),
                                     "rope_theta": over.pop("rope_theta")}
    if "hidden_size" in over and "head_dim" in fields and path is None:
        fields["head_dim"] = over["hidden_size"] // over.get("num_attention_heads", fields["num_attention_heads"])
    fields.update(over)
    if "num_hidden_layers" in over and "layer_types" in fields:  # a published pattern, cut or cycled to the layers
        pattern = fields["layer_types"]
        fields["layer_types"] = [pattern[i % len(pattern)] for i in range(over["num_hidden_layers"])]
    fields["attention_dropout"] = 0.0
    cfg = getattr(transformers, ARCHS[arch][0])(**fields)
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    if kv < 1 or heads % kv:
        raise ValueError(f"{heads} query heads are not a multiple of {kv} K/V heads")
    return cfg


def arch_of(cfg) -> str:
    """The ``--hf`` name of a config."""
    return TYPES[cfg.model_type]


def build(cfg, seed: int, attn: str | None = None, dtype=None):
    """A causal LM of ``cfg`` with random weights drawn from ``seed`` (float64 unless ``dtype``), training mode.
    ``attn``: its attention implementation; None: the unsharded reference's, the float64-exact one transformers has
    for it (sdpa; gpt-oss has none but eager, whose softmax keeps the dtype there, where the others' eager softmax
    runs in float32). Experts run eagerly: the grouped matmul takes no float64."""
    import torch
    import transformers

    cfg = copy.deepcopy(cfg)  # a model keeps its config, and setting its attention implementation changes that
    torch.manual_seed(seed)
    cls = transformers.AutoModelForCausalLM
    attn = attn or ("eager" if cfg.model_type == "gpt_oss" else "sdpa")
    extra = {"experts_implementation": "eager"} if cfg.model_type == "gpt_oss" else {}
    model = cls.from_config(cfg, attn_implementation=attn, dtype=dtype or torch.float64, **extra)
    with torch.no_grad():  # sinks start at zeros in transformers' init: give them a value that matters
        for name, p in model.named_parameters():
            if name.endswith(".sinks"):
                p.copy_(torch.randn_like(p))
    return model.train()


def global_batch(cfg, batch: int, seq: int, seed: int, documents: tuple[int, ...] | None = None):
    """(input_ids, position_ids, labels) of a random global batch; ``documents``: packed, position_ids restarting
    at each document (the first label of each ignored, as transformers' flattening collator does)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), generator=g)
    labels = ids.clone()
    if documents:
        pos = torch.cat([torch.arange(n) for n in documents])
        labels[:, (pos == 0).nonzero().flatten()] = -100
    else:
        pos = torch.arange(seq)
    return ids, pos.expand(batch, seq).contiguous(), labels


def dense_masks(cfg, documents: tuple[int, ...], seq: int) -> dict:
    """Additive float64 masks (1, 1, seq, seq) per layer kind for packed ``documents``, written from transformers'
    definitions (same document, j <= i, and i - j < W for sliding layers): what the unsharded gpt-oss needs, whose
    mask creation in transformers 5.23 does not look at position_ids (so it never sees packed documents)."""
    import torch

    doc = torch.repeat_interleave(torch.arange(len(documents)), torch.tensor(documents))
    i, j = torch.arange(seq)[:, None], torch.arange(seq)[None]
    seen = (doc[:, None] == doc[None]) & (j <= i)
    out = {}
    for kind in set(cfg.layer_types or ["full_attention"]):
        ok = seen & (i - j < cfg.sliding_window) if kind == "sliding_attention" else seen
        out[kind] = torch.zeros(seq, seq, dtype=torch.float64).masked_fill(~ok, -torch.inf)[None, None]
    return out


def reference_step(cfg, ids, pos, labels, seed: int, documents: tuple[int, ...] | None = None):
    """(loss, {name: gradient}, logits) of the unsharded float64 model (transformers' own attention) on the whole
    batch; ``documents``: the packed documents ``pos`` restarts at."""
    from ringx.integrations.transformers import IGNORE, shift_labels, token_loss

    model = build(cfg, seed)
    extra = {}
    if documents and cfg.model_type == "gpt_oss":
        extra["attention_mask"] = dense_masks(cfg, documents, ids.shape[1])
    logits = model(input_ids=ids, position_ids=pos, use_cache=False, **extra).logits
    shifted = shift_labels(labels)
    loss = token_loss(logits, shifted, int((shifted != IGNORE).sum()))
    loss.backward()
    return loss.item(), {k: p.grad for k, p in model.named_parameters()}, logits.detach()


def sharded_step(cfg, ids, pos, labels, seed: int, algorithm: str, group=None, ulysses_degree: int | None = None,
                 kernel: str | None = None, model=None):
    """(global loss, {name: gradient summed over the group}, this rank's logits) of one float64 step of the same
    model through ``ringx.integrations.transformers``; every rank of the group calls it together."""
    import torch
    import torch.distributed as dist

    from ringx.integrations import transformers as rxt

    model = model if model is not None else build(cfg, seed)
    model.zero_grad(set_to_none=True)
    cp = rxt.parallelize(model, algorithm, group, ulysses_degree=ulysses_degree, kernel=kernel)
    batch = cp.shard(ids, pos, labels)
    logits = model(**batch.model_inputs()).logits
    loss = rxt.causal_lm_loss(logits, batch)
    loss.backward()
    total = loss.detach().clone()
    dist.all_reduce(total, group=group)
    rxt.allreduce_gradients(model, group)  # an expert no token of this rank chose contributes zeros
    grads = {k: p.grad if p.grad is not None else torch.zeros_like(p) for k, p in model.named_parameters()}
    return total.item(), grads, logits.detach()


class HFModel:
    """A transformers config as ``bench model``'s plan holds a model config: the fields its records and checks read
    (``ModelConfig``'s), the transformers config itself in ``hf``, and the ``--hf``/``--hf-config`` it came from."""

    causal = True  # causal LMs only
    patch_dim = 0

    def __init__(self, hf_config, name: str):
        self.hf, self.name, self.arch = hf_config, name, arch_of(hf_config)
        c = hf_config
        self.layers, self.d_model, self.heads = c.num_hidden_layers, c.hidden_size, c.num_attention_heads
        self.kv_heads, self.mlp, self.vocab = c.num_key_value_heads, c.intermediate_size, c.vocab_size
        self.head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        self.rope_theta = float((getattr(c, "rope_parameters", None) or {}).get("rope_theta", 0.0))
        self.norm_eps = float(getattr(c, "rms_norm_eps", 0.0))

    def __eq__(self, other) -> bool:
        return isinstance(other, HFModel) and self.as_dict() == other.as_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.as_dict(), sort_keys=True))

    def layer_kinds(self) -> list[str]:
        return list(getattr(self.hf, "layer_types", None) or
                    ["sliding_attention" if getattr(self.hf, "sliding_window", None) else "full_attention"]
                    * self.layers)

    def layer_masks(self, seq: int) -> list:
        """Each layer's ringx Mask at ``seq`` tokens of one document (what the attention of a layer kind runs)."""
        from ringx.integrations.transformers import layer_mask

        window = getattr(self.hf, "sliding_window", None)
        return [layer_mask(seq, None, window if kind == "sliding_attention" else None, True)
                for kind in self.layer_kinds()]

    def mask_fields(self, seq: int) -> dict:
        """The record's mask fields, as ``bench model --mask``/``--layer-masks`` write them: none when every layer is
        causal, ``mask`` when all layers share one, else ``layers:A/B/...`` and ``layer_masks``."""
        texts = [m.short() for m in self.layer_masks(seq)]
        if set(texts) == {"causal"}:
            return {}
        if len(set(texts)) == 1:
            return {"mask": texts[0]}
        return {"mask": "layers:" + "/".join(texts), "layer_masks": texts}

    def as_dict(self) -> dict:
        """The record's model fields: ``bench model``'s, and the transformers config that ran (``hf_config``)."""
        keep = ("sliding_window", "num_local_experts", "num_experts_per_tok", "layer_types", "model_type")
        return {"arch": self.arch, "layers": self.layers, "d_model": self.d_model, "heads": self.heads,
                "kv_heads": self.kv_heads, "mlp": self.mlp, "vocab": self.vocab, "patch_dim": 0,
                "rope_theta": self.rope_theta, "norm_eps": self.norm_eps, "hf": self.name,
                "hf_config": {k: getattr(self.hf, k) for k in keep if getattr(self.hf, k, None) is not None}}

    def counts(self) -> tuple[int, int]:
        """(parameters, parameters a token's FLOPs count: without the input embedding, and with only the experts a
        token uses), from the model built on the meta device (no memory); once per configuration."""
        return _counts(self)


def is_hf(cfg) -> bool:
    """Whether a plan's model config is a transformers model (``--hf``, ``--hf-config``)."""
    return isinstance(cfg, HFModel)


@functools.lru_cache(maxsize=16)
def _counts(cfg: HFModel) -> tuple[int, int]:
    import torch
    import transformers

    with torch.device("meta"):
        m = transformers.AutoModelForCausalLM.from_config(copy.deepcopy(cfg.hf))
    total, active = 0, 0
    experts = getattr(cfg.hf, "num_local_experts", 0) or 0
    share = (getattr(cfg.hf, "num_experts_per_tok", 0) or 0) / experts if experts else 1.0
    for name, p in m.named_parameters():
        total += p.numel()
        if "embed_tokens" in name:
            continue
        active += p.numel() * (share if ".experts." in name else 1.0)
    return total, int(active)


def model_of(arch: str | None, path: str | None, overrides: dict) -> HFModel:
    """``--hf``/``--hf-config`` with ``bench model``'s size flags, as a plan's model config."""
    cfg = make_config(arch, path, overrides)
    name = Path(path).stem if path is not None and str(path) not in PUBLISHED else (path or arch)
    return HFModel(cfg, str(name))


class StepModel:
    """A transformers model as ``bench model``'s Step calls its model: ``loss(...)`` of this rank's sharded batch
    (the Step's own arguments are the same tensors; the attention needs the whole batch's description), with the
    Step's ``state`` (``stats``, ``validate``) handed to every layer's ringx call."""

    def __init__(self, model, batch, state: dict):
        self.model, self.batch, self.state = model, batch, state

    def parameters(self):
        return self.model.parameters()

    def loss(self, *_):
        from ringx.integrations.transformers import causal_lm_loss

        self.batch.stats, self.batch.validate = self.state.get("stats"), self.state.get("validate", True)
        return causal_lm_loss(self.model(**self.batch.model_inputs()).logits, self.batch)
