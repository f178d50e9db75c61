"""Capture throughput and on-disk size against their baselines, measured in the same run.

Baseline: a bare transformers forward pass with hidden states
(``model(input_ids, attention_mask, output_hidden_states=True)``) over the same tokenized
sequences in the same token-budget batches. Capture: the full capture path —
chat template + tokenization, one forward, top-k, fp16 hidden states, post-filter, Arrow
rows and a Delta append per commit to a lake in a temporary directory. The two alternate
``--repeats`` times; medians are compared (goal: capture ≥ 0.8× baseline tokens/s).

Size: bytes of the parquet files each append added / tokens, against 2·H + 6·K
(fp16 hidden state + int32 ids + fp16 probs; goal ≤ 1.1×), with a per-column breakdown.

    .venv/bin/python benchmarks/bench_capture.py                 # SmolLM2-135M, 32 prompts
    .venv/bin/python benchmarks/bench_capture.py --threads 1 --prompts 24
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._corpus import transcript_texts  # noqa: E402


def corpus_texts() -> list[str]:
    """Text of real agent transcripts when present (code, prose, tool output), else synthetic."""
    texts = transcript_texts(min_len=40)
    if not texts:
        rng = random.Random(0)
        words = "the model reads a file and writes tests def return import class error value list".split()
        texts = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 300))) for _ in range(200)]
    return texts


def make_prompts(n: int, seed: int = 0):
    from assets.capture.capture import PromptIn

    texts = corpus_texts()
    rng = random.Random(seed)
    out = []
    for i in range(n):
        user = texts[rng.randrange(len(texts))][: rng.randint(200, 1500)]
        answer = texts[rng.randrange(len(texts))][: rng.randint(100, 800)]
        out.append(PromptIn(f"bench-{i:04d}", [{"role": "user", "content": user},
                                              {"role": "assistant", "content": answer}]))
    return out


def baseline_pass(verifier, seqs, batches) -> tuple[int, float, float]:
    import numpy as np
    import torch

    model, pad = verifier.model, verifier.tokenizer.pad_token_id
    tokens = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for batch in batches:
        T = max(len(seqs[i]) for i in batch)
        ids = np.full((len(batch), T), pad, dtype=np.int64)
        mask = np.zeros((len(batch), T), dtype=np.int64)
        for r, i in enumerate(batch):
            ids[r, : len(seqs[i])] = seqs[i]
            mask[r, : len(seqs[i])] = 1
            tokens += len(seqs[i])
        with torch.inference_mode():
            out = model(input_ids=torch.from_numpy(ids).to(model.device),
                        attention_mask=torch.from_numpy(mask).to(model.device), output_hidden_states=True)
        _ = out.hidden_states[-1].sum().item()  # make sure the pass finished
        del out
    return tokens, time.perf_counter() - t0, time.process_time() - c0


def capture_pass(verifier, prompts, settings, lake, spec, props, per_commit) -> tuple[int, float, float, int]:
    from assets.capture import postfilter
    from assets.capture.capture import build_shard_table, capture_prompts, iter_chunks
    from assets.capture.shards import append_shard

    pf = postfilter.PostFilterConfig()
    tokens = nbytes = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for group in iter_chunks(prompts, per_commit):
        caps = capture_prompts(verifier, group, settings)
        reasons = []
        for c in caps:
            rs, _ = postfilter.evaluate(c.token_ids, c.top1, c.n_prompt_tokens, c.generated, c.ended_with_eos, pf)
            reasons.append(";".join(rs) or None)
        table = build_shard_table(caps, reasons, settings.block_size, None, "bench")
        res = append_shard(lake, spec, table, props)
        tokens += res.rows
        nbytes += res.bytes_added
    return tokens, time.perf_counter() - t0, time.process_time() - c0, nbytes


def column_bytes(lake, spec) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for frag in lake.table(spec).to_pyarrow_dataset().get_fragments():
        md = frag.metadata
        for rg in range(md.num_row_groups):
            g = md.row_group(rg)
            for c in range(g.num_columns):
                col = g.column(c)
                sizes[col.path_in_schema] = sizes.get(col.path_in_schema, 0) + col.total_compressed_size
    return sizes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--verifier", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--per-commit", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    import torch

    from assets.capture.capture import CaptureSettings, encode_prompt, plan_batches
    from assets.capture.shards import ensure_shard_table, table_properties
    from assets.capture.tables import capture_spec
    from resources.verifier import VerifierResource
    from resources.lake import DeltaLake

    gpu = VerifierResource(verifier=args.verifier, device=args.device, top_k=args.top_k,
                      batch_tokens=args.batch_tokens, max_length=1024, cpu_threads=args.threads)
    t = time.perf_counter()
    v = gpu.load()
    load_s = time.perf_counter() - t
    settings = CaptureSettings(top_k=args.top_k, batch_tokens=args.batch_tokens, max_length=1024)
    prompts = make_prompts(args.prompts)
    seqs = [encode_prompt(v.tokenizer, p, settings)[0] for p in prompts]
    batches = plan_batches([len(s) for s in seqs], args.batch_tokens)
    H, K = v.hidden_size, args.top_k
    print(f"verifier {v.verifier_id} ({v.dtype}, {v.device}, {torch.get_num_threads()} threads, "
          f"load {load_s:.1f}s): H={H} K={K}; {len(prompts)} prompts, {sum(map(len, seqs))} tokens, "
          f"{len(batches)} batches of <= {args.batch_tokens} tokens")

    with tempfile.TemporaryDirectory() as tmp:
        lake = DeltaLake(root=tmp)
        base_rates, cap_rates, base_cpu, cap_cpu, sizes = [], [], [], [], []
        # warm-up of both paths (first-call allocations, tokenizer caches) on the shortest batch
        baseline_pass(v, seqs, batches[-1:])
        warm = capture_spec("bench-warmup", v.dtype)
        warm_props = table_properties(verifier_id="bench-warmup", dtype=v.dtype, top_k=K, hidden_size=H,
                                      hidden_layer=-1, block_size=settings.block_size)
        ensure_shard_table(lake, warm, warm_props)
        capture_pass(v, [prompts[i] for i in batches[-1]], settings, lake, warm, warm_props, args.per_commit)
        for r in range(args.repeats):
            spec = capture_spec(f"bench-{r}", v.dtype)
            props = table_properties(verifier_id=f"bench-{r}", dtype=v.dtype, top_k=K, hidden_size=H,
                                     hidden_layer=-1, block_size=settings.block_size)
            ensure_shard_table(lake, spec, props)
            n, s, cs = baseline_pass(v, seqs, batches)
            n2, s2, cs2, nbytes = capture_pass(v, prompts, settings, lake, spec, props, args.per_commit)
            base_rates.append(n / s)
            cap_rates.append(n2 / s2)
            base_cpu.append(n / cs)
            cap_cpu.append(n2 / cs2)
            sizes.append(nbytes / n2)
            print(f"  repeat {r}: baseline {n / s:8.1f} tok/s ({n / cs:8.1f} per CPU-s) | capture "
                  f"{n2 / s2:8.1f} tok/s ({n2 / cs2:8.1f} per CPU-s, incl. Delta write) | "
                  f"{nbytes / n2:7.1f} B/token on disk")
        b, c = statistics.median(base_rates), statistics.median(cap_rates)
        bc, cc = statistics.median(base_cpu), statistics.median(cap_cpu)
        target = 2 * H + 6 * K
        bpt = statistics.median(sizes)
        print(f"throughput (wall): capture {c:.1f} tok/s vs bare forward+hidden states {b:.1f} tok/s "
              f"= {c / b:.2f}x (goal >= 0.80x)")
        print(f"throughput (per CPU-second of this process, robust on a shared CPU): capture {cc:.1f} vs "
              f"{bc:.1f} = {cc / bc:.2f}x")
        print(f"size: {bpt:.1f} B/token on disk vs 2H+6K = {target} B/token = {bpt / target:.3f}x (goal <= 1.10x)")
        cols = column_bytes(lake, capture_spec("bench-0", v.dtype))
        ntok = lake.read(capture_spec("bench-0", v.dtype), columns=["token_id"]).num_rows
        print("bytes/token by column: " + ", ".join(
            f"{k}={sz / ntok:.1f}" for k, sz in sorted(cols.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
