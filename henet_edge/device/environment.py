"""The environment record kept with every timing result.

Board, CPU, core, governor and frequency, temperatures (``/sys/class/thermal``
and ``vcgencmd measure_temp``), ``vcgencmd get_throttled`` decoded, runtime,
Python and OS. Every field that cannot be read is recorded as ``"unknown"``;
nothing is guessed. The filesystem root and the ``vcgencmd`` command are
injectable so tests can lay out fake ``/proc`` and ``/sys`` trees.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

UNKNOWN = "unknown"

# vcgencmd get_throttled bits (Raspberry Pi firmware documentation).
THROTTLE_BITS = {
    0: "under-voltage detected",
    1: "ARM frequency capped",
    2: "currently throttled",
    3: "soft temperature limit active",
    16: "under-voltage has occurred",
    17: "ARM frequency capping has occurred",
    18: "throttling has occurred",
    19: "soft temperature limit has occurred",
}
NOW_BITS = (0, 1, 2, 3)
STICKY_BITS = (16, 17, 18, 19)

# /proc/cpuinfo "CPU part" of the ARM cores found on Raspberry Pi boards.
ARM_PARTS = {"0xb76": "ARM1176", "0xc07": "Cortex-A7", "0xd03": "Cortex-A53",
             "0xd08": "Cortex-A72", "0xd0b": "Cortex-A76"}

GOVERNOR_FIX = ("echo performance | sudo tee "
                "/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor")


def decode_throttled(value: int) -> dict[str, Any]:
    """``get_throttled`` bits: what is happening now and what has happened since boot."""
    return {"raw": hex(value),
            "now": [THROTTLE_BITS[b] for b in NOW_BITS if value >> b & 1],
            "since_boot": [THROTTLE_BITS[b] for b in STICKY_BITS if value >> b & 1],
            "other_bits": hex(value & ~sum(1 << b for b in THROTTLE_BITS))}


# CPU instructions that can make int8 inference fast, as /proc/cpuinfo names them.
# Whether they do depends on the runtime's kernels for each op, so timing says.
INT8_FEATURES = (("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"),
                 ("amx_int8", "AMX-INT8"), ("asimddp", "Arm dot-product"),
                 ("i8mm", "Arm i8mm"))


def describe_int8_features(features: list[str] | str) -> str:
    """``AVX-512 VNNI``, or a plain statement that there are none (or that it is unknown)."""
    if features == UNKNOWN or not isinstance(features, list):
        return "int8 instructions unknown"
    if not features:
        return "no int8 dot-product instructions: no VNNI, no Arm dot-product"
    return "int8 instructions: " + ", ".join(features)


@dataclass
class Probe:
    """Reads the machine's state under ``root`` and through ``vcgencmd``."""

    root: Path = field(default_factory=lambda: Path("/"))
    vcgencmd: Sequence[str] | str | None = "vcgencmd"
    timeout: float = 3.0

    def path(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def read(self, path: str) -> str | None:
        """Stripped text of a file under the root, ``None`` if unreadable."""
        try:
            return self.path(path).read_bytes().decode("utf-8", "replace").strip("\x00 \n\t")
        except OSError:
            return None

    def run_vcgencmd(self, *args: str) -> str | None:
        """Output of ``vcgencmd ARGS``, or ``None`` if there is none to run or it fails."""
        if not self.vcgencmd:
            return None
        command = [self.vcgencmd] if isinstance(self.vcgencmd, str) else list(self.vcgencmd)
        try:
            done = subprocess.run([*command, *args], capture_output=True, text=True,
                                  timeout=self.timeout, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        if done.returncode != 0:
            return None
        return done.stdout.strip()

    # -- fields -----------------------------------------------------------------
    def board(self) -> str:
        return self.read("/proc/device-tree/model") or UNKNOWN

    def cpu(self) -> str:
        text = self.read("/proc/cpuinfo")
        if not text:
            return UNKNOWN
        fields: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() not in fields:
                fields[key.strip()] = value.strip()
        if fields.get("model name"):
            return fields["model name"]
        part = fields.get("CPU part", "").lower()
        if part:
            return ARM_PARTS.get(part, f"ARM CPU part {part}")
        return fields.get("Hardware") or UNKNOWN

    def int8_features(self) -> list[str] | str:
        """The int8 dot-product instructions the CPU has (``[]``: none), by their usual names."""
        text = self.read("/proc/cpuinfo")
        if not text:
            return UNKNOWN
        flags: set[str] = set()
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() in ("flags", "features"):
                flags.update(value.split())
        return [label for flag, label in INT8_FEATURES if flag in flags]

    def governor(self, core: int) -> str:
        return self.read(f"/sys/devices/system/cpu/cpu{core}/cpufreq/scaling_governor") \
            or UNKNOWN

    def frequency_mhz(self, core: int, which: str = "scaling_cur_freq") -> float | str:
        text = self.read(f"/sys/devices/system/cpu/cpu{core}/cpufreq/{which}")
        try:
            return int(text) / 1000.0 if text else UNKNOWN
        except ValueError:
            return UNKNOWN

    def thermal_zones(self) -> dict[str, float]:
        """Temperature in °C of every readable ``/sys/class/thermal`` zone, by type."""
        zones: dict[str, float] = {}
        base = self.path("/sys/class/thermal")
        try:
            names = sorted(p.name for p in base.iterdir() if p.name.startswith("thermal_zone"))
        except OSError:
            return zones
        for name in names:
            raw = self.read(f"/sys/class/thermal/{name}/temp")
            kind = self.read(f"/sys/class/thermal/{name}/type") or name
            try:
                zones[kind if kind not in zones else f"{kind} ({name})"] = int(raw) / 1000.0
            except (TypeError, ValueError):
                continue
        return zones

    def cpu_temperature(self) -> float | str:
        zones = self.thermal_zones()
        for kind in ("cpu-thermal", "cpu_thermal", "x86_pkg_temp", "soc-thermal"):
            if kind in zones:
                return zones[kind]
        return next(iter(zones.values()), UNKNOWN)

    def vcgencmd_temperature(self) -> float | str:
        out = self.run_vcgencmd("measure_temp")
        match = re.search(r"temp=([-\d.]+)", out or "")
        return float(match.group(1)) if match else UNKNOWN

    def throttled(self) -> dict[str, Any] | str:
        out = self.run_vcgencmd("get_throttled")
        match = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", out or "")
        return decode_throttled(int(match.group(1), 0)) if match else UNKNOWN

    def os_name(self) -> str:
        text = self.read("/etc/os-release") or ""
        match = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, re.MULTILINE)
        return match.group(1) if match else UNKNOWN

    def kernel(self) -> str:
        return self.read("/proc/sys/kernel/osrelease") or UNKNOWN

    # -- records ----------------------------------------------------------------
    def snapshot(self, core: int | None) -> dict[str, Any]:
        """What changes during a run: governor, frequency, temperatures, throttling."""
        known = core is not None
        return {
            "governor": self.governor(core) if known else UNKNOWN,
            "frequency_mhz": self.frequency_mhz(core) if known else UNKNOWN,
            "temperature_c": self.cpu_temperature(),
            "vcgencmd_temperature_c": self.vcgencmd_temperature(),
            "throttled": self.throttled(),
        }

    def record(self, core: int | None, runtime: dict[str, Any] | None = None) -> dict[str, Any]:
        """The fixed facts about this machine and run."""
        known = core is not None
        return {
            "board": self.board(),
            "cpu": self.cpu(),
            "int8_features": self.int8_features(),
            "machine": platform.machine() or UNKNOWN,
            "cpu_count": os.cpu_count() or UNKNOWN,
            "core": core if known else UNKNOWN,
            "max_frequency_mhz": self.frequency_mhz(core, "scaling_max_freq") if known
            else UNKNOWN,
            "runtime": runtime or UNKNOWN,
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "os": self.os_name(),
            "kernel": self.kernel(),
        }


def assess(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Whether a run is suspect, why, and what could not be checked.

    Suspect: the governor was not ``performance``, throttling or capping was
    active before or after, or a since-boot throttling bit was set at all
    (set during the run, or before it, which cannot rule out the run).
    """
    reasons: list[str] = []
    unverified: list[str] = []
    governors = {s.get("governor", UNKNOWN) for s in (before, after)}
    if governors == {UNKNOWN}:
        unverified.append("CPU governor unknown (no cpufreq in /sys): cannot confirm "
                          "'performance'")
    for gov in sorted(governors - {UNKNOWN, "performance"}):
        reasons.append(f"CPU governor is '{gov}', not 'performance' "
                       f"(fix: `{GOVERNOR_FIX}`)")
    t0, t1 = before.get("throttled", UNKNOWN), after.get("throttled", UNKNOWN)
    if not isinstance(t0, dict) and not isinstance(t1, dict):
        unverified.append("throttling unknown (`vcgencmd get_throttled` not available)")
    for when, state in (("before", t0), ("after", t1)):
        if isinstance(state, dict) and state["now"]:
            reasons.append(f"{', '.join(state['now'])} {when} the run "
                           f"(get_throttled={state['raw']})")
    if isinstance(t1, dict):
        earlier = set(t0["since_boot"]) if isinstance(t0, dict) else set()
        during = [b for b in t1["since_boot"] if b not in earlier]
        if during:
            reasons.append(f"during the run: {', '.join(during)} "
                           f"(get_throttled={t1['raw']})")
        if earlier:
            reasons.append(f"before the run: {', '.join(sorted(earlier))} since boot, so it "
                           "cannot be ruled out during the run (reboot to clear; check the "
                           "power supply and cooling)")
    return {"suspect": bool(reasons), "reasons": reasons, "unverified": unverified}
