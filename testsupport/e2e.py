"""Helpers shared by the end-to-end tests and the fault suite (no Dagster import here)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
INGEST_ALL = Path(__file__).resolve().parent / "ingest_all.py"
SAMPLES = ROOT / "assets" / "traces" / "samples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_samples(dest: Path, limit: int | None = None) -> list[Path]:
    """Copy the bundled sample sessions (their sub-folders kept) into ``dest``."""
    out = []
    files = sorted(p for p in SAMPLES.rglob("*") if p.is_file() and p.suffix in (".jsonl", ".json"))
    for p in files[:limit]:
        target = dest / p.relative_to(SAMPLES)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, target)
        out.append(target)
    return out


def physical_lines(path: Path) -> int:
    """Lines of the file in its encoding: split on \\n, a final unterminated piece counts.
    A file with a UTF-16 byte-order mark is counted in UTF-16 (its newline is two bytes)."""
    data = path.read_bytes()
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        text = data.decode("utf-16")
        return text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    if not data:
        return 0
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def fake_teacher_pool(path: Path, url: str, *, key_env: str = "FAKE_TEACHER_KEY",
                      name: str = "fake-http", timeout: float = 2.0, max_attempts: int = 4,
                      flush_rows: int = 256, flush_seconds: float = 0.5) -> Path:
    """A teacher pool YAML with one OpenAI-compatible teacher at ``url`` (a loopback server)."""
    path.write_text(
        f"""budget_usd: 5.0
cache:
  flush_seconds: {flush_seconds}
  flush_rows: {flush_rows}
teachers:
  - name: {name}
    provider: openai_compatible
    base_url: {url}
    model: fake/teacher-1
    api_key_env: {key_env}
    max_concurrency: 4
    price_input_per_mtok: 1.0
    price_output_per_mtok: 2.0
    max_attempts: {max_attempts}
    backoff_base: 0.05
    backoff_max: 0.5
    max_retry_after: 2
    timeout: {timeout}
    max_tokens: 64
""",
        encoding="utf-8",
    )
    return path


def base_env(**extra: str) -> dict[str, str]:
    """The test process environment minus anything that configures tracelake or a cloud."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TRACELAKE_", "AWS_", "GOOGLE_", "AZURE_", "DAGSTER_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run_ingest(env: dict[str, str], cwd: Path, *args: str, timeout: float = 300,
               log: Path | None = None) -> tuple[int, dict, str]:
    """Run testsupport/ingest_all.py in a subprocess; (returncode, RESULT json, output)."""
    proc = subprocess.run([PYTHON, str(INGEST_ALL), *args], cwd=cwd, env=env, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="backslashreplace")
    out = proc.stdout
    if log is not None:
        log.write_text(out, encoding="utf-8")
    result = {}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
    return proc.returncode, result, out


def start_ingest(env: dict[str, str], cwd: Path, *args: str, log: Path) -> subprocess.Popen:
    """Start ingest_all.py in its own process group (so kill -9 takes all of it)."""
    fh = open(log, "wb")
    return subprocess.Popen([PYTHON, str(INGEST_ALL), *args], cwd=cwd, env=env, stdout=fh,
                            stderr=subprocess.STDOUT, start_new_session=True)


def kill9(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


def wait_for(pred, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
