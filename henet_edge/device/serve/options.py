"""What a ``serve`` command line may ask for, checked before any model is loaded.

Standard library only, so ``henet-edge service install`` checks its options with the
same rules as ``serve`` without importing the web stack.
"""

from __future__ import annotations

import ipaddress
import math
import socket

from henet_edge import HenetEdgeError, UsageError

MAX_WORKERS = 16  # interpreters; a Pi has 4 cores, and each one holds the model
DEFAULT_PORT = 8080
DEFAULT_BIND = f"127.0.0.1:{DEFAULT_PORT}"  # loopback: no token needed


class BindError(UsageError, ValueError):
    """A ``--bind`` that is not HOST:PORT."""


class ListenError(HenetEdgeError, OSError):
    """The address cannot be listened on (in use, not this machine's, unknown name)."""


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (as uvicorn binds one), made before anything is
    printed or loaded: a port in use or a name that does not resolve is one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = (exc.strerror or str(exc)).lower()
        raise ListenError(f"--bind {host}:{port}: cannot listen there ({reason})") from None
    return sock


def parse_bind(bind: str) -> tuple[str, int]:
    """``host:port`` -> (host, port); :class:`BindError` with a one-line reason."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not host or not 0 < int(port) < 65536:
        raise BindError(f"--bind {bind!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def serve_url(host: str, port: int) -> str:
    """The URL of ``host:port`` as a browser takes it (an IPv6 address in brackets)."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1); no other name counts."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name such as 127.example.com may resolve anywhere
        return False


def check_token(token: str | None) -> None:
    """An empty ``--token`` would let every request in: refuse it."""
    if token is not None and not token.strip():
        raise UsageError("--token is empty: give a real token, or leave --token out "
                         "(one is generated when binding beyond loopback)")


def read_token_file(path: str, token: str | None = None) -> str:
    """``--token-file``: the token on the file's first line (so it shows in no process
    list or unit file); refused together with ``--token``."""
    if token is not None:
        raise UsageError("give --token (or HENET_EDGE_TOKEN) or --token-file, not both")
    try:
        with open(path, encoding="utf-8") as f:
            line = f.readline(4096).rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise UsageError(f"--token-file {path}: cannot be read ({reason})") from None
    if not line.strip():
        raise UsageError(f"--token-file {path}: its first line is empty")
    return line


def check_serve_options(bind: str, *, workers: int = 1, every: float = 0.1,
                        camera: str | None = None,
                        token: str | None = None) -> tuple[str, int]:
    """Refuse what cannot work (a bad bind, no workers, an empty token, a camera that
    will not open)."""
    address = parse_bind(bind)
    check_token(token)
    if not 1 <= workers <= MAX_WORKERS:
        raise UsageError(f"--workers must be 1 to {MAX_WORKERS} (each loads the model once; "
                         f"more than the cores gain nothing), got {workers}")
    if not (math.isfinite(every) and every >= 0):
        raise UsageError(f"--every must be 0 or more seconds, got {every}")
    if camera is not None:
        from henet_edge.device.camera import open_source

        open_source(camera).close()  # a source that cannot open stops here, in one line
    return address


def service_arguments(bind: str, *, workers: int = 1, camera: str | None = None,
                      token: str | None = None) -> list[str]:
    """The ``serve`` arguments of a service unit; beyond loopback it needs a token.

    (``serve`` itself prints a generated token; a service has nowhere to show one.)
    The camera is not opened here: the service may be installed before it is plugged in.
    """
    host, _ = check_serve_options(bind, workers=workers, token=token)
    if not is_loopback(host) and not token:
        raise UsageError(f"--bind {bind} is beyond loopback: give --token (a service cannot "
                         "show a generated one)")
    return ["--bind", bind, "--workers", str(workers)] + (["--camera", camera] if camera
                                                          else [])
