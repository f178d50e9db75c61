"""tracelake's own data-juicer ops, registered by name like the built-ins.

- ``chat_template_validation_filter``: renders prompt+chosen and prompt+rejected with the
  verifier tokenizer's chat template; drops pairs with invalid roles, render errors, too
  many tokens, a prompt rendering that is not a prefix of the full rendering, or chosen
  and rejected that render identically.
- ``offline_language_id_filter``: lingua (models in its wheel) over a short language list,
  plus a rule for source code (lingua never answers "unknown").
- ``semantic_disagreement_filter``: MiniLM cosine between chosen and rejected; drops
  "false disagreements" above ``max_similarity``.
- ``pair_validity_filter``: the pair validity rules (assets/pairs/validity.py): the
  rejected original of an error-site pair is a mistake, the chosen answer is a valid action
  (an offered tool with schema-valid arguments, or substantive text; not the call the
  context just answered; no tool call left as text). Drops carry the rule's name.

Ops keep only plain values as attributes (models live in module caches), so data-juicer
can fingerprint them cheaply. Each op has ``drop_reason(stats)`` for pair_rejections.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from assets.pairs.dj_env import block_runtime_installs

block_runtime_installs()

from data_juicer.ops.base_op import OPERATORS, Filter
from data_juicer.utils.constant import Fields

from assets.pairs.messages import ROLES, loads
from resources import settings

_TOK_LOCK = threading.Lock()


def _require_fields(samples, op: str, *fields: str) -> None:
    """data-juicer's nested dicts answer None for a missing key: fail loudly instead."""
    missing = [f for f in fields if f not in samples]
    if missing:
        raise KeyError(f"{op}: the samples have no field(s) {missing}")


# ----------------------------------------------------------------- tokenizer cache

def _cache_root() -> Path:
    return settings.tokenizer_cache_dir()


class ChatTokenizer:
    """A chat template + a fast tokenizer, without importing torch or the Auto classes.

    Renders with transformers' own ``render_jinja_template`` (what ``apply_chat_template``
    calls, with the special tokens as template variables) and counts tokens with the
    ``tokenizers`` library — the same text and ids as the HF tokenizer, ~10x faster to load.
    """

    def __init__(self, tk, chat_template: str, special: dict[str, str]):
        self.tk, self.chat_template, self.special = tk, chat_template, special

    @classmethod
    def from_dir(cls, directory: str | Path) -> ChatTokenizer | None:
        from tokenizers import Tokenizer

        d = Path(directory)
        if not (d / "tokenizer.json").is_file():
            return None
        cfg = json.loads((d / "tokenizer_config.json").read_text()) if (d / "tokenizer_config.json").is_file() else {}
        template = cfg.get("chat_template")
        if (d / "chat_template.jinja").is_file():
            template = (d / "chat_template.jinja").read_text()
        if isinstance(template, list):  # named templates: the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        special = {}
        for name in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
            v = cfg.get(name)
            v = v.get("content") if isinstance(v, dict) else v
            if isinstance(v, str):
                special[name] = v
        return cls(Tokenizer.from_file(str(d / "tokenizer.json")), template or "", special)

    @classmethod
    def from_hf(cls, tok) -> ChatTokenizer:
        from tokenizers import Tokenizer

        backend = getattr(tok, "backend_tokenizer", None) or getattr(tok, "_tokenizer", None)
        if not isinstance(backend, Tokenizer):
            raise ValueError(f"{type(tok).__name__} has no fast (tokenizers) backend")
        special = {k: v for k, v in tok.special_tokens_map.items() if isinstance(v, str)}
        return cls(backend, tok.chat_template or "", special)

    def apply_chat_template(self, messages: list[dict], tools: list[dict] | None = None,
                            add_generation_prompt: bool = False) -> str:
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template(conversations=[messages], tools=tools,
                                            chat_template=self.chat_template,
                                            add_generation_prompt=add_generation_prompt, **self.special)
        return rendered[0]

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self.tk.encode_batch(texts, add_special_tokens=False)]


@functools.lru_cache(maxsize=4)
def load_tokenizer(ref: str) -> ChatTokenizer:
    """The chat tokenizer of a model reference (resources.models.ModelRef), offline.

    A GGUF tokenizer is converted once by transformers (tens of seconds) and saved under
    ``$TRACELAKE_CACHE_DIR/tokenizers`` (keyed by file size and mtime); later loads read
    that directory with ``tokenizers`` only.
    """
    from resources.models import ModelRef

    directory, gguf = ModelRef(ref).resolve()
    if not gguf:
        light = ChatTokenizer.from_dir(directory)
        if light is not None:
            return light
        from transformers import AutoTokenizer

        return ChatTokenizer.from_hf(AutoTokenizer.from_pretrained(directory, local_files_only=True))
    src = Path(directory) / gguf
    st = src.stat()
    key = hashlib.sha256(f"{src.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:16]
    cached = _cache_root() / "tokenizers" / f"{Path(gguf).stem}-{key}"
    with _TOK_LOCK:
        light = ChatTokenizer.from_dir(cached)
        if light is not None:
            return light
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(directory, gguf_file=gguf, local_files_only=True)
        tmp = None
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=cached.parent))
            tok.save_pretrained(str(tmp))
            tmp.chmod(0o755)
            os.replace(tmp, cached)
        except OSError:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        return ChatTokenizer.from_dir(cached) or ChatTokenizer.from_hf(tok)


# -------------------------------------------------------------- chat template op

def role_problems(prompt: Any, answer: Any) -> str:
    """'' when prompt + [answer] is a valid chat for a template, else what is wrong."""
    if not isinstance(prompt, list) or not prompt:
        return "prompt is not a non-empty message list"
    if not isinstance(answer, list) or len(answer) != 1 or not isinstance(answer[0], dict):
        return "answer is not exactly one message"
    if answer[0].get("role") != "assistant":
        return f"answer role is {answer[0].get('role')!r}, not 'assistant'"
    msgs = prompt + answer
    open_calls: set[str] = set()
    prev = None
    for i, m in enumerate(msgs):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ROLES:
            return f"message {i} has invalid role {role!r}"
        if not isinstance(m.get("content", ""), str):
            return f"message {i} content is not a string"
        if role == "system" and i != 0:
            return f"system message at position {i}"
        if role == "tool":
            if prev not in ("assistant_calls", "tool"):
                return f"tool message {i} does not follow an assistant tool call"
            tcid = m.get("tool_call_id")
            if tcid and open_calls and tcid not in open_calls:
                return f"tool message {i} answers unknown tool_call_id {tcid!r}"
        if role == "assistant":
            calls = m.get("tool_calls") or []
            open_calls = {c.get("id") for c in calls if isinstance(c, dict) and c.get("id")}
            for c in calls:
                if not isinstance(c, dict) or not (c.get("function") or {}).get("name"):
                    return f"message {i} has a tool call without a function name"
                args = c["function"].get("arguments")
                if not isinstance(args, str):
                    return f"message {i} tool call arguments are not a JSON string"
                try:
                    json.loads(args)
                except ValueError:
                    return f"message {i} tool call arguments are not valid JSON"
            prev = "assistant_calls" if calls else "assistant"
        else:
            prev = role
    return ""


def _inline_tool_calls(msgs: list[dict]) -> list[dict]:
    """For templates without tool support: tool calls as Hermes-style text in content."""
    out = []
    for m in msgs:
        calls = m.get("tool_calls")
        if not calls:
            out.append(m)
            continue
        text = [m.get("content") or ""]
        for c in calls:
            fn = c.get("function", {})
            text.append("<tool_call>\n" + json.dumps({"name": fn.get("name"),
                                                      "arguments": fn.get("arguments")},
                                                     ensure_ascii=False) + "\n</tool_call>")
        out.append({k: v for k, v in m.items() if k != "tool_calls"} | {"content": "\n".join(t for t in text if t)})
    return out


@OPERATORS.register_module("chat_template_validation_filter")
class ChatTemplateValidationFilter(Filter):
    """Keep pairs whose prompt+chosen and prompt+rejected render with the verifier's
    chat template: valid roles, no render error, at most ``max_tokens`` tokens, the prompt
    rendering a prefix of the full one, and chosen/rejected rendering differently."""

    _batched_op = True
    STATS = ("ct_error", "ct_tokens", "ct_prefix_ok", "ct_distinct")

    def __init__(self, tokenizer: str = "smollm2-135m", prompt_field: str = "prompt",
                 chosen_field: str = "chosen", rejected_field: str = "rejected",
                 tools_field: str = "tools", max_tokens: int = 32768,
                 require_prefix: bool = True, require_distinct: bool = True,
                 inline_tool_calls: str = "auto", *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tokenizer = str(tokenizer)
        self.prompt_field, self.chosen_field = prompt_field, chosen_field
        self.rejected_field, self.tools_field = rejected_field, tools_field
        self.max_tokens = int(max_tokens)
        self.require_prefix, self.require_distinct = bool(require_prefix), bool(require_distinct)
        if inline_tool_calls not in ("auto", "always", "never", True, False):
            raise ValueError("inline_tool_calls must be auto | always | never")
        self.inline_tool_calls = inline_tool_calls
        tok = load_tokenizer(self.tokenizer)
        if not getattr(tok, "chat_template", None):
            raise ValueError(f"tokenizer {self.tokenizer!r} has no chat template")

    def _inline(self, tok) -> bool:
        if self.inline_tool_calls in ("always", True):
            return True
        if self.inline_tool_calls in ("never", False):
            return False
        return "tool_calls" not in (tok.chat_template or "")

    def check(self, prompt_json: str, chosen_json: str, rejected_json: str,
              tools_json: str | None) -> dict:
        tok = load_tokenizer(self.tokenizer)
        stats: dict = {"ct_error": "", "ct_tokens": 0, "ct_prefix_ok": False, "ct_distinct": False}
        try:
            prompt, chosen, rejected = loads(prompt_json), loads(chosen_json), loads(rejected_json)
            tools = loads(tools_json, None)
        except ValueError as exc:
            stats["ct_error"] = f"invalid JSON: {exc}"
            return stats
        for label, ans in (("chosen", chosen), ("rejected", rejected)):
            problem = role_problems(prompt, ans)
            if problem:
                stats["ct_error"] = f"roles ({label}): {problem}"
                return stats
        inline = self._inline(tok)
        conv = _inline_tool_calls if inline else (lambda m: m)
        kw = {"tools": tools} if tools and not inline else {}
        try:
            p = tok.apply_chat_template(conv(prompt), add_generation_prompt=True, **kw)
            fc = tok.apply_chat_template(conv(prompt + chosen), **kw)
            fr = tok.apply_chat_template(conv(prompt + rejected), **kw)
        except Exception as exc:  # a template error is a property of this row
            stats["ct_error"] = f"template: {type(exc).__name__}: {str(exc)[:300]}"
            return stats
        stats["ct_tokens"] = max(tok.count_tokens([fc, fr]))
        stats["ct_prefix_ok"] = fc.startswith(p) and fr.startswith(p)
        stats["ct_distinct"] = fc != fr
        return stats

    def compute_stats_batched(self, samples):
        _require_fields(samples, self._name, self.prompt_field, self.chosen_field, self.rejected_field)
        stats = samples[Fields.stats]
        tools = samples[self.tools_field] if self.tools_field in samples else [None] * len(stats)
        for i, st in enumerate(stats):
            if "ct_error" in st:
                continue
            st.update(self.check(samples[self.prompt_field][i], samples[self.chosen_field][i],
                                 samples[self.rejected_field][i], tools[i]))
        return samples

    def keep(self, st: dict) -> bool:
        return (not st["ct_error"] and st["ct_tokens"] <= self.max_tokens
                and (st["ct_prefix_ok"] or not self.require_prefix)
                and (st["ct_distinct"] or not self.require_distinct))

    def process_batched(self, samples):
        return map(self.keep, samples[Fields.stats])

    def drop_reason(self, st: dict) -> str:
        if st.get("ct_error"):
            return st["ct_error"]
        if st.get("ct_tokens", 0) > self.max_tokens:
            return f"ct_tokens={st['ct_tokens']} > max_tokens={self.max_tokens}"
        if self.require_prefix and not st.get("ct_prefix_ok"):
            return "the rendered prompt is not a prefix of prompt+answer (DPO would mis-split)"
        if self.require_distinct and not st.get("ct_distinct"):
            return "chosen and rejected render identically under the verifier's chat template"
        return "kept"


# --------------------------------------------------------------- language ID op

_FENCE = re.compile(r"```.*?(?:```|$)", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_CODE_LINE = re.compile(
    r"""^\s*(?:
        (?:def|class|import|from|return|async|await|function|const|let|var|export|public|private|
           package|func|fn|use|impl|struct|enum|interface|\#include|\#!|SELECT|INSERT|UPDATE|CREATE)\b
      | [\$>]{1,3}\s           # shell prompt / REPL
      | [{}\[\]()<>\#@/]       # braces, tags, comments, decorators, paths
      | \w+\s*(?:=|\+=|:=|==)\s*\S   # assignment
      | \w+(?:\.\w+)*\([^)]*\)\s*[;:{]?\s*$   # call
    )|[;{}]\s*$""",
    re.VERBOSE,
)
_HEADING = re.compile(r"^\s*#{1,6}\s+[^\W\d_]")  # markdown heading, not code
_LINGUA_LOCK = threading.Lock()


def code_ratio(text: str) -> tuple[float, str]:
    """(share of characters that are code, the remaining prose)."""
    total = len(text.strip())
    if not total:
        return 0.0, ""
    code_chars = 0
    for m in _FENCE.findall(text):
        code_chars += len(m)
    rest = _FENCE.sub("\n", text)
    code_chars += sum(len(m) for m in _INLINE_CODE.findall(rest))
    rest = _INLINE_CODE.sub(" ", rest)
    prose = []
    for line in rest.splitlines():
        s = line.strip()
        if not s:
            continue
        letters = sum(ch.isalpha() for ch in s)
        symbols = sum((not ch.isalnum()) and not ch.isspace() for ch in s)
        if _HEADING.match(line):
            prose.append(s.lstrip("#").strip())
            continue
        if _CODE_LINE.match(line) or (len(s) >= 8 and symbols / len(s) > 0.3) \
                or letters / len(s) < 0.4:
            code_chars += len(s)
        else:
            prose.append(s)
    return min(1.0, code_chars / total), "\n".join(prose)


_RAYON_PID: int | None = None  # the process whose rayon thread pool lingua started


def _confidences(languages: tuple[str, ...], texts: list[str]) -> list:
    """lingua confidence values; in parallel unless this is a fork of the process that
    started lingua's thread pool (a forked child has no pool threads: it would hang, e.g.
    under data-juicer's executor, whose datasets map forks even for num_proc=1)."""
    global _RAYON_PID
    det = _detector(languages, os.getpid())
    with _LINGUA_LOCK:
        if _RAYON_PID in (None, os.getpid()):
            _RAYON_PID = os.getpid()
            return det.compute_language_confidence_values_in_parallel(texts)
        return [det.compute_language_confidence_values(t) for t in texts]


@functools.lru_cache(maxsize=8)
def _detector(languages: tuple[str, ...], pid: int | None = None):
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    codes = [getattr(IsoCode639_1, c.upper()) for c in languages]
    return LanguageDetectorBuilder.from_iso_codes_639_1(*codes).build()


@OPERATORS.register_module("offline_language_id_filter")
class OfflineLanguageIdFilter(Filter):
    """Language of the text by lingua (offline) over ``languages``; keep ``keep``.

    Labels: an ISO 639-1 code; ``code`` when at least ``code_threshold`` of the text is
    source code (or the prose left after removing code is too short and code was there);
    ``und`` when the prose is shorter than ``min_chars`` or lingua's confidence is below
    ``min_score`` (lingua always names *some* language, so low confidence means unknown).
    """

    _batched_op = True

    def __init__(self, languages: Sequence[str] = ("en", "zh", "de", "fr", "es", "ja", "ru"),
                 keep: Sequence[str] = ("en", "code", "und"), min_score: float = 0.5,
                 min_chars: int = 20, code_threshold: float = 0.5, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.languages = tuple(str(c).lower() for c in languages)
        self.keep_labels = tuple(str(c).lower() for c in keep)
        self.min_score, self.min_chars = float(min_score), int(min_chars)
        self.code_threshold = float(code_threshold)
        _detector(self.languages)  # fail early on an unknown code

    def label(self, text: str) -> dict:
        ratio, prose = code_ratio(text or "")
        st = {"offline_lang": "und", "offline_lang_score": 0.0, "offline_code_ratio": round(ratio, 4)}
        if ratio >= self.code_threshold or (ratio > 0 and len(prose) < self.min_chars):
            st["offline_lang"] = "code"
            return st
        if len(prose) < self.min_chars:
            return st
        return st | {"_prose": prose}

    def compute_stats_batched(self, samples):
        _require_fields(samples, self._name, self.text_key)
        stats = samples[Fields.stats]
        todo = []
        for i, st in enumerate(stats):
            if "offline_lang" in st:
                continue
            res = self.label(samples[self.text_key][i])
            prose = res.pop("_prose", None)
            st.update(res)
            if prose is not None:
                todo.append((i, prose))
        if todo:
            values = _confidences(self.languages, [p for _, p in todo])
            for (i, _), vals in zip(todo, values):
                top = vals[0] if vals else None
                if top is not None:
                    stats[i]["offline_lang_score"] = round(float(top.value), 4)
                    if top.value >= self.min_score:
                        stats[i]["offline_lang"] = top.language.iso_code_639_1.name.lower()
        return samples

    def process_batched(self, samples):
        return map(lambda st: st["offline_lang"] in self.keep_labels, samples[Fields.stats])

    def drop_reason(self, st: dict) -> str:
        return (f"language {st.get('offline_lang')!r} (score {st.get('offline_lang_score')}) "
                f"not in {list(self.keep_labels)}")


# ------------------------------------------------------ semantic disagreement op

_TORCH_PID: int | None = None  # the process that first ran the embedder


def _embed(texts: list[str]):
    from resources.embeddings import embed_texts

    return embed_texts(texts)


@OPERATORS.register_module("semantic_disagreement_filter")
class SemanticDisagreementFilter(Filter):
    """Drop pairs whose chosen and rejected say the same thing (MiniLM cosine ≥ max)."""

    _batched_op = True

    def __init__(self, chosen_field: str = "chosen_text", rejected_field: str = "rejected_text",
                 max_similarity: float = 0.9, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.chosen_field, self.rejected_field = chosen_field, rejected_field
        self.max_similarity = float(max_similarity)

    def compute_stats_batched(self, samples):
        _require_fields(samples, self._name, self.chosen_field, self.rejected_field)
        stats = samples[Fields.stats]
        idx = [i for i, st in enumerate(stats) if "chosen_rejected_cosine" not in st]
        if idx:
            texts = [samples[self.chosen_field][i] or "" for i in idx] + \
                    [samples[self.rejected_field][i] or "" for i in idx]
            vecs = _embed(texts)
            n = len(idx)
            for k, i in enumerate(idx):
                stats[i]["chosen_rejected_cosine"] = round(float(vecs[k] @ vecs[n + k]), 4)
        return samples

    def process_batched(self, samples):
        return map(lambda st: st["chosen_rejected_cosine"] < self.max_similarity, samples[Fields.stats])

    def drop_reason(self, st: dict) -> str:
        return (f"false disagreement: chosen/rejected cosine {st.get('chosen_rejected_cosine')} "
                f">= max_similarity {self.max_similarity}")


@OPERATORS.register_module("pair_validity_filter")
class PairValidityFilter(Filter):
    """Drop pairs that would teach the wrong thing (assets/pairs/validity.py); the reason
    names the rule. ``rules``: the subset of validity rules to apply (default: all)."""

    _batched_op = True

    def __init__(self, rules: Sequence[str] | None = None, min_text_chars: int = 30,
                 check_schema: bool = True, max_repetition: float = 0.3,
                 text_fixes: Sequence[str] | None = None, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from assets.pairs.validity import RULES, ValidityConfig

        self.rules = tuple(rules) if rules else RULES
        self.min_text_chars = int(min_text_chars)
        self.check_schema = bool(check_schema)
        self._config = ValidityConfig(self.rules, self.min_text_chars, self.check_schema,
                                      float(max_repetition),
                                      ValidityConfig.text_fixes if text_fixes is None else tuple(text_fixes))

    def compute_stats_batched(self, samples):
        from assets.pairs.validity import check_row

        _require_fields(samples, self._name, "prompt", "chosen", "rejected")
        stats = samples[Fields.stats]
        n = len(stats)
        col = lambda f: samples[f] if f in samples else [None] * n  # noqa: E731
        tools, strategy, failure = col("tools"), col("strategy"), col("rejected_failure")
        preset, preset_reason = col("invalid_rule"), col("invalid_reason")
        for i, st in enumerate(stats):
            if "validity_rule" in st:
                continue
            if (preset[i] or "").startswith("judge_"):  # the pair judge did not confirm it
                st["validity_rule"], st["validity_reason"] = preset[i], preset_reason[i] or ""
                continue
            v = check_row({"prompt": samples["prompt"][i], "chosen": samples["chosen"][i],
                           "rejected": samples["rejected"][i], "tools": tools[i] or None,
                           "strategy": strategy[i], "rejected_failure": failure[i] or None}, self._config)
            st["validity_rule"] = v.rule if v else ""
            st["validity_reason"] = v.reason if v else ""
        return samples

    def process_batched(self, samples):
        return map(lambda st: not st["validity_rule"], samples[Fields.stats])

    def drop_reason(self, st: dict) -> str:
        return f"{st.get('validity_rule')}: {st.get('validity_reason')}"
