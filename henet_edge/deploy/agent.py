"""The small, standard-library-only helper that deploy runs on the device.

Deploy sends this file's source to the device's own ``python3`` on stdin
(``python3 - OP ARGS...``) before anything of henet-edge is installed there,
so it must not import the project, numpy or anything outside the standard
library, and must run on any Python 3.6+ (an old device must still be able to
report that it is too old). Every operation prints one JSON object.

Operations:

``probe BASE``
    Architecture, Python, OS, board, free disk at ``BASE`` (or its nearest
    existing parent), whether ``venv``/``ensurepip`` work, which TFLite
    runtimes the system Python already has, and what is installed in ``BASE``.
``verify DIR BUNDLE_ID``
    Check that ``DIR/manifest.json`` hashes to ``BUNDLE_ID``, follows the
    schema, and that its files pass the device's own checks (inside the
    bundle, listed, present with their sha256, labels.txt agreeing).
``sha256 FILE...``
    The sha256 of each file.
``status BASE [--verify]``
    Installed bundles, ``current``, the venv and its install record, the
    deploy history and the last bench result.
``lock BASE TIMEOUT HOLDER``
    Create ``BASE`` with its marker file (or adopt an empty or marked one;
    refuse a folder of someone else's files), take the device's deploy lock
    (waiting up to ``TIMEOUT`` seconds), answer, then hold the lock until
    stdin closes: run with ``python3 -c``, so the lock dies with the
    connection that holds it.

The manifest schema and the check of a bundle's files are not written here a
second time: they are :mod:`henet_edge.device.manifest` (standard library
only), which deploy ships inside this program as ``MANIFEST_SOURCE`` (see
``probe.agent_source``); imported from the package, the agent reads the same
file from beside it. It is loaded only by the operations that need it, so an
old Python can still run ``probe`` and be told it is too old.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import sys
import time
import types

MANIFEST = "manifest.json"
INSTALL_RECORD = "henet-edge-install.json"
HISTORY = "history.jsonl"
LAST_BENCH = "last-bench.json"
STATE_MARKER = ".henet-edge-state"
LOCK_FILE = ".deploy.lock"
# What an unmarked folder made by an earlier henet-edge may hold, and nothing else.
LEGACY_NAMES = {"bundles", "venvs", "venv", "current", "tmp", HISTORY, LAST_BENCH}


def _read_text(path, limit=4096, *, tail=False):
    """The first (``tail``: last) ``limit`` bytes of ``path`` as text; None if unreadable."""
    try:
        with open(path, "rb") as f:
            if tail:
                f.seek(max(0, f.seek(0, os.SEEK_END) - limit))
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def _os_release():
    text = _read_text("/etc/os-release") or ""
    fields = {}
    for line in text.splitlines():
        if "=" in line:
            key, _, value = line.partition("=")
            fields[key.strip()] = value.strip().strip('"')
    return fields.get("PRETTY_NAME") or f"{platform.system()} {platform.release()}"


def _free_bytes(path):
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return None, probe
    return st.f_bavail * st.f_frsize, probe


def _has_module(name):
    try:
        import importlib.util

        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _memory_bytes():
    text = _read_text("/proc/meminfo") or ""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            try:
                return int(line.split()[1]) * 1024
            except (IndexError, ValueError):
                return None
    return None


def _link_target_id(path):
    try:
        return os.path.basename(os.readlink(path).rstrip("/"))
    except OSError:
        return None


def _load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _installed(base):
    bundles_dir = os.path.join(base, "bundles")
    try:
        bundles = sorted(n for n in os.listdir(bundles_dir)
                         if os.path.isdir(os.path.join(bundles_dir, n)))
    except OSError:
        bundles = []
    venv_key = _link_target_id(os.path.join(base, "venv"))
    record = None
    if venv_key:
        record = _load_json(os.path.join(base, "venvs", venv_key, INSTALL_RECORD))
    return {
        "current": _link_target_id(os.path.join(base, "current")),
        "bundles": bundles,
        "venv": venv_key,
        "venv_record": record,
    }


def probe(base):
    free, free_at = _free_bytes(base)
    model = _read_text("/proc/device-tree/model")
    return {
        "machine": platform.machine(),
        "system": platform.system(),
        "os": _os_release(),
        "board": model.strip("\x00\n ") if model else None,
        "memory_bytes": _memory_bytes(),
        "python": {
            "version": list(sys.version_info[:3]),
            "executable": sys.executable,
            "implementation": platform.python_implementation(),
            "bits": 64 if sys.maxsize > 2 ** 32 else 32,
            "venv": _has_module("venv") and _has_module("ensurepip"),
        },
        "runtimes": {name: _has_module(name) for name in ("ai_edge_litert", "tflite_runtime")},
        "base": base,
        "base_exists": os.path.isdir(base),
        "free_bytes": free,
        "free_at": free_at,
        "installed": _installed(base),
    }


def _manifest_module():
    """:mod:`henet_edge.device.manifest`, run from its shipped or neighbouring source."""
    module = sys.modules.get("henet_edge_manifest")
    if module is not None:
        return module
    source = globals().get("MANIFEST_SOURCE")
    if source is None:  # imported from the package rather than shipped to the device
        here = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(here, os.pardir, "device", "manifest.py")) as f:
            source = f.read()
    module = types.ModuleType("henet_edge_manifest")
    sys.modules[module.__name__] = module  # dataclasses look their module up here
    exec(compile(source, "henet_edge/device/manifest.py", "exec"), module.__dict__)
    return module


def verify(folder, bundle_id):
    """The manifest's hash, schema and every file check (as the device does at load)."""
    manifest_module = _manifest_module()
    problems = []
    manifest_path = os.path.join(folder, MANIFEST)
    try:
        os.listdir(folder)
        data = manifest_module.manifest_bytes(manifest_path)
    except (FileNotFoundError, IsADirectoryError):
        return {"ok": False, "problems": ["manifest.json: missing"]}
    except OSError as exc:
        what = MANIFEST if exc.filename == manifest_path else folder
        reason = "permission denied" if isinstance(exc, PermissionError) else exc.strerror
        return {"ok": False, "problems": [f"{what}: cannot be read ({reason})"]}
    except manifest_module.ManifestError as exc:
        return {"ok": False, "problems": [f"manifest.json: {exc}"]}
    # The id and the schema check come from the same bytes: one read, no window.
    actual = hashlib.sha256(data).hexdigest()
    if bundle_id and actual != bundle_id:
        problems.append("manifest.json: sha256 mismatch (file changed or corrupt)")
    try:
        manifest = manifest_module.manifest_from_bytes(data)
    except manifest_module.ManifestError as exc:
        problems.append(f"manifest.json: {exc}")
        return {"ok": False, "problems": problems, "id": actual}
    problems += manifest_module.verify_bundle(folder, manifest)
    return {"ok": not problems, "problems": problems, "id": actual,
            "files": len(manifest.files) + 1}


def _history(base):
    entries = []
    # the newest entries count: a long history is read from its last MiB (the cut
    # first line is not JSON and is skipped like a line a kill cut short)
    text = _read_text(os.path.join(base, HISTORY), limit=1 << 20, tail=True) or ""
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill: ignore it
        if isinstance(entry, dict) and entry.get("bundle"):
            entries.append(entry)
    return entries


def _dir_size(folder):
    total = 0
    for parent, _dirs, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(parent, name)).st_size
    return total


def status(base, check=False):
    installed = _installed(base)
    bundles = []
    for bundle_id in installed["bundles"]:
        folder = os.path.join(base, "bundles", bundle_id)
        manifest = _load_json(os.path.join(folder, MANIFEST)) or {}
        entry = {
            "id": bundle_id,
            "name": manifest.get("name"),
            "created": manifest.get("created"),
            "precisions": sorted((manifest.get("models") or {}).keys()),
            "size_bytes": _dir_size(folder),
            "mtime": os.path.getmtime(folder),
        }
        if check:
            entry["verify"] = verify(folder, bundle_id)
        bundles.append(entry)
    venvs = []
    try:
        names = sorted(os.listdir(os.path.join(base, "venvs")))
    except OSError:
        names = []
    for name in names:
        record = _load_json(os.path.join(base, "venvs", name, INSTALL_RECORD))
        venvs.append({"key": name, "complete": record is not None, "record": record})
    free, _ = _free_bytes(base)
    return {
        "base": base,
        "base_exists": os.path.isdir(base),
        "current": installed["current"],
        "venv": installed["venv"],
        "venv_record": installed["venv_record"],
        "bundles": bundles,
        "venvs": venvs,
        "history": _history(base),
        "last_bench": _load_json(os.path.join(base, LAST_BENCH)),
        "free_bytes": free,
    }


def _is_legacy_state(base, entries):
    """An unmarked folder laid out by an earlier henet-edge: only its names, and a link
    only it makes (``current`` to a bundle named by its hash, or ``venv`` to a venv
    holding its install record); any ``venv`` link of someone's project is not one."""
    loose = [e for e in entries if e not in LEGACY_NAMES
             and not e.startswith((".current.new-", ".venv.new-"))]
    if loose:
        return False
    try:
        current = os.readlink(os.path.join(base, "current"))
    except OSError:
        current = ""
    if re.fullmatch(r"bundles/[0-9a-f]{64}/?", current):
        return True
    try:
        venv = os.readlink(os.path.join(base, "venv"))
    except OSError:
        return False
    return (re.fullmatch(r"venvs/[^/]+/?", venv) is not None
            and os.path.isfile(os.path.join(base, venv, INSTALL_RECORD)))


def refusal(base):
    """Why ``base`` cannot be a state folder (an error answer: not a folder, or it holds
    others' files), or None when it is absent, empty, marked or an older state folder."""
    if os.path.lexists(base) and not os.path.isdir(base):
        return {"ok": False, "error": "not_a_folder"}
    if os.path.isdir(base) and not os.path.isfile(os.path.join(base, STATE_MARKER)):
        entries = sorted(os.listdir(base))
        if entries and not _is_legacy_state(base, entries):
            return {"ok": False, "error": "foreign", "entries": entries[:6],
                    "count": len(entries)}
    return None


def claim(base):
    """Make ``base`` a marked state folder; an error answer if it holds others' files."""
    problem = refusal(base)
    if problem is not None:
        return problem
    marker = os.path.join(base, STATE_MARKER)
    if not os.path.isfile(marker):
        os.makedirs(base, exist_ok=True)
        tmp = f"{marker}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(json.dumps({"format": "henet-edge-state/1",
                                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                         time.gmtime())}) + "\n")
        os.rename(tmp, marker)
    return None


def lock(base, timeout, holder):
    """Claim ``base``, take its lock, answer; hold the lock until stdin reaches EOF."""
    try:
        refused = claim(base)
        if refused:
            return refused
        fd = os.open(os.path.join(base, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:  # answered, not printed to stderr: the caller reads stdout
        where = f" ({exc.filename})" if exc.filename else ""
        return {"ok": False, "error": "os", "message": f"{exc.strerror or exc}{where}"}
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if time.monotonic() >= deadline:
                return {"ok": False, "error": "busy",
                        "holder": _load_json(os.path.join(base, LOCK_FILE))}
            time.sleep(0.2)
    os.ftruncate(fd, 0)
    os.write(fd, holder.encode("utf-8"))
    sys.stdout.write(json.dumps({"ok": True, "installed": _installed(base)}) + "\n")
    sys.stdout.flush()
    while sys.stdin.buffer.read(65536):
        pass
    return None


def main(argv):
    if not argv:
        raise SystemExit("usage: agent OP ARGS...")
    op, args = argv[0], argv[1:]
    if op == "probe":
        result = probe(args[0])
    elif op == "verify":
        result = verify(args[0], args[1] if len(args) > 1 else None)
    elif op == "sha256":
        result = {path: _manifest_module().sha256_file(path) for path in args}
    elif op == "status":
        result = status(args[0], check="--verify" in args[1:])
    elif op == "lock":
        result = lock(args[0], float(args[1]), args[2])
        if result is None:
            return
    else:
        raise SystemExit(f"unknown op {op!r}")
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
