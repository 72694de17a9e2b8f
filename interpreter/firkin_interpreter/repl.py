"""Subprocess-backed contexts: the shared plumbing (`ProcessRuntime`) and JavaScript (`NodeRuntime`).

A `ProcessRuntime` owns one long-lived interpreter process in its own session (process group),
reader threads that turn its pipes into events on a queue (a new queue per process, so a dead
process's readers can never leak into its successor), interrupts (SIGINT to the group) and the
restart-on-death rule. Subclasses say how to spawn, how to submit a cell and how to read events.

`NodeRuntime` runs `repl.js` (next to this file) under `node`; the driver answers over a
dedicated pipe with JSON lines (see the header of `repl.js`). A TypeScript context is the same
driver with `--typescript`: each cell is transpiled (types erased) before it runs.
"""

import codecs
import json
import logging
import os
import queue
import signal
import subprocess
import threading
import time
import uuid

from . import mime

log = logging.getLogger("firkin.repl")

TICK = 0.5
REINTERRUPT = 2.0  # seconds between SIGINTs while an interrupted cell keeps running
GIVE_UP = 8.0  # seconds after the first SIGINT before the process is killed and restarted
READY_TIMEOUT = 30.0


def _reader(stream_fd, kind, events):
    """Pushes ("text", kind, str) events for a pipe, then ("eof", kind, None)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    try:
        while True:
            try:
                data = os.read(stream_fd, 65536)
            except OSError:
                data = b""
            if not data:
                tail = decoder.decode(b"", final=True)
                if tail:
                    events.put(("text", kind, tail))
                break
            text = decoder.decode(data)
            if text:
                events.put(("text", kind, text))
    finally:
        events.put(("eof", kind, None))
        try:
            os.close(stream_fd)
        except OSError:
            pass


class ProcessRuntime:
    """A context backed by one persistent interpreter process."""

    language = "?"
    name = "process"

    def __init__(self, cwd):
        self.cwd = cwd
        self.proc = None
        self.events = None
        self.generation = 0
        self.count = 0
        self._stdin_lock = threading.Lock()

    # -- subclass hooks ------------------------------------------------------------------------

    def _spawn(self, events):
        """Starts the process, wires its pipes to `events`, returns the Popen."""
        raise NotImplementedError

    def _wait_ready(self, events):
        raise NotImplementedError

    def _submit(self, code, env_vars, token):
        raise NotImplementedError

    def _handle(self, event, token, state):
        """Turns one event into protocol lines (returned as a list); sets state["done"]."""
        raise NotImplementedError

    def _env_command(self, set_vars, unset):
        raise NotImplementedError

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def started(self):
        return self.proc is not None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        events = queue.Queue()
        proc = self._spawn(events)
        self.proc, self.events = proc, events
        try:
            self._wait_ready(events)
        except BaseException:
            self.stop()
            raise
        self.generation += 1
        self.count = 0
        log.info("%s process %d ready in %s", self.name, proc.pid, self.cwd)

    def stop(self):
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.warning("%s process %d did not exit", self.name, proc.pid)
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass

    def restart(self):
        self.stop()
        self.start()

    def interrupt(self):
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGINT)
            except OSError as e:
                log.warning("interrupt failed: %s", e)

    def _write(self, data):
        with self._stdin_lock:
            self.proc.stdin.write(data.encode("utf-8"))
            self.proc.stdin.flush()

    def apply_env(self, set_vars, unset):
        self._write(self._env_command(set_vars, unset))

    def reseed(self, seed):
        """Reseeds the process's random generator: a no-op here, as node's Math.random cannot
        be reseeded; bash overrides it."""

    # -- execution -----------------------------------------------------------------------------

    def run(self, code, env_vars, control):
        self.count += 1
        yield mime.count_line(self.count)
        token = uuid.uuid4().hex
        events = self.events
        self._drain_stale(events)
        try:
            self._submit(code, env_vars or {}, token)
        except OSError as e:
            yield from self._died("could not send the cell (%s)" % e)
            return
        state = {"done": False}
        first_interrupt = None
        while not state["done"]:
            if control.abort.is_set():
                return
            try:
                event = events.get(timeout=TICK)
            except queue.Empty:
                yield None
                if not self.alive():
                    yield from self._drain(events, token, state)
                    yield from self._died(self._exit_text())
                    return
                if control.interrupted:
                    now = time.monotonic()
                    first_interrupt = first_interrupt or control.last_interrupt or now
                    if now - first_interrupt >= GIVE_UP:
                        log.warning("%s did not stop on SIGINT; restarting it", self.name)
                        yield from self._died("the execution was interrupted and the %s process "
                                              "had to be restarted" % self.name)
                        return
                    if now - control.last_interrupt >= REINTERRUPT:
                        control.last_interrupt = now
                        self.interrupt()
                continue
            # Coalesce what is already queued (a burst of console.log calls) into few lines.
            lines = self._handle(event, token, state)
            while not state["done"] and len(lines) < 256:
                try:
                    event = events.get_nowait()
                except queue.Empty:
                    break
                lines.extend(self._handle(event, token, state))
            for line in _merge_streams(lines):
                yield line

    def _drain_stale(self, events):
        """Drops output that arrived between cells (e.g. from timers or background jobs)."""
        while True:
            try:
                event = events.get_nowait()
            except queue.Empty:
                return
            self._handle(event, None, {"done": False})

    def _drain(self, events, token, state):
        """Output still queued from a process that just exited."""
        while True:
            try:
                event = events.get_nowait()
            except queue.Empty:
                return
            for line in self._handle(event, token, state):
                yield line

    def _startup_events(self, events):
        """Yields the new process's events until READY_TIMEOUT has passed (then TimeoutError);
        RuntimeError if the process dies first."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            try:
                event = events.get(timeout=TICK)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise RuntimeError(self._exit_text())
                continue
            yield event
        raise TimeoutError("%s did not start in %.0f s" % (self.name, READY_TIMEOUT))

    def _exit_text(self):
        proc = self.proc
        rc = proc.poll() if proc is not None else None
        if rc is None:
            return "the %s process exited" % self.name
        if rc < 0:
            try:
                return "the %s process was killed by %s" % (self.name, signal.Signals(-rc).name)
            except ValueError:
                return "the %s process was killed by signal %d" % (self.name, -rc)
        return "the %s process exited with status %d" % (self.name, rc)

    def _died(self, why):
        log.warning("%s: %s; restarting it", self.language, why)
        yield mime.error_line(
            "UnexpectedEndOfExecution",
            "%s; the %s context was restarted and its state is lost" % (why, self.language), "")
        try:
            self.restart()
        except Exception as e:
            log.error("%s restart failed: %s", self.name, e)
            self.stop()


class NodeRuntime(ProcessRuntime):
    """JavaScript (or TypeScript): a persistent `node repl.js` process."""

    language = "javascript"
    name = "node"

    def __init__(self, cwd, typescript=False):
        super().__init__(cwd)
        self.typescript = typescript
        if typescript:
            self.language = "typescript"

    def _spawn(self, events):
        proto_r, proto_w = os.pipe()
        driver = os.path.join(os.path.dirname(os.path.abspath(__file__)), "repl.js")
        node = os.environ.get("FIRKIN_NODE", "node")
        try:
            proc = subprocess.Popen(
                [node, driver, str(proto_w)] + (["--typescript"] if self.typescript else []),
                cwd=self.cwd, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(proto_w,),
                start_new_session=True, env=_child_env())
        finally:
            os.close(proto_w)
        for fd, kind in ((proto_r, "proto"), (proc.stdout.fileno(), "stdout"),
                         (proc.stderr.fileno(), "stderr")):
            fd = os.dup(fd) if kind != "proto" else fd
            threading.Thread(target=_reader, args=(fd, kind, events), daemon=True,
                             name="node-%s" % kind).start()
        proc.stdout.close()
        proc.stderr.close()
        self._proto_buf = ""
        return proc

    def _wait_ready(self, events):
        for event in self._startup_events(events):
            for msg in self._messages(event):
                if msg.get("type") == "ready":
                    return
                if msg.get("type") == "fatal":
                    raise RuntimeError(msg.get("text") or "the node driver could not start")
            if event[0] == "text" and event[1] == "stderr":
                log.warning("node: %s", event[2].rstrip())

    def _messages(self, event):
        """The driver's JSON messages carried by a protocol event (lines may span reads)."""
        kind, source, text = event
        if source != "proto" or kind != "text":
            return []
        self._proto_buf += text
        *lines, self._proto_buf = self._proto_buf.split("\n")
        out = []
        for line in lines:
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                log.warning("node driver sent a bad line: %r", line[:200])
        return out

    def _submit(self, code, env_vars, token):
        self._write(json.dumps({"op": "exec", "id": token, "code": code, "env": env_vars}) + "\n")

    def _env_command(self, set_vars, unset):
        return json.dumps({"op": "env", "set": set_vars, "unset": list(unset)}) + "\n"

    def _handle(self, event, token, state):
        kind, source, text = event
        if source in ("stdout", "stderr"):  # raw output, e.g. from child processes
            return [mime.stream_line(source, text)] if kind == "text" else []
        lines = []
        for msg in self._messages(event):
            t = msg.get("type")
            if t in ("stdout", "stderr"):
                lines.append(mime.stream_line(t, msg.get("text", "")))
            elif t == "result":
                lines.append(mime.result_line({"text/plain": msg.get("text", "")}, True))
            elif t == "error":
                lines.append(mime.error_line(msg.get("name"), msg.get("value"),
                                             msg.get("traceback")))
            elif t == "done" and msg.get("id") == token:
                state["done"] = True
        return lines


def _merge_streams(lines, limit=1 << 16):
    """Joins adjacent stdout (or stderr) lines, up to `limit` characters each."""
    out = []
    for line in lines:
        prev = out[-1] if out else None
        if (prev is not None and line["type"] in ("stdout", "stderr")
                and prev["type"] == line["type"] and len(prev["text"]) < limit):
            out[-1] = dict(prev, text=prev["text"] + line["text"])
        else:
            out.append(line)
    return out


def _child_env():
    """The environment for interpreter processes: ours, minus this package's PYTHONPATH."""
    env = dict(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
             if p and os.path.abspath(p) != pkg_parent]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    else:
        env.pop("PYTHONPATH", None)
    return env
