"""Soak: create → exec → files → kill in a loop against a running firkin server for N minutes,
sampling the server's open fds and RSS and the host's network namespaces and runsc processes.
Prints the before/after figures and writes them as JSON. With `--check` it exits non-zero on
any failed iteration or any growth beyond noise (test.sh runs a 2-minute checked soak; the
10-minute figures in docs/reliability.md come from the same script):

    E2B_API_URL=... E2B_SANDBOX_URL=... E2B_API_KEY=... \\
        .venv/bin/python tests/soak/soak.py --server-pid PID --state-dir DIR --minutes 10 --out soak.json

Namespaces and runsc processes are counted for that server only (its state dir names them).
"""

import argparse
import hashlib
import json
import os
import subprocess
import time

from e2b import Sandbox


def sample(pid, state_dir):
    status = open(f"/proc/{pid}/status").read()
    rss_kb = int(next(l.split()[1] for l in status.splitlines() if l.startswith("VmRSS:")))
    prefix = "fk-" + hashlib.sha256(state_dir.encode()).hexdigest()[:6] + "-"
    netns = os.listdir("/var/run/netns") if os.path.isdir("/var/run/netns") else []
    runsc = subprocess.run(["pgrep", "-c", "-f", "--", f"--root={state_dir}/run/runsc"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "t": round(time.time(), 1),
        "server_fds": len(os.listdir(f"/proc/{pid}/fd")),
        "server_rss_mb": round(rss_kb / 1024, 1),
        "netns": len([n for n in netns if n.startswith(prefix)]),
        "runsc_processes": int(runsc or 0),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server-pid", type=int, required=True)
    ap.add_argument("--state-dir", required=True, help="the server's FIRKIN_STATE_DIR")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--out", default="soak.json")
    ap.add_argument("--check", action="store_true", help="fail on any failure or leak")
    args = ap.parse_args()
    # Warm up (first creates build templates, fill pools, grow allocator arenas), then baseline.
    for _ in range(3):
        s = Sandbox.create(timeout=60)
        s.commands.run("true")
        s.kill()
    time.sleep(5)
    before = sample(args.server_pid, args.state_dir)
    samples, iterations, failures = [before], 0, 0
    end = time.time() + args.minutes * 60
    next_sample = time.time() + 30
    while time.time() < end:
        try:
            s = Sandbox.create(timeout=60)
            try:
                assert s.commands.run("echo $((1 + 1))").stdout == "2\n"
                s.files.write("/home/user/soak.txt", "x" * 4096)
                assert len(s.files.read("/home/user/soak.txt")) == 4096
            finally:
                s.kill()
            iterations += 1
        except Exception as e:  # counted, and the loop goes on
            failures += 1
            print("iteration failed:", repr(e)[:200], flush=True)
        if time.time() >= next_sample:
            samples.append(sample(args.server_pid, args.state_dir))
            print(samples[-1], f"iterations={iterations}", flush=True)
            next_sample += 30
    time.sleep(10)  # background teardowns of the last kills
    after = sample(args.server_pid, args.state_dir)
    for _ in range(10):  # a warm-pool refill may be mid-flight: give it a moment
        if not leaks(before, after):
            break
        time.sleep(2)
        after = sample(args.server_pid, args.state_dir)
    samples.append(after)
    report = {"minutes": args.minutes, "iterations": iterations, "failures": failures,
              "before": before, "after": after, "samples": samples}
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"soak: {iterations} create/exec/files/kill iterations in {args.minutes} min, {failures} failed")
    for k in ("server_fds", "server_rss_mb", "netns", "runsc_processes"):
        print(f"  {k:<16} before {before[k]:>8}  after {after[k]:>8}")
    if args.check:
        problems = leaks(before, after) + ([f"{failures} iterations failed"] if failures else [])
        if iterations == 0:
            problems.append("no iteration completed")
        if problems:
            raise SystemExit("FAIL: soak: " + "; ".join(problems))
        print("soak: no failures, no leaks")


def leaks(before, after):
    """Growth beyond noise: any extra namespace or runsc process, more than a few fds, or RSS
    growth beyond allocator slack (a leak of even 50 KB per iteration exceeds it)."""
    found = []
    for k in ("netns", "runsc_processes"):
        if after[k] > before[k]:
            found.append(f"{k} {before[k]} -> {after[k]}")
    if after["server_fds"] > before["server_fds"] + 4:
        found.append(f"server_fds {before['server_fds']} -> {after['server_fds']}")
    if after["server_rss_mb"] > before["server_rss_mb"] * 1.5 + 8:
        found.append(f"server_rss_mb {before['server_rss_mb']} -> {after['server_rss_mb']}")
    return found


if __name__ == "__main__":
    main()
