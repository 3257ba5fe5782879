"""Fault injection for ``henet-edge deploy``: kills at random points and concurrent pairs.

Starts a real OpenSSH server on 127.0.0.1 (as the deploy tests do, with an
isolated device ``$HOME``), installs the device side once, then alternates two
versions of the shipped default bundle with ``--keep 1`` (so every deploy
uploads, self-tests and switches) and runs three kinds of trial:

* ``client``: a ``henet-edge deploy`` process is ``kill -9``-ed at a random time;
* ``server``: the sshd processes serving that deploy are ``kill -9``-ed instead;
* ``pair``: two deploys (one per version) start 0 to 0.6 s apart.

After each trial it checks the device: **broken** if ``current`` is missing,
dangling, fails its hashes or fails the self-test with the device's own
venv; **dishonest** if ``status --json`` disagrees with the disk (another
``current``, no warning for a dangling one, or a ``previous`` other than the
version that was current before the last switch); then it re-runs the
deploy, a **failed re-run** if that does not exit 0 with the version current.
A pair whose two deploys do not both exit 0 counts as a failed re-run too.

Usage::

    python benchmarks/deploy_faults.py                       # 10 kills + 4 pairs, a few minutes
    python benchmarks/deploy_faults.py --kills 50 --pairs 20 --seed 1

Needs ``/usr/sbin/sshd`` (openssh-server) and a package index for the
device's dependency wheels (downloaded once, then uploaded with --wheelhouse).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from henet_edge import HenetEdgeError  # noqa: E402
from henet_edge.cli.base import script_help, user_errors  # noqa: E402
from henet_edge.deploy.wheel import project_wheel  # noqa: E402
from henet_edge.device.bundle import load_bundle  # noqa: E402
from henet_edge.device.classify import DEFAULT_BUNDLE  # noqa: E402
from tests.deploy_helpers import (  # noqa: E402
    SSHServer,
    bundle_id,
    bundle_variant,
    make_wheelhouse,
    sshd_missing_reason,
)

ENV = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}


def _last_line(stderr: str) -> str:
    """A failed command's last line of stderr (its error), without click's ``Error:``."""
    lines = stderr.strip().splitlines() or ["(nothing on stderr)"]
    return lines[-1].removeprefix("Error: ")


class Bench:
    def __init__(self, root: Path):
        self.root = root
        self.server = SSHServer(root / "sshd").start()
        try:
            self._set_up(root)
        except BaseException:
            self.server.stop()
            raise

    def _set_up(self, root: Path) -> None:
        self.known = root / "known_hosts"
        self.known.write_text(self.server.known_hosts_line)
        (root / "ssh_config").write_text("")
        self.wheel = project_wheel(cache=root / "cache")
        self.wheelhouse = root / "wheelhouse"
        device_py = subprocess.run(
            ["/usr/bin/python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, check=True).stdout.strip()
        made = make_wheelhouse(self.wheel, self.wheelhouse, device_py)
        if made.returncode != 0:
            raise HenetEdgeError(f"cannot download the device's wheels: {_last_line(made.stderr)}")
        self.bundles = [bundle_variant(DEFAULT_BUNDLE, root / name, name=name)
                        for name in ("faults_a", "faults_b")]

    @property
    def edge(self) -> Path:
        return self.server.edge_home

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "henet_edge.cli", *args, "--host", self.server.spec,
                "--known-hosts", str(self.known), "--identity", str(self.server.user_key),
                "--ssh-config", str(self.root / "ssh_config")]

    def deploy_argv(self, bundle: Path) -> list[str]:
        return self.argv("deploy", str(bundle), "--keep", "1", "--wheel", str(self.wheel),
                         "--wheelhouse", str(self.wheelhouse))

    def deploy(self, bundle: Path) -> subprocess.CompletedProcess:
        return subprocess.run(self.deploy_argv(bundle), env=ENV, capture_output=True,
                              text=True, timeout=900)

    def status(self) -> dict | None:
        run = subprocess.run(self.argv("status", "--json"), env=ENV, capture_output=True,
                             text=True, timeout=300)
        try:
            return json.loads(run.stdout)["hosts"][0]["result"]
        except (ValueError, KeyError, IndexError, TypeError):
            return None

    def disk_current(self) -> str | None:
        try:
            return os.readlink(self.edge / "current").rsplit("/", 1)[-1]
        except OSError:
            return None

    def broken(self) -> str | None:
        """Why the device cannot classify with ``current``; None if it can."""
        current = self.edge / "current"
        if not current.exists():
            return "current missing or dangling"
        try:
            load_bundle(current)
        except Exception as exc:  # any failure to load is what we count
            return f"current fails to load: {exc}"
        run = subprocess.run([str(self.edge / "venv" / "bin" / "python"), "-m",
                              "henet_edge.cli", "selftest", str(current), "--json"],
                             env={**ENV, "HOME": str(self.server.home)}, capture_output=True,
                             text=True, timeout=300)
        return None if run.returncode == 0 else f"self-test failed: {run.stderr[-200:]}"

    def kill_sessions(self) -> int:
        """``kill -9`` the per-connection sshd processes (children of our listener)."""
        pid = self.server.proc.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return 0
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(child), signal.SIGKILL)
        return len(children)


def dishonest(bench: Bench, expected_previous: str | None) -> str | None:
    state = bench.status()
    disk = bench.disk_current()
    if state is None:
        return "status gave no answer"
    if state.get("current") != disk:
        return f"status says current {state.get('current')}, the disk {disk}"
    if disk and not (bench.edge / "current").exists() and not state.get("problems"):
        return "current is dangling and status does not say so"
    if expected_previous is not None and not (bench.edge / "bundles" / expected_previous).is_dir():
        expected_previous = None  # pruned (--keep 1): no version to go back to
    if state.get("previous") != expected_previous:
        return f"status says previous {state.get('previous')}, expected {expected_previous}"
    return None


@click.command(help=script_help(__doc__))
@click.option("--kills", type=click.IntRange(0), default=10, show_default=True,
              help="Random kills, of the client and of the server alternately.")
@click.option("--pairs", type=click.IntRange(0), default=4, show_default=True,
              help="Concurrent deploy pairs.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the kill times, the pairs' delays and the trials' order.")
@user_errors
def main(kills: int, pairs: int, seed: int) -> None:
    if sshd_missing_reason():
        raise HenetEdgeError(sshd_missing_reason())
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="deploy-faults-") as tmp:
        bench = Bench(Path(tmp))
        try:
            run(bench, rng, kills, pairs, seed)
        finally:
            bench.server.stop()


def run(bench: Bench, rng: random.Random, kills: int, pairs: int, seed: int) -> None:
    a, b = bench.bundles
    ids = {bundle_id(a): a, bundle_id(b): b}
    t0 = time.monotonic()
    first = bench.deploy(a)
    if first.returncode != 0:
        raise HenetEdgeError(f"the first deploy failed: {_last_line(first.stderr)}")
    t1 = time.monotonic()
    bench.deploy(b)
    window = time.monotonic() - t1  # one deploy that uploads, self-tests and switches
    print(f"setup: venv + first deploy {t1 - t0:.1f}s; one switching deploy {window:.1f}s")
    counts = {"trials": 0, "broken": 0, "failed re-runs": 0, "dishonest status": 0}
    kinds = ["client", "server"] * ((kills + 1) // 2)
    plan = [k for k in kinds[:kills]] + ["pair"] * pairs
    rng.shuffle(plan)
    for i, kind in enumerate(plan, 1):
        before = bench.disk_current()
        target = a if before == bundle_id(b) else b
        failures: list[str] = []
        if kind == "pair":
            procs = []
            for bundle in (target, ids.get(before, a)):
                procs.append(subprocess.Popen(bench.deploy_argv(bundle), env=ENV,
                                              stdout=subprocess.DEVNULL,
                                              stderr=subprocess.PIPE))
                time.sleep(rng.uniform(0, 0.6))
            codes = [p.wait(timeout=900) for p in procs]
            for p in procs:
                p.stderr.close()
            if codes != [0, 0]:
                counts["failed re-runs"] += 1
                failures.append(f"pair exited {codes}")
            now = bench.disk_current()
            others = [x for x in ids if x != now]
            expected_previous = others[0] if others else None
            delay = 0.0
        else:
            delay = rng.uniform(0, 1.1 * window)
            proc = subprocess.Popen(bench.deploy_argv(target), env=ENV,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(delay)
            if kind == "client":
                proc.send_signal(signal.SIGKILL)
            else:
                bench.kill_sessions()
            proc.wait(timeout=900)
            time.sleep(0.5)  # let the device side notice the dead connection
            now = bench.disk_current()
            # The versions alternate, so the one current before `before` was `target`:
            # a deploy cut short after re-uploading it makes it installed again, and
            # then it is truly the previous version (`dishonest` maps a pruned one to None).
            expected_previous = before if now == bundle_id(target) else bundle_id(target)
        why = bench.broken()
        if why:
            counts["broken"] += 1
            failures.append(f"broken: {why}")
        lie = dishonest(bench, expected_previous)
        if lie:
            counts["dishonest status"] += 1
            failures.append(f"dishonest: {lie}")
        if kind != "pair":
            rerun = bench.deploy(target)
            if rerun.returncode != 0 or bench.disk_current() != bundle_id(target):
                counts["failed re-runs"] += 1
                failures.append(f"re-run failed: {rerun.stderr.strip()[-300:]}")
        counts["trials"] += 1
        print(f"trial {i:3d} {kind:6s} at {delay:5.2f}s: "
              + ("ok" if not failures else "; ".join(failures)), flush=True)
    print(f"\nkills: {kills} (client and server alternately), concurrent pairs: "
          f"{pairs}, seed {seed}")
    for name, value in counts.items():
        print(f"{name:>17}: {value}")
    print(f"{'seconds':>17}: {time.monotonic() - t0:.0f}")


if __name__ == "__main__":
    main()
