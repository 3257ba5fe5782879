"""``henet-edge remote serve``: the device's loopback serve reached through a real sshd."""

from __future__ import annotations

import http.client
import json
import socket

import pytest
from click.testing import CliRunner

pytest.importorskip("paramiko")
pytest.importorskip("uvicorn")

from henet_edge.cli import main
from henet_edge.device.classify import DEFAULT_BUNDLE, Classifier
from henet_edge.device.serve.app import create_app

from .conftest import skip_unless_ci
from .deploy_helpers import SSHServer, free_port, sshd_missing_reason
from .serve_helpers import Server

pytestmark = skip_unless_ci(sshd_missing_reason())


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    root = tmp_path_factory.mktemp("tunnel")
    server = SSHServer(root / "sshd").start()
    known = root / "known_hosts"
    known.write_text(server.known_hosts_line)
    try:
        yield server, known
    finally:
        server.stop()


def connection(sshd):
    from henet_edge.deploy.ssh import ConnectOptions, connect

    server, known = sshd
    return connect(server.spec, ConnectOptions(identities=[str(server.user_key)],
                                               known_hosts=str(known), ssh_config="/dev/null"))


def test_tunnel_reaches_the_loopback_service_and_classifies(sshd):
    from henet_edge.deploy.tunnel import Tunnel

    classifier = Classifier(DEFAULT_BUNDLE)
    image = sorted((DEFAULT_BUNDLE / "golden").glob("*.png"))[3]
    with Server(create_app(classifier)) as served, connection(sshd) as c, \
            Tunnel(c, served.port) as tunnel:
        assert tunnel.url == f"http://127.0.0.1:{tunnel.local_port}/"
        assert tunnel.local_port != served.port  # that port is taken here: another one
        for _ in range(3):  # one connection per request, each a new channel
            conn = http.client.HTTPConnection("127.0.0.1", tunnel.local_port, timeout=10)
            conn.request("POST", "/api/classify", image.read_bytes(),
                         {"Content-Type": "image/png"})
            reply = json.loads(conn.getresponse().read())
            conn.close()
            assert reply["ok"] and reply["label"] == classifier.classify_file(image).label
    with socket.socket() as s:  # closed: the local port no longer answers
        assert s.connect_ex(("127.0.0.1", tunnel.local_port)) != 0


def test_nothing_listening_on_the_device_is_one_line(sshd):
    server, known = sshd
    port = free_port()
    result = CliRunner().invoke(main, [
        "remote", "serve", "--host", server.spec, "--port", str(port), "--identity",
        str(server.user_key), "--known-hosts", str(known), "--ssh-config", "/dev/null"])
    assert result.exit_code == 1
    assert f"nothing accepts connections on the device's 127.0.0.1:{port}" in result.output
    assert "henet-edge deploy --service" in result.output and "Traceback" not in result.output


def test_remote_serve_takes_one_host():
    result = CliRunner().invoke(main, ["remote", "serve", "--host", "a", "--host", "b"])
    assert result.exit_code == 2 and "exactly one --host" in result.output
