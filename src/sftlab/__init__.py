"""sftlab: instruction tuning (SFT) of language models, from data to evaluated model.

Importing sftlab changes nothing in the process. The `sftlab` command sets GOMP_SPINCOUNT=1000 before
torch loads (sftlab.speed.configure_openmp; API users call it themselves, before importing torch).
"""

__version__ = "0.1.0"


def version() -> str:
    """The installed distribution's version (importlib.metadata); the package's own when not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("sftlab")
    except PackageNotFoundError:
        return __version__
