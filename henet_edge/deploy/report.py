"""How deploy, rollback and status results read as text (the CLI prints these).

Each ``*_row`` turns one host's result into its row of the fleet table
(:func:`~henet_edge.deploy.fleet.outcome_table`); :func:`format_status` is the
per-device block of ``henet-edge status``; the service and self-test summaries and the
failed self-test's message are the words deploy uses for them.
"""

from __future__ import annotations

from typing import Any

from henet_edge.device.selftest import failure_line

from .fleet import HostOutcome, format_table
from .probe import human_bytes

DEPLOY_HEADERS = ["host", "bundle", "device side", "runtime", "self-test", "time"]
ROLLBACK_HEADERS = ["host", "current", "was", "self-test", "time"]
VERSION_HEADERS = ["version", "name", "deployed", "precisions", "size", "state"]


def deploy_row(r: dict[str, Any]) -> list[str]:
    selftest = r["selftest"]
    verdict = ("passed" if selftest["passed"] else "skipped" if selftest["passed"] is None
               else "FAILED")
    return [r["host"], f"{r['name']} {r['bundle'][:12]}", f"henet-edge {r['version']}",
            f"{r['runtime'].get('name', '?')} {r['runtime'].get('version', '')}",
            f"{verdict} ({selftest['text']})"]


def rollback_row(r: dict[str, Any]) -> list[str]:
    return [r["host"], f"{r['name']} {r['bundle'][:12]}", (r["previous"] or "none")[:12],
            r["selftest"]["text"]]


def unhealthy(outcomes: list[HostOutcome]) -> bool:
    """Whether a device answered with problems (a dangling or damaged ``current``)."""
    return any(o.ok and (o.result or {}).get("problems") for o in outcomes)


def format_status(s: dict[str, Any]) -> str:
    """``henet-edge status`` for one device: platform, device side, versions, bench, service."""
    if "same_device_as" in s:
        return (f"{s['host']}: the same device as {s['same_device_as']} (same host key and "
                f"boot), shown there")
    runtime = s.get("runtime") or {}
    device = s.get("device") or {}
    lines = [f"{s['host']}: {device.get('arch', '?')}, Python {device.get('python', '?')}, "
             f"{device.get('os', '?')}; {human_bytes(s.get('free_bytes'))} free",
             f"  device side: henet-edge {s.get('version') or 'not installed'}"
             + (f" (venv {s['venv']}, {runtime.get('name')} {runtime.get('version')})"
                if s.get("venv") else "")]
    rows = [_version_row(b, s) for b in s["bundles"]]
    lines.append("  " + format_table(VERSION_HEADERS, rows).replace("\n", "\n  ") if rows
                 else "  no bundles installed")
    lines += [f"  WARNING: {problem}" for problem in s.get("problems") or []]
    lines += _bench_lines(s.get("last_bench"))
    lines.append("  service: " + (service_summary(s["service"]) if s.get("service")
                                  else "unknown (no device side installed)"))
    return "\n".join(lines)


def _version_row(b: dict[str, Any], s: dict[str, Any]) -> list[str]:
    state = "current" if b["current"] else "previous" if b["id"] == s["previous"] else ""
    if "verify" in b:
        state += (" ok" if b["verify"]["ok"] else
                  " DAMAGED: " + "; ".join(b["verify"]["problems"][:2]))
    return [b["id"][:12], b.get("name") or "?", b.get("deployed") or "?",
            ",".join(b["precisions"]), human_bytes(b["size_bytes"]), state.strip()]


def _bench_lines(result: dict[str, Any] | None) -> list[str]:
    if not result:
        return ["  last bench: none (run `henet-edge remote bench`)"]
    when = (result.get("remote") or {}).get("time", "?")
    return [f"  last bench ({when}): {m.get('name')}: {m.get('time_s', 0):.4f} s per "
            f"{result.get('runs')} passes, "
            f"{(m.get('per_inference_ms') or {}).get('mean', 0):.3f} ms mean"
            + (" (SUSPECT)" if result.get("suspect") else "")
            for m in result.get("models", [])]


def service_summary(state: dict[str, Any]) -> str:
    if not state.get("installed"):
        return "not installed"
    if not state.get("systemd"):
        return f"unit written to {state['unit']}; systemd is not running there, not started"
    return f"{state['scope']} unit {state['active']}, {state['enabled']}"


def selftest_summary(report: dict[str, Any]) -> dict[str, Any]:
    if not report:
        return {"passed": None, "text": "skipped"}
    parts = []
    for precision, part in report.get("precisions", {}).items():
        parts.append(f"{precision} {part['images'] - part['failed']}/{part['images']}")
    return {"passed": bool(report.get("passed")),
            "text": ", ".join(parts) or "no results",
            "max_abs_diff": {p: part.get("max_abs_diff")
                             for p, part in report.get("precisions", {}).items()}}


def selftest_message(host: str, report: dict[str, Any]) -> str:
    """One paragraph: which golden images failed, with both predictions."""
    problems = [f"{precision} {failure_line(row)}"
                for precision, part in report.get("precisions", {}).items()
                for row in part.get("results", []) if not row.get("passed")]
    shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4
                                       else "")
    return (f"{host}: self-test FAILED, the device does not reproduce the desktop's results "
            f"({shown or report.get('error', 'no details')}); current left at the previous "
            f"version")
