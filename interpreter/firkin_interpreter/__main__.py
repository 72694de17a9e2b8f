"""Entry point: `python3 -m firkin_interpreter --port 49999 [--host 0.0.0.0] [--cwd DIR]
[--auth sdk|strict]`.

Serves HTTP at once (answering 503 on /health) while the default Python kernel starts and warms
up in the background; /health turns 200 when it is ready. SIGTERM/SIGINT stop every context.
"""

import argparse
import logging
import os
import signal
import sys
import threading

from .auth import MODES, Gate
from .contexts import Registry
from .server import Server


def _default_cwd(requested):
    for candidate in (requested, "/home/user", os.getcwd()):
        if candidate and os.path.isdir(candidate):
            return os.path.abspath(candidate)
    return "/"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="firkin_interpreter",
                                     description="firkin's in-sandbox code-interpreter server")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=49999)
    parser.add_argument("--cwd", default=None,
                        help="default working directory (default /home/user, else the current)")
    parser.add_argument("--auth", choices=MODES,
                        default=os.environ.get("FIRKIN_INTERPRETER_AUTH") or "sdk",
                        help="sdk: the token is required on /execute and, when sent, checked on "
                             "the context routes (which the pinned SDK calls without it); "
                             "strict: required on every route but /health")
    parser.add_argument("--log-level", default=os.environ.get("FIRKIN_LOG", "INFO"))
    args = parser.parse_args(argv)

    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s %(levelname).1s %(name)s: %(message)s")
    log = logging.getLogger("firkin")

    registry = Registry(_default_cwd(args.cwd))
    gate = Gate(mode=args.auth)
    server = Server((args.host, args.port), registry, gate)
    log.info("listening on %s:%d (default cwd %s, env file %s, token file %s, auth %s)",
             args.host, args.port, registry.default_cwd, registry.envfile.path,
             gate.token_file.path, gate.mode)

    threading.Thread(target=registry.start_default, name="default-kernel", daemon=True).start()

    def stop(signum, _frame):
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        registry.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
