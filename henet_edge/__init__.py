"""henet-edge: train HENet in Keras, convert to TFLite, run it on a Raspberry Pi."""

__version__ = "0.1.0"


class HenetEdgeError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits 1."""


class UsageError(HenetEdgeError):
    """A command line that cannot work as given: the CLI shows it with the usage, exit 2."""


class OutputFileError(HenetEdgeError):
    """An output file that exists (and no ``--force``) or that could not be written."""
