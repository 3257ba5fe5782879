"""henet-edge: train HENet in Keras, convert to TFLite, run it on a Raspberry Pi."""

__version__ = "0.1.0"


class HenetEdgeError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits 1."""


class UsageError(HenetEdgeError):
    """A command line that cannot work as given: the CLI shows it with the usage, exit 2."""


class OutputFileError(HenetEdgeError):
    """An output file that exists (and no ``--force``) or that could not be written."""


def check_output_file(path, force: bool = False) -> None:
    """Refuse, before any slow work, an output file that exists (unless ``force``), is a
    folder, or could not be written: its nearest existing folder must take a new file."""
    import os
    import tempfile
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        raise OutputFileError(f"{path}: is a folder; give the name of a file")
    if not force and os.path.lexists(path):
        raise OutputFileError(f"{path}: already exists (use --force to replace it)")
    parent = path.absolute().parent
    folder = next(p for p in (parent, *parent.parents) if os.path.lexists(p))
    if not folder.is_dir():
        raise OutputFileError(f"{path}: {folder} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise OutputFileError(f"{path}: cannot write in {folder} "
                                f"({exc.strerror or exc})") from None
