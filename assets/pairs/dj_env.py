"""Safe, offline data-juicer: block its runtime installer, then load the op registry.

data-juicer pip-installs any missing module at run time (an unpinned ``uv pip install``
that can pull a multi-GB CUDA torch). :func:`block_runtime_installs` replaces that
installer with one that raises ``ImportError``; it must run before any op is loaded, so
every entry point calls it first (``assets.pairs.normalize.ensure_data_juicer`` and the
ops module ``assets.pairs.dj_ops`` itself).
"""

from __future__ import annotations


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
