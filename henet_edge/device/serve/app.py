"""The Starlette application: classify, info, metrics, health, the page and live streams.

Every request passes the token check (when a token is set) with a
constant-time comparison; user mistakes get a 4xx JSON error, never a 500.
With a camera, ``GET /stream.mjpg`` streams its frames (MJPEG) and
``GET /api/stream`` its results (Server-Sent Events).
"""

from __future__ import annotations

import asyncio
import hmac
import io
import json
import secrets
import signal
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from henet_edge import __version__

from ..classify import Classifier
from .live import LiveCamera
from .metrics import Metrics
from .options import (
    DEFAULT_BIND,
    check_token,
    is_loopback,
    listening_socket,
    parse_bind,
    serve_url,
)
from .page import PAGE
from .pool import ClassifierPool
from .protocol import http_protocol

MAX_UPLOAD = 4 << 20
UPLOAD_TIMEOUT_S = 60.0
IMAGE_TYPES = ("image/", "application/octet-stream")
MULTIPART = "multipart/form-data"
STREAM_POLL_S = 0.03
MAX_STREAMS = 8  # open /stream.mjpg and /api/stream responses together; the next gets 503

def error(status: int, kind: str, message: str, metrics: Metrics,
          headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON error response, counted by kind."""
    metrics.error(kind)
    return JSONResponse({"ok": False, "error": message, "kind": kind}, status_code=status,
                        headers=headers)


def new_token() -> str:
    """A random URL-safe token for a non-loopback bind."""
    return secrets.token_urlsafe(24)


def host_name(header: str) -> str:
    """The name in a Host header: ``[::1]:8080`` -> ``::1``, ``localhost:80`` -> ``localhost``."""
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def is_page(scope: Scope) -> bool:
    """A request for the page itself: it holds no data and takes its token from the URL's
    fragment, which browsers never send (see :mod:`.page`), so it is served to anyone."""
    return scope["path"] == "/" and scope["method"] in ("GET", "HEAD")


class Guard:
    """ASGI middleware: the token on every request but the page's, and request counts per
    known path.

    Without a token only loopback names are answered in the Host header, so a web page
    cannot reach the server through a name it re-points at 127.0.0.1 (DNS rebinding),
    and a request a browser marks as coming from another origin (its ``Origin`` header
    names another scheme, host or port) is refused, so a page from elsewhere cannot
    make it classify (cross-site request forgery). The service's own page is same-origin.
    """

    def __init__(self, app: ASGIApp, *, token: str | None, metrics: Metrics,
                 paths: set[str]):
        self.app, self.token, self.metrics, self.paths = app, token, metrics, paths

    def authorised(self, scope: Scope) -> bool:
        if self.token is None or is_page(scope):
            return True
        given = ""
        for name, value in scope["headers"]:
            if name == b"authorization" and value.startswith(b"Bearer "):
                given = value[7:].decode("latin-1")
                break
        else:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = query.get("token", [""])[0]
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())

    def foreign_host(self, scope: Scope) -> str | None:
        """The Host header when it must be refused (no token and not a loopback name)."""
        if self.token is not None:
            return None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
                return None if is_loopback(host_name(host)) else host
        return None  # HTTP/1.0 without Host: no browser sends that

    def foreign_origin(self, scope: Scope) -> str | None:
        """The Origin header when it must be refused (no token, and another origin)."""
        if self.token is not None:
            return None
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        if origin is None:  # not sent by a browser for a same-origin GET, nor by curl
            return None
        host = headers.get(b"host", b"").decode("latin-1")
        origin_text = origin.decode("latin-1")
        return None if origin_text == f"http://{host}" else origin_text

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if not self.authorised(scope):
                response = error(401, "unauthorised", "missing or wrong token", self.metrics)
                await response(scope, receive, send)
                return
            host = self.foreign_host(scope)
            if host is not None:
                response = error(403, "host", f"Host {host!r} is not a loopback name; a server "
                                 "without --token answers only 127.0.0.1, [::1] or localhost",
                                 self.metrics)
                await response(scope, receive, send)
                return
            origin = self.foreign_origin(scope)
            if origin is not None:
                response = error(403, "origin", f"a request from {origin!r}, another origin; "
                                 "a server without --token answers only its own page and "
                                 "clients that send no Origin", self.metrics)
                await response(scope, receive, send)
                return
            if scope["path"] in self.paths:
                self.metrics.request(scope["path"])
        await self.app(scope, receive, send)


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data


QUEUE_SIZE = 16  # requests waiting for a classifier before the next gets 503




def create_app(classifiers: Classifier | Sequence[Classifier] | ClassifierPool, *,
               token: str | None = None, max_upload: int = MAX_UPLOAD,
               queue_size: int = QUEUE_SIZE,
               upload_timeout: float = UPLOAD_TIMEOUT_S, max_streams: int = MAX_STREAMS,
               camera: LiveCamera | None = None, metrics: Metrics | None = None) -> Starlette:
    """The service around loaded classifiers (one interpreter each) and an optional camera.

    An upload must arrive whole within ``upload_timeout`` seconds (408 otherwise), and
    the uploads being received hold at most ``queue_size * max_upload`` bytes together;
    a place in the classifier queue (``queue_size``, 503 when full) is taken only once
    the image has arrived, so slow or stalled senders cannot hold it. At most
    ``max_streams`` camera streams are open at once (each polls the camera).
    ``camera`` is started and stopped by the caller; pass the same ``metrics``
    to it (``on_frame``) for the frame counter.
    """
    pool = classifiers if isinstance(classifiers, ClassifierPool) else ClassifierPool(classifiers)
    metrics = metrics or Metrics()
    waiting = streaming = 0
    buffered, max_buffered = 0, queue_size * max_upload
    # The model by name and bundle id (made_by), not by its folder on the device.
    info = {**pool.first.describe(), **pool.first.made_by(), "henet_edge": __version__,
            "workers": pool.size, "camera": camera.spec if camera else None}

    def too_large() -> JSONResponse:
        return error(413, "too_large", f"upload over the {max_upload} byte limit", metrics)

    def busy() -> JSONResponse:
        return error(503, "busy", "the classifier queue is full; retry shortly", metrics,
                     headers={"Retry-After": "1"})

    async def receive_body(request: Request) -> bytes | JSONResponse:
        nonlocal buffered
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return error(400, "bad_request", "invalid Content-Length", metrics)
            if int(length) > max_upload:
                return too_large()
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_upload:
                    return too_large()
                if buffered + len(chunk) > max_buffered:
                    return busy()
                buffered += len(chunk)
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            buffered -= sum(map(len, chunks))

    async def read_body(request: Request) -> bytes | JSONResponse:
        try:
            return await asyncio.wait_for(receive_body(request), upload_timeout)
        except asyncio.TimeoutError:
            return error(408, "timeout", f"the upload did not arrive within {upload_timeout:g} "
                         "s", metrics)

    async def multipart_file(request: Request, body: bytes) -> bytes | JSONResponse:
        """The first file part of a multipart/form-data body."""
        parser = MultiPartParser(request.headers, _single(body), max_files=1, max_fields=10,
                                 max_part_size=max_upload)
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            return error(400, "bad_multipart", f"malformed multipart body: {exc.message}",
                         metrics)
        try:
            for _, value in form.multi_items():
                if not isinstance(value, str):
                    return await value.read()
        finally:
            await form.close()
        return error(400, "no_file", "the multipart body has no file part; send the image "
                     "as a file field (e.g. curl -F file=@photo.jpg)", metrics)

    async def classify(request: Request) -> Response:
        nonlocal waiting
        ctype = request.headers.get("content-type", "application/octet-stream")
        is_multipart = ctype.startswith(MULTIPART)
        if not (is_multipart or ctype.startswith(IMAGE_TYPES)):
            return error(415, "content_type",
                         f"unsupported Content-Type {ctype!r}; send the image bytes as "
                         "image/* or application/octet-stream, or a multipart/form-data "
                         "file field", metrics)
        body = await read_body(request)
        if not isinstance(body, Response) and is_multipart:
            body = await multipart_file(request, body)
        if isinstance(body, Response):
            return body
        if not body:
            return error(400, "empty", "empty body; send one image", metrics)
        if waiting >= queue_size:
            return busy()
        waiting += 1
        try:
            try:
                prediction = await asyncio.to_thread(pool.classify_upload, io.BytesIO(body))
            except (ValueError, OSError) as exc:
                return error(400, "bad_image", str(exc), metrics)
        finally:
            waiting -= 1
        metrics.invoke(prediction.timings_ms.get("invoke", 0.0))
        result: dict[str, Any] = {"path": "upload", "ok": True, **prediction.to_dict(),
                                  **pool.first.made_by()}
        return JSONResponse(result)

    async def api_info(request: Request) -> Response:
        return JSONResponse(info)

    async def healthz(request: Request) -> Response:
        status = camera.status() if camera else None
        return JSONResponse({"ok": status is None or status["ok"], "classify": True,
                             "camera": status})

    async def metrics_page(request: Request) -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE)

    def no_camera() -> JSONResponse:
        return error(404, "no_camera", "this server has no camera; start it with "
                     "henet-edge serve --camera SOURCE", metrics)

    def streamed(body: AsyncIterator[Any], media_type: str) -> Response:
        """A camera stream, counted against ``max_streams`` while it runs (counted inside
        the generator, so a client gone before it starts leaves no count behind)."""
        if streaming >= max_streams:
            return error(503, "busy", f"{max_streams} camera streams are open already; "
                         "close one", metrics, headers={"Retry-After": "5"})

        async def counted() -> AsyncIterator[Any]:
            nonlocal streaming
            streaming += 1
            try:
                async for chunk in body:
                    yield chunk
            finally:
                streaming -= 1

        return StreamingResponse(counted(), media_type=media_type,
                                 headers={"Cache-Control": "no-store"})

    async def frames(request: Request) -> Response:
        if camera is None:
            return no_camera()

        async def parts() -> AsyncIterator[bytes]:
            seq = -1
            while not camera.stopped:
                shot = camera.snapshot()
                if shot.seq != seq and shot.jpeg is not None:
                    seq = shot.seq
                    yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                           + str(len(shot.jpeg)).encode() + b"\r\n\r\n" + shot.jpeg + b"\r\n")
                await asyncio.sleep(STREAM_POLL_S)

        return streamed(parts(), "multipart/x-mixed-replace; boundary=frame")

    async def events(request: Request) -> Response:
        if camera is None:
            return no_camera()

        async def lines() -> AsyncIterator[str]:
            seq, state = -1, None
            while not camera.stopped:
                shot = camera.snapshot()
                if shot.status["state"] != state:
                    state = shot.status["state"]
                    yield f"event: camera\ndata: {json.dumps(shot.status)}\n\n"
                if shot.seq != seq and shot.result is not None:
                    seq = shot.seq
                    yield f"data: {json.dumps(shot.result)}\n\n"
                await asyncio.sleep(STREAM_POLL_S)

        return streamed(lines(), "text/event-stream")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return error(404, "not_found", f"no such path {request.url.path}", metrics)
        if exc.status_code == 405:
            return error(405, "method", f"method {request.method} not allowed here", metrics)
        return error(exc.status_code, "bad_request", str(exc.detail), metrics)

    async def internal(request: Request, exc: Exception) -> Response:  # never a traceback
        return error(500, "internal", f"{type(exc).__name__}", metrics)

    routes = [Route("/", page), Route("/api/classify", classify, methods=["POST"]),
              Route("/api/info", api_info), Route("/healthz", healthz),
              Route("/metrics", metrics_page), Route("/stream.mjpg", frames),
              Route("/api/stream", events)]
    app = Starlette(routes=routes,
                    exception_handlers={HTTPException: http_error, Exception: internal})
    app.add_middleware(Guard, token=token, metrics=metrics, paths={r.path for r in routes})
    app.state.metrics = metrics
    app.state.pool = pool
    return app


CONNECTION_LIMIT = 64  # open connections (or requests in progress) before the next gets 503


def server_settings(connection_limit: int = CONNECTION_LIMIT) -> dict[str, Any]:
    """uvicorn's settings for the service: quiet, request heads with a deadline, and at
    most ``connection_limit`` connections at once, so a flood of them is answered 503 at
    once instead of running a small device out of file descriptors and memory."""
    return {"log_level": "warning", "http": http_protocol(), "timeout_graceful_shutdown": 2,
            "limit_concurrency": connection_limit}


def startup_message(host: str, port: int, generated_token: str | None) -> str:
    """Where the service listens; a token made for it is shown this once, with the page's
    URL carrying it in the fragment (kept out of server logs and the browser's history).

    Bound to every address (``0.0.0.0``, ``::``), the URL names this machine instead:
    a browser elsewhere cannot open the wildcard address."""
    everywhere = host in ("0.0.0.0", "::")
    url = serve_url(socket.gethostname() if everywhere else host, port)
    where = f"every address, port {port}" if everywhere else url
    if generated_token is None:
        return f"serving on {where}" + (f"; open {url}" if everywhere else "")
    return (f"serving on {where}\ntoken (shown once): {generated_token}\n"
            f"open {url}#token={generated_token}")


def serve(classifiers: Classifier | Sequence[Classifier], bind: str = DEFAULT_BIND,
          token: str | None = None, camera: str | None = None, every: float = 0.1) -> None:
    """Run the service with uvicorn until Ctrl-C or SIGTERM (the camera stops with it)."""
    host, port = parse_bind(bind)
    check_token(token)
    sock = listening_socket(host, port)  # in use, or not here: said before anything else
    generated = token is None and not is_loopback(host)
    if generated:
        token = new_token()
    print(startup_message(host, sock.getsockname()[1], token if generated else None),
          flush=True)
    metrics = Metrics()
    pool = ClassifierPool(classifiers)
    live = (LiveCamera(camera, pool.classify_rgb, every=every, on_frame=metrics.frame)
            if camera else None)
    app = create_app(pool, token=token, camera=live, metrics=metrics)
    if live is not None:
        live.start()
    config = uvicorn.Config(app, host=host, port=port, **server_settings())
    server = _Server(config, live)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        if live is not None:
            live.stop()
    if signal.SIGINT in server.stopped_by:
        # uvicorn re-raises the signal after its shutdown, which asyncio turns into
        # KeyboardInterrupt; should that ever not surface, Ctrl-C still ends as one.
        raise KeyboardInterrupt


class _Server(uvicorn.Server):
    """uvicorn's server that ends the camera's streams as soon as a stop is asked (so
    open pages do not hold up Ctrl-C or SIGTERM) and releases the camera at shutdown."""

    def __init__(self, config: uvicorn.Config, live: LiveCamera | None):
        super().__init__(config)
        self.live = live
        self.stopped_by: list[int] = []  # the signals that asked for the stop

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.stopped_by.append(sig)
        if self.live is not None:
            self.live.halt()
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: Any = None) -> None:
        await super().shutdown(sockets)
        if self.live is not None:
            await asyncio.to_thread(self.live.stop)
