"""The access-token gate: which requests the interpreter serves, and when the sandbox changed.

The agent (firkin-agent, PID 1) writes the sandbox's envd access token to a file at every
successful `/init` (atomically: temp file + rename; owner root, group of the sandbox's default
user, mode 0440). This interpreter was started before the sandbox existed (at template build)
and is restored from a checkpoint into every sandbox, so it cannot be told the token at start:
it stats the file on every request and re-reads it when its stamp (mtime, inode, size) moves.

Policy (see docs/security.md, "The code interpreter's access token"):

- `GET`/`HEAD /health` is always open (the template build's ready check polls it).
- No token file yet (the agent was never initialised): everything else gets 503.
- An empty token file means the sandbox has no token: everything is open (as the agent does).
- Otherwise `X-Access-Token` must equal the token (constant-time comparison), else 401 with
  envd's JSON error body. In the default `sdk` mode the context-management routes also accept a
  request that carries no `X-Access-Token` at all, because the pinned `e2b-code-interpreter`
  SDK sends the token on `/execute` only; `strict` mode requires it on every route.

A token different from the last one seen means a new sandbox identity (a restore from a
checkpoint followed by `/init`): `epoch` is bumped, this process's `random` is reseeded, and
each context reseeds its kernel before it next runs user code (see `contexts.Context.execute`).
"""

import hmac
import logging
import os
import random
import threading

log = logging.getLogger("firkin.auth")

DEFAULT_TOKEN_FILE = "/run/firkin/access-token"
TOKEN_HEADER = "X-Access-Token"
MODES = ("sdk", "strict")


class Refusal(Exception):
    """A request the gate refuses: HTTP status and a JSON body like envd's."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.body = {"code": status, "message": message}


class TokenFile:
    """The sandbox's current access token, re-read whenever the file changes.

    `current()` returns the token (`""` when the sandbox has none) or None when there is no
    readable file. `epoch` counts the changes of identity seen so far.
    """

    def __init__(self, path=None):
        self.path = path or os.environ.get("FIRKIN_TOKEN_FILE") or DEFAULT_TOKEN_FILE
        self._lock = threading.Lock()
        self._stamp = None
        self._token = None
        self._seen = None  # the last token ever read; survives a vanished file
        self.epoch = 0

    def _read(self):
        try:
            st = os.stat(self.path)
        except OSError:
            return None, None
        stamp = (st.st_mtime_ns, st.st_ino, st.st_size, st.st_ctime_ns)
        if stamp == self._stamp:
            return stamp, self._token
        try:
            with open(self.path, "rb") as f:
                token = f.read().decode("utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            log.warning("cannot read the access token file %s: %s", self.path, e)
            return None, None
        return stamp, token

    def current(self):
        with self._lock:
            stamp, token = self._read()
            self._stamp, self._token = stamp, token
            if token is not None and token != self._seen:
                first = self._seen is None
                self._seen = token
                self.epoch += 1
                random.seed(os.urandom(32))
                log.info("access token %s (identity epoch %d)",
                         "loaded" if first else "changed", self.epoch)
            return token


def tokens_equal(presented, token):
    """Constant-time comparison of two strings (as UTF-8 bytes)."""
    return hmac.compare_digest(presented.encode("utf-8"), token.encode("utf-8"))


class Gate:
    """Decides whether a request may be served; `check()` raises `Refusal` when not."""

    def __init__(self, token_file=None, mode=None):
        self.token_file = token_file or TokenFile()
        self.mode = mode or os.environ.get("FIRKIN_INTERPRETER_AUTH") or "sdk"
        if self.mode not in MODES:
            raise ValueError("auth mode must be one of %s, not %r" % (", ".join(MODES), self.mode))

    @property
    def epoch(self):
        return self.token_file.epoch

    def check(self, method, parts, headers):
        if parts == ["health"] and method in ("GET", "HEAD"):
            return
        token = self.token_file.current()
        if token is None:
            raise Refusal(503, "the sandbox is not initialised yet: no access token")
        if token == "":
            return
        presented = headers.get(TOKEN_HEADER)
        # The pinned SDK creates, lists, restarts and removes contexts without the token.
        if presented is None and self.mode == "sdk" and parts[:1] == ["contexts"]:
            return
        if presented is None or not tokens_equal(presented, token):
            raise Refusal(401, "unauthorized access, invalid or missing access token")
