"""The installer: put the device side and a bundle on a device, safely.

Layout on the device (``~/.henet-edge`` unless ``--remote-dir``)::

    venv -> venvs/<key>          the device side's virtual environment (a symlink)
    venvs/<key>/                 one venv per wheel hash + interpreter, made with
                                 --system-site-packages (apt's picamera2 stays
                                 visible); henet-edge-install.json inside records
                                 the wheel and its sha256 and marks it complete
    bundles/<sha256>/            content-addressed bundles (the sha256 of manifest.json)
    current -> bundles/<sha256>  the bundle `henet-edge classify` uses on the device
    history.jsonl                one line per deploy and rollback, written just before
                                 its switch (entries a crash cut short are told apart
                                 by ``current``: see :func:`.versions.realised_history`)
    last-bench.json              the last `remote bench` result
    tmp/                         uploads in progress; emptied by the next deploy
    .henet-edge-state            the marker written when the folder was created: a
                                 non-empty folder without it is refused, never cleaned
    .deploy.lock                 flock()-ed by the device side for a whole deploy or
                                 rollback, so it dies with the connection holding it

Every change is staged under ``tmp/`` (or in a venv folder that is not yet
marked complete) and becomes visible through one atomic rename: a verified
bundle folder is moved into ``bundles/``, and ``venv``/``current`` are switched
by creating a new symlink and ``mv -T``-ing it over the old one. The bundle is
self-tested on the device *before* ``current`` moves, so killing the deploy at
any point (either side, ``kill -9`` included) leaves the previous ``current``
intact and runnable, and a re-run completes the job. Re-deploying an unchanged
wheel installs nothing; an unchanged bundle uploads nothing.

Everything goes through a :class:`~henet_edge.deploy.connection.Connection`:
SSH for a Pi, or a local folder for the demo. The venvs are
:class:`~henet_edge.deploy.venvs.DeviceVenvs`'s work, the bundles
:class:`~henet_edge.deploy.bundles.DeviceBundles`' and the lock
:class:`~henet_edge.deploy.lock.DeployLock`'s; this module orders the steps.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from shlex import quote
from typing import Any

from henet_edge import __version__
from henet_edge.device import service as service_unit
from henet_edge.device.bundle import MANIFEST, Bundle, load_bundle, sha256_file
from henet_edge.storage import utc_timestamp

from . import agent
from .bundles import BUNDLES, UPLOAD_STAGE, DeviceBundles, short_id
from .connection import Connection, Log
from .errors import DeployError, RemoteCommandError, SelftestFailed
from .lock import DeployLock, deployer
from .probe import (
    DEFAULT_REMOTE_DIR,
    DEFAULT_REMOTE_PYTHON,
    DEFAULT_RESERVE_MB,
    DeviceInfo,
    SpaceNeeded,
    check_device,
    human_bytes,
    probe,
    run_agent,
)
from .report import selftest_message, selftest_summary, service_summary
from .session import TMP, DeviceSession
from .venvs import INSTALL_RECORD, INSTALL_STAGE, VENV_LINK, VENVS, DeviceVenvs, venv_key
from .versions import (
    DEFAULT_KEEP,
    deploy_order,
    previous_version,
    realised_history,
    recency_order,
    resolve_version,
    to_prune,
)

CURRENT = "current"
HISTORY, LAST_BENCH = agent.HISTORY, agent.LAST_BENCH
MB = 1_000_000
DEPLOY_STAGES = (INSTALL_STAGE, UPLOAD_STAGE)  # the tmp/ folders only a deploy makes


@dataclass
class InstallOptions:
    """What to install and how; the deploy command's options."""

    remote_dir: str = DEFAULT_REMOTE_DIR
    remote_python: str = DEFAULT_REMOTE_PYTHON
    wheel: Path | None = None          # a prebuilt henet_edge wheel; default: build one
    wheelhouse: Path | None = None     # offline device: install dependencies from these
    device_python: str | None = None   # skip the venv: this interpreter has henet-edge[device]
    keep: int = DEFAULT_KEEP
    reserve_bytes: int = DEFAULT_RESERVE_MB * MB
    venv_bytes: int = 300 * MB         # estimate of a new venv's size (index installs)
    selftest: bool = True
    lock_timeout: float = 600.0        # wait this long for another deploy to the device
    command_timeout: float = 1800.0    # pip on a Pi Zero 2 can be slow
    service: list[str] | None = None   # `service install` arguments: install the unit


@dataclass
class DeployResult:
    host: str
    bundle: str
    name: str | None
    previous: str | None
    version: str
    venv: str | None
    installed: bool                    # a venv was created this time
    uploaded: bool                     # the bundle was uploaded this time
    runtime: dict[str, Any] = field(default_factory=dict)
    selftest: dict[str, Any] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    service: dict[str, Any] | None = None  # the unit's state after install or restart
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _DeployPlan:
    """What one deploy installs, decided from the probe and again under the lock."""

    bundle: Bundle
    files: list[str]                   # manifest.json first, then the manifest's files
    bundle_bytes: int
    info: DeviceInfo
    installed: dict[str, Any]          # the device's installed state, as last read
    wheel: Path | None = None
    wheel_sha: str | None = None
    key: str | None = None             # the venv's key (None with --device-python)
    wheelhouse: list[Path] = field(default_factory=list)
    need_venv: bool = False

    @property
    def bundle_id(self) -> str:
        return self.bundle.id

    @property
    def name(self) -> str | None:
        return self.bundle.manifest.name

    @property
    def has_bundle(self) -> bool:
        """Whether the bundle is installed on the device (maybe damaged)."""
        return self.bundle_id in (self.installed.get("bundles") or [])


# ----------------------------------------------------------------- installer
class Installer:
    """Deploy, roll back and inspect one device, through a :class:`DeviceSession`."""

    def __init__(self, connection: Connection, options: InstallOptions | None = None, *,
                 log: Log | None = None, progress: bool | None = None,
                 progress_position: int | None = None):
        self.options = options or InstallOptions()
        self.session = DeviceSession(connection, timeout=self.options.command_timeout,
                                     progress=progress, progress_position=progress_position)
        self.log = log or (lambda _msg: None)
        self.info: DeviceInfo | None = None
        self.lock = DeployLock(connection, self.options.remote_python, name=self.name)
        self.venvs = DeviceVenvs(self.session, self._agent,
                                 timeout=self.options.command_timeout, log=self.log)
        self.bundles = DeviceBundles(self.session, self._agent, log=self.log)

    # -- the session's facts, under the names the deploy steps use
    @property
    def connection(self) -> Connection:
        return self.session.connection

    @property
    def name(self) -> str:
        """How messages name the device (``pi@pi.local:22``, ``local:...``)."""
        return self.session.name

    @property
    def base(self) -> str:
        """The state folder on the device ("" until :meth:`probe` resolved it)."""
        return self.session.base

    def path(self, *parts: str) -> str:
        return self.session.path(*parts)

    def _agent(self, op: str, *args: str) -> dict[str, Any]:
        return run_agent(self.connection, self.options.remote_python, op, *args)

    def _switch_link(self, link: str, target: str) -> None:
        """Point ``base/link`` at ``target`` (relative) atomically: ln -s + mv -T."""
        tmp = self.path(f".{link}.new-{self.session.nonce}")
        self.session.run(f"rm -f {quote(tmp)} && ln -s {quote(target)} {quote(tmp)} && "
                         f"mv -T {quote(tmp)} {quote(self.path(link))}",
                         f"switching {link} to {target}")

    def _append_history(self, entry: dict[str, Any]) -> None:
        entry = {"time": utc_timestamp(), "by": deployer(), **entry}
        line = quote(json.dumps(entry))
        self.session.run(f"printf '%s\\n' {line} >> {quote(self.path(HISTORY))}",
                         "recording the deploy history")

    def _device_python(self, venv: str | None = None) -> str:
        if self.options.device_python:
            return self.options.device_python
        return self.path(VENVS, venv, "bin", "python") if venv else \
            self.path(VENV_LINK, "bin", "python")

    def henet_command(self, args: list[str], *, venv: str | None = None) -> str:
        """Shell command running ``henet-edge ARGS`` on the device with its state folder."""
        return (f"HENET_EDGE_HOME={quote(self.base)} exec {quote(self._device_python(venv))} "
                f"-m henet_edge.cli " + " ".join(quote(a) for a in args))

    # -- the device's deploy lock
    def _lock(self) -> dict[str, Any]:
        """Take the device's deploy lock; the installed state as read under it."""
        return self.lock.take(self.base, self.options.lock_timeout)

    # -- probe
    def probe(self) -> DeviceInfo:
        self.info = probe(self.connection, python=self.options.remote_python,
                          remote_dir=self.options.remote_dir)
        self.session.base = self.info.base
        return self.info

    # -- deploy
    def deploy(self, bundle_path: str | Path) -> DeployResult:
        """Install the device side and ``bundle_path``, under the device's deploy lock."""
        try:
            return self._deploy(bundle_path)
        finally:
            self.lock.release()

    def _deploy(self, bundle_path: str | Path) -> DeployResult:
        t0 = time.monotonic()
        plan = self._plan(load_bundle(bundle_path))  # verifies every hash locally first
        warnings = self._check_space(plan)
        self._lock_and_replan(plan)
        self._prepare()
        runtime = self._ensure_venv(plan)
        uploaded = self.bundles.ensure(plan.bundle, plan.files, plan.has_bundle)
        previous = plan.installed.get("current")
        selftest = self._selftest_candidate(plan, previous)
        runtime = selftest.get("runtime") or runtime
        self._switch(plan, previous)
        removed = self._prune(plan.bundle_id, plan.key)
        service = self._service_after_switch(plan, warnings)
        return DeployResult(
            host=self.name, bundle=plan.bundle_id, name=plan.name, previous=previous,
            version=__version__ if not self.options.device_python else "external",
            venv=plan.key, installed=plan.need_venv, uploaded=uploaded, runtime=runtime,
            selftest=selftest_summary(selftest), device=plan.info.to_dict(),
            warnings=warnings, removed=removed, service=service,
            seconds=round(time.monotonic() - t0, 2))

    # -- the deploy's steps, in the order _deploy takes them
    def _plan(self, bundle: Bundle) -> _DeployPlan:
        """Probe the device and decide what this deploy installs: a venv, the bundle."""
        files = [MANIFEST, *sorted(bundle.manifest.files)]
        bundle_bytes = sum((bundle.root / f).stat().st_size for f in files)
        self.log(f"bundle {bundle.manifest.name} {short_id(bundle.id)} ({len(files)} files, "
                 f"{human_bytes(bundle_bytes)})")
        info = self.probe()
        self.log(f"device: {info.summary()}")
        check_device(info, needs_venv=False)  # Python, system, architecture: before any work
        plan = _DeployPlan(bundle, files, bundle_bytes, info, info.installed or {})
        if not self.options.device_python:
            plan.wheel, plan.wheel_sha = self._wheel()
            plan.key = venv_key(plan.wheel_sha, info.python_path)
            plan.need_venv = not self.venvs.is_complete(plan.key, plan.installed)
            if plan.need_venv:
                plan.wheelhouse = self._wheelhouse()
        return plan

    def _wheelhouse(self) -> list[Path]:
        """The dependency wheels to upload for a new venv (``--wheelhouse``), or none."""
        if not self.options.wheelhouse:
            return []
        from .wheel import wheelhouse_files

        return wheelhouse_files(self.options.wheelhouse)

    def _check_space(self, plan: _DeployPlan) -> list[str]:
        """Refuse a device without room for the plan; the warnings, logged."""
        space = SpaceNeeded(bundle=0 if plan.has_bundle else plan.bundle_bytes,
                            reserve=self.options.reserve_bytes)
        if plan.need_venv:
            wheelhouse_bytes = sum(p.stat().st_size for p in plan.wheelhouse)
            space.wheels = plan.wheel.stat().st_size + wheelhouse_bytes
            space.venv = 3 * wheelhouse_bytes if plan.wheelhouse else self.options.venv_bytes
        warnings = check_device(plan.info, space=space, needs_venv=plan.need_venv)
        for w in warnings:
            self.log(f"warning: {w}")
        return warnings

    def _lock_and_replan(self, plan: _DeployPlan) -> None:
        """Take the deploy lock; if another deploy finished meanwhile, plan from what is
        there: it may have installed the venv this one needs, or pruned the one it found."""
        locked = self._lock()
        if locked == plan.installed:
            return
        plan.installed = locked
        if not plan.key:
            return
        needed, plan.need_venv = plan.need_venv, not self.venvs.is_complete(plan.key, locked)
        if plan.need_venv and not needed:
            self.log(f"venv {plan.key} was removed by another deploy; installing it again")
            plan.wheelhouse = self._wheelhouse()
            self._check_space(plan)

    def _ensure_venv(self, plan: _DeployPlan) -> dict[str, Any]:
        """Install the planned venv, or reuse the complete one; its TFLite runtime."""
        if plan.need_venv:
            return self.venvs.install(plan.key, plan.wheel, plan.wheel_sha, plan.wheelhouse,
                                      plan.info)
        if not plan.key:
            return {}
        record = self.venvs.record(plan.key, plan.installed) or {}
        self.log(f"device side henet-edge {record.get('version', '?')} already "
                 f"installed (venv {plan.key}); nothing to install")
        return record.get("runtime", {})

    def _selftest_candidate(self, plan: _DeployPlan, previous: str | None) -> dict[str, Any]:
        """Self-test the new bundle before any switch; a failed one is removed again."""
        if not self.options.selftest:
            return {}
        try:
            return self.selftest(self.bundles.path(plan.bundle_id), venv=plan.key)
        except SelftestFailed:
            self.bundles.drop_failed(plan.bundle_id, previous)
            raise

    def _switch(self, plan: _DeployPlan, previous: str | None) -> None:
        """Point ``venv`` and ``current`` at the new versions, the history written first."""
        bundle_id, key, name = plan.bundle_id, plan.key, plan.name
        if key and plan.installed.get("venv") != key:
            self._switch_link(VENV_LINK, f"{VENVS}/{key}")
        # History first, then the switch: an entry whose switch never happened is
        # recognised from `current` on disk (see realised_history).
        self._append_history({"action": "deploy", "bundle": bundle_id, "name": name,
                              "from": previous, "venv": key, "version": __version__})
        if previous != bundle_id:
            self._switch_link(CURRENT, f"{BUNDLES}/{bundle_id}")
            self.log(f"current -> {short_id(bundle_id)} ({name}), was {short_id(previous)}")
        else:
            self.log(f"current is already {short_id(bundle_id)} ({name})")

    # -- the service (systemd unit running `henet-edge serve` on the device)
    def service(self, *args: str) -> dict[str, Any]:
        """``henet-edge service ARGS --json`` on the device, its JSON answer."""
        result = self.session.run(self.henet_command(["service", *args, "--json"]),
                                  f"henet-edge service {args[0]}")
        try:
            return json.loads(result.out)
        except ValueError:
            raise RemoteCommandError(f"{self.name}: henet-edge service {args[0]} gave no "
                                     f"JSON ({result.last_line() or 'no output'})") from None

    def _service_after_switch(self, plan: _DeployPlan,
                              warnings: list[str]) -> dict[str, Any] | None:
        """Install the unit (``--service``), or restart one already installed, so it
        serves the new ``current``: only ever after the self-test passed and the switch."""
        if self.options.service is not None:
            try:
                state = self.service("install", *self.options.service)
            except DeployError as exc:  # fails the deploy, but says what did happen
                raise DeployError(
                    f"{exc}; the rest of the deploy is done: {short_id(plan.bundle_id)} "
                    f"({plan.name}) is current, so only the service is left to install "
                    f"(deploy --service again, or `henet-edge service install` on the "
                    f"device)") from None
        else:
            system = service_unit.SYSTEM_DIR / service_unit.UNIT
            user = f"$HOME/{str(service_unit.USER_DIR / service_unit.UNIT).removeprefix('~/')}"
            probe = self.connection.run(f"[ -f {quote(str(system))} ] || [ -f \"{user}\" ]")
            if not probe.ok:
                return None
            try:
                state = self.service("restart")
            except DeployError as exc:  # the deploy itself is done; say so, do not fail it
                warnings.append(f"the service did not restart: {exc}")
                self.log(f"warning: {warnings[-1]}")
                return None
        self.log(f"service: {service_summary(state)}")
        for note in state.get("notes") or []:
            self.log(f"note: {note}")
        return state

    def _wheel(self) -> tuple[Path, str]:
        from .wheel import check_wheel, project_wheel

        wheel = check_wheel(self.options.wheel) if self.options.wheel else \
            project_wheel(log=self.log)
        return wheel, sha256_file(wheel)

    def _prepare(self) -> None:
        """Create the layout; clear what interrupted deploys left (their stages under
        tmp/, unfinished venvs). A ``remote`` command's scratch folder in tmp/ may be in
        use (it takes no lock): only one a day old is taken for a leftover."""
        b = self.base
        stages = " ".join(f"{quote(b)}/{TMP}/{kind}-*" for kind in DEPLOY_STAGES)
        self.session.run(
            f"mkdir -p {quote(b)}/{BUNDLES} {quote(b)}/{VENVS} {quote(b)}/{TMP} && "
            f"rm -rf {stages} {quote(b)}/.current.new-* {quote(b)}/.venv.new-* && "
            f"find {quote(b)}/{TMP} -mindepth 1 -maxdepth 1 -mmin +{24 * 60} "
            f"-exec rm -rf {{}} + && "
            f"for d in {quote(b)}/{VENVS}/*; do "
            f'[ -d "$d" ] && [ ! -f "$d/{INSTALL_RECORD}" ] && rm -rf "$d"; done; true',
            f"preparing {b}")

    # -- self-test
    def selftest(self, bundle_dir: str, *, venv: str | None = None) -> dict[str, Any]:
        """Run ``henet-edge selftest`` on the device; raise :class:`SelftestFailed`."""
        command = self.henet_command(["selftest", bundle_dir, "--json"], venv=venv)
        result = self.connection.run(command, timeout=self.options.command_timeout)
        try:
            report = json.loads(result.out[result.out.index("{"):])
        except ValueError:
            raise SelftestFailed(f"{self.name}: the self-test could not run: "
                                 f"{result.last_line()}") from None
        if not report.get("passed") or not result.ok:
            raise SelftestFailed(selftest_message(self.name, report), report)
        summary = selftest_summary(report)
        self.log(f"self-test passed: {summary['text']}")
        return report

    # -- prune
    def _prune(self, current: str, venv: str | None) -> list[str]:
        state = self._agent("status", self.base)
        installed = {b["id"]: b["mtime"] for b in state["bundles"]}
        order = recency_order(realised_history(state["history"], state["current"]), installed)
        # What `current` is on the device now, never only what this deploy switched to.
        doomed = [b for b in to_prune(order, state["current"], self.options.keep)
                  if b != current]
        venvs = [v for v in state["venvs"] if v["complete"] and v["key"] not in
                 (venv, state["venv"])]
        venvs.sort(key=lambda v: (v["record"] or {}).get("installed", ""))
        doomed_venvs = [v["key"] for v in venvs[:-1]]  # keep the newest previous venv
        paths = [self.bundles.path(b) for b in doomed]
        paths += [self.path(VENVS, v) for v in doomed_venvs]
        if paths:
            self.session.run("rm -rf " + " ".join(quote(p) for p in paths), "removing old versions")
            self.log(f"removed {len(doomed)} old bundle(s) and {len(doomed_venvs)} old venv(s) "
                     f"(keeping {self.options.keep})")
        return doomed

    # -- rollback and status
    def status(self, *, verify: bool = False) -> dict[str, Any]:
        if not self.base:
            self.probe()
            check_device(self.info, needs_venv=False)
        args = [self.base, "--verify"] if verify else [self.base]
        state = self._agent("status", *args)
        state["history"] = realised_history(state["history"], state["current"])
        installed = {b["id"]: b["mtime"] for b in state["bundles"]}
        order = deploy_order(state["history"], installed)
        deployed = {}
        for entry in state["history"]:
            if entry.get("action", "deploy") == "deploy":
                deployed[entry["bundle"]] = entry.get("time")
        for b in state["bundles"]:
            b["deployed"] = deployed.get(b["id"])
            b["current"] = b["id"] == state["current"]
        state["bundles"].sort(key=lambda b: order.index(b["id"]))
        # Only versions that were really current count (a crash may leave one installed
        # that never was); with no history at all, the folders' order is all there is.
        been_current = {entry["bundle"] for entry in state["history"]}
        state["previous"] = previous_version([b for b in order if b in been_current] or order,
                                             state["current"], state["history"])
        state["host"] = self.name
        state["device"] = self.info.to_dict() if self.info else {}
        record = state.get("venv_record") or {}
        state["runtime"] = record.get("runtime")
        state["version"] = record.get("version")
        state["problems"] = current_problems(state)
        state.pop("history", None)
        state["service"] = self._service_state() if state.get("venv") else None
        return state

    def _service_state(self) -> dict[str, Any] | None:
        """The unit's state for ``status`` (None when the device side cannot tell)."""
        try:
            return self.service("status")
        except DeployError:
            return None

    def rollback(self, to: str | None = None) -> dict[str, Any]:
        """Switch ``current`` back, under the device's deploy lock."""
        if not self.base:
            self.probe()
            check_device(self.info, needs_venv=False)
        self._lock()
        try:
            return self._rollback(to)
        finally:
            self.lock.release()

    def _rollback(self, to: str | None) -> dict[str, Any]:
        state = self.status()
        current = state["current"]
        if to:
            target = resolve_version(to, state["bundles"])
        else:
            target = state["previous"]
            if target is None:
                raise DeployError(f"{self.name}: nothing to roll back to (installed: "
                                  + (", ".join(short_id(b['id']) for b in state['bundles'])
                                     or "nothing") + ")")
        if target == current:
            raise DeployError(f"{self.name}: {short_id(target)} is already current")
        final = self.bundles.path(target)
        check = self.bundles.verify(final, target)
        if not check["ok"]:
            raise DeployError(f"{self.name}: version {short_id(target)} is damaged on the device "
                              f"({'; '.join(check['problems'][:3])}); refusing to switch to it "
                              f"(deploy it again instead)")
        report = self.selftest(final) if self.options.selftest else {}
        name = next((b.get("name") for b in state["bundles"] if b["id"] == target), None)
        self._append_history({"action": "rollback", "bundle": target, "name": name,
                              "from": current})
        self._switch_link(CURRENT, f"{BUNDLES}/{target}")
        self.log(f"current -> {short_id(target)} ({name}), was {short_id(current)}")
        return {"host": self.name, "bundle": target, "name": name, "previous": current,
                "selftest": selftest_summary(report)}


def current_problems(state: dict[str, Any]) -> list[str]:
    """What is wrong with ``current`` in a status answer: dangling, or damaged (--verify)."""
    current = state.get("current")
    if current is None:
        return []
    entry = next((b for b in state.get("bundles", []) if b["id"] == current), None)
    if entry is None:
        return [f"current points at {short_id(current)}, which is not installed (dangling): "
                f"deploy again, or roll back to an installed version"]
    check = entry.get("verify")
    if check is not None and not check.get("ok"):
        return [f"current {short_id(current)} is damaged ({'; '.join(check['problems'][:2])}): "
                f"deploy it again"]
    return []
