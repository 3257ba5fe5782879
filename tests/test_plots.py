"""The one figure writer: the format the suffix names, whole or not at all."""

from __future__ import annotations

import pytest

from henet_edge.plots import PlotError, pyplot, save_figure


def _figure():
    fig, ax = pyplot().subplots()
    ax.plot([1, 2, 3])
    return fig


@pytest.mark.parametrize("name, head", [("a.png", b"\x89PNG"), ("a.svg", b"<?xml"),
                                        ("a.pdf", b"%PDF")])
def test_a_figure_is_written_in_the_format_its_suffix_names(tmp_path, name, head):
    path = save_figure(_figure(), tmp_path / name, dpi=50)
    assert path.read_bytes().startswith(head)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left


def test_an_unknown_format_or_folder_is_a_plot_error_and_leaves_nothing(tmp_path):
    with pytest.raises(PlotError, match="Format 'xyz' is not supported"):
        save_figure(_figure(), tmp_path / "a.xyz", dpi=50)
    with pytest.raises(PlotError, match="cannot write the plot"):
        save_figure(_figure(), tmp_path / "missing" / "a.png", dpi=50)
    assert list(tmp_path.iterdir()) == []
