"""transformers models under context parallelism: attention through any ringx algorithm over a process group.

Pinned to the transformers release its interfaces were read from and tested with (``TESTED``); another release is
refused in one line (``allow_untested=True`` to try anyway). transformers is imported here only, when used: ``ringx``
itself never needs it.

    cp = parallelize(model, "zigzag")                    # registers "ringx" in transformers' AttentionInterface
    batch = cp.shard(input_ids, labels=input_ids)        # global (batch, seq) tensors -> this rank's shard
    logits = model(**batch.model_inputs()).logits
    loss = causal_lm_loss(logits, batch)                 # this rank's share: the sum over ranks is the global mean
    loss.backward()                                      # then all-reduce (sum) the gradients, as for data parallel

What maps to what (docs/transformers.md): the layers' ``sliding_window`` W (a key j is seen from i when
i - W < j <= i) is ``Mask.window(W - 1)``; gpt-oss' sinks (``s_aux``) are ``ringx.attention(sinks=)``; K/V heads
stay as they are (GQA is native); packed documents (``position_ids`` that restart: a step other than +1) are
``Mask.documents`` of the whole sequence. transformers builds no dense mask for an implementation it has no mask
function for, so none is made here: each layer's Mask is made once per batch and layer kind.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from ..errors import RingxInputError
from ..mask import Mask

NAME = "ringx"  # the attn_implementation registered
TESTED = ("5.23",)  # transformers releases (major.minor) this integration is tested with
IGNORE = -100  # transformers' ignore_index of the causal-LM loss
LAYER_KINDS = ("full_attention", "sliding_attention")
_REFUSED_CONFIG = {  # config fields whose attention ringx does not compute (value other than None/0/False)
    "attn_logit_softcapping": "logit soft-capping",
    "attention_chunk_size": "chunked attention",
}


def check_version(version: str | None = None, allow_untested: bool = False) -> str:
    """transformers' version (installed, or ``version``), or RingxInputError (one line) when it is not one tested."""
    if version is None:
        try:
            import transformers
        except ImportError:
            raise RingxInputError("ringx.integrations.transformers needs transformers: pip install "
                                  "'ringx-bench[hf]'") from None
        version = transformers.__version__
    if not allow_untested and ".".join(version.split(".")[:2]) not in TESTED:
        raise RingxInputError(f"transformers {version} is not a release ringx was tested with "
                              f"({', '.join(t + '.x' for t in TESTED)}); install transformers=={TESTED[-1]}.* "
                              "(pip install 'ringx-bench[hf]'), or pass allow_untested=True")
    return version


def register(allow_untested: bool = False) -> str:
    """Register :func:`attention_forward` as transformers' attention implementation ``"ringx"``; returns the name."""
    check_version(allow_untested=allow_untested)
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, attention_forward)
    return NAME


def _config_of(model_or_config):
    cfg = getattr(model_or_config, "config", model_or_config)
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def config_problem(config, algorithm: str, world: int, ulysses_degree: int | None = None) -> str:
    """What keeps ``algorithm`` from running this model's attention over ``world`` ranks, or ''."""
    import ringx

    if algorithm not in ringx.ALGORITHMS:
        return f"unknown algorithm {algorithm!r}; choose one of {', '.join(ringx.ALGORITHMS)}"
    for key, what in _REFUSED_CONFIG.items():
        if getattr(config, key, None):
            return f"{what} ({key}={getattr(config, key)}) has no ringx equivalent: {algorithm} cannot run this model"
    kinds = set(getattr(config, "layer_types", None) or ()) - set(LAYER_KINDS)
    if kinds:
        return f"layer kinds {', '.join(sorted(kinds))} have no ringx mask (ringx runs {', '.join(LAYER_KINDS)})"
    if getattr(config, "attention_dropout", 0.0):
        return f"attention dropout ({config.attention_dropout}) is not exact under ringx: set attention_dropout=0"
    heads = config.num_attention_heads
    algo = ringx.ALGORITHMS[algorithm]
    degree = algo.degree(world, ulysses_degree, None)
    if degree and heads % degree:
        return f"{algorithm}: {heads} query heads do not divide over a Ulysses degree of {degree}"
    return ""


@dataclass(frozen=True)
class ContextParallel:
    """One way to run a model's attention: a ringx algorithm over a process group (None: the default group)."""

    algorithm: str
    group: dist.ProcessGroup | None = None
    ulysses_degree: int | None = None
    kernel: str | None = None

    @property
    def world(self) -> int:
        return dist.get_world_size(self.group)

    @property
    def rank(self) -> int:
        return dist.get_rank(self.group)

    @property
    def layout(self) -> str:
        """The layout a causal LM's sequence is sharded in (every mask but full takes the causal one)."""
        import ringx

        lay = ringx.ALGORITHMS[self.algorithm].layout(True, self.ulysses_degree)
        if "{u}" in lay:  # the default degree is the ranks per node, which only ringx.launch.init() has learnt
            raise RingxInputError(f"{self.algorithm}'s layout depends on its Ulysses degree: pass ulysses_degree= to "
                                  "parallelize, or start the ranks with ringx.launch.init()")
        return lay

    def shard(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
              labels: torch.Tensor | None = None) -> ShardedBatch:
        """This rank's shard of a global batch (batch, seq) in the algorithm's layout.

        ``labels`` as for transformers' causal LM (unshifted; -100 ignored) are shifted on the global sequence first,
        so the label of a shard's last token is the next shard's first token. ``position_ids`` (default 0..seq-1)
        that restart make a document mask; every row must pack the same documents (a Mask has no batch dimension).
        """
        import ringx

        if input_ids.dim() != 2:
            raise RingxInputError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
        b, seq = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(seq, device=input_ids.device).expand(b, seq)
        position_ids = position_ids.expand(b, seq) if position_ids.shape[0] == 1 else position_ids
        if tuple(position_ids.shape) != (b, seq):
            raise RingxInputError(f"position_ids {tuple(position_ids.shape)} must match input_ids {(b, seq)}")
        lay, world = self.layout, self.world
        div = ringx.layouts.global_divisor(lay, world)
        if seq % div:
            raise RingxInputError(f"sequence length {seq} cannot be split in {self.algorithm}'s {lay} layout over "
                                  f"{world} ranks: it must be a multiple of {div}")
        docs = document_lengths(position_ids)
        cut = lambda t: ringx.shard(t, lay, self.rank, world, dim=1)  # noqa: E731
        shifted = n_valid = None
        if labels is not None:
            if tuple(labels.shape) != (b, seq):
                raise RingxInputError(f"labels {tuple(labels.shape)} must match input_ids {(b, seq)}")
            shifted = shift_labels(labels)
            n_valid = int((shifted != IGNORE).sum())
            shifted = cut(shifted)
        return ShardedBatch(self, cut(input_ids), cut(position_ids), shifted, n_valid, seq, docs)


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """transformers' causal-LM shift on the whole sequence: token t's label is labels[t + 1], the last ignored."""
    return torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE)


def document_lengths(position_ids: torch.Tensor) -> tuple[int, ...] | None:
    """The packed documents' lengths: a document starts where the position does not step by +1 (transformers'
    rule for packed batches); None for one document. Rows that pack differently are refused in one line."""
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = position_ids[:, 1:] - position_ids[:, :-1] != 1
    if not bool((starts == starts[:1]).all()):
        raise RingxInputError("the rows of this batch pack different documents (position_ids restart at different "
                              "places): a ringx mask has no batch dimension; shard rows that pack alike together")
    at = torch.nonzero(starts[0]).flatten().tolist() + [position_ids.shape[1]]
    lengths = tuple(b - a for a, b in zip(at, at[1:]))
    return lengths if len(lengths) > 1 else None


@dataclass
class ShardedBatch:
    """This rank's shard of a batch, and what the attention of each layer kind needs to know about the whole."""

    cp: ContextParallel
    input_ids: torch.Tensor
    position_ids: torch.Tensor  # the global positions of this rank's tokens (RoPE)
    labels: torch.Tensor | None  # already shifted on the global sequence, then sharded
    n_valid: int | None  # labels not ignored, over the whole batch: what the loss divides by
    seq: int  # global length
    documents: tuple[int, ...] | None  # packed documents' lengths, None for one
    stats: object = None  # a ringx.CallStats every layer's call counts into (None: none)
    validate: bool = True  # ringx.attention's input agreement at every call (off once a configuration ran)
    _masks: dict = field(default_factory=dict, repr=False)

    def model_inputs(self) -> dict:
        """Keyword arguments of the model's forward: tokens, positions, no cache, and this batch for the attention."""
        return {"input_ids": self.input_ids, "position_ids": self.position_ids, "use_cache": False, NAME: self}

    def mask(self, sliding_window: int | None, causal: bool = True) -> Mask:
        """The Mask of a layer with this ``sliding_window`` (transformers': W keys including the query's own)."""
        key = (sliding_window, causal)
        if key not in self._masks:
            self._masks[key] = layer_mask(self.seq, self.documents, sliding_window, causal)
        return self._masks[key]


def layer_mask(seq: int, documents: tuple[int, ...] | None, sliding_window: int | None, causal: bool) -> Mask:
    """A causal layer's ringx Mask: within packed documents, with a sliding window of W keys (None: none)."""
    if not causal:  # the batch was sharded in the causal layout, which a full mask does not take
        raise RingxInputError("ringx.integrations.transformers runs causal LMs: this layer is bidirectional")
    longest = max(documents) if documents else seq
    left = sliding_window - 1 if sliding_window and sliding_window < longest else None  # W keys: i - j <= W - 1
    if documents:
        return Mask.documents(documents, window=left)
    return Mask.window(left) if left is not None else Mask.causal()


def attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                      sliding_window: int | None = None, s_aux: torch.Tensor | None = None,
                      **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention interface (query (batch, heads, seq, dim), K/V with their own heads) through
    ``ringx.attention`` on this rank's shard; returns (batch, seq, heads, dim) as transformers' kernels do."""
    import ringx

    batch = kwargs.get(NAME)
    if not isinstance(batch, ShardedBatch):
        raise RingxInputError("attn_implementation 'ringx' needs the sharded batch: call "
                              "model(**cp.shard(...).model_inputs())")
    if dropout:
        raise RingxInputError(f"attention dropout ({dropout}) is not exact under ringx: set attention_dropout=0 "
                              "(or model.eval())")
    if kwargs.get("softcap") is not None:
        raise RingxInputError("logit soft-capping has no ringx equivalent")
    if attention_mask is not None:
        raise RingxInputError("attn_implementation 'ringx' takes no attention_mask: packed documents come from "
                              "position_ids, padding is a label of -100")
    causal = kwargs.get("is_causal")
    causal = getattr(module, "is_causal", True) if causal is None else causal
    cp = batch.cp
    dev = query.device.type
    auto = torch.is_autocast_enabled(dev)
    # Under autocast V comes out of its projection in the compute dtype but Q and K were rotated by float32 tables
    # (promoted): all three, and the sinks, go to the compute dtype, and ringx's kernels run outside autocast.
    dtype = torch.get_autocast_dtype(dev) if auto else query.dtype
    q, k, v = (t.transpose(1, 2).to(dtype) for t in (query, key, value))
    with torch.autocast(dev, enabled=False) if auto else nullcontext():
        sinks = s_aux.to(dtype) if s_aux is not None and s_aux.dtype != dtype else s_aux
        out = ringx.attention(q, k, v, algorithm=cp.algorithm, mask=batch.mask(sliding_window, causal),
                              softmax_scale=scaling, group=cp.group, ulysses_degree=cp.ulysses_degree,
                              kernel=cp.kernel, sinks=sinks, stats=batch.stats, validate=batch.validate)
    return out, None


def parallelize(model: torch.nn.Module, algorithm: str, group: dist.ProcessGroup | None = None, *,
                ulysses_degree: int | None = None, kernel: str | None = None,
                allow_untested: bool = False) -> ContextParallel:
    """Make ``model`` (a transformers model) compute attention with ``algorithm`` over ``group``: registers the
    ``"ringx"`` implementation and sets it on the model. Refuses, in one line alike on every rank, a model whose
    attention ringx cannot compute (soft-capping, chunked attention, dropout) or whose heads Ulysses cannot split."""
    register(allow_untested)
    cfg = _config_of(model)
    world = dist.get_world_size(group) if dist.is_initialized() else 1
    problem = config_problem(cfg, algorithm, world, ulysses_degree)
    if problem:
        raise RingxInputError(problem)
    try:
        model.set_attn_implementation(NAME)
    except (ValueError, ImportError) as e:  # a model that takes no attention function of its user's
        raise RingxInputError(f"{type(model).__name__} refused attn_implementation 'ringx': "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
    return ContextParallel(algorithm, group, ulysses_degree, kernel)


def causal_lm_loss(logits: torch.Tensor, batch: ShardedBatch) -> torch.Tensor:
    """This rank's share of the causal-LM loss: cross-entropy summed over its tokens, divided by the global number of
    valid labels (so the ranks' shares add up to the mean over the whole batch). In the logits' dtype (transformers'
    own loss casts to float32)."""
    if batch.labels is None:
        raise RingxInputError("this batch was sharded without labels: cp.shard(input_ids, labels=...)")
    return token_loss(logits, batch.labels, batch.n_valid)


def token_loss(logits: torch.Tensor, shifted: torch.Tensor, n_valid: int) -> torch.Tensor:
    """Cross-entropy summed over the tokens whose (already shifted) label is not IGNORE, divided by ``n_valid``."""
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), shifted.reshape(-1),
                                           ignore_index=IGNORE, reduction="sum")
    return ce / max(n_valid, 1)


def allreduce_gradients(model: torch.nn.Module, group: dist.ProcessGroup | None = None) -> None:
    """Sum every parameter's gradient over the group (the weights are replicated, the sequence sharded). A parameter
    this rank's tokens never reached (an expert none of them chose) contributes zeros, so every rank reduces the same
    tensors in the same order and none is left waiting."""
    if not dist.is_initialized() or dist.get_world_size(group) == 1:
        return
    for p in model.parameters():
        if p.requires_grad:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, group=group)
