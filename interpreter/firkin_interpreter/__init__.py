"""firkin's in-sandbox code-interpreter server.

It speaks the HTTP/NDJSON protocol the `e2b-code-interpreter` SDK expects on port 49999
(`/execute`, `/contexts`, `/health`) and runs each context's code in a real, persistent
interpreter: an ipykernel driven through `jupyter_client` for Python, a long-lived `node`
process for JavaScript and a long-lived `bash` process for Bash.

Only the standard library and `jupyter_client` (with its own dependencies) are imported.
"""

__version__ = "0.1.0"
