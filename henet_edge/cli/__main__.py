"""``python -m henet_edge.cli``: the ``henet-edge`` command."""

from . import main

main(prog_name="henet-edge")
