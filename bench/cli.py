"""Start-up and inspect speed of the airtrust CLI, side by side with openssl.

    .venv/bin/python bench/cli.py [--runs N] [--bundle FILE]

Prints the median wall time of each command and the ratio airtrust/openssl,
both measured in this run on this machine. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

AIRTRUST = str(Path(sys.executable).parent / "airtrust")


def _once(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True)
    return time.perf_counter() - start


def median_pair(ours: list[str], peer: list[str], runs: int) -> tuple[float, float]:
    """Median seconds of each, runs interleaved so machine noise hits both alike."""
    _once(ours), _once(peer)  # warm the page cache
    a, b = [], []
    for _ in range(runs):
        a.append(_once(ours))
        b.append(_once(peer))
    return statistics.median(a), statistics.median(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--bundle", default="/etc/ssl/certs/ca-certificates.crt")
    args = parser.parse_args()
    bundle = shlex.quote(args.bundle)
    count = Path(args.bundle).read_text().count("BEGIN CERTIFICATE")
    pairs = [
        ("start-up", [AIRTRUST, "--help"], ["openssl", "version"]),
        (
            f"inspect {count} certs (json)",
            [AIRTRUST, "inspect", args.bundle, "-o", "json"],
            [
                "bash",
                "-c",
                f"openssl crl2pkcs7 -nocrl -certfile {bundle} | openssl pkcs7 -print_certs -noout",
            ],
        ),
        (
            f"inspect {count} certs (table)",
            [AIRTRUST, "inspect", args.bundle],
            [
                "bash",
                "-c",
                f"openssl crl2pkcs7 -nocrl -certfile {bundle} | openssl pkcs7 -print_certs -noout",
            ],
        ),
    ]
    print(f"{'benchmark':32} {'airtrust':>10} {'openssl':>10} {'ratio':>7}")
    for name, ours, peer in pairs:
        a, b = median_pair(ours, peer, args.runs)
        print(f"{name:32} {a * 1000:8.1f}ms {b * 1000:8.1f}ms {a / b:6.2f}x")


if __name__ == "__main__":
    main()
