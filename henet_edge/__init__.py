"""henet-edge: train HENet in Keras, convert to TFLite, run it on a Raspberry Pi."""

__version__ = "0.1.0"


class HenetEdgeError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits 1."""


class UsageError(HenetEdgeError):
    """A command line that cannot work as given: the CLI shows it with the usage, exit 2."""


class OutputExistsError(HenetEdgeError):
    """An output path that exists and would be replaced without ``--force``."""


def refuse_existing(path, force: bool = False) -> None:
    """Raise :class:`OutputExistsError` if ``path`` exists and ``force`` is not given."""
    import os

    if not force and os.path.lexists(path):
        raise OutputExistsError(f"{path}: already exists (use --force to replace it)")
