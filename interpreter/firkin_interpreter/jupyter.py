"""Jupyter-kernel contexts: Python (a real ipykernel) and R (IRkernel), launched and interrupted
by jupyter_client's KernelManager.

Kernels listen on the `ipc` transport (unix sockets in a private directory under
`FIRKIN_KERNEL_DIR`, default `/tmp/firkin-kernels`), never on loopback TCP: the whole sandbox is
checkpointed and restored by gVisor, and unix sockets survive that more reliably.

Python kernels run `ipython_startup.py` (next to this file) at start: it registers the
formatters behind `result.data`, `result.chart` and `result.json`.

Messages are exchanged over plain synchronous zmq sockets (`KernelManager.connect_shell()` /
`connect_iopub()`) with jupyter_client's `Session` doing the signing and (de)serialisation.
The asyncio-based `BlockingKernelClient` of jupyter_client 7 is not used: its sockets are bound
to one event loop, and executions of one context are served by whichever HTTP thread holds the
context's lock. KernelManager's own (asyncio-wrapped) methods all run on one dedicated thread.

`PythonRuntime.run()` is a generator of protocol lines (see `mime`) and `None` ticks at least
every half second, so the caller can send keepalives and notice a client that went away.
"""

import concurrent.futures
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
import uuid

import zmq
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

from . import mime

log = logging.getLogger("firkin.python")

SPEC_NAME = "firkin-python3"
R_SPEC_NAME = "firkin-r"
STARTUP_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ipython_startup.py")
WARMUP_CODE = ("import numpy, pandas, matplotlib\nimport matplotlib.pyplot\n"
               # The chart extractor (and pydantic) without binding a name: the first
               # plt.show() of a sandbox would otherwise pay for their import.
               "try:\n    __import__('e2b_charts')\nexcept ImportError:\n    pass\n")
TICK = 0.5  # seconds between ticks while the kernel is silent
REINTERRUPT = 3.0  # seconds between repeated SIGINTs while an interrupted cell keeps running
ABORT_RETRIES = 3  # resends of a cell the kernel aborted unrun (see `_execute`)

# KernelManager's public methods wrap coroutines with a per-thread event loop; running them all
# on one long-lived thread keeps that to a single loop instead of one per HTTP thread.
_OPS = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernel-ops")


def _ops(fn, *args, **kwargs):
    return _OPS.submit(fn, *args, **kwargs).result()


def kernel_root():
    return os.environ.get("FIRKIN_KERNEL_DIR", "/tmp/firkin-kernels")


_spec_lock = threading.Lock()
_spec_manager = None


def _kernel_specs():
    python = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
              # Several kernels would fight over one sqlite history file in $HOME.
              "--HistoryManager.hist_file=:memory:"]
    if os.path.exists(STARTUP_FILE):
        python.append("--IPKernelApp.exec_files=%s" % STARTUP_FILE)
    r = [os.environ.get("FIRKIN_R") or "R", "--no-save", "--no-restore", "--slave",
         "-e", "IRkernel::main()", "--args", "{connection_file}"]
    return {
        SPEC_NAME: {"argv": python, "display_name": "Python 3 (firkin)", "language": "python",
                    "interrupt_mode": "signal"},
        R_SPEC_NAME: {"argv": r, "display_name": "R (firkin)", "language": "R",
                      "interrupt_mode": "signal"},
    }


def _kernel_spec_manager():
    """A KernelSpecManager that knows only our own specs: this interpreter's ipykernel and R's
    IRkernel."""
    global _spec_manager
    with _spec_lock:
        if _spec_manager is None:
            spec_root = os.path.join(kernel_root(), "spec")
            for name, spec in _kernel_specs().items():
                os.makedirs(os.path.join(spec_root, name), mode=0o700, exist_ok=True)
                with open(os.path.join(spec_root, name, "kernel.json"), "w") as f:
                    json.dump(spec, f)
            _spec_manager = KernelSpecManager(kernel_dirs=[spec_root])
        return _spec_manager


def _kernel_env():
    env = dict(os.environ)
    # Our own PYTHONPATH only serves to find this package; user code should not see it.
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    paths = [p for p in paths if os.path.abspath(p) != pkg_parent]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    else:
        env.pop("PYTHONPATH", None)
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # silences a debugpy warning at kernel start
    return env


class KernelDied(Exception):
    pass


class _Kernel:
    """One running Jupyter kernel and the synchronous sockets connected to it."""

    def __init__(self, cwd, spec_name=SPEC_NAME):
        self.dir = os.path.join(kernel_root(), uuid.uuid4().hex[:12])
        os.makedirs(self.dir, mode=0o700)
        self.km = KernelManager(
            kernel_name=spec_name,
            kernel_spec_manager=_kernel_spec_manager(),
            transport="ipc",
            ip=os.path.join(self.dir, "k"),
            connection_file=os.path.join(self.dir, "connection.json"),
        )
        self.shell = self.iopub = None
        self.proc = self.pgid = None
        try:
            _ops(self.km.start_kernel, cwd=cwd, env=_kernel_env())
            proc = getattr(self.km.provisioner, "process", None)
            self.proc = proc
            if proc is not None:
                try:
                    self.pgid = os.getpgid(proc.pid)
                except OSError:
                    pass
            self.session = self.km.session
            self.shell = self.km.connect_shell()
            self.iopub = self.km.connect_iopub()
        except BaseException:
            self.close()
            raise

    # -- messaging ---------------------------------------------------------------------------

    def send(self, msg_type, content):
        msg = self.session.msg(msg_type, content)
        self.session.send(self.shell, msg)
        return msg["header"]["msg_id"]

    def _recv(self, sock, timeout):
        if not sock.poll(int(timeout * 1000)):
            return None
        parts = sock.recv_multipart(copy=True)
        _, msg_list = self.session.feed_identities(parts, copy=True)
        return self.session.deserialize(msg_list, content=True, copy=True)

    def recv_iopub(self, timeout):
        return self._recv(self.iopub, timeout)

    def drain_iopub(self):
        while self._recv(self.iopub, 0) is not None:
            pass

    def wait_reply(self, msg_id, timeout):
        """The shell reply to `msg_id`, or None after `timeout` (other replies are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            msg = self._recv(self.shell, min(left, TICK))
            if msg is None:
                if not self.alive():
                    raise KernelDied()
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg

    def wait_ready(self, timeout):
        """Waits until the kernel answers kernel_info on shell and its iopub reaches us."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise KernelDied()
            msg_id = self.send("kernel_info_request", {})
            reply = self.wait_reply(msg_id, min(2.0, max(0.1, deadline - time.monotonic())))
            if reply is None:
                continue
            # A SUB socket only receives once its subscription reached the kernel: wait until
            # the status messages of this request arrive.
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                msg = self.recv_iopub(0.2)
                if msg is not None and msg["parent_header"].get("msg_id") == msg_id:
                    self.drain_iopub()
                    return reply["content"]
        raise TimeoutError("the kernel did not become ready in %.0f s" % timeout)

    def silent(self, code, timeout=30.0):
        """Runs housekeeping code without output, history or a bump of the execution count."""
        msg_id = self.send("execute_request", {
            "code": code, "silent": True, "store_history": False, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": False,
        })
        reply = self.wait_reply(msg_id, timeout)
        if reply is None:
            raise TimeoutError("housekeeping code did not finish in %.0f s" % timeout)
        content = reply["content"]
        if content.get("status") != "ok":
            raise RuntimeError("%s: %s" % (content.get("ename"), content.get("evalue")))
        return content

    # -- process -----------------------------------------------------------------------------

    def alive(self):
        if self.proc is not None:
            return self.proc.poll() is None
        try:
            return bool(_ops(self.km.is_alive))
        except Exception:
            return False

    def interrupt(self):
        try:
            _ops(self.km.interrupt_kernel)
        except Exception as e:  # the kernel may be gone already
            log.warning("interrupt failed: %s", e)

    def close(self):
        for sock in (self.shell, self.iopub):
            if sock is not None:
                try:
                    sock.close(linger=0)
                except zmq.ZMQError:
                    pass
        self.shell = self.iopub = None
        try:
            if self.km.has_kernel:
                _ops(self.km.shutdown_kernel, now=True)
        except Exception as e:
            log.warning("kernel shutdown: %s", e)
        if self.pgid is not None:  # whatever the user's code started in the kernel's session
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


def _env_code(set_vars, unset, save_key=None):
    """Python source that applies env changes in the kernel, optionally saving old values."""
    payload = repr({"set": dict(set_vars or {}), "unset": list(unset or []), "save": save_key})
    return (
        "def __firkin_env(p):\n"
        "    import os, sys\n"
        "    if p['save']:\n"
        "        keys = list(p['set']) + p['unset']\n"
        "        setattr(sys, p['save'], {k: os.environ.get(k) for k in keys})\n"
        "    for k in p['unset']:\n"
        "        os.environ.pop(k, None)\n"
        "    os.environ.update(p['set'])\n"
        "__firkin_env(%s)\n"
        "del __firkin_env\n" % payload
    )


def _restore_code(save_key):
    return (
        "def __firkin_env(key):\n"
        "    import os, sys\n"
        "    saved = getattr(sys, key, None) or {}\n"
        "    for k, v in saved.items():\n"
        "        if v is None:\n"
        "            os.environ.pop(k, None)\n"
        "        else:\n"
        "            os.environ[k] = v\n"
        "    if hasattr(sys, key):\n"
        "        delattr(sys, key)\n"
        "__firkin_env(%r)\n"
        "del __firkin_env\n" % save_key
    )


def _reseed_code(seed):
    """Python source that reseeds `random` and, if imported, numpy's global generator."""
    return (
        "def __firkin_reseed(seed):\n"
        "    import random, sys\n"
        "    random.seed(seed)\n"
        "    np = sys.modules.get('numpy')\n"
        "    if np is not None and hasattr(np, 'random'):\n"
        "        np.random.seed([int.from_bytes(seed[i:i + 4], 'little')\n"
        "                        for i in range(0, len(seed), 4)])\n"
        "__firkin_reseed(%r)\n"
        "del __firkin_reseed\n" % seed
    )


def _r_str(value):
    """An R string literal for `value`: ASCII only (the sandbox's locale may be C), with
    everything else as \\u{...} escapes."""
    out = []
    for ch in str(value):
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append("\\u{%x}" % ord(ch))
    return '"' + "".join(out) + '"'


def _r_vector(values):
    return "c(%s)" % ", ".join(_r_str(v) for v in values)


def _r_env_code(set_vars, unset, save_key=None):
    """R source that applies env changes, optionally saving the old values in options()."""
    set_vars, unset = dict(set_vars or {}), list(unset or [])
    lines = []
    if save_key:
        keys = list(set_vars) + unset
        lines.append("options(%s = Sys.getenv(%s, unset = NA, names = TRUE))"
                     % (_r_str(save_key), _r_vector(keys)))
    if unset:
        lines.append("Sys.unsetenv(%s)" % _r_vector(unset))
    if set_vars:
        lines.append("do.call(Sys.setenv, as.list(setNames(%s, %s)))"
                     % (_r_vector(set_vars.values()), _r_vector(set_vars)))
    return "invisible(local({\n%s\n}))\n" % "\n".join(lines)


def _r_restore_code(save_key):
    return (
        "invisible(local({\n"
        "  saved <- getOption(%(k)s)\n"
        "  for (name in names(saved)) {\n"
        "    if (is.na(saved[[name]])) Sys.unsetenv(name)\n"
        "    else do.call(Sys.setenv, setNames(list(saved[[name]]), name))\n"
        "  }\n"
        "  options(%(k)s = NULL)\n"
        "}))\n" % {"k": _r_str(save_key)}
    )


def _r_reseed_code(seed):
    return "set.seed(%dL)\n" % (int.from_bytes(seed[:4], "little") & 0x7FFFFFFF)


class KernelRuntime:
    """A context's Jupyter kernel: one at a time (a restart starts a new one). Subclasses name
    the kernel spec and say how to write env-var and reseeding code."""

    language = "?"
    display_name = "?"
    spec_name = SPEC_NAME
    warmup_code = None

    def __init__(self, cwd, warmup=False, ready_timeout=120.0):
        self.cwd = cwd
        self.warmup = warmup
        self.ready_timeout = ready_timeout
        self.kernel = None
        self.generation = 0  # bumped on every (re)start; env state is per generation

    # -- language hooks -------------------------------------------------------------------------

    def env_code(self, set_vars, unset, save_key=None):
        raise NotImplementedError

    def restore_code(self, save_key):
        raise NotImplementedError

    def reseed_code(self, seed):
        raise NotImplementedError

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self):
        kernel = _Kernel(self.cwd, self.spec_name)
        try:
            info = kernel.wait_ready(self.ready_timeout)
            log.info("%s kernel ready (%s %s, %s %s) in %s", self.language,
                     info.get("language_info", {}).get("name", "?"),
                     info.get("language_info", {}).get("version", "?"),
                     info.get("implementation", "?"),
                     info.get("implementation_version", "?"), self.cwd)
            if self.warmup and self.warmup_code:
                try:
                    kernel.silent(self.warmup_code, timeout=self.ready_timeout)
                except (RuntimeError, TimeoutError) as e:
                    log.warning("warm-up imports failed: %s", e)
        except BaseException:
            kernel.close()
            raise
        self.kernel = kernel
        self.generation += 1

    def stop(self):
        kernel, self.kernel = self.kernel, None
        if kernel is not None:
            kernel.close()

    def restart(self):
        self.stop()
        self.start()

    @property
    def started(self):
        return self.kernel is not None

    def alive(self):
        return self.kernel is not None and self.kernel.alive()

    def interrupt(self):
        if self.kernel is not None:
            self.kernel.interrupt()

    def apply_env(self, set_vars, unset):
        """Applies sandbox-wide env changes; raises on failure."""
        self.kernel.silent(self.env_code(set_vars, unset))

    def reseed(self, seed):
        """Reseeds the kernel's random generators from `seed` (bytes)."""
        self.kernel.silent(self.reseed_code(seed))

    def run(self, code, env_vars, control):
        """Executes one cell; yields protocol lines and `None` ticks."""
        kernel = self.kernel
        save_key = None
        if env_vars:
            save_key = "_firkin_saved_env_" + uuid.uuid4().hex[:8]
            try:
                kernel.silent(self.env_code(env_vars, (), save_key))
            except KernelDied:
                yield from self._died()
                return
            except Exception as e:
                yield mime.error_line("EnvVarsError", "could not set env_vars: %s" % e, "")
                return
        try:
            yield from self._execute(kernel, code, control)
        finally:
            if save_key and self.kernel is kernel and not control.abort.is_set():
                try:
                    kernel.silent(self.restore_code(save_key))
                except Exception as e:
                    log.warning("could not restore env vars: %s", e)

    def _execute(self, kernel, code, control):
        # A cell sent just after an interrupted one failed can find ipykernel still aborting
        # (stop_on_error): it replies "aborted" without running it. The cell never ran, so it is
        # sent again, a few times at most.
        for attempt in range(ABORT_RETRIES + 1):
            state = {"ran": False, "reply": None}
            yield from self._execute_once(kernel, code, control, state)
            reply = state["reply"]
            aborted = reply is not None and reply["content"].get("status") == "aborted"
            if not aborted or state["ran"] or control.abort.is_set():
                return
            if attempt < ABORT_RETRIES:
                log.info("%s kernel aborted the cell unrun (after an error); sending it again",
                         self.language)
                time.sleep(0.05 * (attempt + 1))
        yield mime.error_line("ExecutionAborted", "the kernel aborted the execution", "")

    def _execute_once(self, kernel, code, control, state):
        kernel.drain_iopub()  # stray output published between executions
        try:
            msg_id = kernel.send("execute_request", {
                "code": code, "silent": False, "store_history": True, "user_expressions": {},
                "allow_stdin": False, "stop_on_error": True,
            })
        except zmq.ZMQError as e:
            yield mime.error_line("UnexpectedEndOfExecution", "cannot reach the kernel: %s" % e, "")
            return
        last_alive = time.monotonic()
        while True:
            if control.abort.is_set():
                return
            msg = kernel.recv_iopub(TICK)
            now = time.monotonic()
            if msg is None:
                yield None
                if now - last_alive >= 1.0:
                    last_alive = now
                    if not kernel.alive():
                        yield from self._died()
                        return
                if control.interrupted and now - control.last_interrupt >= REINTERRUPT:
                    control.last_interrupt = now
                    kernel.interrupt()
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "execute_input":
                state["ran"] = True
                yield mime.count_line(content.get("execution_count") or 0)
            elif kind == "stream":
                state["ran"] = True
                yield mime.stream_line(content.get("name"), content.get("text", ""))
            elif kind == "execute_result":
                state["ran"] = True
                yield mime.result_line(content.get("data"), True)
            elif kind in ("display_data", "update_display_data"):
                state["ran"] = True
                yield mime.result_line(content.get("data"), False)
            elif kind == "error":
                state["ran"] = True
                yield mime.error_line(content.get("ename"), content.get("evalue"),
                                      content.get("traceback") or [])
            elif kind == "status" and content.get("execution_state") == "idle":
                break
        try:
            state["reply"] = kernel.wait_reply(msg_id, 5.0)
        except KernelDied:
            pass

    def _died(self):
        log.error("%s kernel died during an execution; restarting it", self.language)
        yield mime.error_line(
            "UnexpectedEndOfExecution",
            "the %s kernel died during the execution and was restarted; its state is lost"
            % self.display_name,
            "",
        )
        try:
            self.restart()
        except Exception as e:
            log.error("%s kernel restart failed: %s", self.language, e)
            self.kernel = None


class PythonRuntime(KernelRuntime):
    """A Python context: an ipykernel (warmed up with numpy, pandas and matplotlib when it is
    the default context)."""

    language = "python"
    display_name = "Python"
    warmup_code = WARMUP_CODE

    def env_code(self, set_vars, unset, save_key=None):
        return _env_code(set_vars, unset, save_key)

    def restore_code(self, save_key):
        return _restore_code(save_key)

    def reseed_code(self, seed):
        return _reseed_code(seed)


class RRuntime(KernelRuntime):
    """An R context: IRkernel (Debian's r-cran-irkernel)."""

    language = "r"
    display_name = "R"
    spec_name = R_SPEC_NAME

    def env_code(self, set_vars, unset, save_key=None):
        return _r_env_code(set_vars, unset, save_key)

    def restore_code(self, save_key):
        return _r_restore_code(save_key)

    def reseed_code(self, seed):
        return _r_reseed_code(seed)
