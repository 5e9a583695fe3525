"""Preferences page under load: gunicorn (2 workers, the repository's gunicorn.conf.py),
20 concurrent clients from wrk, beside a bare Flask route rendering a static template of
the same size under the same server settings. Prints requests per second and p95 latency,
the CPU time the two gunicorn workers spent per request under that load (on Linux), and
then each app's own time per request, called directly with no server (timing.py).

Both servers run throughout and take turns under load, so a slow spell on a shared
machine falls on both rather than on whichever ran second. Both are told to take at most
10 connections per worker, so wrk's 20 keep-alive connections split evenly between the two
workers: otherwise, now and then one worker accepted all 20 and the other stood idle for
the whole turn, halving that turn's figure for either server at random.

    .venv/bin/python bench/pages.py                 # needs wrk: apt-get install wrk
    .venv/bin/python bench/pages.py --duration 30 --database-url postgresql+psycopg://...
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import free_port
from consent import links
from consent.config import load_settings
from consent.db import Database
from consent.schema import upgrade
from tests import factories

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 2
CONNECTIONS = 20
LUA = """
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %.3f %.3f %d\\n", summary.requests,
    summary.duration, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout))
end
"""


def environment(url: str, instance: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env.update(
        CONSENT_ENV="test",
        CONSENT_DATABASE_URL=url,
        CONSENT_INSTANCE_PATH=str(instance),
        CONSENT_SECRET_KEYS="bench-secret-key-" + "s" * 40,
        CONSENT_FIELD_KEYS=Fernet.generate_key().decode(),
        CONSENT_HASH_KEY="h" * 44,
        CONSENT_RUN_SCHEDULER="off",
        CONSENT_MAIL_WAKE="off",
        CONSENT_LOG_LEVEL="WARNING",
    )
    return env


def prepare(env: dict[str, str]) -> str:
    """A parent with a typical history; returns their preferences page path."""
    settings = load_settings(environ=env)
    upgrade(settings)
    db = Database(settings)
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", "workshops", email="b@example.com")
        factories.member(session, factories.panel(session), person)
        token = links.make_token(settings, person, "manage")
    db.dispose()
    return f"/manage/{token}"


def serve(app: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(ROOT / "gunicorn.conf.py"),
            "--workers",
            str(WORKERS),
            "--worker-connections",
            str(CONNECTIONS // WORKERS),
            "--bind",
            f"127.0.0.1:{port}",
            app,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return server
        except urllib.error.HTTPError:
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"gunicorn did not start for {app}")


def figures(command: list[str], marker: str, **options: Any) -> list[float]:
    """The numbers a measuring command prints on its line that starts with ``marker``."""
    output = subprocess.run(command, capture_output=True, text=True, check=True, **options)
    match = re.search(rf"^{marker}((?: [\d.]+)+)$", output.stdout, re.M)
    assert match, output.stdout
    return [float(number) for number in match[1].split()]


def worker_seconds(server: subprocess.Popen[bytes]) -> float | None:
    """CPU seconds the server's workers have used so far, or None where /proc cannot say.

    Under load the page's share of requests per second is about its share of the workers'
    CPU time per request; that time shows what gunicorn adds to each app's in-process cost.
    """
    try:
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        total = 0
        for child in children:
            fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    except OSError:
        return None
    return total / os.sysconf("SC_CLK_TCK")


def load(
    url: str, duration: int, script: Path, server: subprocess.Popen[bytes]
) -> tuple[float, float, float, int, float | None]:
    """Requests a second, p50 and p95 in ms, errors, and workers' CPU ms per request."""
    urllib.request.urlopen(url).read()  # noqa: S310 (loopback)
    before = worker_seconds(server)
    requests, micros, p50, p95, errors = figures(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{duration}s", "-s", str(script), url], "RESULT"
    )
    after = worker_seconds(server)
    cpu = None if before is None or after is None else (after - before) / requests * 1000
    return requests / (micros / 1e6), p50, p95, int(errors), cpu


def in_process(path: str, env: dict[str, str]) -> tuple[float, float]:
    """Each app's own milliseconds per request, called directly after the servers stop."""
    page, bare = figures(
        [sys.executable, "-m", "bench.pages.timing", path], "TIMING", cwd=ROOT, env=env
    )
    return page, bare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=20, help="seconds of load on each")
    parser.add_argument(
        "--rounds", type=int, default=5, help="turns each takes, after 2 s to warm up"
    )
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("This benchmark needs wrk: apt-get install wrk")
    slice_seconds = max(2, args.duration // args.rounds)
    with tempfile.TemporaryDirectory() as scratch:
        instance = Path(scratch)
        env = environment(args.database_url or f"sqlite:///{instance / 'pages.db'}", instance)
        path = prepare(env)
        script = instance / "p95.lua"
        script.write_text(LUA)
        port, bare_port = free_port(), free_port()
        server = serve("consent.wsgi:app", port, env)
        try:
            page = urllib.request.urlopen(f"http://127.0.0.1:{port}{path}").read()
            same = Path(ROOT / "bench" / "pages" / "same_size.html")
            same.write_text("{% raw %}" + page.decode() + "{% endraw %}", encoding="utf-8")
            bare = serve("bench.pages.bare_app:app", bare_port, env)
            try:
                page_url, bare_url = (
                    f"http://127.0.0.1:{port}{path}",
                    f"http://127.0.0.1:{bare_port}/bare",
                )
                load(page_url, 2, script, server)
                load(bare_url, 2, script, bare)
                real, baseline = [], []
                for _ in range(args.rounds):
                    real.append(load(page_url, slice_seconds, script, server))
                    baseline.append(load(bare_url, slice_seconds, script, bare))
            finally:
                bare.terminate()
                bare.wait()
        finally:
            server.terminate()
            server.wait()
        page_ms, bare_ms = in_process(path, env)
    print(
        f"page size {len(page):,} bytes; gunicorn {WORKERS} workers (gthread, "
        f"{CONNECTIONS // WORKERS} connections each); wrk {CONNECTIONS} connections; "
        f"{args.rounds} turns of {slice_seconds} s each, page then bare route"
    )
    for label, turns in (("preferences page", real), ("bare Flask route", baseline)):
        rates, p95s = [t[0] for t in turns], [t[2] for t in turns]
        print(
            f"  {label}  {statistics.mean(rates):7.0f} req/s (turns {min(rates):.0f} to "
            f"{max(rates):.0f})   p50 {statistics.median(t[1] for t in turns):6.1f} ms   "
            f"p95 {statistics.median(p95s):6.1f} ms (turns {min(p95s):.1f} to "
            f"{max(p95s):.1f})   errors {sum(t[3] for t in turns)}"
        )
    print(
        "  turn by turn (page / bare req/s): "
        + ", ".join(f"{r[0]:.0f}/{b[0]:.0f}" for r, b in zip(real, baseline, strict=True))
    )
    cpu = [[t[4] for t in turns if t[4] is not None] for turns in (real, baseline)]
    if all(len(c) == args.rounds for c in cpu):
        page_cpu, bare_cpu = (statistics.median(c) for c in cpu)
        print(
            f"  workers' CPU time under load: preferences page {page_cpu:.3f} ms a request, "
            f"bare route {bare_cpu:.3f} ms (bare / page {bare_cpu / page_cpu:.0%})"
        )
    print(
        f"  in-process, no server: preferences page {page_ms:.3f} ms a request, bare route "
        f"{bare_ms:.3f} ms (bench/pages/timing.py)"
    )
    shares = [r[0] / b[0] for r, b in zip(real, baseline, strict=True)]
    share = statistics.mean(t[0] for t in real) / statistics.mean(t[0] for t in baseline)
    print(
        f"  preferences / bare: {share:.0%} of the requests per second "
        f"(turns {min(shares):.0%} to {max(shares):.0%})"
    )


if __name__ == "__main__":
    main()
