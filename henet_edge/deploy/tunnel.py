"""``henet-edge remote serve``: reach a device's loopback-only service through SSH.

A listening socket on 127.0.0.1 of the desktop; every connection to it becomes a
``direct-tcpip`` channel of the same verified SSH connection deploy uses
(OpenSSH's ``ssh -L``), to 127.0.0.1:PORT as the device sees it. The device's
port never has to be open to the network.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading

from .connection import Log
from .errors import DeployError
from .ssh import SSHConnection

BLOCK = 65536


class TunnelError(DeployError):
    """The tunnel cannot be opened (nothing listens on the device, port taken here)."""


class Tunnel:
    """Forward ``127.0.0.1:local_port`` here to ``127.0.0.1:remote_port`` on the device.

    ``local_port`` 0 takes ``remote_port`` when it is free here, else any free port.
    """

    def __init__(self, connection: SSHConnection, remote_port: int, *, local_port: int = 0,
                 log: Log = lambda _msg: None):
        self.connection, self.remote_port, self.log = connection, remote_port, log
        self.remote = ("127.0.0.1", remote_port)
        self._check_remote()
        self.sock = _listen(local_port, remote_port)
        self.local_port = self.sock.getsockname()[1]
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="henet-tunnel", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}/"

    def _open_channel(self, origin: tuple[str, int]):
        return self.connection.transport.open_channel("direct-tcpip", self.remote, origin,
                                                      timeout=15)

    def _check_remote(self) -> None:
        import paramiko

        try:
            self._open_channel(("127.0.0.1", 0)).close()
        except paramiko.ChannelException as exc:
            raise TunnelError(
                f"{self.connection.name}: nothing accepts connections on the device's "
                f"127.0.0.1:{self.remote_port} ({exc.text}); start the service there "
                f"(`henet-edge deploy --service`, or `henet-edge serve` on the device)"
            ) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise TunnelError(f"{self.connection.name}: cannot open a tunnel: {exc}") from None

    def start(self) -> Tunnel:
        self._thread.start()
        return self

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, origin = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._pump, args=(client, origin), daemon=True).start()

    def _pump(self, client: socket.socket, origin: tuple[str, int]) -> None:
        try:
            chan = self._open_channel(origin)
        except Exception as exc:  # the device went away or the service stopped
            self.log(f"tunnel: cannot reach the device's port {self.remote_port}: {exc}")
            client.close()
            return
        try:
            while not self._closed.is_set():
                ready, _, _ = select.select([client, chan], [], [], 0.5)
                if client in ready:
                    data = client.recv(BLOCK)
                    if not data:
                        break
                    chan.sendall(data)
                if chan in ready:
                    data = chan.recv(BLOCK)
                    if not data:
                        break
                    client.sendall(data)
        except OSError:
            pass
        finally:
            chan.close()
            client.close()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):  # shutdown wakes the blocked accept()
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
        if self._thread.is_alive():
            self._thread.join(2)

    def __enter__(self) -> Tunnel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _listen(local_port: int, remote_port: int) -> socket.socket:
    """A socket listening on 127.0.0.1 only."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for port in ([local_port] if local_port else [remote_port, 0]):
        try:
            sock.bind(("127.0.0.1", port))
            break
        except OSError as exc:
            if local_port:
                sock.close()
                raise TunnelError(f"127.0.0.1:{local_port} is taken on this machine "
                                  f"({exc.strerror}); give another --local-port") from None
    sock.listen(16)
    return sock
