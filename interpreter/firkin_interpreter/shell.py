"""Bash contexts: one persistent `bash` process per context.

Each cell is written to a file and `source`d by the long-lived shell (stdin from /dev/null, so
the cell cannot eat the command pipe), so variables, functions, the cwd and `set` options
survive between cells. After the cell the shell prints an end marker carrying a per-cell token
on stderr and (with the exit status) on stdout; the cell is over once both markers are read,
which guarantees all of its output on both pipes has been seen. A non-zero status becomes an
`ExitCodeError`. SIGINT makes the sourced cell return 130 (a trap set at start), so the shell
itself survives an interrupt.
"""

import os
import re
import shutil
import subprocess
import tempfile
import threading

from . import mime
from .jupyter import kernel_root
from .repl import ProcessRuntime, _child_env, _reader

MARK = "\x1eFIRKIN-END "
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HOLD = 96  # an unterminated marker prefix shorter than this is held back


def _quote(value):
    return "'" + str(value).replace("'", "'\\''") + "'"


class BashRuntime(ProcessRuntime):
    language = "bash"
    name = "bash"

    def __init__(self, cwd):
        super().__init__(cwd)
        self.dir = None
        self._pending = {}
        self._marks = {}

    def _spawn(self, events):
        os.makedirs(kernel_root(), mode=0o700, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="bash-", dir=kernel_root())
        proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"], cwd=self.cwd, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            env=_child_env())
        for f, kind in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
            threading.Thread(target=_reader, args=(os.dup(f.fileno()), kind, events),
                             daemon=True, name="bash-%s" % kind).start()
            f.close()
        self._pending = {"stdout": "", "stderr": ""}
        self._marks = {}
        return proc

    def stop(self):
        super().stop()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def _end_commands(self, token):
        return ("__firkin_rc=$?\n"
                "printf '\\036FIRKIN-END %%s\\036\\n' %s >&2\n"
                "printf '\\036FIRKIN-END %%s %%d\\036\\n' %s \"$__firkin_rc\"\n"
                "unset __firkin_rc\n" % (token, token))

    def _wait_ready(self, events):
        self._write("trap 'return 130 2>/dev/null' INT\ntrue\n" + self._end_commands("ready"))
        state = {"done": False}
        for event in self._startup_events(events):
            self._handle(event, "ready", state)
            if state["done"]:
                return

    def _env_command(self, set_vars, unset):
        parts = ["unset %s\n" % k for k in unset if _NAME.match(k)]
        parts += ["export %s=%s\n" % (k, _quote(v)) for k, v in set_vars.items() if _NAME.match(k)]
        return "".join(parts)

    def reseed(self, seed):
        self._write("RANDOM=%d\n" % int.from_bytes(seed[:4], "little"))

    def _submit(self, code, env_vars, token):
        self._marks = {}
        path = os.path.join(self.dir, "cell-%s.sh" % token)
        with open(path, "w", encoding="utf-8") as f:
            f.write(code)
            if not code.endswith("\n"):
                f.write("\n")
        names = [k for k in env_vars if _NAME.match(k)]
        pre, post = [], []
        for i, k in enumerate(names):
            had, old = "__firkin_had_%d" % i, "__firkin_old_%d" % i
            pre.append('if [ -n "${%s+x}" ]; then %s=1; %s="$%s"; else %s=0; fi\n'
                       % (k, had, old, k, had))
            pre.append("export %s=%s\n" % (k, _quote(env_vars[k])))
            post.append('if [ "$%s" = 1 ]; then export %s="$%s"; else unset %s; fi; unset %s %s\n'
                        % (had, k, old, k, had, old))
        script = "".join(pre) + "source %s < /dev/null\n" % _quote(path)
        # The end marker reports the cell's status, so restore the env vars after taking it.
        end = self._end_commands(token).split("\n", 1)
        script += end[0] + "\n" + "".join(post) + end[1]
        script += "rm -f %s\n" % _quote(path)
        self._write(script)

    def _handle(self, event, token, state):
        kind, source, text = event
        if kind != "text":
            return []
        buf = self._pending.get(source, "") + text
        lines = []
        out = []
        while True:
            i = buf.find(MARK)
            if i < 0:
                break
            j = buf.find("\x1e\n", i + 1)
            if j < 0:
                break
            out.append(buf[:i])
            fields = buf[i + len(MARK):j].split()
            buf = buf[j + 2:]
            if fields and fields[0] == token:
                self._marks[source] = fields[1] if len(fields) > 1 else ""
        k = buf.rfind("\x1e")
        if k >= 0 and len(buf) - k < _HOLD and MARK.startswith(buf[k:k + len(MARK)]):
            out.append(buf[:k])
            self._pending[source] = buf[k:]
        else:
            out.append(buf)
            self._pending[source] = ""
        joined = "".join(out)
        if joined:
            lines.append(mime.stream_line(source, joined))
        if "stdout" in self._marks and "stderr" in self._marks:
            status = self._marks["stdout"]
            self._marks = {}
            state["done"] = True
            if status not in ("", "0"):
                lines.append(mime.error_line(
                    "ExitCodeError", "the cell exited with status %s" % status, ""))
        return lines
