"""An EAGLE-style draft head trained on capture shards, and a bigram baseline (no Dagster).

Capture rows (``assets.capture.reader``) give, at every position t of a sequence: the token
x_t, the verifier's hidden state h_t (the feature EAGLE drafts from) and its top-k
next-token distribution at t. The head reads (h_t, embedding of x_{t+1}) and predicts the
feature at t+1; the verifier's own (frozen) LM head turns it into the distribution of
x_{t+2}, distilled against the stored top-k at t+1 (soft cross-entropy on the renormalized
top-k) plus a feature regression to h_{t+1} (smooth L1), as EAGLE trains. Drafting chains
the head on its own predicted features.

The output layer is restricted to a *draft vocabulary* (the most frequent top-k ids of the
training rows, as EAGLE-3 does), which keeps a CPU epoch in seconds; a target outside it
is a miss.

Acceptance (greedy verification, measured on held-out sequences): from a start t, draft
d_1..d_c; d_i is accepted when it equals the verifier's top-1 at t+i. The capture knows the
verifier's top-1 only along the captured sequence, so the chain also stops where the
captured next token differs from the verifier's top-1 (always true on generated tokens):
the figure is a lower bound, measured the same way for the head and for the baseline.
Reported as accepted draft tokens per chain (0..c); EAGLE's τ is 1 + that.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np


@dataclass
class DraftHyper:
    seed: int = 0
    draft_vocab: int = 2048
    epochs: int = 2
    min_steps: int = 100  # small capture tables: more epochs, at least this many optimizer steps
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.0
    feature_loss: float = 0.1
    unroll: int = 2  # train steps 2..unroll on the head's own features (as drafting uses them)
    chain: int = 4


@dataclass
class Sequences:
    """Capture rows split into sequences (numpy, float32 hidden states)."""

    prompt_ids: list[str]  # per sequence
    offsets: np.ndarray  # [S+1]
    token_id: np.ndarray  # [N]
    top_ids: np.ndarray  # [N, K]
    top_probs: np.ndarray  # [N, K] float32
    hidden: np.ndarray  # [N, H] float16

    def select(self, keep: Sequence[int]) -> "Sequences":
        parts = [np.arange(self.offsets[s], self.offsets[s + 1]) for s in keep]
        idx = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        lens = [self.offsets[s + 1] - self.offsets[s] for s in keep]
        return Sequences([self.prompt_ids[s] for s in keep], np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
                         self.token_id[idx], self.top_ids[idx], self.top_probs[idx], self.hidden[idx])

    @property
    def n_tokens(self) -> int:
        return int(len(self.token_id))


def sequences_from_capture(table, props) -> Sequences:
    """From ``assets.capture.reader.load_table`` output."""
    from assets.capture.reader import to_tensors

    t = to_tensors(table, props)
    pids = table.column("prompt_id").to_pylist()
    offsets = t["sequence_offsets"].numpy()
    return Sequences(prompt_ids=[pids[o] for o in offsets[:-1]], offsets=offsets, token_id=t["token_id"].numpy(),
                     top_ids=t["top_token_ids"].numpy(), top_probs=t["top_probs"].numpy().astype(np.float32),
                     hidden=t["hidden_state"].numpy())


def pair_index(seqs: Sequences, horizon: int = 1) -> np.ndarray:
    """Row indices t with t+1+horizon-1 < end of the sequence (t, t+1 ... in one sequence)."""
    out = []
    for s in range(len(seqs.offsets) - 1):
        a, b = int(seqs.offsets[s]), int(seqs.offsets[s + 1])
        if b - a > horizon:
            out.append(np.arange(a, b - horizon))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


# ------------------------------------------------------------------ the baseline
class Bigram:
    """Next verifier top-1 given the current token, counted on the training rows."""

    def __init__(self, seqs: Sequences):
        counts: dict[int, Counter] = defaultdict(Counter)
        for tok, top in zip(seqs.token_id.tolist(), seqs.top_ids[:, 0].tolist()):
            counts[tok][top] += 1
        self.table = {k: c.most_common(1)[0][0] for k, c in counts.items()}
        uni = Counter(seqs.top_ids[:, 0].tolist())
        self.fallback = uni.most_common(1)[0][0] if uni else 0

    def next(self, token: int) -> int:
        return self.table.get(int(token), self.fallback)

    def draft(self, token: int, n: int) -> list[int]:
        out = []
        for _ in range(n):
            token = self.next(token)
            out.append(token)
        return out


# ------------------------------------------------------------------ the head
def build_head(hidden: int, embed_weight, lm_weight, vocab_ids: np.ndarray):
    import torch
    from torch import nn

    class DraftHead(nn.Module):
        def __init__(self):
            super().__init__()
            H = hidden
            self.embed = nn.Embedding.from_pretrained(embed_weight.detach().float().clone(), freeze=True)
            self.register_buffer("lm", lm_weight.detach().float()[torch.as_tensor(vocab_ids)].clone())
            self.register_buffer("vocab_ids", torch.as_tensor(vocab_ids, dtype=torch.long))
            self.fc = nn.Linear(2 * H, H)
            self.norm = nn.LayerNorm(H)
            self.up = nn.Linear(H, 2 * H)
            self.down = nn.Linear(2 * H, H)
            self.out_norm = nn.LayerNorm(H)
            self.scale = nn.Parameter(torch.ones(H))

        def feature(self, h, tokens):
            x = self.fc(torch.cat([h, self.embed(tokens)], dim=-1))
            x = x + self.down(torch.nn.functional.silu(self.up(self.norm(x))))
            return self.out_norm(x) * self.scale  # the captured feature is post-final-norm

        def logits(self, f):
            return f @ self.lm.T  # over the draft vocabulary

    return DraftHead()


def _targets(seqs: Sequences, rows: np.ndarray, vocab_pos: dict[int, int]):
    """Soft targets over the draft vocabulary at rows (renormalized top-k; out-of-vocab mass dropped)."""
    ids, probs = seqs.top_ids[rows], seqs.top_probs[rows]
    pos = np.vectorize(lambda i: vocab_pos.get(int(i), -1), otypes=[np.int64])(ids) if ids.size else ids
    probs = np.where(pos >= 0, probs, 0.0).astype(np.float32)
    z = probs.sum(1, keepdims=True)
    probs = np.where(z > 0, probs / np.maximum(z, 1e-9), 0.0)
    return np.maximum(pos, 0), probs


def train_head(train: Sequences, embed_weight, lm_weight, hp: DraftHyper, device: str = "cpu",
               progress=print):
    """(head, metrics). Rows t → target at t+1, within sequences."""
    import torch

    torch.manual_seed(hp.seed)
    rng = np.random.default_rng(hp.seed)
    freq = Counter(train.top_ids.reshape(-1).tolist())
    freq.update(train.token_id.tolist())
    vocab_ids = np.array(sorted(t for t, _ in freq.most_common(hp.draft_vocab)), dtype=np.int64)
    vocab_pos = {int(t): i for i, t in enumerate(vocab_ids)}
    head = build_head(train.hidden.shape[1], embed_weight, lm_weight, vocab_ids).to(device)
    U = max(1, hp.unroll)
    rows = pair_index(train, U)
    H = torch.from_numpy(train.hidden.astype(np.float32))
    X = [torch.from_numpy(train.token_id[rows + u].astype(np.int64)) for u in range(1, U + 1)]
    T = [tuple(map(torch.from_numpy, _targets(train, rows + u, vocab_pos))) for u in range(1, U + 1)]
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
    per_epoch = max(1, int(np.ceil(len(rows) / hp.batch_size)))
    epochs = max(hp.epochs, int(np.ceil(hp.min_steps / per_epoch)))
    steps = epochs * per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp.lr, total_steps=steps, pct_start=0.1)
    losses, t0, step = [], time.perf_counter(), 0
    head.train()
    for epoch in range(epochs):
        perm = rng.permutation(len(rows))
        for b in range(0, len(rows), hp.batch_size):
            sel = torch.from_numpy(perm[b: b + hp.batch_size])
            r = torch.from_numpy(rows[perm[b: b + hp.batch_size]])
            f, loss = H[r].to(device), 0.0
            for u in range(U):
                f = head.feature(f, X[u][sel].to(device))
                logp = torch.log_softmax(head.logits(f), dim=-1)
                tp, tw = T[u][0][sel].to(device), T[u][1][sel].to(device)
                ce = -(tw * logp.gather(-1, tp)).sum(-1).mean()
                reg = torch.nn.functional.smooth_l1_loss(f, H[r + u + 1].to(device))
                loss = loss + (ce + hp.feature_loss * reg) / U
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
        progress(f"draft head epoch {epoch + 1}/{epochs}: loss {np.mean(losses[-50:]):.3f}")
    head.eval()
    return head, {"steps": step, "epochs": epochs, "train_rows": int(len(rows)), "draft_vocab": int(len(vocab_ids)),
                  "loss_first": round(losses[0], 4) if losses else None,
                  "loss_last": round(float(np.mean(losses[-20:])), 4) if losses else None,
                  "train_seconds": round(time.perf_counter() - t0, 1), "hyperparameters": asdict(hp)}


def _accept(drafts: np.ndarray, top1: np.ndarray, seq_next: np.ndarray) -> np.ndarray:
    """Accepted lengths [M] from drafts/top1/seq_next [M, c] (see the module doc)."""
    M, c = drafts.shape
    acc = np.zeros(M, dtype=np.int64)
    alive = np.ones(M, dtype=bool)
    for i in range(c):
        ok = alive & (drafts[:, i] == top1[:, i])
        acc += ok
        alive = ok & (seq_next[:, i] == top1[:, i]) if i < c - 1 else ok
    return acc


def evaluate_draft(head, bigram: Bigram, test: Sequences, chain: int = 4, device: str = "cpu",
                   batch_size: int = 1024) -> dict:
    """Top-1 agreement and accepted chain length of the head and the bigram on ``test``."""
    import torch

    rows = pair_index(test, chain + 1)  # t such that t+chain+1 is in the sequence
    if not len(rows):
        return {"n_positions": 0}
    top1 = np.stack([test.top_ids[rows + i, 0] for i in range(1, chain + 1)], 1)  # verifier top-1 at t+i
    seq_next = np.stack([test.token_id[rows + i + 1] for i in range(1, chain + 1)], 1)  # x_{t+i+1}
    # the head, chained on its own features
    drafts = np.zeros((len(rows), chain), dtype=np.int64)
    H = torch.from_numpy(test.hidden.astype(np.float32))
    with torch.inference_mode():
        for b in range(0, len(rows), batch_size):
            r = rows[b: b + batch_size]
            f = H[torch.from_numpy(r)].to(device)
            tok = torch.from_numpy(test.token_id[r + 1].astype(np.int64)).to(device)
            for i in range(chain):
                f = head.feature(f, tok)
                tok = head.vocab_ids[head.logits(f).argmax(-1)]
                drafts[b: b + len(r), i] = tok.cpu().numpy()
    base = np.array([bigram.draft(int(x), chain) for x in test.token_id[rows + 1]], dtype=np.int64)
    acc_h, acc_b = _accept(drafts, top1, seq_next), _accept(base, top1, seq_next)
    known = _accept(top1, top1, seq_next)  # the longest chain the capture can score
    return {
        "n_positions": int(len(rows)),
        "top1_agreement": float((drafts[:, 0] == top1[:, 0]).mean()),
        "baseline_top1_agreement": float((base[:, 0] == top1[:, 0]).mean()),
        "accept_len": float(acc_h.mean()),
        "baseline_accept_len": float(acc_b.mean()),
        "max_scorable_accept_len": float(known.mean()),
        "accept_hist": np.bincount(acc_h, minlength=chain + 1).tolist(),
        "baseline_accept_hist": np.bincount(acc_b, minlength=chain + 1).tolist(),
        "chain": chain,
    }


def split_prompts(prompt_ids: Sequence[str], session_of: dict[str, str], split_rows, eval_share: float,
                  seed: str) -> tuple[list[int], list[int]]:
    """(train sequence indices, eval sequence indices): a prompt follows its session's side;
    a prompt of no known session (a prompt file) is hashed by its own id."""
    from assets.student.split import EVAL, bucket

    side = {r["session_key"]: r["split"] for r in split_rows}
    tr, ev = [], []
    for i, p in enumerate(prompt_ids):
        s = session_of.get(p)
        is_eval = side.get(s) == EVAL if s in side else bucket(p, seed) < eval_share
        (ev if is_eval else tr).append(i)
    return tr, ev


def save_head(head, hp: DraftHyper, metrics: dict, out_dir) -> None:
    import json
    from pathlib import Path

    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in head.state_dict().items() if not k.startswith(("embed.", "lm"))}
    state["vocab_ids"] = head.vocab_ids
    torch.save(state, out / "draft_head.pt")
    (out / "draft_head.json").write_text(json.dumps({"hyperparameters": asdict(hp), "metrics": metrics,
                                                     "hidden_size": int(head.fc.out_features)},
                                                    indent=2, sort_keys=True, default=str))
