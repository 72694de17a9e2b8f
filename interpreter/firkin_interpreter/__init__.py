"""firkin's in-sandbox code-interpreter server.

It speaks the HTTP/NDJSON protocol the `e2b-code-interpreter` SDK expects on port 49999
(`/execute`, `/contexts`, `/health`) and runs each context's code in a real, persistent
interpreter: an ipykernel driven through `jupyter_client` for Python, IRkernel the same way for
R, a long-lived `node` process for JavaScript and TypeScript and a long-lived `bash` process for
Bash. The default `python` and `javascript` contexts exist from the start, as in E2B.

The server imports only the standard library and `jupyter_client` (with its own dependencies).
Python kernels also run `ipython_startup.py`, whose formatters use pandas, matplotlib and E2B's
`e2b_charts` when the user's code has them loaded.
"""

__version__ = "0.1.0"
