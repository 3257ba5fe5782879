"""`henet-edge serve`: the real server (uvicorn) on a loopback port, real HTTP, real TFLite."""

from __future__ import annotations

import http.client
import io
import json
import socket
import time

import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")

from henet_edge.cli import main  # noqa: E402
from henet_edge.device.classify import Classifier  # noqa: E402
from henet_edge.device.serve.app import create_app, parse_bind  # noqa: E402
from henet_edge.device.serve.live import LiveCamera  # noqa: E402
from henet_edge.device.serve.metrics import Metrics  # noqa: E402
from henet_edge.device.serve.options import serve_url  # noqa: E402
from henet_edge.device.serve.pool import ClassifierPool  # noqa: E402

from .device_helpers import colour_image, structured_image  # noqa: E402
from .serve_helpers import Server  # noqa: E402


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


def test_a_large_upload_is_decoded_as_classify_decodes_the_file(server, tiny_bundle, tmp_path):
    # Large enough that `classify` decodes the JPEG at a reduced scale (draft): an upload
    # of the same bytes must get the same pixels, so the same logits.
    buf = io.BytesIO()
    structured_image(3, size=(512, 384)).save(buf, "JPEG", quality=70)
    data = buf.getvalue()
    assert len(data) < 200_000
    (tmp_path / "big.jpg").write_bytes(data)
    status, _, body = server.request("POST", "/api/classify", data,
                                     {"Content-Type": "image/jpeg"})
    assert status == 200, body
    cli = CliRunner().invoke(main, ["classify", str(tmp_path / "big.jpg"), "--model",
                                    str(tiny_bundle), "--json"])
    assert json.loads(body)["logits"] == json.loads(cli.output.splitlines()[0])["logits"]


@pytest.mark.parametrize("fmt", ["EPS", "TIFF", "GIF", "PPM"])
def test_no_decoder_but_jpeg_png_bmp_webp_is_offered_an_upload(server, fmt):
    # EPS would be handed to Ghostscript where it is installed; the others are readers
    # the device has no use for. Each is refused before decoding, whatever its type says.
    buf = io.BytesIO()
    colour_image(0, size=(32, 32)).save(buf, fmt)
    got, _, data = server.request("POST", "/api/classify", buf.getvalue(),
                                  {"Content-Type": "image/jpeg"})
    reply = json.loads(data)
    assert got == 400 and reply["kind"] == "bad_image", reply
    assert "only JPEG, PNG, BMP or WebP" in reply["error"]


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
    info = json.loads(data)
    assert status == 200 and info["precision"] == classifier.precision
    assert info["model"] == classifier.made_by()["model"]  # named, not the device's path
    assert str(classifier.model.path.parent) not in data.decode()
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


def test_token_is_checked_on_every_request_but_the_pages(classifier):
    """The page holds no data and takes its token from the URL's fragment, which no
    browser sends: it is served to anyone, and only to GET and HEAD."""
    with Server(create_app(classifier, token="s3cret")) as s:
        for path in ("/healthz", "/metrics", "/api/info", "/nope"):
            status, _, data = s.request("GET", path)
            assert status == 401 and json.loads(data)["kind"] == "unauthorised", path
        assert s.request("POST", "/", b"x")[0] == 401
        status, _, data = s.request("GET", "/")
        assert status == 200 and b"<!doctype html>" in data and b"s3cret" not in data
        assert s.request("GET", "/healthz", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert s.request("GET", "/healthz", headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert s.request("GET", "/healthz?token=s3cret")[0] == 200


def test_a_request_head_that_never_ends_is_cut_off(classifier):
    # Slow headers came before the token check and held the connection for ever: enough
    # of them ran the server out of file descriptors.
    from henet_edge.device.serve.protocol import http_protocol

    with Server(create_app(classifier, token="s3cret"), http=http_protocol(0.5)) as s:
        stalled = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(3)]
        stalled[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
        stalled[1].sendall(b"GE")  # stalled[2] sends nothing at all
        kept = socket.create_connection(("127.0.0.1", s.port))  # a well-behaved keep-alive
        ask = b"GET /healthz?token=s3cret HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        kept.sendall(ask)
        assert answered(kept) == 200
        time.sleep(1.5)
        for sock in stalled:
            sock.settimeout(5)
            assert sock.recv(4096) == b""  # closed by the server, no answer
            sock.close()
        kept.sendall(ask)  # within uvicorn's keep-alive: still served
        assert answered(kept) == 200
        kept.close()


def answered(sock: socket.socket) -> int:
    """Read one whole response from a kept-alive socket; its status."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    response.read()
    return response.status


def multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body of (field, filename or None, data) and its Content-Type."""
    boundary = "henetboundary42"
    out = b""
    for field, filename, data in parts:
        disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename
                                                      else "")
        out += (f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                + ("Content-Type: image/jpeg\r\n" if filename else "") + "\r\n").encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def test_multipart_upload_gives_the_same_result_as_a_raw_body(server):
    data = jpeg(1)
    raw = json.loads(server.request("POST", "/api/classify", data,
                                    {"Content-Type": "image/jpeg"})[2])
    body, ctype = multipart([("note", None, b"hello"), ("file", "green.jpg", data)])
    status, _, reply = server.request("POST", "/api/classify", body, {"Content-Type": ctype})
    assert status == 200, reply
    served = json.loads(reply)
    assert served["top"] == raw["top"] and served["logits"] == raw["logits"]


@pytest.mark.parametrize("parts,boundary_ok,status,kind", [
    ([("note", None, b"no file here")], True, 400, "no_file"),
    ([("file", "junk.jpg", b"not an image")], True, 400, "bad_image"),
    ([("file", "big.jpg", b"x" * 300_000)], True, 413, "too_large"),
    ([("file", "a.jpg", b"abc")], False, 400, "bad_multipart"),
])
def test_bad_multipart_uploads_get_4xx_json(server, parts, boundary_ok, status, kind):
    body, ctype = multipart(parts)
    if not boundary_ok:
        ctype = "multipart/form-data"  # no boundary: the body cannot be split
    got, _, data = server.request("POST", "/api/classify", body, {"Content-Type": ctype})
    assert got == status, data
    reply = json.loads(data)
    assert reply["ok"] is False and reply["kind"] == kind
    assert server.request("GET", "/healthz")[0] == 200


def test_streams_without_a_camera_are_a_json_404(server):
    for path in ("/stream.mjpg", "/api/stream"):
        status, _, data = server.request("GET", path)
        assert status == 404 and json.loads(data)["kind"] == "no_camera"
    assert json.loads(server.request("GET", "/healthz")[2]) == {"ok": True, "classify": True,
                                                                "camera": None}


@pytest.fixture
def frames_folder(tmp_path):
    folder = tmp_path / "camera"
    folder.mkdir()
    for i in range(3):
        colour_image(i, size=(64, 48)).save(folder / f"frame{i}.jpg", "JPEG", quality=90)
    return folder


def wait_for(check, what: str, seconds: float = 15.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_camera_frames_results_and_a_camera_that_disappears(classifier, frames_folder):
    metrics = Metrics()
    pool = ClassifierPool(classifier)
    camera = LiveCamera(str(frames_folder), pool.classify_rgb, every=0.05,
                        on_frame=metrics.frame)
    with Server(create_app(pool, camera=camera, metrics=metrics)) as s:
        camera.start()
        try:
            health = wait_for(lambda: (h := json.loads(s.request("GET", "/healthz")[2]))
                              ["camera"]["frames"] >= 4 and h, "camera frames")
            assert health["ok"] is True and health["camera"]["state"] == "running"
            assert json.loads(s.request("GET", "/api/info")[2])["camera"] == str(frames_folder)

            conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
            conn.request("GET", "/api/stream")
            resp = conn.getresponse()
            assert resp.status == 200 and resp.getheader("content-type").startswith(
                "text/event-stream")
            event = None
            while event is None:
                line = resp.readline().decode()
                if line.startswith("data: ") and '"frame"' in line:
                    event = json.loads(line[6:])
            conn.close()
            assert event["label"] in classifier.labels
            assert {"capture", "preprocess", "invoke"} <= set(event["timings_ms"])
            assert event["fps"] > 0 and event["source"] == str(frames_folder)

            conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
            conn.request("GET", "/stream.mjpg")
            resp = conn.getresponse()
            assert resp.getheader("content-type").startswith("multipart/x-mixed-replace")
            assert resp.readline() == b"--frame\r\n"
            headers = {}
            while (line := resp.readline().strip()):
                key, _, value = line.decode().partition(": ")
                headers[key.lower()] = value
            frame = resp.read(int(headers["content-length"]))
            conn.close()
            assert Image.open(io.BytesIO(frame)).size == (64, 48)

            text = s.request("GET", "/metrics")[2].decode()
            frames = [r for r in text.splitlines() if r.startswith("henet_frames_total")]
            assert float(frames[0].split()[-1]) >= 4

            for image in frames_folder.iterdir():  # the camera goes away mid-stream
                image.unlink()
            health = wait_for(lambda: (h := json.loads(s.request("GET", "/healthz")[2]))
                              ["camera"]["state"] == "failed" and h, "the camera failure")
            assert health["ok"] is False and health["classify"] is True
            error = health["camera"]["error"].lower()  # a frame vanished, or all of them
            assert "no such file" in error or "no jpeg" in error, error
            status, _, data = s.request("POST", "/api/classify", jpeg(0),
                                        {"Content-Type": "image/jpeg"})
            assert status == 200 and json.loads(data)["ok"] is True
        finally:
            camera.stop()


def test_camera_streams_are_capped_and_a_closed_one_frees_its_place(classifier,
                                                                     frames_folder):
    camera = LiveCamera(str(frames_folder), ClassifierPool(classifier).classify_rgb,
                        every=0.05)
    with Server(create_app(classifier, camera=camera, max_streams=2)) as s:
        camera.start()
        try:
            opened = []
            for path in ("/api/stream", "/stream.mjpg"):
                conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
                conn.request("GET", path)
                response = conn.getresponse()
                assert response.status == 200
                response.readline()  # the stream has begun: it holds its place
                opened.append(conn)
            status, _, data = s.request("GET", "/api/stream")
            assert status == 503 and json.loads(data)["kind"] == "busy"
            opened.pop().close()
            wait_for(lambda: s.request("GET", "/healthz")[0] == 200 and _stream_opens(s),
                     "a freed stream place")
            for conn in opened:
                conn.close()
        finally:
            camera.stop()


def _stream_opens(s) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    conn.request("GET", "/stream.mjpg")
    opened = conn.getresponse().status == 200
    conn.close()
    return opened


def test_a_folder_camera_skips_a_bad_image_and_goes_on(classifier, frames_folder):
    (frames_folder / "frame1b.jpg").write_bytes(b"not a jpeg")  # between two good frames
    camera = LiveCamera(str(frames_folder), ClassifierPool(classifier).classify_rgb, every=0)
    camera.start()
    try:
        status = wait_for(lambda: (st := camera.status())["frames"] >= 7 and st,
                          "frames past the bad image, twice round the folder")
        assert status["state"] == "running" and status["ok"] is True, status
        assert status["skipped"] >= 2 and "frame1b.jpg" in status["last_skipped"]
    finally:
        camera.stop()


def test_a_folder_camera_with_no_good_image_left_fails_naming_why(classifier, frames_folder):
    camera = LiveCamera(str(frames_folder), ClassifierPool(classifier).classify_rgb, every=0)
    camera.start()
    try:
        wait_for(lambda: camera.status()["frames"] >= 1, "a first frame")
        for image in frames_folder.iterdir():  # replaced by files that cannot decode
            image.write_bytes(b"broken")
        status = wait_for(lambda: (st := camera.status())["state"] == "failed" and st,
                          "the camera failure")
        assert "every one skipped" in status["error"], status
    finally:
        camera.stop()


def test_parse_bind():
    assert parse_bind("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_bind("[::1]:8080") == ("::1", 8080)
    with pytest.raises(ValueError):
        parse_bind("nonsense")




def test_cli_serve_rejects_a_bad_bind_in_one_line(tiny_bundle):
    result = CliRunner().invoke(main, ["serve", "--model", str(tiny_bundle), "--bind", "oops"])
    assert result.exit_code != 0 and "HOST:PORT" in result.output
    assert "Traceback" not in result.output


def test_a_port_in_use_or_an_unknown_host_is_one_line_before_anything_is_printed(tiny_bundle):
    """serve printed "serving on ..." (or a new token) and then died in uvicorn with exit 3."""
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        result = CliRunner().invoke(main, ["serve", "--model", str(tiny_bundle), "--bind",
                                           f"127.0.0.1:{port}"])
    finally:
        taken.close()
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        f"Error: --bind 127.0.0.1:{port}: cannot listen there (address already in use)"]
    result = CliRunner().invoke(main, ["serve", "--model", str(tiny_bundle), "--bind",
                                       "no-such-host.invalid:8080"])
    assert result.exit_code == 1 and "token" not in result.output, result.output
    assert "--bind no-such-host.invalid:8080: cannot listen there" in result.output


def test_cli_serve_rejects_a_camera_source_that_cannot_open(tiny_bundle, tmp_path):
    result = CliRunner().invoke(main, ["serve", "--model", str(tiny_bundle), "--camera",
                                       str(tmp_path / "missing.mp4")])
    assert result.exit_code != 0 and "no such file" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_serve_with_a_camera_stops_cleanly_on_a_signal(frames_folder, signame):
    import os
    import signal
    import subprocess
    import sys

    from henet_edge.device.classify import DEFAULT_BUNDLE

    from .deploy_helpers import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "henet_edge.cli", "serve", "--model",
                             str(DEFAULT_BUNDLE), "--bind", f"127.0.0.1:{port}", "--camera",
                             str(frames_folder), "--every", "0.05"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        def running():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/healthz")
                return json.loads(conn.getresponse().read())["camera"]["frames"] > 0
            except OSError:
                return False

        wait_for(running, "serve to start and classify frames", 60)
        stream = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        stream.request("GET", "/api/stream")  # an open stream must not hold up the exit
        assert stream.getresponse().status == 200
        sig = getattr(signal, signame)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=15)
        # uvicorn re-raises the signal once it has shut down: SIGTERM ends the process as
        # SIGTERM (a clean stop for systemd), Ctrl-C is "interrupted", exit 130
        assert proc.returncode == (-sig if sig == signal.SIGTERM else 130), out
        # An open stream that held up the stop would run into uvicorn's graceful-shutdown
        # limit, which it reports at error level ("... graceful shutdown exceeded").
        assert b"Traceback" not in out and b"graceful shutdown exceeded" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_token_file_gives_the_token_and_clashes_with_token(tmp_path):
    from henet_edge import UsageError
    from henet_edge.device.serve.options import read_token_file

    (tmp_path / "token").write_text("s3cret\nsecond line ignored\n")
    assert read_token_file(str(tmp_path / "token")) == "s3cret"
    (tmp_path / "empty").write_text("\n")
    for path, token, said in ((tmp_path / "token", "other", "not both"),
                              (tmp_path / "missing", None, "cannot be read"),
                              (tmp_path / "empty", None, "first line is empty")):
        with pytest.raises(UsageError, match=said):
            read_token_file(str(path), token)
    result = CliRunner().invoke(main, ["serve", "--token", "x", "--token-file",
                                       str(tmp_path / "token")])
    assert result.exit_code == 2 and "not both" in result.stderr


def test_serve_and_service_check_their_options_one_way(tmp_path):
    from henet_edge import UsageError
    from henet_edge.device.serve.options import check_serve_options, service_arguments

    assert check_serve_options("[::1]:8080", workers=2) == ("::1", 8080)
    for every in (float("inf"), float("nan"), -1.0):
        with pytest.raises(UsageError, match="--every"):
            check_serve_options("127.0.0.1:8080", every=every)
    for bind in ("127.0.0.1:0", "127.0.0.1:70000", ":8080"):
        with pytest.raises(UsageError, match="expected HOST:PORT"):
            check_serve_options(bind)
    for workers in (0, 17, 100_000):  # 100,000 loaded models until the OOM killer came
        with pytest.raises(UsageError, match="--workers must be 1 to 16"):
            check_serve_options("127.0.0.1:8080", workers=workers)
    assert check_serve_options("127.0.0.1:8080", workers=16) == ("127.0.0.1", 8080)
    with pytest.raises(UsageError, match="--every"):
        check_serve_options("127.0.0.1:8080", every=-1)
    assert service_arguments("127.0.0.1:9000", camera="auto") == [
        "--bind", "127.0.0.1:9000", "--workers", "1", "--camera", "auto"]
    with pytest.raises(UsageError, match="beyond loopback: give --token"):
        service_arguments("0.0.0.0:9000")
    assert service_arguments("0.0.0.0:9000", token="t")[:2] == ["--bind", "0.0.0.0:9000"]


def test_an_empty_token_is_refused_and_never_lets_a_request_in(classifier, tiny_bundle):
    from henet_edge import UsageError
    from henet_edge.device.serve.options import check_serve_options

    for token in ("", "  "):
        with pytest.raises(UsageError, match="--token is empty"):
            check_serve_options("0.0.0.0:9000", token=token)
    result = CliRunner().invoke(main, ["serve", "--model", str(tiny_bundle), "--bind",
                                       "0.0.0.0:9", "--token", ""])
    assert result.exit_code == 2 and "--token is empty" in result.output
    with Server(create_app(classifier, token="")) as s:  # the library, called directly
        assert s.request("GET", "/api/info")[0] == 401
        assert s.request("GET", "/api/info?token=")[0] == 401


def test_only_loopback_addresses_and_localhost_count_as_loopback():
    from henet_edge.device.serve.options import is_loopback

    assert all(map(is_loopback, ["127.0.0.1", "127.3.2.1", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "127.example.com", "127.0.0.1.nip.io",
                                      "192.168.1.2"]))


def test_without_a_token_only_loopback_host_names_are_answered(classifier):
    """A page on evil.example that re-points its name at 127.0.0.1 (DNS rebinding) must not
    read the server; with a token the token decides."""
    with Server(create_app(classifier)) as s:
        for host in ("evil.example", f"evil.example:{s.port}", "127.0.0.1.evil.example"):
            status, _, data = s.request("GET", "/api/info", headers={"Host": host})
            assert status == 403 and json.loads(data)["kind"] == "host", host
        for host in (f"127.0.0.1:{s.port}", f"localhost:{s.port}", "[::1]:8080", "localhost"):
            assert s.request("GET", "/api/info", headers={"Host": host})[0] == 200, host
    with Server(create_app(classifier, token="t0k")) as s:
        status, _, _ = s.request("GET", "/api/info?token=t0k", headers={"Host": "pi.example"})
        assert status == 200


def test_without_a_token_a_page_from_another_origin_cannot_classify(classifier):
    """Any site open in a browser on the Pi (or beside a `remote serve` tunnel) could POST
    images to a tokenless server; the browser names that site in Origin."""
    with Server(create_app(classifier)) as s:
        own = f"127.0.0.1:{s.port}"
        for origin in ("https://evil.example", "null", f"http://localhost:{s.port}",
                       "http://127.0.0.1:1"):
            status, _, data = s.request("POST", "/api/classify", jpeg(1), {
                "Host": own, "Origin": origin, "Content-Type": "image/jpeg"})
            assert status == 403 and json.loads(data)["kind"] == "origin", origin
        status, _, _ = s.request("POST", "/api/classify", jpeg(1), {
            "Host": own, "Origin": f"http://{own}", "Content-Type": "image/jpeg"})
        assert status == 200  # the service's own page
        assert s.request("POST", "/api/classify", jpeg(1),
                         {"Content-Type": "image/jpeg"})[0] == 200  # curl sends no Origin
    with Server(create_app(classifier, token="t0k")) as s:  # with a token, the token decides
        status, _, _ = s.request("POST", "/api/classify?token=t0k", jpeg(1), {
            "Origin": "https://elsewhere.example", "Content-Type": "image/jpeg"})
        assert status == 200


def test_stalled_uploads_time_out_and_never_hold_the_classifier_queue(classifier):
    import socket

    with Server(create_app(classifier, queue_size=2, upload_timeout=1.5)) as s:
        stalled = []
        for _ in range(4):  # twice the queue: headers and 2 of 1000 body bytes, then silence
            sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
            sock.sendall(b"POST /api/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                         b"image/jpeg\r\nContent-Length: 1000\r\n\r\n\xff\xd8")
            stalled.append(sock)
        time.sleep(0.3)
        status, _, data = s.request("POST", "/api/classify", jpeg(1),
                                    {"Content-Type": "image/jpeg"})
        assert status == 200, data
        for sock in stalled:
            reply = b""
            while b'"kind"' not in reply and (chunk := sock.recv(4096)):
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 408") and b'"kind":"timeout"' in reply, reply
            sock.close()


def test_uploads_in_flight_are_bounded_by_bytes_not_by_connections(classifier):
    import socket

    def stall(port: int, sent: bytes) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"POST /api/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     b"image/jpeg\r\nContent-Length: 99000\r\n\r\n" + sent)
        return sock

    # queue of 2, 100 KB uploads: 200 KB may be in flight
    with Server(create_app(classifier, queue_size=2, max_upload=100_000)) as s:
        small = [stall(s.port, b"\xff\xd8") for _ in range(3)]
        big = [stall(s.port, b"\0" * 95_000) for _ in range(2)]
        time.sleep(0.3)
        status, _, data = s.request("POST", "/api/classify", b"\0" * 20_000,
                                    {"Content-Type": "image/jpeg"})
        assert status == 503 and json.loads(data)["kind"] == "busy", data
        for sock in big:
            sock.close()
        time.sleep(0.3)  # three stalled uploads remain, holding a few bytes
        status, _, data = s.request("POST", "/api/classify", jpeg(2),
                                    {"Content-Type": "image/jpeg"})
        assert status == 200, data
        for sock in small:
            sock.close()


def test_ctrl_c_ends_as_an_interrupt_even_when_the_server_returns_quietly(int8, monkeypatch):
    """A stop asked by SIGINT surfaces as KeyboardInterrupt (exit 130), not as a clean exit."""
    import signal

    from henet_edge.device.serve import app as serve_app

    def stopped_by(sig):
        def run(self, sockets=None):
            self.handle_exit(sig, None)  # the signal arrives; uvicorn then shuts down quietly
        return run

    from .deploy_helpers import free_port

    bind = f"127.0.0.1:{free_port()}"  # serve binds it before running the server
    monkeypatch.setattr(serve_app._Server, "run", stopped_by(signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        serve_app.serve(int8, bind=bind)
    monkeypatch.setattr(serve_app._Server, "run", stopped_by(signal.SIGTERM))
    serve_app.serve(int8, bind=bind)  # SIGTERM: uvicorn's own re-raise decides


@pytest.mark.parametrize("bind, url", [("127.0.0.1:8080", "http://127.0.0.1:8080/"),
                                       ("[::1]:8080", "http://[::1]:8080/"),
                                       ("[::]:9000", "http://[::]:9000/")])
def test_the_printed_url_opens_for_ipv6_binds_too(bind, url):
    assert serve_url(*parse_bind(bind)) == url


def test_a_generated_token_is_shown_once_in_the_pages_fragment_not_its_query():
    """The printed ?token= URL put the token in the browser's history and in every log
    of the first request; a fragment is never sent and the page takes it out at once."""
    from henet_edge.device.serve.app import startup_message

    name = socket.gethostname()  # a wildcard address is no URL for a browser elsewhere
    assert startup_message("127.0.0.1", 8080, None) == "serving on http://127.0.0.1:8080/"
    assert startup_message("0.0.0.0", 8080, None) == (
        f"serving on every address, port 8080; open http://{name}:8080/")
    text = startup_message("::", 8081, "abc")
    assert text == (f"serving on every address, port 8081\ntoken (shown once): abc\n"
                    f"open http://{name}:8081/#token=abc")
    assert startup_message("192.0.2.7", 8082, "abc").endswith(
        "open http://192.0.2.7:8082/#token=abc")
    assert "?token" not in text


def test_connections_beyond_the_limit_are_answered_503_and_then_served_again(classifier):
    """Nothing bounded the open connections: enough of them ran a Pi out of descriptors."""
    from henet_edge.device.serve.app import CONNECTION_LIMIT, server_settings

    assert server_settings()["limit_concurrency"] == CONNECTION_LIMIT  # what serve() uses
    ask = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with Server(create_app(classifier), **server_settings(connection_limit=3)) as s:
        held = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(2)]
        for sock in held:  # kept alive: each still counts
            sock.sendall(ask)
            assert answered(sock) == 200
        extra = socket.create_connection(("127.0.0.1", s.port))
        extra.sendall(ask)
        assert answered(extra) == 503
        extra.close()
        for sock in held:
            sock.close()
        deadline = time.monotonic() + 5
        while s.request("GET", "/healthz")[0] != 200:  # the server has seen them close
            assert time.monotonic() < deadline, "still refused after the others closed"
            time.sleep(0.05)
