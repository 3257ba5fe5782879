"""The Starlette application: classify, info, metrics, health, an upload page.

Every request passes the token check (when a token is set) with a
constant-time comparison; user mistakes get a 4xx JSON error, never a 500.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import secrets
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..classify import Classifier
from ..preprocess import open_image
from .metrics import Metrics

MAX_UPLOAD = 4 << 20
IMAGE_TYPES = ("image/", "application/octet-stream")


def error(status: int, kind: str, message: str, metrics: Metrics,
          headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON error response, counted by kind."""
    metrics.error(kind)
    return JSONResponse({"ok": False, "error": message, "kind": kind}, status_code=status,
                        headers=headers)


def new_token() -> str:
    """A random URL-safe token for a non-loopback bind."""
    return secrets.token_urlsafe(24)


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>henet-edge serve</title>
</head><body><h1>henet-edge serve</h1><p id="model"></p>
<form id="f"><input type="file" id="file" accept="image/*"><button>Classify</button></form>
<pre id="result"></pre>
<script>
const q = location.search;
fetch('/api/info' + q).then(r => r.json()).then(i => {
  document.getElementById('model').textContent =
    `${i.bundle_name || i.model} · ${i.precision} · ${i.runtime || ''} · ${i.delegate || ''}`;
});
document.getElementById('f').onsubmit = async e => {
  e.preventDefault();
  const file = document.getElementById('file').files[0];
  const r = await fetch('/api/classify' + q, {method: 'POST', body: file,
    headers: {'Content-Type': file.type || 'application/octet-stream'}});
  const j = await r.json();
  document.getElementById('result').textContent = j.ok
    ? j.top.map(t => `${t.label} ${(100 * t.probability).toFixed(1)} %`).join('\\n')
    : 'error: ' + j.error;
};
</script></body></html>
"""


def create_app(classifier: Classifier, *, token: str | None = None,
               max_upload: int = MAX_UPLOAD, queue_size: int = 16) -> Starlette:
    """The service around one loaded classifier (a single interpreter)."""
    metrics = Metrics()
    lock = asyncio.Lock()
    waiting = 0
    info = classifier.describe()

    def authorised(request: Request) -> bool:
        if token is None:
            return True
        given = request.headers.get("authorization", "")
        given = given[7:] if given.startswith("Bearer ") else request.query_params.get("token", "")
        return hmac.compare_digest(given.encode(), token.encode())

    async def read_body(request: Request) -> bytes | JSONResponse:
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return error(400, "bad_request", "invalid Content-Length", metrics)
            if int(length) > max_upload:
                return error(413, "too_large", f"upload over the {max_upload} byte limit",
                             metrics)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_upload:
                return error(413, "too_large", f"upload over the {max_upload} byte limit",
                             metrics)
            chunks.append(chunk)
        return b"".join(chunks)

    async def classify(request: Request) -> Response:
        nonlocal waiting
        ctype = request.headers.get("content-type", "application/octet-stream")
        if not ctype.startswith(IMAGE_TYPES):
            return error(415, "content_type",
                         f"unsupported Content-Type {ctype!r}; send the image bytes as "
                         "image/* or application/octet-stream", metrics)
        if waiting >= queue_size:
            return error(503, "busy", "the classifier queue is full; retry shortly", metrics,
                         headers={"Retry-After": "1"})
        body = await read_body(request)
        if isinstance(body, Response):
            return body
        if not body:
            return error(400, "empty", "empty body; send one image", metrics)
        try:
            image = open_image(io.BytesIO(body))
        except (ValueError, OSError) as exc:
            return error(400, "bad_image", str(exc), metrics)
        waiting += 1
        try:
            async with lock:
                prediction = await asyncio.to_thread(classifier.classify_image, image)
        finally:
            waiting -= 1
        metrics.invoke(prediction.timings_ms.get("invoke", 0.0))
        result: dict[str, Any] = {"path": "upload", "ok": True, **prediction.to_dict(),
                                  **classifier.made_by()}
        return JSONResponse(result)

    async def api_info(request: Request) -> Response:
        return JSONResponse(info)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True, "camera": None})

    async def metrics_page(request: Request) -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE)

    routes = [Route("/", page), Route("/api/classify", classify, methods=["POST"]),
              Route("/api/info", api_info), Route("/healthz", healthz),
              Route("/metrics", metrics_page)]
    async def guard(request: Request, call_next):  # type: ignore[no-untyped-def]
        if not authorised(request):
            return error(401, "unauthorised", "missing or wrong token", metrics)
        paths = {r.path for r in routes}
        if request.url.path not in paths:
            return error(404, "not_found", f"no such path {request.url.path}", metrics)
        metrics.request(request.url.path)
        try:
            response = await call_next(request)
        except Exception as exc:  # never a traceback to the client
            return error(500, "internal", f"{type(exc).__name__}", metrics)
        if response.status_code == 405:
            return error(405, "method", f"method {request.method} not allowed here", metrics)
        return response

    app = Starlette(routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=guard)])
    app.state.metrics = metrics
    return app


def parse_bind(bind: str) -> tuple[str, int]:
    """``host:port`` -> (host, port); ValueError with a one-line reason."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"--bind {bind!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def serve(classifier: Classifier, bind: str = "127.0.0.1:8080",
          token: str | None = None) -> None:
    """Run the service with uvicorn until Ctrl-C or SIGTERM."""
    import uvicorn

    host, port = parse_bind(bind)
    if not is_loopback(host) and token is None:
        token = new_token()
        print(f"token (shown once): {token}\nopen http://{host}:{port}/?token={token}",
              flush=True)
    else:
        print(f"serving on http://{host}:{port}/", flush=True)
    uvicorn.run(create_app(classifier, token=token), host=host, port=port,
                log_level="warning")
