"""A device's installed versions: their deploy order, the history that really
happened, what a rollback goes back to, what pruning deletes, and ``--to`` lookup.

Pure functions over the device's ``history.jsonl`` and bundle folders, so each
rule is tested without a device (the :class:`~.installer.Installer` applies them).
"""

from __future__ import annotations

from typing import Any

from .errors import DeployError

DEFAULT_KEEP = 3  # bundle versions kept on a device (current included)

def deploy_order(history: list[dict[str, Any]], installed: dict[str, float]) -> list[str]:
    """Installed bundle ids, oldest deploy first (``installed`` maps id -> folder mtime).

    The order is that of each id's latest *deploy* (rollbacks do not reorder);
    ids without history (history lost) come first, by folder time.
    """
    return _by_latest_entry([e for e in history if e.get("action", "deploy") == "deploy"],
                            installed)


def recency_order(realised: list[dict[str, Any]], installed: dict[str, float]) -> list[str]:
    """Installed bundle ids, the one current longest ago first: what pruning takes first.

    Rollbacks count here (``realised`` is :func:`realised_history`): after A, B, a
    rollback to A and a deploy of C, the rejected B goes before A, which C replaced.
    """
    return _by_latest_entry(realised, installed)


def _by_latest_entry(entries: list[dict[str, Any]], installed: dict[str, float]) -> list[str]:
    """Installed ids in the order of their latest entry; ids with none first, by folder time."""
    last = {entry["bundle"]: i for i, entry in enumerate(entries)}
    known = sorted((b for b in last if b in installed), key=last.__getitem__)
    unknown = sorted((b for b in installed if b not in last), key=installed.__getitem__)
    return unknown + known


def realised_history(history: list[dict[str, Any]], current: str | None
                     ) -> list[dict[str, Any]]:
    """The entries whose switch happened, judged from ``current`` on disk.

    Each entry is written just before its switch, so an entry is real if its
    bundle is ``current`` now, or a later entry was made while it was current
    (its ``from``); the others are switches a crash cut short.
    """
    kept: list[dict[str, Any]] = []
    wanted = current
    for entry in reversed(history):
        if wanted is not None and entry.get("bundle") == wanted:
            kept.append(entry)
            wanted = entry.get("from")
    return list(reversed(kept))


def previous_version(order: list[str], current: str | None,
                     realised: list[dict[str, Any]] | None = None) -> str | None:
    """What a plain rollback goes back to: the version that ``current``'s deploy replaced
    (its ``from`` in the ``realised`` history, if still installed), else the version
    deployed before ``current`` in ``order`` (so a rollback after a rollback goes further
    back, not to the version just rejected)."""
    latest = next((e for e in reversed(realised or []) if e.get("bundle") == current), None)
    if latest is not None and latest.get("action", "deploy") == "deploy":
        replaced = latest.get("from")
        if replaced in order and replaced != current:
            return replaced
    if current not in order:
        return order[-1] if order else None
    i = order.index(current)
    return order[i - 1] if i > 0 else None


def to_prune(order: list[str], current: str | None, keep: int) -> list[str]:
    """Bundle ids to delete so that ``keep`` remain; ``current`` is never deleted."""
    keep = max(1, keep)
    kept = [b for b in order if b == current]
    for b in reversed(order):
        if len(kept) >= keep:
            break
        if b not in kept:
            kept.append(b)
    return [b for b in order if b not in kept]


def resolve_version(text: str, bundles: list[dict[str, Any]]) -> str:
    """A bundle id from an id prefix (4+ hex digits) or a bundle name."""
    text = text.strip()
    ids = [b["id"] for b in bundles]
    if len(text) >= 4 and all(c in "0123456789abcdef" for c in text.lower()):
        hits = [i for i in ids if i.startswith(text.lower())]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise DeployError(f"--to {text}: ambiguous, matches {', '.join(h[:12] for h in hits)}")
    named = [b["id"] for b in bundles if b.get("name") == text]
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        raise DeployError(f"--to {text}: several installed versions are named {text!r} "
                          f"({', '.join(n[:12] for n in named)}); give an id prefix")
    listing = ", ".join(f"{b['id'][:12]} ({b.get('name')})" for b in bundles) or "none"
    raise DeployError(f"--to {text}: no such installed version (installed: {listing})")
