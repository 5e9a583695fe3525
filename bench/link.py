"""How long "email me a new link" takes for an address we know and one we do not.

The page must not tell anyone whether an address is on our records, by its words or by its
timing. This prints the median and 90th percentile of each, in-process through Flask's test
client (no server, so the network's noise does not hide a difference), taking turns.

    .venv/bin/python bench/link.py [--requests 400]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import environment, percentile, settings_for
from consent import create_app
from consent.services import people


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests of each kind")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/bench.db"
        subprocess.run(
            [sys.executable, "-m", "consent.cli", "db", "upgrade"],
            env=environment(url, Path(folder)),
            check=True,
            capture_output=True,
        )
        app = create_app(settings_for(url))
        database = app.extensions["consent.db"]
        with database.transaction() as session:
            people.find_or_create(session, "known@example.com", name="Kay Known")
        client = app.test_client()
        found = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', client.get("/link").text)
        if found is None:
            raise SystemExit("No form token on /link.")
        token = found.group(1)

        def timed(email: str) -> float:
            start = time.perf_counter()
            response = client.post("/link", data={"csrf_token": token, "email": email})
            took = (time.perf_counter() - start) * 1000
            if response.status_code != 200:
                raise SystemExit(f"/link answered {response.status_code}")
            return took

        for turn in range(50):
            timed("known@example.com")
            timed(f"warm{turn}@example.com")
        known: list[float] = []
        unknown: list[float] = []
        for turn in range(args.requests):
            known.append(timed("known@example.com"))
            unknown.append(timed(f"nobody{turn}@example.com"))
        database.dispose()
    for label, times in (("known address", known), ("unknown address", unknown)):
        print(
            f"{label:16} median {statistics.median(times):.3f} ms, "
            f"p90 {percentile(times, 0.9):.3f} ms ({len(times)} requests)"
        )


if __name__ == "__main__":
    main()
