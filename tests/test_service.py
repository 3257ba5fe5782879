"""``henet-edge service``: the systemd unit that runs ``serve`` on boot."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest
from click.testing import CliRunner

from henet_edge.cli import main
from henet_edge.device import service

from .conftest import unavailable


def test_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        unavailable("systemd-analyze is missing (apt install systemd)")
    for scope in ("system", "user"):
        text = service.unit_text(sys.executable, tmp_path / "edge home",
                                 ["--bind", "127.0.0.1:8080", "--camera", "opencv:0",
                                  "--token-file", str(tmp_path / "edge home" / "token")],
                                 scope=scope, user="pi" if scope == "system" else None)
        unit = tmp_path / scope / service.UNIT
        unit.parent.mkdir()
        unit.write_text(text)
        runtime = tmp_path / f"run-{scope}"  # --user needs a runtime folder
        runtime.mkdir(mode=0o700)
        done = subprocess.run([analyze, "verify", *(["--user"] if scope == "user" else []),
                               str(unit)], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)})
        # verify prints a line per problem but exits 0 for most; both must be clean
        problems = [line for line in done.stderr.splitlines() if service.UNIT in line]
        assert done.returncode == 0 and not problems, done.stderr
        assert "Restart=on-failure" in text
        assert ("WantedBy=default.target" in text) == (scope == "user")
        assert ("User=pi" in text.splitlines()) == (scope == "system")


def test_unit_words_reach_systemd_unchanged(tmp_path):
    # systemd reads C escapes inside quotes and expands % (and $ in ExecStart) whatever
    # the quoting; shell quoting would hand serve another token or camera than given.
    camera = '/media/my %i $HOME "cam"'
    text = service.unit_text("/usr/bin/python3", tmp_path, ["--camera", camera],
                             scope="user")
    exec_line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert exec_line.endswith(' --camera "/media/my %%i $$HOME \\"cam\\""')
    if shutil.which("systemd-analyze"):
        unit = tmp_path / service.UNIT
        unit.write_text(text)
        runtime = tmp_path / "run"
        runtime.mkdir(mode=0o700)
        done = subprocess.run(["systemd-analyze", "verify", "--user", str(unit)],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)})
        assert not [line for line in done.stderr.splitlines() if "Exec" in line or
                    "quot" in line.lower()], done.stderr


def test_a_token_a_unit_cannot_carry_is_refused_without_showing_it(tmp_path):
    with pytest.raises(service.ServiceError) as caught:
        service.install([], home=tmp_path, token="secret\nExecStartPre=/bin/evil")
    assert "--token holds a control character" in str(caught.value)
    assert "secret" not in str(caught.value)
    assert not (tmp_path / service.TOKEN_FILE).exists()


def test_the_token_is_kept_out_of_the_unit(tmp_path, monkeypatch):
    monkeypatch.setattr(service, "systemd_running", lambda: False)  # never a real unit
    # systemd shows a unit's Environment= lines to every local user (systemctl show).
    monkeypatch.setenv("HENET_EDGE_HOME", str(tmp_path))
    monkeypatch.setenv("HENET_EDGE_TOKEN", 'a%hb\\c"d$e')  # as the option takes it
    result = CliRunner().invoke(main, ["service", "install", "--bind", "0.0.0.0:8080"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / service.UNIT).read_text()
    kept = tmp_path / service.TOKEN_FILE
    assert "a%hb" not in text and "HENET_EDGE_TOKEN" not in text
    assert f"--token-file {kept}" in text
    assert kept.read_text() == 'a%hb\\c"d$e\n'
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600
    from henet_edge.device.serve.options import read_token_file

    assert read_token_file(str(kept)) == 'a%hb\\c"d$e'  # what serve gets from the unit
    monkeypatch.delenv("HENET_EDGE_TOKEN")
    assert CliRunner().invoke(main, ["service", "install"]).exit_code == 0  # loopback
    assert not kept.exists() and "--token-file" not in (tmp_path / service.UNIT).read_text()
    CliRunner().invoke(main, ["service", "install", "--token", "t0k"])
    assert kept.exists()
    assert CliRunner().invoke(main, ["service", "uninstall"]).exit_code == 0
    assert not kept.exists()


def test_a_broken_unit_is_caught_by_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        unavailable("systemd-analyze is missing (apt install systemd)")
    unit = tmp_path / service.UNIT
    unit.write_text(service.unit_text(str(tmp_path / "no-python"), tmp_path, [],
                                      scope="system"))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0 or "no-python" in done.stderr


def test_without_systemd_the_unit_is_written_and_said_not_started(tmp_path, monkeypatch):
    monkeypatch.setattr(service, "systemd_running", lambda: False)
    home = tmp_path / "edge"
    monkeypatch.setenv("HENET_EDGE_HOME", str(home))
    result = CliRunner().invoke(main, ["service", "install", "--camera", "auto", "--json"])
    assert result.exit_code == 0, result.output
    state = json.loads(result.stdout)
    unit = home / service.UNIT
    assert state["installed"] and not state["systemd"] and state["unit"] == str(unit)
    assert "cannot be started here" in state["notes"][0]
    text = unit.read_text()
    assert f"HENET_EDGE_HOME={home}" in text and "--camera auto" in text
    assert stat.S_IMODE(os.stat(unit).st_mode) == 0o600

    shown = CliRunner().invoke(main, ["service", "status"])
    assert shown.exit_code == 0 and "systemd is not running here" in shown.output
    gone = CliRunner().invoke(main, ["service", "uninstall", "--json"])
    assert gone.exit_code == 0 and json.loads(gone.stdout)["installed"] is False
    assert json.loads(gone.stdout)["removed"] is True
    assert not unit.exists()
    # it said "not installed (... absent)" right after removing the unit
    CliRunner().invoke(main, ["service", "install"])
    assert CliRunner().invoke(main, ["service", "uninstall"]).stdout == f"removed {unit}\n"
    again = CliRunner().invoke(main, ["service", "uninstall"])
    assert again.exit_code == 0 and again.stdout == f"not installed ({unit} absent)\n"


def test_service_beyond_loopback_needs_a_token(tmp_path, monkeypatch):
    monkeypatch.setenv("HENET_EDGE_HOME", str(tmp_path))
    monkeypatch.delenv("HENET_EDGE_TOKEN", raising=False)
    result = CliRunner().invoke(main, ["service", "install", "--bind", "0.0.0.0:8080"])
    assert result.exit_code != 0 and "--token" in result.output
    assert not (tmp_path / service.UNIT).exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_system_unit_runs_as_the_state_folders_owner(tmp_path):
    import pwd

    home = tmp_path / "pi-home"
    home.mkdir()
    assert service._service_user(home) is None  # root's own folder: root's unit
    other = pwd.getpwuid(65534)  # nobody, on every Debian
    os.chown(home, other.pw_uid, other.pw_gid)
    assert service._service_user(home) == other.pw_name
    args = service._keep_token(home, "t0k", other.pw_name)
    kept = home / service.TOKEN_FILE
    assert args == ["--token-file", str(kept)]
    assert (os.stat(kept).st_uid, stat.S_IMODE(os.stat(kept).st_mode)) == (other.pw_uid, 0o600)
