"""The HTTP/1.1 front: routes, request validation, chunked NDJSON streaming, disconnect detection.

Built on `http.server.ThreadingHTTPServer` (one thread per connection, keep-alive). Routes:

    GET    /health                 200 "OK" once the default Python kernel is warm, else 503
    POST   /execute                200 NDJSON stream (see `contexts.Context.execute`)
    GET    /contexts               200 [{"id","language","cwd"}]
    POST   /contexts               200 {"id","language","cwd"}
    POST   /contexts/{id}/restart  200 null
    DELETE /contexts/{id}          200 null

Every route but `/health` first passes the access-token gate (`auth.Gate`): 401 (missing or
wrong `X-Access-Token`) or 503 (no token published yet) with envd's JSON error body, before the
request body is read. Other refusals before a stream starts are plain text (400 bad request,
404 unknown route or context, 500 internal). Once streaming, failures are reported as `error`
lines.
"""

import errno
import http.server
import json
import logging
import select
import socket
import urllib.parse

from . import mime
from .auth import Gate, Refusal
from .contexts import HTTPError

log = logging.getLogger("firkin.http")

MAX_BODY = 64 * 1024 * 1024


class _StreamClient:
    """The `Client` a context execution writes to: one chunk per NDJSON line."""

    def __init__(self, handler):
        self.handler = handler
        self.sock = handler.connection
        self.broken = False

    def send(self, line):
        if self.broken:
            return False
        data = mime.encode(line)
        try:
            self.handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            return True
        except (OSError, ValueError):
            self.broken = True
            return False

    def gone(self):
        """True once the peer closed or reset the connection (EOF seen without reading it)."""
        if self.broken:
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if not readable:
                return False
            data = self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            if data == b"":
                self.broken = True
        except BlockingIOError:
            return False
        except (OSError, ValueError):
            self.broken = True
        return self.broken

    def finish(self):
        if not self.broken:
            try:
                self.handler.wfile.write(b"0\r\n\r\n")
            except (OSError, ValueError):
                self.broken = True
        if self.broken:
            self.handler.close_connection = True


def _opt_str(body, key):
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise HTTPError(400, "'%s' must be a string or null" % key)
    return value


def _env_vars(body):
    env = body.get("env_vars")
    if env is None:
        return {}
    if not isinstance(env, dict):
        raise HTTPError(400, "'env_vars' must be an object of strings or null")
    out = {}
    for k, v in env.items():
        if not k or "=" in k or "\0" in k:
            raise HTTPError(400, "invalid env var name %r" % k)
        if v is None:
            continue
        if isinstance(v, (dict, list)):
            raise HTTPError(400, "env var %r must be a string" % k)
        v = v if isinstance(v, str) else json.dumps(v)
        if "\0" in v:
            raise HTTPError(400, "env var %r contains a NUL byte" % k)
        out[k] = v
    return out


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "firkin-interpreter"

    def version_string(self):
        return self.server_version
    timeout = 900  # an idle keep-alive connection is dropped after this many seconds

    # -- plumbing ------------------------------------------------------------------------------

    def log_message(self, fmt, *args):
        log.debug("%s %s", self.address_string(), fmt % args)

    def log_request(self, code="-", size="-"):
        log.info("%s %s %s", self.command, self.path, code)

    def _send(self, status, body, content_type):
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _text(self, status, text):
        self._send(status, text, "text/plain; charset=utf-8")

    def _json(self, status, obj):
        self._send(status, json.dumps(obj), "application/json")

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
            while True:
                size_line = self.rfile.readline(1024)
                try:
                    size = int(size_line.split(b";")[0].strip() or b"0", 16)
                except ValueError:
                    raise HTTPError(400, "bad chunked encoding")
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY:
                    raise HTTPError(413, "request body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
            return b"".join(chunks)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise HTTPError(400, "bad Content-Length")
        if length < 0 or length > MAX_BODY:
            raise HTTPError(413, "request body too large")
        return self.rfile.read(length) if length else b""

    def _json_body(self, required=True):
        raw = self._body
        if not raw.strip():
            if required:
                raise HTTPError(400, "a JSON object body is required")
            return {}
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise HTTPError(400, "the body is not valid JSON: %s" % e)
        if not isinstance(body, dict):
            raise HTTPError(400, "the body must be a JSON object")
        return body

    # -- dispatch ------------------------------------------------------------------------------

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def _dispatch(self, method):
        path = urllib.parse.urlsplit(self.path).path.rstrip("/") or "/"
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/") if p]
        try:
            self.server.gate.check(method, parts, self.headers)
        except Refusal as e:
            self.close_connection = True  # the body, if any, is left unread
            log.warning("%s %s refused: %d", method, path, e.status)
            return self._refuse_json(e.status, e.body)
        try:
            try:
                self._body = self._read_body()
            except HTTPError:
                self.close_connection = True  # the rest of the body is still in the pipe
                raise
            self._route(method, parts)
        except HTTPError as e:
            self._refuse(e.status, e.message)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:
            log.exception("internal error on %s %s", method, self.path)
            self._refuse(500, "internal error: %s" % e)

    def _refuse(self, status, message):
        try:
            self._text(status, message)
        except OSError:
            self.close_connection = True

    def _refuse_json(self, status, body):
        try:
            self._json(status, body)
        except OSError:
            self.close_connection = True

    def _route(self, method, parts):
        registry = self.server.registry
        if parts == ["health"] and method in ("GET", "HEAD"):
            if registry.ready.is_set():
                return self._json(200, "OK")
            return self._text(503, "the default Python kernel is not ready yet")
        if parts == ["execute"]:
            self._allow(method, "POST")
            return self._execute(registry)
        if parts == ["contexts"]:
            self._allow(method, "GET", "POST")
            if method == "GET":
                return self._json(200, registry.list())
            body = self._json_body(required=False)
            ctx = registry.create(_opt_str(body, "language"), _opt_str(body, "cwd"))
            return self._json(200, ctx.describe())
        if len(parts) == 2 and parts[0] == "contexts":
            self._allow(method, "DELETE")
            registry.remove(parts[1])
            return self._json(200, None)
        if len(parts) == 3 and parts[0] == "contexts" and parts[2] == "restart":
            self._allow(method, "POST")
            registry.restart(parts[1])
            return self._json(200, None)
        raise HTTPError(404, "no route for %s %s" % (method, self.path))

    def _allow(self, method, *allowed):
        if method not in allowed:
            raise HTTPError(405, "%s is not allowed here (allowed: %s)"
                            % (method, ", ".join(allowed)))

    def _execute(self, registry):
        body = self._json_body()
        code = body.get("code")
        if not isinstance(code, str):
            raise HTTPError(400, "'code' must be a string")
        context_id = _opt_str(body, "context_id") or None
        language = _opt_str(body, "language")
        if language is not None and not language.strip():
            language = None
        env_vars = _env_vars(body)
        ctx = registry.resolve(context_id, language)

        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        client = _StreamClient(self)
        try:
            ctx.execute(code, env_vars, client, registry.envfile, epoch=self.server.gate.epoch)
        except Exception as e:  # the context reports its own failures; this is a last resort
            log.exception("execution failed")
            client.send(mime.error_line("InternalError", str(e), ""))
            client.send(mime.END)
        client.finish()


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, registry, gate=None):
        self.registry = registry
        self.gate = gate or Gate()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    def handle_error(self, request, client_address):
        import sys
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError) and exc.errno in (errno.EPIPE, errno.ECONNRESET):
            return
        log.exception("unhandled error serving %s", client_address)
