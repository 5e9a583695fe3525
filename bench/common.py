"""What the benchmark scripts share: where results go, fixed keys, and timing a CLI run.

The keys are fixed so a population kept with ``--reuse`` can still be read next time.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from consent.config import Settings, load_settings

RESULTS = Path(__file__).resolve().parent / "results"
FIELD_KEY = "pK2ZMl0N2R0y3kCj7kYqK0l1nJb0dVj4Yq0h2Xc9Zs8="
ENV = {
    "CONSENT_ENV": "test",
    "CONSENT_SECRET_KEYS": "bench-secret-key-" + "s" * 40,
    "CONSENT_FIELD_KEYS": FIELD_KEY,
    "CONSENT_HASH_KEY": "bench-hash-key-" + "h" * 40,
    "CONSENT_RUN_SCHEDULER": "off",
    "CONSENT_MAIL_WAKE": "off",
    "CONSENT_RATE_LIMITS": "off",
}


def environment(url: str, instance: Path = RESULTS) -> dict[str, str]:
    """This process's environment without any CONSENT_ setting of the caller's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env.update(ENV, CONSENT_DATABASE_URL=url, CONSENT_INSTANCE_PATH=str(instance))
    return env


def settings_for(url: str) -> Settings:
    return load_settings(environ=environment(url))


def run_cli(url: str, *args: str) -> tuple[float, float, str]:
    """Run ``consent <args>`` in a child process: seconds taken, its peak memory in MB, and
    what it printed (with the exit status when it failed)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "consent.cli", *args],
        env=environment(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status:
        output += f"\n(exit status {status})"
    return seconds, usage.ru_maxrss / 1024, output.strip()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
