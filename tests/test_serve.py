"""`henet-edge serve`: the real server (uvicorn) on a loopback port, real HTTP, real TFLite."""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import time

import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")

from henet_edge.cli import main  # noqa: E402
from henet_edge.device.classify import Classifier  # noqa: E402
from henet_edge.device.serve.app import create_app, parse_bind  # noqa: E402

from .device_helpers import colour_image  # noqa: E402


class Server:
    """A uvicorn server in a thread on a free loopback port."""

    def __init__(self, app) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, dict(resp.getheaders()), data


def jpeg(channel: int) -> bytes:
    buf = io.BytesIO()
    colour_image(channel, size=(64, 48)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def classifier(tiny_bundle) -> Classifier:
    return Classifier(tiny_bundle)


@pytest.fixture(scope="module")
def server(classifier):
    with Server(create_app(classifier, max_upload=200_000)) as s:
        yield s


def test_classify_a_jpeg_matches_classify_json(server, tiny_bundle, tmp_path):
    data = jpeg(0)
    (tmp_path / "red.jpg").write_bytes(data)
    status, _, body = server.request("POST", "/api/classify", data,
                                     {"Content-Type": "image/jpeg"})
    assert status == 200, body
    served = json.loads(body)
    cli = CliRunner().invoke(main, ["classify", str(tmp_path / "red.jpg"), "--model",
                                    str(tiny_bundle), "--json"])
    line = json.loads(cli.output.strip().splitlines()[0])
    assert served["label"] == line["label"]
    assert served["top"] == line["top"]
    assert served["logits"] == line["logits"]
    assert set(served) == set(line)


@pytest.mark.parametrize("body,ctype,status,kind", [
    (b"not an image at all", "image/jpeg", 400, "bad_image"),
    (None, "image/jpeg", 400, "bad_image"),  # truncated JPEG, filled in below
    (b"", "image/jpeg", 400, "empty"),
    (b"x" * 300_000, "image/jpeg", 413, "too_large"),
    (b"{}", "application/json", 415, "content_type"),
])
def test_hostile_bodies_get_4xx_json_and_the_server_stays_up(server, body, ctype, status, kind):
    if body is None:
        body = jpeg(1)[:200]
    got, _, data = server.request("POST", "/api/classify", body, {"Content-Type": ctype})
    assert got == status, data
    reply = json.loads(data)
    assert reply["ok"] is False and reply["kind"] == kind and "Traceback" not in reply["error"]
    assert server.request("GET", "/healthz")[0] == 200


def test_decompression_bomb_is_refused(server):
    buf = io.BytesIO()
    Image.new("L", (12_000, 12_000)).save(buf, "PNG")
    got, _, data = server.request("POST", "/api/classify", buf.getvalue(),
                                  {"Content-Type": "image/png"})
    assert got == 400 and "pixels" in json.loads(data)["error"]


def test_over_size_is_refused_from_content_length_before_the_body(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.putrequest("POST", "/api/classify")
    conn.putheader("Content-Type", "image/jpeg")
    conn.putheader("Content-Length", str(10 << 30))
    conn.endheaders()  # no body sent at all
    resp = conn.getresponse()
    assert resp.status == 413
    conn.close()


def test_unknown_path_and_wrong_method_are_json_4xx(server):
    status, _, data = server.request("GET", "/nope")
    assert status == 404 and json.loads(data)["kind"] == "not_found"
    status, _, data = server.request("GET", "/api/classify")
    assert status == 405 and json.loads(data)["ok"] is False


def test_info_page_and_metrics_count_what_happened(server, classifier):
    status, _, data = server.request("GET", "/api/info")
    assert status == 200 and json.loads(data)["precision"] == classifier.precision
    status, _, page = server.request("GET", "/")
    assert status == 200 and b"/api/classify" in page
    before = server.request("GET", "/metrics")[2].decode()
    server.request("POST", "/api/classify", jpeg(2), {"Content-Type": "image/jpeg"})
    server.request("POST", "/api/classify", b"junk", {"Content-Type": "image/jpeg"})
    after = server.request("GET", "/metrics")[2].decode()

    def value(text: str, prefix: str) -> float:
        rows = [r for r in text.splitlines() if r.startswith(prefix)]
        return float(rows[0].split()[-1]) if rows else 0.0

    assert value(after, "henet_invoke_ms_count") == value(before, "henet_invoke_ms_count") + 1
    assert (value(after, 'henet_errors_total{kind="bad_image"}')
            == value(before, 'henet_errors_total{kind="bad_image"}') + 1)
    assert "henet_uptime_seconds" in after


def test_token_is_checked_on_every_request(classifier):
    with Server(create_app(classifier, token="s3cret")) as s:
        for path in ("/", "/healthz", "/metrics", "/api/info", "/nope"):
            status, _, data = s.request("GET", path)
            assert status == 401 and json.loads(data)["kind"] == "unauthorised"
        assert s.request("GET", "/healthz", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert s.request("GET", "/healthz", headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert s.request("GET", "/healthz?token=s3cret")[0] == 200


def test_parse_bind():
    assert parse_bind("0.0.0.0:9000") == ("0.0.0.0", 9000)
    with pytest.raises(ValueError):
        parse_bind("nonsense")




def test_cli_serve_rejects_a_bad_bind_in_one_line(tiny_bundle):
    result = CliRunner().invoke(main, ["serve", "--model", str(tiny_bundle), "--bind", "oops"])
    assert result.exit_code != 0 and "HOST:PORT" in result.output
    assert "Traceback" not in result.output
