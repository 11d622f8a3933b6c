"""Distribute the CA bundle to N labelled namespaces on a real kube-apiserver.

    .venv/bin/python bench/distribute.py [--namespaces 500]

Starts a cluster with scripts/testcluster, then measures, in the same run:
``airtrust apply`` (first run and a second, no-op run), and the shell loop
people write today: ``kubectl create secret generic ... --dry-run=client -o
yaml | kubectl apply -f -`` once per namespace. Prints wall times, the ratio
and the number of writes of the second airtrust run. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import AIRTRUST, KUBECTL, quickstart, started_cluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--namespaces", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with started_cluster(work / "c") as kubeconfig:
            run(work, kubeconfig, args.namespaces)


def run(work: Path, kubeconfig: Path, count: int) -> None:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    docs = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": f"team-{i:04d}", "labels": {"airtrust.io/ca": "true"}},
        }
        for i in range(count)
    ]
    subprocess.run(
        [KUBECTL, "apply", "-f", "-"],
        input=yaml.safe_dump_all(docs).encode(),
        env=env,
        check=True,
        capture_output=True,
    )
    bundle = quickstart(work / "pki", "runai.example.test")
    config = work / "airtrust.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "domain": "runai.example.test",
                "ca": {"bundle": [str(bundle)]},
                "kubeconfig": str(kubeconfig),
                "clusters": [{"context": "admin"}],
                "workloads": {"selector": "airtrust.io/ca=true"},
            }
        )
    )

    start = time.perf_counter()
    subprocess.run([AIRTRUST, "apply", "-c", str(config), "-q"], check=True)
    first = time.perf_counter() - start
    start = time.perf_counter()
    second_out = subprocess.run(
        [AIRTRUST, "apply", "-c", str(config), "-o", "json"], check=True, capture_output=True
    ).stdout
    second = time.perf_counter() - start
    writes = json.loads(second_out)["writes"]

    start = time.perf_counter()
    for i in range(count):
        manifest = subprocess.run(
            [
                KUBECTL,
                "-n",
                f"team-{i:04d}",
                "create",
                "secret",
                "generic",
                "kubectl-ca-cert",
                f"--from-file=runai-ca.pem={bundle}",
                "--dry-run=client",
                "-o",
                "yaml",
            ],
            env=env,
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(
            [KUBECTL, "apply", "-f", "-"], input=manifest, env=env, check=True, capture_output=True
        )
    loop = time.perf_counter() - start

    print(f"namespaces: {count}")
    print(f"airtrust apply (first run):      {first:8.2f} s")
    print(f"airtrust apply (second run):     {second:8.2f} s, {writes} writes")
    print(f"kubectl create|apply shell loop: {loop:8.2f} s")
    print(f"ratio kubectl loop / airtrust:   {loop / first:8.1f}x")


if __name__ == "__main__":
    main()
