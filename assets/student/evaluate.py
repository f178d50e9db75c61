"""Student evaluation on held-out sessions, base vs trained in one pass (no Dagster).

The trained model is a peft model; the base model is the same object with its adapter
disabled (``model.disable_adapter()``), so both are measured on exactly the same rows,
tokenization and device in the same run.

Scoring (log-likelihoods, ``score``) runs the model's forward pass directly: it is not a
generation. Every generation (tool prompts, the rag tasks) goes through the one model
client (``resources.model_client.LocalModelClient`` holding the student, see
``student_client``), the same greedy, left-cut, batched path the rag runtime uses.

Metrics
-------
``ll``             mean per-token log-likelihood of the chosen answers (held-out SFT answers
                   and the chosen side of held-out pairs), pooled over tokens.
``pair_acc``       share of held-out pairs where the model's mean per-token log-likelihood of
                   the chosen answer exceeds the rejected one's (same rule for base and trained).
``pair_acc_by_kind`` the same per kind of pair (``data.pair_kind``: recovery, teacher, ...), in
                   the details: which pairs the training moved.
``reward_acc``     share of pairs whose DPO implicit reward margin
                   β·[(log π − log π_ref)(chosen) − (log π − log π_ref)(rejected)] is > 0, π_ref
                   being the preference stage's reference: the SFT model when an SFT stage came
                   first (the ``reference`` adapter saved beside the trained one), else the base
                   (``reward_reference`` says which; ``reward_acc_vs_base`` is the margin
                   against the base when the reference is the SFT model).
``tool_valid``     share of held-out prompts that offer tools and whose reference answer calls
                   one, where the greedy answer holds a tool call naming an offered tool with
                   JSON-object arguments.
``rag_pass``       share of the rag batch tasks whose answer passes the rag gate, the student
                   being the local model (no escalation).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from assets.student.data import is_mined, pair_kind, tool_names
from assets.student.train import REFERENCE


# ------------------------------------------------------------------ scoring
def _encode(tok, prompt: list[dict], completion: list[dict]) -> tuple[list[int], int]:
    """(ids of prompt + completion, number of prompt ids)."""
    p = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    full = tok.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"]
    p, full = list(p), list(full)
    if full[: len(p)] != p:  # template re-renders the prompt differently: append the answer's own ids
        text = "".join(m.get("content") or "" for m in completion)
        full = p + tok(text, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if tok.eos_token_id is not None else [])
    return full, len(p)


def score(model, tok, prompts: Sequence[list[dict]], completions: Sequence[list[dict]],
          batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(sum of completion-token log-probs, completion token count) per row.

    Rows of similar length share a batch, left-padded (explicit position ids), so every
    completion ends at the batch's last position and the LM head runs only over the last
    (longest completion + 1) positions, not over the prompts."""
    import torch

    enc = [_encode(tok, p, c) for p, c in zip(prompts, completions)]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i][0]))
    sums, counts = np.zeros(len(enc)), np.zeros(len(enc), dtype=np.int64)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    device = next(model.parameters()).device
    for b in range(0, len(order), batch_size):
        idx = order[b: b + batch_size]
        L = max(len(enc[i][0]) for i in idx)
        K = max(len(enc[i][0]) - enc[i][1] for i in idx) + 1  # positions whose logits are needed
        ids = torch.full((len(idx), L), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), L), dtype=torch.long)
        for j, i in enumerate(idx):
            seq = enc[i][0]
            ids[j, L - len(seq):] = torch.tensor(seq)
            mask[j, L - len(seq):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                           logits_to_keep=K).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, L - K + 1:].to(device)[..., None])[..., 0]
        for j, i in enumerate(idx):
            n_c = len(enc[i][0]) - enc[i][1]
            lp = logp[j, K - 1 - n_c:]
            sums[i], counts[i] = float(lp.sum()), int(lp.numel())
    return sums, counts


@contextlib.contextmanager
def adapter(model, enabled: bool):
    """The peft model as trained (enabled) or as its base (disabled)."""
    if enabled or not hasattr(model, "disable_adapter"):
        yield model
    else:
        with model.disable_adapter():
            yield model


# ------------------------------------------------------------------ generation
def student_client(model, tok, trained: bool = True, max_new_tokens: int = 48, max_input_tokens: int = 256,
                   repetition_penalty: float = 1.1, model_id: str = "student", batch_size: int = 4):
    """The student behind the one model client interface (``resources.model_client``): a
    local client generating greedily with the model the caller holds, its adapter switched
    on (trained) or off (base) on the generating thread. Prompts longer than
    ``max_input_tokens`` are cut from the left (a system message kept)."""
    from resources.model_client import LocalModelClient, ModelSpec

    class StudentClient(LocalModelClient):
        def _generate(self, reqs):
            with adapter(model, trained):
                return super()._generate(reqs)

    spec = ModelSpec(name=model_id, provider="local", model=model_id, temperature=0.0, max_tokens=max_new_tokens,
                     max_context_tokens=max_input_tokens + max_new_tokens, repetition_penalty=repetition_penalty,
                     batch_size=batch_size, device=str(next(model.parameters()).device))
    client = StudentClient(spec, loaded=(tok, model))
    client.model_id = model_id
    return client


def generate_many(client, prompts: Sequence[list[dict]]) -> list[str]:
    """Greedy answers of ``client`` to ``prompts`` (batched); a failed call raises."""
    outs = client.chat_many(list(prompts))
    for o in outs:
        if not o.ok:
            raise RuntimeError(f"student generation failed: {o.error}")
    return [o.text or "" for o in outs]


def tool_call_valid(text: str, offered: set[str]) -> tuple[bool, str]:
    """(valid, reason): the answer holds a tool call (any format ``resources.tool_text``
    reads) naming an offered tool, with arguments that parse as a JSON object."""
    from resources.tool_text import parse_text_tool_calls

    _prose, calls, _fmt = parse_text_tool_calls(text, offered)
    if not calls:
        return False, "no_tool_call"
    for c in calls:
        fn = c["function"]
        if fn["name"] not in offered:
            return False, "unknown_tool"
        try:
            args = json.loads(fn["arguments"])
        except ValueError:
            return False, "arguments_not_json"
        if not isinstance(args, dict):
            return False, "arguments_not_object"
    return True, "ok"


# ------------------------------------------------------------------ the evaluation
@dataclass
class EvalSettings:
    batch_size: int = 8
    max_answers: int = 16  # CPU budget: first N held-out rows (stable order by id)
    max_pairs: int = 64
    max_tool_prompts: int = 8
    tool_max_new_tokens: int = 72  # room for a whole call of the training answers' length (64)
    max_rag_tasks: int = 3
    rag_max_new_tokens: int = 40
    rag_max_input_tokens: int = 256
    beta: float = 0.1


def _cap(rows: Sequence[Mapping], n: int | None) -> list:
    """The first ``n`` rows in a stable order (real pairs before mined ones, then by id)."""
    rows = sorted(rows, key=lambda r: (is_mined(r), str(r.get("id"))))
    return rows if n is None or n <= 0 else rows[:n]


def _mean_ll(sums, counts) -> float | None:
    n = int(np.sum(counts))
    return float(np.sum(sums) / n) if n else None


def evaluate(model, tok, answers: Sequence[Mapping], pairs: Sequence[Mapping],
             tool_rows: Sequence[Mapping] = (), rag: Callable[[Any], list[dict]] | None = None,
             s: EvalSettings = EvalSettings(), progress: Callable[[str], None] = print,
             cache: dict | None = None) -> dict:
    """Base (adapter disabled) and trained (enabled) on the same rows. ``answers``: rows with
    ``prompt`` + ``completion``; ``pairs``: ``prompt`` + ``chosen`` + ``rejected``;
    ``tool_rows``: answers whose reference calls a tool (``tools`` offered); ``rag``: called
    with a chat model, returns the rag gate outcomes ({"task", "passed", ...}) of the batch.

    ``cache``: a dict kept between calls on the same rows (e.g. several seeds of one base):
    the base model's scores and generations are computed once and reused."""
    t0 = time.perf_counter()
    answers, pairs = _cap(answers, s.max_answers), _cap(pairs, s.max_pairs)
    out: dict[str, Any] = {"n_answers": len(answers), "n_pairs": len(pairs)}
    real = np.array([not is_mined(r) for r in pairs], dtype=bool)
    out["n_real_pairs"] = int(real.sum())
    kinds = np.array([pair_kind(r) for r in pairs], dtype=object)
    per = {}
    cache = {} if cache is None else cache
    for name, on in (("base", False), ("trained", True)):
        if name == "base" and "scores" in cache:
            per[name] = cache["scores"]
        else:
            with adapter(model, on):
                per[name] = (*score(model, tok, [r["prompt"] for r in answers], [r["completion"] for r in answers],
                                    s.batch_size),
                             *score(model, tok, [r["prompt"] for r in pairs], [r["chosen"] for r in pairs], s.batch_size),
                             *score(model, tok, [r["prompt"] for r in pairs], [r["rejected"] for r in pairs], s.batch_size))
            if name == "base":
                cache["scores"] = per[name]
        a_s, a_n, c_s, c_n, r_s, r_n = per[name]
        out[f"ll_{name}"] = _mean_ll(np.concatenate([a_s, c_s]), np.concatenate([a_n, c_n]))
        if len(pairs):
            pref = c_s / np.maximum(c_n, 1) > r_s / np.maximum(r_n, 1)
            out[f"pair_acc_{name}"] = float(pref.mean())
            out[f"pair_prefs_{name}"] = pref.astype(int).tolist()
            if real.any():  # the lake's own pairs, without the mined ones
                out[f"pair_acc_real_{name}"] = float(pref[real].mean())
            for kind in sorted(set(kinds)):  # recovery, teacher, original, mined
                k = kinds == kind
                out.setdefault("pair_acc_by_kind", {}).setdefault(kind, {"n": int(k.sum())})[name] = \
                    float(pref[k].mean())
        progress(f"student eval {name}: ll={out[f'll_{name}']}, pair_acc={out.get(f'pair_acc_{name}')}")
    out["ll_gain"] = (out["ll_trained"] - out["ll_base"]) if out["ll_base"] is not None else None
    if len(pairs):
        # DPO's implicit reward β·log π/π_ref, against the policy the preference stage started
        # from: the SFT model when one was trained before (adapter "reference"), else the base
        _, _, ct, _, rt, _ = per["trained"]
        _, _, cb, _, rb, _ = per["base"]
        margins = {"base": s.beta * ((ct - cb) - (rt - rb))}
        if REFERENCE in (getattr(model, "peft_config", None) or {}):
            model.set_adapter(REFERENCE)
            try:
                cs, _ = score(model, tok, [r["prompt"] for r in pairs], [r["chosen"] for r in pairs], s.batch_size)
                rs, _ = score(model, tok, [r["prompt"] for r in pairs], [r["rejected"] for r in pairs], s.batch_size)
            finally:
                model.set_adapter("default")
            margins["sft"] = s.beta * ((ct - cs) - (rt - rs))
            out["reward_acc_vs_base"] = float((margins["base"] > 0).mean())
        out["reward_reference"] = ref = "sft" if "sft" in margins else "base"
        margin = margins[ref]
        out["reward_acc"] = float((margin > 0).mean())
        if real.any():
            out["reward_acc_real"] = float((margin[real] > 0).mean())
        out["reward_margin"] = float(margin.mean())
        out["pair_sources"] = sorted({r.get("pair_source", "normalized_pairs") for r in pairs})
    out["score_seconds"] = round(time.perf_counter() - t0, 1)

    t1 = time.perf_counter()
    tools = list(tool_rows)[: s.max_tool_prompts]
    out["n_tool_prompts"] = len(tools)
    if tools:
        for name, on in (("base", False), ("trained", True)):
            if name == "base" and "tool_reasons" in cache:
                reasons = cache["tool_reasons"]
            else:
                client = student_client(model, tok, trained=on, max_new_tokens=s.tool_max_new_tokens,
                                        max_input_tokens=s.rag_max_input_tokens, model_id=f"student-{name}")
                texts = generate_many(client, [r["prompt"] for r in tools])
                reasons = [tool_call_valid(text, tool_names(r.get("tools")))[1] for r, text in zip(tools, texts)]
                if name == "base":
                    cache["tool_reasons"] = reasons
            out[f"tool_valid_{name}"] = sum(x == "ok" for x in reasons) / len(reasons)
            out[f"tool_reasons_{name}"] = reasons
    out["tool_seconds"] = round(time.perf_counter() - t1, 1)

    t1 = time.perf_counter()
    if rag is not None and s.max_rag_tasks:
        for name, on in (("base", False), ("trained", True)):
            chat = student_client(model, tok, trained=on, max_new_tokens=s.rag_max_new_tokens,
                                  max_input_tokens=s.rag_max_input_tokens, model_id=f"student-{name}")
            res = cache["rag"] if name == "base" and "rag" in cache else rag(chat)
            if name == "base":
                cache["rag"] = res
            out["n_rag_tasks"] = len(res)
            out[f"rag_pass_{name}"] = (sum(bool(x["passed"]) for x in res) / len(res)) if res else None
            out[f"rag_{name}"] = res
            progress(f"student eval {name}: rag pass {out[f'rag_pass_{name}']}")
    out["rag_seconds"] = round(time.perf_counter() - t1, 1)
    out["eval_seconds"] = round(time.perf_counter() - t0, 1)
    return out


class MemoryRunLog:
    """Where the rag runtime logs the student's evaluation runs: kept with the evaluation row
    (student_evals.details), not in rag_runs, whose report describes production runs."""

    def __init__(self):
        self.rows: list[dict] = []

    def append(self, rows):
        self.rows.extend(rows)
        return True, None


def rag_gate_runner(lake, tasks: Sequence[Mapping], config=None) -> Callable[[Any], list[dict]]:
    """A ``rag`` callable for :func:`evaluate`: the rag runtime (retrieval from the lake's
    playbooks, bundle, the gate) with the given chat model as the local model."""
    from assets.rag.config import load_rag_config
    from assets.rag.runtime import RagRuntime, load_playbook_index

    cfg = config or load_rag_config(None, retrieval_mode="lexical", allow_escalation=False)
    index = None
    if lake is not None:
        try:
            index = load_playbook_index(lake, cfg.lexical_metric)
        except Exception:  # noqa: BLE001 - no playbooks yet: the tasks run without retrieval hits
            index = None

    def run(chat) -> list[dict]:
        from assets.rag.retrieval import PlaybookIndex

        rt = RagRuntime(cfg, lake=None, index=index or PlaybookIndex.build([]), local=chat,
                        escalation=None, run_log=MemoryRunLog())
        rt.escalation = None
        res = []
        for t in tasks:
            o = rt.run(t["task"], local_only=True, source="student_eval", checks=t.get("checks") or ())
            res.append({"task": t.get("id") or t["task"][:40], "passed": bool(o.gate_passed),
                        "failed_rules": list(o.failed_rules), "response": (o.response or "")[:200]})
        return res

    return run
