"""The device side's bundles: ``bundles/<sha256>`` in the state folder.

A bundle folder is named by the sha256 of its ``manifest.json`` and only ever
appears whole: its files are uploaded to ``tmp/upload-*``, verified there by the
device-side agent, and moved into place with one rename. A damaged installed
copy is repaired file by file, so the folder (and a ``current`` pointing at it)
never stops existing.
"""

from __future__ import annotations

from shlex import quote
from typing import Any

from henet_edge.device.bundle import Bundle

from .errors import DeployError
from .session import TMP, SessionPart
from .versions import realised_history

BUNDLES = "bundles"
UPLOAD_STAGE = "upload"  # tmp/upload-*: a bundle being uploaded


def short_id(bundle_id: str | None) -> str:
    """How messages name a bundle: the first 12 hex digits of its id."""
    return bundle_id[:12] if bundle_id else "none"


class DeviceBundles(SessionPart):
    """Upload, verify, repair and drop the bundles under ``session.base``."""

    def path(self, bundle_id: str) -> str:
        return self.session.path(BUNDLES, bundle_id)

    def verify(self, folder: str, bundle_id: str) -> dict[str, Any]:
        """The agent's hash check of ``folder`` against ``bundle_id``: ok and problems."""
        return self.agent("verify", folder, bundle_id)

    def ensure(self, bundle: Bundle, files: list[str], installed: bool) -> bool:
        """Make ``bundles/<id>`` a verified copy of ``bundle``; True if it was uploaded.

        ``files`` lists manifest.json first, then the manifest's files; ``installed``
        says whether the device already lists the bundle (maybe damaged).
        """
        bundle_id = bundle.id
        final = self.path(bundle_id)
        if installed:
            check = self.verify(final, bundle_id)
            if check["ok"]:
                self.log(f"bundle {short_id(bundle_id)} already on the device and verified; "
                         f"nothing to upload")
                return False
            self.log(f"the installed copy of {short_id(bundle_id)} is damaged "
                     f"({'; '.join(check['problems'][:3])}); uploading it again")
        session = self.session
        stage = session.path(TMP, session.unique(f"{UPLOAD_STAGE}-{bundle_id[:12]}"))
        pairs = [(bundle.root / f, f"{stage}/{f}") for f in files]
        try:
            session.upload(pairs, "bundle")
            check = self.verify(stage, bundle_id)
            if not check["ok"]:
                raise DeployError(
                    f"{self.name}: the uploaded bundle failed its hash check on the device "
                    f"({'; '.join(check['problems'][:3])}); nothing was changed, re-run the "
                    f"deploy")
            if installed:
                self._repair_in_place(stage, final, files)
            else:
                session.run(f"mv -T {quote(stage)} {quote(final)}",
                            "moving the bundle into place")
        except BaseException:
            session.run_quietly(f"rm -rf {quote(stage)}")
            raise
        self.log(f"uploaded and verified {len(files)} files on the device")
        return True

    def _repair_in_place(self, stage: str, final: str, files: list[str]) -> None:
        """Rename each verified file over its damaged copy, then drop the stage."""
        dirs = sorted({f"{final}/{f.rsplit('/', 1)[0]}" for f in files if "/" in f})
        steps = [f"mkdir -p {' '.join(quote(d) for d in dirs)}"] if dirs else []
        steps += [f"mv -f -T {quote(f'{stage}/{f}')} {quote(f'{final}/{f}')}" for f in files]
        self.session.run(" && ".join(steps), "replacing the damaged files")
        self.session.run_quietly(f"rm -rf {quote(stage)}")

    def drop_failed(self, bundle_id: str, previous: str | None) -> None:
        """Remove a bundle that failed its self-test unless it was ever deployed here."""
        if bundle_id == previous:
            return
        state = self.agent("status", self.session.base)
        history = realised_history(state.get("history", []), state.get("current"))
        if not any(e.get("bundle") == bundle_id for e in history):
            self.session.run_quietly(f"rm -rf {quote(self.path(bundle_id))}")
