"""Verifier capture: prompts → token sequences → one forward pass → per-token rows (no Dagster).

For each prompt the verifier's chat template is applied to the conversation. With
``max_new_tokens > 0`` the trailing assistant turn(s) are removed and the verifier
generates its own answer greedily (up to the first EOS, which is kept); with 0 the whole
conversation is captured as it is (read-only). Then ONE forward pass over the full
sequence (``output_hidden_states=True``, ``torch.inference_mode()``) gives, at every
position t: the top-k of ``softmax(logits[t])`` (the prediction of token t+1) and the
hidden state of the chosen layer (``hidden_states[hidden_layer]``; -1 = last, after the
final norm — the EAGLE feature), cast to fp16 (values beyond ±65504 are clamped and counted per sequence).

Batches are planned by a token budget (longest sequence × sequences ≤ ``batch_tokens``)
over sequences sorted by length. Forward batches are right-padded and run without an
attention mask: under a causal mask a real token never sees the pads that follow it, so
the values at real positions are those of an unpadded pass; pad positions are dropped
before the LM head, which is then applied to real positions only (in chunks), and the
top-k probabilities come from ``exp(topk(logits) - logsumexp(logits))`` so the
vocabulary-sized softmax is never materialized. Models whose head is not a plain linear
layer (logit soft-capping or scaling) take the full ``model(...)`` path instead.

Positions (columns of every row)
--------------------------------
``sequence_index``        index of the sequence among those captured for the prompt
                          (always 0 today: one greedy or read-only sequence per prompt).
``position_in_sequence``  0-based index t of the token in the full sequence
                          (chat-templated prompt followed by the generated tokens).
``block_index``           t // block_size — the KV-cache block (page) holding token t.
``position_in_block``     t % block_size — its slot in that block.
``cache_logical_size``    tokens in the KV cache before t is processed: t for a full
                          cache, min(t, sliding_window) for sliding-window verifiers.
``token_id``              the token at t (what the verifier read or produced).
``is_generated``          token t was produced by the verifier (not part of the prompt).
``top_token_ids/top_probs/verifier_top1_prob``  the verifier's next-token prediction AT t.
``hidden_state``          the chosen hidden layer AT t.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from assets.capture.tables import CAPTURE_SCHEMA
from resources.tool_text import chat_messages

FP16_MAX = 65504.0


@dataclass(frozen=True)
class CaptureSettings:
    top_k: int = 8
    hidden_layer: int = -1
    batch_tokens: int = 8192
    max_length: int = 2048
    max_new_tokens: int = 0
    block_size: int = 16
    logits_chunk: int = 1024

    def __post_init__(self):
        if self.top_k < 1 or self.block_size < 1 or self.batch_tokens < 1:
            raise ValueError("top_k, block_size and batch_tokens must be positive")
        if self.max_new_tokens < 0 or self.max_new_tokens >= self.max_length:
            raise ValueError("max_new_tokens must be in [0, max_length)")


@dataclass
class PromptIn:
    prompt_id: str
    messages: list[dict]
    domain: str = "chat-en"
    language: str = "und"
    system_prompt_hash: str | None = None
    tools: list | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "PromptIn":
        msgs = row["messages"]
        tools = row.get("tools")
        return cls(
            prompt_id=row["prompt_id"],
            messages=json.loads(msgs) if isinstance(msgs, str) else list(msgs),
            domain=row.get("domain") or "chat-en",
            language=row.get("language") or "und",
            system_prompt_hash=row.get("system_prompt_hash"),
            tools=json.loads(tools) if isinstance(tools, str) else tools,
        )


@dataclass
class SequenceCapture:
    prompt: PromptIn
    token_ids: np.ndarray  # int32 [T]
    n_prompt_tokens: int
    generated: bool
    ended_with_eos: bool | None
    truncated: bool
    sequence_index: int = 0
    top_ids: np.ndarray | None = None  # int32 [T, K]
    top_probs: np.ndarray | None = None  # float16 [T, K]
    top1: np.ndarray | None = None  # float32 [T]
    hidden: np.ndarray | None = None  # float16 [T, H]
    answer_start: int | None = None  # first answer token (generated, or the trailing assistant turn)
    hidden_clamped: int = 0  # hidden-state values beyond the fp16 range, clamped to ±65504

    @property
    def n_tokens(self) -> int:
        return int(len(self.token_ids))


# ----------------------------------------------------------------------------- encoding
def _merge_for_strict_templates(messages: list[dict]) -> list[dict]:
    """Fallback for templates that refuse tool roles / non-alternating turns."""
    out: list[dict] = []
    for m in messages:
        role = "user" if m["role"] == "tool" else m["role"]
        content = m["content"] if m["role"] != "tool" else f"[tool output]\n{m['content']}"
        if out and out[-1]["role"] == role and role != "system":
            out[-1] = {"role": role, "content": out[-1]["content"] + "\n\n" + content}
        else:
            out.append({"role": role, "content": content})
    return out


def _apply_template(tokenizer, messages: list[dict], tools, add_generation_prompt: bool) -> list[int]:
    kw = {"tools": tools} if tools else {}
    try:
        enc = tokenizer.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=add_generation_prompt, return_dict=True, **kw
        )
    except Exception:  # jinja TemplateError and friends: strict role rules
        enc = tokenizer.apply_chat_template(
            _merge_for_strict_templates(messages), tokenize=True,
            add_generation_prompt=add_generation_prompt, return_dict=True,
        )
    ids = enc["input_ids"]
    return list(ids[0] if ids and isinstance(ids[0], list) else ids)


def encode_prompt(tokenizer, prompt: PromptIn, settings: CaptureSettings) -> tuple[list[int], bool, bool]:
    """(token ids, will generate, truncated). Over-long sequences keep their head."""
    msgs = chat_messages(prompt.messages)
    generate = settings.max_new_tokens > 0
    if generate:
        while msgs and msgs[-1]["role"] == "assistant":
            msgs = msgs[:-1]
        if not any(m["role"] != "system" for m in msgs):  # nothing to answer: read-only
            msgs, generate = chat_messages(prompt.messages), False
    ids = _apply_template(tokenizer, msgs, prompt.tools, add_generation_prompt=generate)
    limit = settings.max_length - (settings.max_new_tokens if generate else 0)
    truncated = len(ids) > limit
    return ids[:limit], generate, truncated


def answer_start_of(tokenizer, prompt: PromptIn, ids: Sequence[int], generate: bool,
                    n_prompt_tokens: int) -> int | None:
    """Where the answer tokens start: the generated tokens, or in a read-only capture the
    conversation's trailing assistant turn(s) (the rendering of the messages before them,
    with the generation prompt, must be a prefix of ``ids``). None: no answer tokens."""
    if generate:
        return n_prompt_tokens
    msgs = chat_messages(prompt.messages)
    if not msgs or msgs[-1]["role"] != "assistant":
        return None
    head = list(msgs)
    while head and head[-1]["role"] == "assistant":
        head = head[:-1]
    if not any(m["role"] != "system" for m in head):
        return None
    try:
        prefix = _apply_template(tokenizer, head, prompt.tools, add_generation_prompt=True)
    except Exception:  # a template that cannot render the head: no answer region
        return None
    n = len(prefix)
    if 0 < n < len(ids) and list(ids[:n]) == list(prefix):
        return n
    return None


def plan_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Indices grouped so that max(len) × n ≤ batch_tokens (a longer sequence goes alone)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for i in order:
        m = max(cur_max, lengths[i])
        if cur and m * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur, m = [], lengths[i]
        cur.append(i)
        cur_max = m
    if cur:
        batches.append(cur)
    return batches


def eos_ids(verifier) -> list[int]:
    ids: set[int] = set()
    gc = getattr(verifier.model, "generation_config", None)
    e = getattr(gc, "eos_token_id", None) if gc is not None else None
    if isinstance(e, int):
        ids.add(e)
    elif e:
        ids.update(int(x) for x in e)
    if verifier.tokenizer.eos_token_id is not None:
        ids.add(int(verifier.tokenizer.eos_token_id))
    return sorted(ids)


def _pad_id(verifier) -> int:
    tok = verifier.tokenizer
    return int(tok.pad_token_id if tok.pad_token_id is not None else eos_ids(verifier)[0])


# --------------------------------------------------------------------------- generation
def generate_continuations(verifier, prompts: Sequence[list[int]], settings: CaptureSettings):
    """Greedy continuations, cut after the first EOS: list of (new token ids, ended_with_eos)."""
    import torch
    from transformers import GenerationConfig

    eos = eos_ids(verifier)
    pad = _pad_id(verifier)
    gen_cfg = GenerationConfig(max_new_tokens=settings.max_new_tokens, do_sample=False,
                               pad_token_id=pad, eos_token_id=eos)
    out: list[tuple[np.ndarray, bool]] = [None] * len(prompts)  # type: ignore[list-item]
    lengths = [len(p) + settings.max_new_tokens for p in prompts]
    dev = verifier.model.device
    for batch in plan_batches(lengths, settings.batch_tokens):
        L = max(len(prompts[i]) for i in batch)
        ids = np.full((len(batch), L), pad, dtype=np.int64)
        mask = np.zeros((len(batch), L), dtype=np.int64)
        for r, i in enumerate(batch):  # left padding for generation
            p = prompts[i]
            ids[r, L - len(p):] = p
            mask[r, L - len(p):] = 1
        with torch.inference_mode():
            gen = verifier.model.generate(
                input_ids=torch.from_numpy(ids).to(dev), attention_mask=torch.from_numpy(mask).to(dev),
                generation_config=gen_cfg,
            )
        new = gen[:, L:].cpu().numpy().astype(np.int32)
        for r, i in enumerate(batch):
            row = new[r]
            hit = np.flatnonzero(np.isin(row, eos))
            out[i] = (row[: hit[0] + 1], True) if len(hit) else (row, False)
    return out


# ------------------------------------------------------------------------------ forward
def _plain_head(model) -> bool:
    cfg = model.config
    for attr in ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale"):
        v = getattr(cfg, attr, None)
        if v not in (None, 1, 1.0):
            return False
    try:
        return model.get_decoder() is not None and model.get_output_embeddings() is not None
    except (AttributeError, NotImplementedError):
        return False


def forward_capture(verifier, seqs: Sequence[np.ndarray], settings: CaptureSettings):
    """One forward pass over a batch of sequences → per sequence (top_ids, top_probs, top1, hidden)."""
    import torch

    model = verifier.model
    pad = _pad_id(verifier)
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    B, T = len(seqs), int(lengths.max())
    ids = np.full((B, T), pad, dtype=np.int64)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = s
    dev = model.device
    k = settings.top_k
    with torch.inference_mode():
        input_ids = torch.from_numpy(ids).to(dev)
        valid = (torch.arange(T)[None, :] < torch.from_numpy(lengths)[:, None]).to(dev)
        if _plain_head(model):
            out = model.get_decoder()(input_ids=input_ids, use_cache=False, output_hidden_states=True)
            final = out.last_hidden_state[valid]
            head = model.get_output_embeddings()
            logits_of = lambda a, b: head(final[a:b]).float()  # noqa: E731
        else:
            out = model(input_ids=input_ids, use_cache=False, output_hidden_states=True)
            flat_logits = out.logits[valid]
            logits_of = lambda a, b: flat_logits[a:b].float()  # noqa: E731
        hidden_full = out.hidden_states[settings.hidden_layer][valid]
        # fp16 holds |x| <= 65504: larger activations (common in non-final layers) would
        # become inf; clamp them and count, per sequence
        over = (hidden_full.float().abs() > FP16_MAX).sum(dim=-1).cpu().numpy()
        hidden = hidden_full.float().clamp(-FP16_MAX, FP16_MAX).to(torch.float16).cpu().numpy()
        n = hidden.shape[0]
        top_ids = np.empty((n, k), dtype=np.int32)
        top_p32 = np.empty((n, k), dtype=np.float32)
        for a in range(0, n, settings.logits_chunk):
            b = min(n, a + settings.logits_chunk)
            logits = logits_of(a, b)
            lse = torch.logsumexp(logits, dim=-1, keepdim=True)
            vals, idx = torch.topk(logits, k, dim=-1)
            top_ids[a:b] = idx.to(torch.int32).cpu().numpy()
            top_p32[a:b] = torch.exp(vals - lse).cpu().numpy()
        del out
    top_p16 = top_p32.astype(np.float16)
    bounds = np.cumsum(lengths)[:-1]
    clamped = [int(x.sum()) for x in np.split(over, bounds)]
    return list(zip(np.split(top_ids, bounds), np.split(top_p16, bounds),
                    np.split(top_p32[:, 0].copy(), bounds), np.split(hidden, bounds), clamped))


def capture_prompts(verifier, prompts: Sequence[PromptIn], settings: CaptureSettings) -> list[SequenceCapture]:
    """Encode (and optionally generate), then one forward pass per token-budget batch."""
    caps: list[SequenceCapture] = []
    to_generate: list[int] = []
    for p in prompts:
        ids, gen, truncated = encode_prompt(verifier.tokenizer, p, settings)
        caps.append(SequenceCapture(p, np.asarray(ids, dtype=np.int32), len(ids), gen, None, truncated,
                                    answer_start=answer_start_of(verifier.tokenizer, p, ids, gen, len(ids))))
        if gen:
            to_generate.append(len(caps) - 1)
    if to_generate:
        conts = generate_continuations(verifier, [caps[i].token_ids for i in to_generate], settings)
        for i, (new, ended) in zip(to_generate, conts):
            caps[i].token_ids = np.concatenate([caps[i].token_ids, new.astype(np.int32)])
            caps[i].ended_with_eos = bool(ended)
    caps = [c for c in caps if c.n_tokens > 0]
    for batch in plan_batches([c.n_tokens for c in caps], settings.batch_tokens):
        results = forward_capture(verifier, [caps[i].token_ids for i in batch], settings)
        for i, (ti, tp, t1, h, nc) in zip(batch, results):
            caps[i].top_ids, caps[i].top_probs, caps[i].top1, caps[i].hidden = ti, tp, t1, h
            caps[i].hidden_clamped = nc
    return caps


# ------------------------------------------------------------------------------- arrow
def fixed_binary(a: np.ndarray) -> pa.ChunkedArray:
    """Rows of a 2-D array as fixed-width binary values (zero-copy; chunked under 2 GiB)."""
    a = np.ascontiguousarray(a)
    n = a.shape[0]
    width = int(a.shape[1] * a.itemsize) if a.ndim == 2 else int(a.itemsize)
    max_rows = max(1, (2**31 - 1) // max(width, 1))
    chunks = []
    for s in range(0, max(n, 1), max_rows):
        part = a[s: s + max_rows]
        m = len(part)
        offsets = np.arange(0, (m + 1) * width, width, dtype=np.int32)
        chunks.append(pa.Array.from_buffers(pa.binary(), m, [None, pa.py_buffer(offsets), pa.py_buffer(part)]))
    return pa.chunked_array(chunks, type=pa.binary())


def build_shard_table(
    caps: Sequence[SequenceCapture],
    reasons: Sequence[str | None],
    block_size: int,
    sliding_window: int | None = None,
    run_id: str | None = None,
) -> pa.Table:
    """Arrow rows (CAPTURE_SCHEMA) sorted by (prompt_id, sequence_index, position)."""
    if not caps:
        return CAPTURE_SCHEMA.empty_table()
    order = sorted(range(len(caps)), key=lambda i: (caps[i].prompt.prompt_id, caps[i].sequence_index))
    caps = [caps[i] for i in order]
    reasons = [reasons[i] for i in order]
    lengths = np.array([c.n_tokens for c in caps], dtype=np.int64)
    n = int(lengths.sum())
    starts = np.cumsum(lengths) - lengths
    seq = np.repeat(np.arange(len(caps), dtype=np.int32), lengths)
    pos = (np.arange(n, dtype=np.int64) - np.repeat(starts, lengths)).astype(np.int32)
    n_prompt = np.repeat(np.array([c.n_prompt_tokens if c.generated else c.n_tokens for c in caps]), lengths)
    take = pa.array(seq)

    def per_seq(values, typ=pa.string()):
        return pc.take(pa.array(values, type=typ), take)

    cache = pos if not sliding_window else np.minimum(pos, sliding_window).astype(np.int32)
    cols = {
        "prompt_id": per_seq([c.prompt.prompt_id for c in caps]),
        "domain": per_seq([c.prompt.domain for c in caps]),
        "language": per_seq([c.prompt.language for c in caps]),
        "system_prompt_hash": per_seq([c.prompt.system_prompt_hash for c in caps]),
        "sequence_index": per_seq([c.sequence_index for c in caps], pa.int32()),
        "position_in_sequence": pa.array(pos),
        "position_in_block": pa.array((pos % block_size).astype(np.int32)),
        "block_index": pa.array((pos // block_size).astype(np.int32)),
        "cache_logical_size": pa.array(cache),
        "token_id": pa.array(np.concatenate([c.token_ids for c in caps]).astype(np.int32)),
        "is_generated": pa.array(pos >= n_prompt),
        "top_token_ids": fixed_binary(np.concatenate([c.top_ids for c in caps]).astype("<i4", copy=False)),
        "top_probs": fixed_binary(np.concatenate([c.top_probs for c in caps]).astype("<f2", copy=False)),
        "hidden_state": fixed_binary(np.concatenate([c.hidden for c in caps]).astype("<f2", copy=False)),
        "verifier_top1_prob": pa.array(np.concatenate([c.top1 for c in caps]).astype(np.float32)),
        "filter_reason": per_seq(list(reasons)),
        "run_id": pc.take(pa.array([run_id], type=pa.string()), pa.array(np.zeros(n, dtype=np.int32))),
    }
    return pa.Table.from_arrays([cols[f.name] for f in CAPTURE_SCHEMA], schema=CAPTURE_SCHEMA)


def sliding_window_of(model) -> int | None:
    w = getattr(model.config, "sliding_window", None)
    use = getattr(model.config, "use_sliding_window", True)
    return int(w) if w and use else None


def iter_chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for s in range(0, len(items), size):
        yield items[s: s + size]
