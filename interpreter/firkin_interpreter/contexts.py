"""Contexts: the registry, routing of `/execute`, per-context locking and the env-var plumbing.

A `Context` is an id, a language, a cwd and a runtime (`jupyter.PythonRuntime` or
`jupyter.RRuntime`, `repl.NodeRuntime` for JavaScript and TypeScript, or `shell.BashRuntime`).
One execution runs at a time per context (its lock); different contexts run concurrently. Admin operations (restart, remove) set the context's abort
event so that a running execution lets go of the runtime within a tick.

`Context.execute()` drives one cell: it waits for the lock, applies the sandbox-wide env vars
(from the JSON file the host agent writes, re-read when it changes), reseeds the runtime's
random generators when the sandbox identity changed (`auth`), runs the cell and hands
each line to the HTTP layer through a `Client` (send / gone). When the client goes away it
interrupts the runtime and keeps draining, so the context is ready for the next request.
"""

import logging
import os
import shutil
import threading
import time
import uuid

from . import mime

log = logging.getLogger("firkin.contexts")

SUPPORTED = ("python", "javascript", "typescript", "r", "bash")
# The languages that get a default context at start, as E2B's server creates them.
STARTED_AT_BOOT = ("python", "javascript")
ALIASES = {"js": "javascript", "ts": "typescript", "py": "python", "python3": "python",
           "sh": "bash", "shell": "bash", "node": "javascript", "nodejs": "javascript"}
# What each language needs on PATH; a missing one makes the language unavailable (500).
_PROGRAMS = {"javascript": ("node", "FIRKIN_NODE"), "typescript": ("node", "FIRKIN_NODE"),
             "r": ("R", "FIRKIN_R"), "bash": ("bash", None)}
KEEPALIVE_EVERY = 5.0
CHECK_CLIENT_EVERY = 0.5
DEFAULT_ENVS_FILE = "/run/firkin/envs.json"


class HTTPError(Exception):
    """A request the server refuses before streaming: status and plain-text message."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def normalize_language(language):
    lang = str(language).strip().lower()
    return ALIASES.get(lang, lang)


def check_language(language):
    lang = normalize_language(language)
    if lang not in SUPPORTED:
        raise HTTPError(400, "language '%s' is not supported by this sandbox (supported: %s)"
                        % (lang, ", ".join(SUPPORTED)))
    program, env = _PROGRAMS.get(lang, (None, None))
    if program and not shutil.which((env and os.environ.get(env)) or program):
        raise HTTPError(500, "language '%s' is unavailable: %s is not installed" % (lang, program))
    return lang


class EnvFile:
    """The sandbox-wide env vars, a JSON object in a file re-read whenever it changes."""

    def __init__(self, path=None):
        self.path = path or os.environ.get("FIRKIN_ENVS_FILE") or DEFAULT_ENVS_FILE
        self._lock = threading.Lock()
        self._stamp = None
        self._vars = {}

    def current(self):
        with self._lock:
            try:
                st = os.stat(self.path)
                stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
            except OSError:
                stamp = None
            if stamp == self._stamp:
                return self._vars
            if stamp is None:
                self._stamp, self._vars = None, {}
                return self._vars
            try:
                with open(self.path, "rb") as f:
                    data = mime.json.loads(f.read().decode("utf-8") or "{}")
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as e:
                log.warning("ignoring %s: %s", self.path, e)
                return self._vars  # keep the last good value; retry on the next change
            self._stamp = stamp
            self._vars = {str(k): v if isinstance(v, str) else mime.json.dumps(v)
                          for k, v in data.items() if v is not None}
            log.info("sandbox env vars loaded from %s (%d)", self.path, len(self._vars))
            return self._vars


class RunControl:
    """Shared between the HTTP side and a runtime's `run()` for one execution."""

    def __init__(self, abort):
        self.abort = abort  # the context's event: an admin operation wants the runtime
        self.interrupted = False
        self.last_interrupt = 0.0


def _make_runtime(language, cwd, warmup=False):
    if language == "python":
        from .jupyter import PythonRuntime
        return PythonRuntime(cwd, warmup=warmup)
    if language in ("javascript", "typescript"):
        from .repl import NodeRuntime
        return NodeRuntime(cwd, typescript=language == "typescript")
    if language == "r":
        from .jupyter import RRuntime
        return RRuntime(cwd)
    if language == "bash":
        from .shell import BashRuntime
        return BashRuntime(cwd)
    raise HTTPError(400, "language '%s' is not supported" % language)


class Context:
    def __init__(self, language, cwd, warmup=False):
        self.id = uuid.uuid4().hex
        self.language = language
        self.cwd = cwd
        self.runtime = _make_runtime(language, cwd, warmup)
        self.lock = threading.Lock()
        self.abort = threading.Event()
        self.removed = False
        self.env_applied = {}  # sandbox-wide vars as applied in the current runtime generation
        self.env_generation = None
        self.seeded_epoch = None  # the sandbox identity (auth.TokenFile.epoch) last reseeded for

    def describe(self):
        return {"id": self.id, "language": self.language, "cwd": self.cwd}

    # -- admin ---------------------------------------------------------------------------------

    def ensure_started(self):
        """Starts the runtime if needed; the caller holds the lock."""
        if self.runtime.started and not self.runtime.alive():
            log.warning("context %s: its %s process died while idle; restarting it",
                        self.id, self.language)
            self.runtime.restart()
        if not self.runtime.started:
            self.runtime.start()

    def _take(self, timeout=30.0):
        """Takes the lock from a running execution (which sees `abort` and lets go)."""
        self.abort.set()
        self.runtime.interrupt()
        got = self.lock.acquire(timeout=timeout)
        if not got:
            log.warning("context %s: execution did not let go in %.0f s", self.id, timeout)
        return got

    def restart(self):
        got = self._take()
        try:
            self.abort.clear()
            self.runtime.restart()
        finally:
            self.abort.clear()
            if got:
                self.lock.release()

    def shutdown(self):
        self.removed = True
        got = self._take(timeout=10.0)
        try:
            self.runtime.stop()
        finally:
            if got:
                self.lock.release()

    # -- execution -----------------------------------------------------------------------------

    def _sync_env(self, envfile):
        """Applies the sandbox-wide env vars when they changed since this runtime last did."""
        wanted = envfile.current()
        if self.env_generation != self.runtime.generation:
            self.env_generation, self.env_applied = self.runtime.generation, {}
        if wanted == self.env_applied:
            return
        set_vars = {k: v for k, v in wanted.items() if self.env_applied.get(k) != v}
        unset = [k for k in self.env_applied if k not in wanted]
        self.runtime.apply_env(set_vars, unset)
        self.env_applied = dict(wanted)

    def _reseed(self, epoch):
        """Reseeds the runtime once per sandbox identity: a kernel restored from a checkpoint
        would otherwise replay the same random streams as every other sandbox restored from it.
        A failure is logged and retried before the next cell."""
        if epoch is None or epoch == self.seeded_epoch:
            return
        try:
            self.runtime.reseed(os.urandom(32))
            self.seeded_epoch = epoch
            log.info("context %s: reseeded for identity epoch %d", self.id, epoch)
        except Exception as e:
            log.warning("context %s: reseeding failed: %s", self.id, e)

    def execute(self, code, env_vars, client, envfile, epoch=None):
        """Runs one cell for `client` (an object with `send(line) -> bool` and `gone()`).
        `epoch` is the sandbox identity (`auth.TokenFile.epoch`); the runtime is reseeded
        silently before the cell when it changed."""
        state = {"last_send": time.monotonic(), "last_check": time.monotonic(), "gone": False}

        def send(line):
            if state["gone"]:
                return False
            if not client.send(line):
                state["gone"] = True
                return False
            state["last_send"] = time.monotonic()
            return True

        def client_gone():
            if state["gone"]:
                return True
            now = time.monotonic()
            if now - state["last_check"] >= CHECK_CLIENT_EVERY:
                state["last_check"] = now
                if client.gone():
                    state["gone"] = True
            if not state["gone"] and now - state["last_send"] >= KEEPALIVE_EVERY:
                send(mime.KEEPALIVE)
            return state["gone"]

        # Wait for our turn, keeping the client's stream alive meanwhile.
        while not self.lock.acquire(timeout=CHECK_CLIENT_EVERY):
            if client_gone():
                return
        try:
            if self.removed:
                send(mime.error_line("ContextNotFound", "the context was removed", ""))
                send(mime.END)
                return
            control = RunControl(self.abort)
            try:
                self.ensure_started()
                self._sync_env(envfile)
                self._reseed(epoch)
            except Exception as e:
                log.exception("context %s: cannot prepare the execution", self.id)
                send(mime.error_line("ContextError", "the %s context is not usable: %s"
                                     % (self.language, e), ""))
                send(mime.END)
                return
            try:
                for line in self.runtime.run(code, env_vars, control):
                    if line is not None and not state["gone"]:
                        send(line)
                    if client_gone() and not control.interrupted:
                        log.info("context %s: client went away, interrupting", self.id)
                        control.interrupted = True
                        control.last_interrupt = time.monotonic()
                        self.runtime.interrupt()
            except Exception as e:
                log.exception("context %s: execution failed", self.id)
                send(mime.error_line("InternalError", "the interpreter server failed: %s" % e, ""))
            if control.abort.is_set():
                send(mime.error_line("ExecutionAborted",
                                     "the context was restarted or removed during the execution",
                                     ""))
            send(mime.END)
        finally:
            self.lock.release()


class Registry:
    """All contexts by id, plus the default context of each language."""

    def __init__(self, default_cwd, envfile=None):
        self.default_cwd = default_cwd
        self.envfile = envfile or EnvFile()
        self._lock = threading.Lock()
        self._contexts = {}
        self._defaults = {}
        self.ready = threading.Event()
        self.default_python = self._add(Context("python", default_cwd, warmup=True), default=True)
        for lang in STARTED_AT_BOOT[1:]:
            try:
                check_language(lang)
            except HTTPError as e:
                log.warning("no default %s context: %s", lang, e.message)
                continue
            self._add(Context(lang, default_cwd), default=True)

    def _add(self, ctx, default=False):
        with self._lock:
            self._contexts[ctx.id] = ctx
            if default:
                self._defaults[ctx.language] = ctx
        return ctx

    def start_default(self, retry_every=5.0):
        """Starts the other default contexts (JavaScript), then the default Python kernel with
        its warm-up, retried until it works; ready (/health 200) once Python is. A default
        context that fails to start here is left to start on its first use."""
        with self._lock:
            others = [c for lang, c in self._defaults.items() if lang != "python"]
        for ctx in others:
            with ctx.lock:
                try:
                    ctx.ensure_started()
                    log.info("default %s context %s is ready", ctx.language, ctx.id)
                except Exception as e:
                    log.error("cannot start the default %s context: %s", ctx.language, e)
        ctx = self.default_python
        while True:
            with ctx.lock:
                try:
                    ctx.ensure_started()
                    self.ready.set()
                    log.info("default python context %s is ready", ctx.id)
                    return
                except Exception as e:
                    log.error("cannot start the default python kernel: %s", e)
            time.sleep(retry_every)

    def list(self):
        with self._lock:
            return [c.describe() for c in self._contexts.values()]

    def get(self, context_id):
        with self._lock:
            ctx = self._contexts.get(context_id)
        if ctx is None:
            raise HTTPError(404, "context '%s' not found" % context_id)
        return ctx

    def resolve(self, context_id, language):
        """The context for an /execute request, per the routing rules of the protocol."""
        if context_id is not None and language is not None:
            raise HTTPError(400, "provide context_id or language, not both")
        if context_id is not None:
            return self.get(context_id)
        if language is None:
            return self.default_python
        lang = check_language(language)
        with self._lock:
            ctx = self._defaults.get(lang)
            if ctx is None:  # started lazily by the first execution (under its lock)
                ctx = Context(lang, self.default_cwd)
                self._contexts[ctx.id] = ctx
                self._defaults[lang] = ctx
            return ctx

    def create(self, language, cwd):
        lang = check_language(language if language is not None else "python")
        cwd = cwd if cwd is not None else self.default_cwd
        if not os.path.isdir(cwd):
            raise HTTPError(400, "cwd '%s' is not an existing directory" % cwd)
        ctx = Context(lang, cwd)
        with ctx.lock:
            try:
                ctx.ensure_started()
            except Exception as e:
                log.exception("cannot start a %s context", lang)
                raise HTTPError(500, "cannot start the %s context: %s" % (lang, e))
            self._add(ctx)
        log.info("context %s created (%s, %s)", ctx.id, lang, cwd)
        return ctx

    def remove(self, context_id):
        ctx = self.get(context_id)
        with self._lock:
            self._contexts.pop(ctx.id, None)
            for lang, d in list(self._defaults.items()):
                if d is ctx:
                    del self._defaults[lang]
        if ctx is self.default_python:  # the default alias must keep working: replace it
            self.default_python = self._add(Context("python", self.default_cwd), default=True)
        ctx.shutdown()
        log.info("context %s removed", ctx.id)

    def restart(self, context_id):
        ctx = self.get(context_id)
        ctx.restart()
        log.info("context %s restarted", ctx.id)

    def shutdown(self):
        with self._lock:
            contexts = list(self._contexts.values())
        for ctx in contexts:
            try:
                ctx.runtime.stop()
            except Exception as e:
                log.warning("stopping context %s: %s", ctx.id, e)
