"""Output shaping: Jupyter MIME bundles to `result` lines, and the other NDJSON line builders.

Every line the server streams is built here, so the field names of the wire protocol live in
one place. Builders never emit null fields (the SDK's objects are dumped with `exclude_none`).
"""

import datetime
import json

# Jupyter MIME type -> field of the SDK's `Result`. Everything else goes into `extra`.
_MIME_FIELDS = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
    "e2b/data": "data",
    "e2b/chart": "chart",
}

# Fields the SDK declares as objects; a string value (some kernels send JSON text) is decoded.
_OBJECT_FIELDS = ("json", "data", "chart")


def now_iso():
    """The current time as an ISO-8601 string with a UTC offset."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def strip_str_quotes(text):
    """Strips the quotes of a Python `str` repr: `'hello'` -> `hello`.

    Only a text that starts and ends with the same quote character is touched, so reprs of
    tuples, lists or dicts keep theirs.
    """
    if len(text) >= 2 and text[0] == text[-1] and text[0] in ("'", '"'):
        return text[1:-1]
    return text


def _as_text(value):
    if isinstance(value, list):  # nbformat allows multiline strings as lists of lines
        return "".join(str(v) for v in value)
    return value if isinstance(value, str) else str(value)


def result_line(bundle, is_main_result):
    """Maps a MIME bundle (`{"text/plain": ..., "image/png": ...}`) onto a `result` line."""
    line = {"type": "result"}
    extra = {}
    for mime, value in (bundle or {}).items():
        field = _MIME_FIELDS.get(mime)
        if field is None:
            extra[mime] = value
            continue
        if field in _OBJECT_FIELDS:
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError:
                    extra[mime] = value
                    continue
            if not isinstance(value, dict) and not (field == "json" and isinstance(value, list)):
                extra[mime] = value
                continue
        else:
            value = _as_text(value)
            if field == "text":
                value = strip_str_quotes(value)
            elif field in ("png", "jpeg", "pdf"):
                value = value.strip()  # base64 may carry a trailing newline
        line[field] = value
    if extra:
        line["extra"] = extra
    line["is_main_result"] = bool(is_main_result)
    return line


def stream_line(name, text):
    """A `stdout` or `stderr` line."""
    return {"type": "stderr" if name == "stderr" else "stdout", "text": text, "timestamp": now_iso()}


def error_line(name, value, traceback):
    """An `error` line; all three fields are strings (the SDK requires them)."""
    if isinstance(traceback, (list, tuple)):
        traceback = "\n".join(str(t) for t in traceback)
    return {
        "type": "error",
        "name": str(name or "Error"),
        "value": "" if value is None else str(value),
        "traceback": "" if traceback is None else str(traceback),
    }


def count_line(execution_count):
    """The `number_of_executions` line."""
    return {"type": "number_of_executions", "execution_count": int(execution_count)}


END = {"type": "end_of_execution"}
KEEPALIVE = {"type": "keepalive"}


def encode(line):
    """One NDJSON line as bytes (never blank: a `type` is always present)."""
    return (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
