"""henet-edge: train HENet in Keras, convert to TFLite, run it on a Raspberry Pi."""

__version__ = "0.1.0"


class HenetEdgeError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits 1."""
