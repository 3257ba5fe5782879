"""What the CLI prints: grouped help, self-describing JSON lines."""

from __future__ import annotations

import json

from click.testing import CliRunner

from henet_edge.cli import main
from henet_edge.device.manifest import sha256_file


def test_top_level_help_lists_every_command_in_groups_without_truncation():
    out = CliRunner().invoke(main, ["--help"], terminal_width=200).output
    visible = [name for name, cmd in main.commands.items() if not cmd.hidden]
    for name in visible:
        assert f"\n  {name} " in out, name
    for title in ("Start here:", "Desktop", "Deploy", "Device"):
        assert title in out
    listing = out[out.index("Start here:"):]
    assert "..." not in listing
    assert "Other:" not in out  # every command has its group
    assert "The whole pipeline in a few minutes: convert, deploy, bench, classify." in out


def test_classify_json_lines_say_which_model_and_precision(tiny_bundle):
    image = sorted((tiny_bundle / "golden").glob("*.png"))[0]
    for precision in ("int8", "float32"):
        result = CliRunner().invoke(main, ["classify", str(image), str(image.parent / "nope.jpg"),
                                           "--model", str(tiny_bundle), "--precision",
                                           precision, "--json"])
        lines = [json.loads(x) for x in result.output.splitlines() if x.startswith("{")]
        assert len(lines) == 2 and [x["ok"] for x in lines] == [True, False]
        bundle_id = sha256_file(tiny_bundle / "manifest.json")[:12]
        name = json.loads((tiny_bundle / "manifest.json").read_text())["name"]
        for line in lines:  # errors too
            assert (line["model"], line["bundle"], line["precision"]) == (name, bundle_id,
                                                                          precision)
