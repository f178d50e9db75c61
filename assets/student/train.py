"""Student training with TRL + peft LoRA (no Dagster): SFT → DPO (→ KTO), then save.

One LoRA adapter is trained through the stages: SFT on the prompt-completion rows (loss on
the answer only), then DPO on the preference rows, then optionally KTO on the unpaired rows.
A preference stage's reference is the policy as it entered the stage (TRL copies the adapter
as ``ref``): after an SFT stage the SFT model, which is saved beside the final adapter
(``reference/``) so the evaluation can measure DPO's implicit reward against it; without an
SFT stage the reference is the base model. By default LoRA covers only the
top ``lora_layers`` decoder layers, so backward stops there: on a CPU this is what makes a
135M model train in minutes.

Device and dtype come from the caller (the verifier resource): on CPU fp32 without mixed
precision or gradient checkpointing; on CUDA ``bfloat16``/``float16`` mixed precision.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from assets.student.data import is_mined
from assets.student.tables import RECIPE_VERSION

log = logging.getLogger(__name__)

STAGES = ("sft", "dpo", "kto")
PREFERENCE_STAGES = ("dpo", "kto")
REFERENCE = "reference"  # the SFT adapter: the reference of the preference stage after it


@dataclass
class StudentHyper:
    seed: int = 0
    stages: tuple[str, ...] = ("sft", "dpo")
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_layers: int = 8  # top decoder layers with adapters (0 = all)
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    batch_size: int = 4
    dpo_batch_size: int = 4
    sft_epochs: float = 1.0
    sft_max_steps: int = 10  # cap (the CPU budget); -1 = epochs only
    sft_lr: float = 5e-4
    dpo_epochs: float = 2.0
    dpo_max_steps: int = 6
    dpo_lr: float = 1e-4
    beta: float = 0.1
    dpo_sft_weight: float = 0.0  # > 0: DPO loss + this × NLL of the chosen answer (TRL loss_type sigmoid+sft)
    sft_on_chosen: bool = False  # SFT also on the chosen answers of the (real) training pairs
    kto_max_steps: int = 6
    kto_lr: float = 5e-5
    max_prompt_tokens: int = 64
    max_answer_tokens: int = 64

    def __post_init__(self):
        self.stages = tuple(self.stages)
        bad = [s for s in self.stages if s not in STAGES]
        if bad or not self.stages:
            raise ValueError(f"unknown training stages {bad or '(none)'}; choose from {STAGES}")
        self.target_modules = tuple(self.target_modules)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class TrainResult:
    model: Any  # the peft model (adapter enabled), ready to evaluate
    tokenizer: Any
    metrics: dict = field(default_factory=dict)
    seconds: float = 0.0


def model_dir(path: str) -> str:
    """An HF-format directory for ``path`` (a GGUF model resolves to its dequantized copy)."""
    from resources.models import ModelRef, dequantized_gguf_dir

    directory, gguf = ModelRef(path).resolve()
    if gguf:
        return str(dequantized_gguf_dir(Path(directory) / gguf))
    return directory


def load_base(path: str, device: str = "cpu", dtype: str = "float32"):
    """(tokenizer, model) — a fresh copy (peft injects layers in place; the process-wide
    cached models of resources.models must stay untouched)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from resources.models import pick_dtype

    d = model_dir(path)
    tok = AutoTokenizer.from_pretrained(d, local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    torch_dtype = pick_dtype(dtype, device)
    if torch_dtype == torch.float16:  # fp16 weights do not train; fp16 is the autocast dtype
        torch_dtype = torch.float32
    model = AutoModelForCausalLM.from_pretrained(d, local_files_only=True, dtype=torch_dtype)
    model.to(device)
    return tok, model


def lora_config(model, hp: StudentHyper):
    from peft import LoraConfig

    n = int(model.config.num_hidden_layers)
    layers = list(range(max(0, n - hp.lora_layers), n)) if hp.lora_layers and hp.lora_layers < n else None
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in hp.target_modules if t in names]
    if not targets:
        raise ValueError(f"none of the LoRA target modules {hp.target_modules} exist in the model")
    return LoraConfig(r=hp.lora_r, lora_alpha=hp.lora_alpha, lora_dropout=hp.lora_dropout,
                      target_modules=targets, layers_to_transform=layers, task_type="CAUSAL_LM")


def _precision(device: str, dtype: str) -> dict:
    if not device.startswith("cuda"):
        return {"use_cpu": device == "cpu", "bf16": False, "fp16": False}
    return {"bf16": dtype == "bfloat16", "fp16": dtype == "float16"}


def _common(out: Path, stage: str, hp: StudentHyper, device: str, dtype: str, lr: float,
            epochs: float, max_steps: int) -> dict:
    return dict(
        output_dir=str(out / f"_{stage}"), per_device_train_batch_size=hp.batch_size,
        learning_rate=lr, num_train_epochs=epochs, max_steps=max_steps, lr_scheduler_type="linear",
        warmup_steps=0, logging_steps=1, report_to=[], save_strategy="no", seed=hp.seed, data_seed=hp.seed,
        disable_tqdm=True, dataloader_num_workers=0, activation_checkpointing=False,
        max_length=hp.max_prompt_tokens + hp.max_answer_tokens + 64, **_precision(device, dtype),
    )


def _losses(trainer) -> list[float]:
    return [round(float(h["loss"]), 4) for h in trainer.state.log_history if "loss" in h]


def _stage_metrics(trainer, out, t0: float, n_rows: int) -> dict:
    hist = [h for h in trainer.state.log_history if "loss" in h]
    m = {"rows": n_rows, "steps": int(trainer.state.global_step), "seconds": round(time.perf_counter() - t0, 1),
         "loss_first": _losses(trainer)[0] if hist else None, "loss_last": _losses(trainer)[-1] if hist else None,
         "train_loss": round(float(out.metrics.get("train_loss", float("nan"))), 4)}
    for key in ("rewards/accuracies", "rewards/margins"):
        vals = [float(h[key]) for h in hist if key in h]
        if vals:
            m[key.replace("/", "_") + "_last"] = round(vals[-1], 4)
    return m


def chosen_rows(pair_rows: Sequence[dict]) -> list[dict]:
    """Prompt-completion rows from the chosen answers of real preference pairs (mined pairs'
    chosen answers are SFT rows already)."""
    return [{"prompt": p["prompt"], "completion": p["chosen"]} for p in pair_rows if not is_mined(p)]


def _drop_ref_adapter(model) -> None:
    cfg = getattr(model, "peft_config", None) or {}
    if "ref" in cfg:
        model.set_adapter("default")
        model.delete_adapter("ref")


def train_student(base_model: str, sft_rows: Sequence[dict], pair_rows: Sequence[dict],
                  kto_rows: Sequence[dict], hp: StudentHyper, out_dir: str | os.PathLike, *,
                  device: str = "cpu", dtype: str = "float32", threads: int | None = None,
                  base: tuple | None = None, progress: Callable[[str], None] = log.info) -> TrainResult:
    """Train the adapter through ``hp.stages``; save adapter, tokenizer and config in ``out_dir``.

    ``sft_rows``: {"prompt", "completion"}; ``pair_rows``: {"prompt", "chosen", "rejected"};
    ``kto_rows``: {"prompt", "completion", "label"} (conversational, see data.py). A stage
    whose rows are missing is skipped and says so in the metrics. ``base``: an already
    loaded (tokenizer, model) to wrap (it is modified in place).
    """
    import torch
    from datasets import Dataset
    from transformers import set_seed
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    t_start = time.perf_counter()
    if threads and device == "cpu":
        torch.set_num_threads(int(threads))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(hp.seed)
    tok, model = base or load_base(base_model, device, dtype)
    from peft import get_peft_model

    model = get_peft_model(model, lora_config(model, hp))
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    metrics: dict[str, Any] = {"trainable_params": int(n_trainable), "stages": {}}

    def keep(rows, cols):
        return Dataset.from_list([{c: r[c] for c in cols} for r in rows])

    for stage in hp.stages:
        t0 = time.perf_counter()
        _drop_ref_adapter(model)  # TRL copies the policy adapter as "ref" for preference stages
        if stage == "sft":
            if not sft_rows:
                metrics["stages"]["sft"] = {"skipped": "no sft rows"}
                continue
            rows = list(sft_rows) + (chosen_rows(pair_rows) if hp.sft_on_chosen else [])
            args = SFTConfig(**_common(out, "sft", hp, device, dtype, hp.sft_lr, hp.sft_epochs, hp.sft_max_steps),
                             completion_only_loss=True)
            trainer = SFTTrainer(model=model, args=args, train_dataset=keep(rows, ("prompt", "completion")),
                                 processing_class=tok)
            res = trainer.train()
            metrics["stages"]["sft"] = _stage_metrics(trainer, res, t0, len(rows))
        elif stage == "dpo":
            if not pair_rows:
                metrics["stages"]["dpo"] = {"skipped": "no preference pairs"}
                continue
            kw = _common(out, "dpo", hp, device, dtype, hp.dpo_lr, hp.dpo_epochs, hp.dpo_max_steps)
            kw["per_device_train_batch_size"] = hp.dpo_batch_size
            loss = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, hp.dpo_sft_weight]} \
                if hp.dpo_sft_weight > 0 else {}
            # the reference does not change: its log-probs are computed once over every row when the
            # stage sees each row at least once, else per step for the rows of the step (cheaper)
            seen = hp.dpo_max_steps * hp.dpo_batch_size if hp.dpo_max_steps > 0 else len(pair_rows) * hp.dpo_epochs
            args = DPOConfig(**kw, beta=hp.beta, precompute_ref_log_probs=seen >= len(pair_rows), **loss)
            trainer = DPOTrainer(model=model, args=args,
                                 train_dataset=keep(pair_rows, ("prompt", "chosen", "rejected")),
                                 processing_class=tok)
            res = trainer.train()
            metrics["stages"]["dpo"] = _stage_metrics(trainer, res, t0, len(pair_rows))
        elif stage == "kto":
            labels = {bool(r["label"]) for r in kto_rows}
            if len(labels) < 2:
                metrics["stages"]["kto"] = {"skipped": "KTO needs desirable and undesirable rows"}
                continue
            from trl import KTOConfig, KTOTrainer

            args = KTOConfig(**_common(out, "kto", hp, device, dtype, hp.kto_lr, 1.0, hp.kto_max_steps),
                             beta=hp.beta)
            trainer = KTOTrainer(model=model, args=args,
                                 train_dataset=keep(kto_rows, ("prompt", "completion", "label")),
                                 processing_class=tok)
            res = trainer.train()
            metrics["stages"]["kto"] = _stage_metrics(trainer, res, t0, len(kto_rows))
        progress(f"student {stage}: {metrics['stages'][stage]}")
        model = trainer.model
        if stage == "sft" and any(x in PREFERENCE_STAGES for x in hp.stages[hp.stages.index("sft") + 1:]):
            model.save_pretrained(str(out / REFERENCE))  # the reference of the preference stage that follows
            metrics["reference"] = REFERENCE
    _drop_ref_adapter(model)
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    seconds = time.perf_counter() - t_start
    (out / "tracelake_student.json").write_text(json.dumps({
        "base_model": base_model, "recipe_version": RECIPE_VERSION, "hyperparameters": json.loads(hp.to_json()),
        "device": device, "dtype": dtype, "metrics": metrics, "train_seconds": round(seconds, 1),
    }, indent=2, sort_keys=True))
    for stage in STAGES:  # trainer scratch folders (no checkpoints are saved)
        import shutil

        shutil.rmtree(out / f"_{stage}", ignore_errors=True)
    return TrainResult(model=model, tokenizer=tok, metrics=metrics, seconds=seconds)


def attach_reference(model, adapter_dir: str | os.PathLike) -> bool:
    """Load the reference saved beside a trained adapter (``reference/``: the SFT model the
    preference stages started from) as the frozen adapter ``reference``; the trained one
    stays active. False when there is none (the reference is the base model)."""
    ref = Path(adapter_dir) / REFERENCE
    if not (ref / "adapter_config.json").exists():
        return False
    model.load_adapter(str(ref), adapter_name=REFERENCE)
    model.set_adapter("default")
    return True


def load_trained(base_model: str, adapter_dir: str | os.PathLike, device: str = "cpu", dtype: str = "float32"):
    """(tokenizer, peft model) from a saved adapter directory, its reference attached."""
    from peft import PeftModel

    tok, model = load_base(base_model, device, dtype)
    model = PeftModel.from_pretrained(model, str(adapter_dir))
    attach_reference(model, adapter_dir)
    model.eval()
    return tok, model
