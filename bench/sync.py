"""Time for ``airtrust sync`` to converge N labelled namespaces on a real apiserver.

    .venv/bin/python bench/sync.py [--namespaces 500]

Starts a cluster (scripts/testcluster), creates the namespaces and the CA
source, starts the controller and measures until every namespace holds the
bundle; then changes the source and measures the propagation again. Not a test.
"""

from __future__ import annotations

import argparse
import base64
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import AIRTRUST, KUBECTL, started_cluster


def kubectl(kubeconfig: Path, *args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(
        [KUBECTL, "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        check=True,
    ).stdout


def converged(kubeconfig: Path, count: int, pem: bytes) -> bool:
    items = yaml.safe_load(
        kubectl(
            kubeconfig,
            "get",
            "secrets",
            "-A",
            "--field-selector",
            "metadata.name=runai-ca-cert",
            "-o",
            "json",
        )
    )["items"]
    want = base64.b64encode(pem).decode()
    done = sum(
        1
        for s in items
        if s["metadata"]["namespace"].startswith("team-") and s["data"]["runai-ca.pem"] == want
    )
    return done == count


def source(kubeconfig: Path, pem: bytes) -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "local-ca", "namespace": "airtrust-system"},
        "data": {"runai-ca.pem": base64.b64encode(pem).decode()},
    }
    kubectl(
        kubeconfig,
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        stdin=yaml.safe_dump(doc).encode(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--namespaces", type=int, default=500)
    count = parser.parse_args().namespaces
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with started_cluster(work / "c") as kubeconfig:
            docs = [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
                for n in ("airtrust-system", "runai")
            ]
            docs += [
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": f"team-{i:04d}", "labels": {"airtrust.io/ca": "true"}},
                }
                for i in range(count)
            ]
            kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs).encode())
            pems = []
            for name in ("one", "two"):
                subprocess.run(
                    [AIRTRUST, "ca", "create", "--out", str(work / name), "--name", f"CA {name}"],
                    check=True,
                    capture_output=True,
                )
                pems.append((work / name / "ca.crt").read_bytes())
            source(kubeconfig, pems[0])
            start = time.perf_counter()
            proc = subprocess.Popen(
                [
                    AIRTRUST,
                    "sync",
                    "--kubeconfig",
                    str(kubeconfig),
                    "--source",
                    "secret/airtrust-system/local-ca",
                    "--selector",
                    "airtrust.io/ca=true",
                    "--metrics-addr",
                    "127.0.0.1:0",
                    "--resync",
                    "30",
                ],
                stderr=subprocess.DEVNULL,
            )
            while not converged(kubeconfig, count, pems[0]):
                time.sleep(0.2)
            first = time.perf_counter() - start
            start = time.perf_counter()
            source(kubeconfig, pems[1])
            while not converged(kubeconfig, count, pems[1]):
                time.sleep(0.2)
            change = time.perf_counter() - start
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
            print(f"namespaces: {count}")
            print(f"sync start -> all converged:       {first:6.2f} s (incl. process start)")
            print(f"source changed -> all propagated:  {change:6.2f} s")


if __name__ == "__main__":
    main()
