"""The session source: where session files live and which key each one has.

A session file's key is its path relative to the watched directory with "/" written as
"~" (stable, readable in the UI) and the user names in it pseudonymized
(:class:`SessionNames`): Claude Code names its project folders after the working
directory (``-Users-jane-proj``), so the raw path would carry the user's name into every
table, the registry, run config and logs. Symlinks that lead outside the watched directory
are ignored.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import dagster as dg
from pydantic import Field

from resources import settings

SEP = "~"
SESSION_SUFFIXES = (".jsonl", ".json", ".traj")  # which format a file holds is read from its content


def session_key_for(relpath: str) -> str:
    return relpath.replace(os.sep, "/").strip("/").replace("/", SEP)


_CWD = re.compile(rb'"cwd"\s*:\s*"(?:[A-Za-z]:)?(?:\\\\|/)+(?:Users|home)(?:\\\\|/)+([^\\/"]{1,64})')
HINT_FILES = 3  # files of a dashed home folder whose head is read for the user's name
HINT_BYTES = 64 * 1024


class SessionNames:
    """The names a session file is stored under, and back.

    ``stored(relpath)``: the path relative to the root with the user names of its folders
    pseudonymized with the home-directory rule of the personal-data policy (the pseudonym
    ``/Users/jane`` gets in the text: ``-Users-jane-proj`` -> ``-Users-user_3f9a2c1b-proj``).
    Deterministic for a lake (its salt), so the same file keeps its key across ticks, runs
    and processes; only stored names leave this object (registry, keys, run config, logs).
    ``real(stored)``: the file's real relative path (each pseudonymized folder is found by
    listing its parent once; listings are kept while the parent's mtime is unchanged).

    Where a user name ends in a dashed folder name cannot be read from the dashes
    (``Jane_Smith`` is written ``Jane-Smith``): the ``"cwd"`` Claude Code writes in the
    head of the folder's files tells (then the key matches the text's pseudonym exactly);
    else a name known to the policy or this machine; else the name up to its first "-".
    """

    def __init__(self, root: str | os.PathLike, pseudonymizer=None):
        self.root = Path(root)
        self.pii = pseudonymizer if pseudonymizer is not None and "home_user" in pseudonymizer.policy.enabled \
            else None
        self._lock = threading.Lock()
        self._comp: dict[str, tuple[int, str]] = {}  # real rel of a dashed folder -> (mtime, stored name)
        self._listing: dict[str, tuple[int, dict[str, str]]] = {}  # real dir rel -> (mtime, stored -> real)

    @classmethod
    def for_lake(cls, root: str | os.PathLike, lake_root: str | None) -> "SessionNames":
        """The names of the sessions under ``root`` as the lake at ``lake_root`` stores them
        (one object per process and pair, so its listings are reused from tick to tick)."""
        from resources import privacy

        p = privacy.for_lake(lake_root)
        want = p.pii if p.pii is not None and "home_user" in p.pii.policy.enabled else None
        k = (str(root), lake_root)
        with _NAMES_LOCK:
            n = _NAMES.get(k)
            if n is None or n.pii is not want:  # another scrubber now (configure(), a new policy)
                if len(_NAMES) > 64:
                    _NAMES.clear()
                n = _NAMES[k] = cls(root, p.pii)
            return n

    @property
    def identity(self) -> bool:
        return self.pii is None

    # ------------------------------------------------------------------ real -> stored
    def stored(self, relpath: str) -> str:
        if self.pii is None:
            return relpath
        parts = relpath.split("/")
        out = []
        for i, comp in enumerate(parts):
            out.append(self._component("/".join(parts[: i + 1]), parts[i - 1] if i else None, comp))
        return "/".join(out)

    def key(self, relpath: str) -> str:
        return session_key_for(self.stored(relpath))

    def child(self, stored_parent: str, real_parent: str, name: str) -> str:
        """The stored path of ``name`` inside a folder whose stored and real paths are known
        (a listing: one component looked at, not the whole path)."""
        real = f"{real_parent}/{name}" if real_parent else name
        if self.pii is None:
            return real
        comp = self._component(real, real_parent.rpartition("/")[2] if real_parent else None, name)
        return f"{stored_parent}/{comp}" if stored_parent else comp

    def _component(self, real_rel: str, parent: str | None, comp: str) -> str:
        pii = self.pii
        if parent in ("Users", "home") and pii._user_name(comp):
            return pii.pseudonym("home_user", comp)
        if "Users-" not in comp and "home-" not in comp:
            return comp
        try:
            mtime = os.stat(self.root / real_rel).st_mtime_ns
        except OSError:
            mtime = -1
        hit = self._comp.get(real_rel)
        if hit is not None and hit[0] == mtime:
            return hit[1]
        out = pii.dashed_home(comp, self._users_of(self.root / real_rel)) or comp
        with self._lock:
            if len(self._comp) > 100_000:
                self._comp.clear()
            self._comp[real_rel] = (mtime, out)
        return out

    @staticmethod
    def _users_of(path: Path) -> list[str]:
        """User names in the ``"cwd"`` of the first files of a folder (or of a file)."""
        try:
            if path.is_dir():
                files = sorted(e.path for e in os.scandir(path) if e.name.endswith(SESSION_SUFFIXES)
                               and e.is_file())[:HINT_FILES]
            else:
                files = [str(path)]
        except OSError:
            return []
        names: list[str] = []
        for f in files:
            try:
                with open(f, "rb") as fh:
                    head = fh.read(HINT_BYTES)
            except OSError:
                continue
            for m in _CWD.finditer(head):
                name = m.group(1).decode("utf-8", "replace")
                if name not in names:
                    names.append(name)
        return names

    # ------------------------------------------------------------------ stored -> real
    def real(self, stored: str) -> str | None:
        """The real relative path of a stored one (None: no such file or folder now)."""
        if self.pii is None:
            return stored
        cur: list[str] = []
        for comp in stored.split("/"):
            parent = cur[-1] if cur else None
            rel = "/".join(cur + [comp])
            if (self.root / rel).exists() and self._component(rel, parent, comp) == comp:
                cur.append(comp)
                continue
            name = self._listed("/".join(cur), parent).get(comp)
            if name is None:
                return None
            cur.append(name)
        return "/".join(cur)

    def _listed(self, dir_rel: str, dir_name: str | None) -> dict[str, str]:
        full = self.root / dir_rel if dir_rel else self.root
        try:
            mtime = os.stat(full).st_mtime_ns
        except OSError:
            return {}
        hit = self._listing.get(dir_rel)
        if hit is not None and hit[0] == mtime:
            return hit[1]
        try:
            names = [e.name for e in os.scandir(full)]
        except OSError:
            return {}
        m = {}
        for n in names:
            rel = f"{dir_rel}/{n}" if dir_rel else n
            m.setdefault(self._component(rel, dir_name, n), n)
        with self._lock:
            if len(self._listing) > 10_000:
                self._listing.clear()
            self._listing[dir_rel] = (mtime, m)
        return m


_NAMES: dict[tuple, SessionNames] = {}
_NAMES_LOCK = threading.Lock()


@dataclass(frozen=True)
class SessionFile:
    key: str
    path: Path
    size: int
    mtime_ns: int


class SessionSource(dg.ConfigurableResource):
    """Where session files live. Point ``root`` at ``~/.claude/projects`` to ingest Claude Code."""

    root: str = Field(default=settings.SESSIONS_DIR, description="Directory watched recursively.")
    max_files_per_tick: int = Field(default=1000, description="Files one sensor tick hands to its run at most.")
    max_bytes_per_tick: int = Field(default=256 * 1024 * 1024,
                                    description="Bytes one sensor tick hands to its run at most (one file more if "
                                                "a single file is bigger).")
    max_span_days: int = Field(default=7, description="Days one tick's run covers at most (a run over a date "
                                                      "range records every day of it); other days wait.")
    hot_seconds: float = Field(default=900.0, description="Files modified this recently are statted every tick.")
    sweep_files_per_tick: int = Field(default=2000,
                                      description="Cold files statted per tick, in turn (finds in-place edits of "
                                                  "old files within a full sweep).")

    def root_path(self) -> Path:
        return Path(os.path.expanduser(self.root)).resolve()

    def names(self, lake_root: str | None = None) -> SessionNames:
        """How the lake at ``lake_root`` (default: the configured one) names these files."""
        return SessionNames.for_lake(self.root_path(), lake_root)

    def scan(self, lake_root: str | None = None) -> Iterator[SessionFile]:
        """Every session file under the root, keyed as the lake at ``lake_root`` stores it."""
        root = self.root_path()
        if not root.is_dir():
            return
        names = self.names(lake_root)
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames):
                if not name.endswith(SESSION_SUFFIXES):
                    continue
                p = Path(dirpath) / name
                f = self._inside(p, root, names)
                if f is not None:
                    yield f

    def _inside(self, p: Path, root: Path, names: SessionNames) -> SessionFile | None:
        try:
            real = p.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not real.is_relative_to(root) or not real.is_file():
            return None  # a symlink that leads outside the watched directory
        st = real.stat()
        rel = p.relative_to(root).as_posix()
        return SessionFile(names.key(rel), p, st.st_size, st.st_mtime_ns)

    def path_for(self, key: str, lake_root: str | None = None) -> Path | None:
        """The file of a session key, or None if it is gone (or not under the root)."""
        root = self.root_path()
        names = self.names(lake_root)
        real = names.real(key.replace(SEP, "/"))
        if real is not None:
            f = self._inside(root / real, root, names)
            if f is not None and f.key == key:
                return f.path
        for f in self.scan(lake_root):  # keys of names that contain "~" themselves
            if f.key == key:
                return f.path
        return None
