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
    (tmp_path / "a-file").write_text("in the way")
    with pytest.raises(PlotError, match="Format 'xyz' is not supported"):
        save_figure(_figure(), tmp_path / "a.xyz", dpi=50)
    with pytest.raises(PlotError, match="cannot write the plot"):
        save_figure(_figure(), tmp_path / "a-file" / "a.png", dpi=50)
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]


def test_missing_folders_are_made_as_for_every_other_output_file(tmp_path):
    """--latencies made its folders, --plot refused them: one rule now."""
    from henet_edge.plots import check_plot_target

    target = tmp_path / "new" / "sub" / "a.png"
    assert check_plot_target(target, "x.png") == target
    assert not (tmp_path / "new").exists()  # the check makes nothing
    assert save_figure(_figure(), target, dpi=50).read_bytes().startswith(b"\x89PNG")


def test_a_plot_of_an_unknown_type_is_refused_before_the_slow_work(tmp_path, tiny_bundle):
    """bench --plot lat.txt timed for minutes and then failed on the format."""
    from click.testing import CliRunner

    from henet_edge.cli import main
    from henet_edge.plots import check_plot_target

    assert check_plot_target(tmp_path / "a.svg", "x.png") == tmp_path / "a.svg"
    with pytest.raises(PlotError, match=r"no image format '\.txt'; use one of .*\.png"):
        check_plot_target(tmp_path / "a.txt", "x.png")
    result = CliRunner().invoke(main, ["bench", str(tiny_bundle), "--runs", "100000",
                                       "--plot", str(tmp_path / "lat.txt")])
    assert result.exit_code == 1 and "no image format '.txt'" in result.output
    assert "repeat" not in result.output  # refused before any timing


def test_a_missing_folder_named_with_a_trailing_slash_gets_the_default_name_inside(tmp_path):
    """--plot newdir/ wrote newdir.png beside the folder the user asked for."""
    from henet_edge.plots import check_plot_target, png_path

    assert png_path(f"{tmp_path}/new/", "confusion.png") == tmp_path / "new" / "confusion.png"
    assert check_plot_target(f"{tmp_path}/new/", "x.png") == tmp_path / "new" / "x.png"
    assert png_path(tmp_path / "new", "x.png") == tmp_path / "new.png"  # no slash: a name
