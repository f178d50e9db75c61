"""Safe, offline data-juicer: block its runtime installer, then load the op registry.

data-juicer pip-installs any missing module at run time (an unpinned ``uv pip install``
that can pull a multi-GB CUDA torch). :func:`block_runtime_installs` replaces that
installer with one that raises ``ImportError``; it must run before any op is loaded, so
every entry point here calls it first.
"""

from __future__ import annotations

import threading

_LOCK = threading.Lock()
_READY = False


class RuntimeInstallBlocked(ImportError):
    pass


def _no_install(cls, package_spec, pip_args=None):
    raise RuntimeInstallBlocked(
        f"data-juicer tried to install {package_spec!r} at run time; tracelake never installs "
        "packages at run time: add it to the project's dependencies instead")


def block_runtime_installs() -> None:
    from data_juicer.utils.lazy_loader import LazyLoader

    if getattr(LazyLoader._install_package, "__func__", None) is not _no_install:
        LazyLoader._install_package = classmethod(_no_install)


def ensure_data_juicer():
    """Block installs, import data-juicer's ops and register ours. Returns the registry."""
    global _READY
    with _LOCK:
        block_runtime_installs()
        if not _READY:
            import data_juicer.ops  # noqa: F401  (registers the built-in ops)

            import assets.pairs.dj_ops  # noqa: F401  (registers ours)

            _READY = True
    from data_juicer.ops.base_op import OPERATORS

    return OPERATORS
