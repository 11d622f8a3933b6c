"""``airtrust sync`` side by side with cert-manager's trust-manager, on one apiserver.

    .venv/bin/python bench/trust_manager.py [--namespaces 500] [--no-shipped] [--idle 60]

trust-manager is the controller a platform team would pick instead of
``airtrust sync`` to copy a CA into labelled namespaces. This builds v0.24.0
from its Go module (cached under ~/.cache/airtrust/bench), twice: as shipped,
and with its client's rate limit raised. As shipped it talks to the apiserver
at client-go's default 5 requests/s and has no flag to change that; the second
build adds one change to a copy of the module, in ``Options.Complete``
(cmd/trust-manager/app/options/options.go), right after the rest config is
made: ``QPS = 1000, Burst = 2000``. Both run with ``--secret-targets-enabled``
and no leader election, against the same namespaces, one after the other, each
with the target Secrets removed before it starts.

The same work for each: N namespaces labelled ``bench=yes``; a source Secret
``cert-manager/local-ca``; the target is a Secret ``runai-ca-cert`` (key
``runai-ca.pem``) in every labelled namespace (trust-manager: a Bundle of that
name with a secret target). Measured per controller: start -> every namespace
holds the CA; the source changed -> every namespace holds the new one; a new
labelled namespace -> its Secret; writes during ``--idle`` seconds of quiet
afterwards; peak RSS (VmHWM) and CPU seconds of the process (/proc); Secret
writes and all requests from the apiserver's own ``apiserver_request_total``
(less this bench's own polls, counted here). The shipped build runs only up to
500 namespaces (about 100 s per 500 namespaces per phase). Not a test.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testkit import locked

from airtrust.kube.api import KubeAPI
from airtrust.usecases.parallel import parallel_count
from bench.harness import AIRTRUST, CACHE, KUBECTL, started_cluster

VERSION = "v0.24.0"
MODULE = "github.com/cert-manager/trust-manager"
TARGET, KEY, LABEL = "runai-ca-cert", "runai-ca.pem", "bench"
SOURCE_NS, SOURCE = "cert-manager", "local-ca"
#: the one change of the unthrottled build, inserted after ToRESTConfig in Complete()
RAISE = "\to.RestConfig.QPS, o.RestConfig.Burst = 1000, 2000 // airtrust bench: unthrottled\n"
ANCHOR = "\to.RestConfig, err = o.kubeConfigFlags.ToRESTConfig()\n"
POLL = 0.25
T = TypeVar("T")


def go() -> str:
    found = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(found).exists():
        raise SystemExit("go is required to build trust-manager (Go >= 1.24)")
    return found


def trust_manager(unthrottled: bool) -> Path:
    """The trust-manager binary, built once from the module proxy and cached."""
    name = f"trust-manager-{VERSION}" + ("-qps" if unthrottled else "")
    binary = CACHE / "bench" / name
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    with locked(binary):
        if binary.exists():
            return binary
        env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
        got = subprocess.run(
            [go(), "mod", "download", "-json", f"{MODULE}@{VERSION}"],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        if got.returncode != 0:
            raise SystemExit(f"go mod download {MODULE}@{VERSION} failed: {got.stderr}")
        src = CACHE / "bench" / f"{name}.src"
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(json.loads(got.stdout)["Dir"], src)
        for path in [src, *src.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)  # the module cache is read-only
        if unthrottled:
            options = src / "cmd/trust-manager/app/options/options.go"
            text = options.read_text()
            if ANCHOR not in text:
                raise SystemExit(f"{options}: the rest config line moved; update bench ANCHOR")
            options.write_text(text.replace(ANCHOR, ANCHOR + RAISE))
        tmp = binary.with_name(f".{name}.{os.getpid()}")
        built = subprocess.run(
            [go(), "build", "-o", str(tmp), "./cmd/trust-manager"],
            cwd=src, capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        if built.returncode != 0:
            raise SystemExit(f"building trust-manager failed: {built.stderr[-2000:]}")
        tmp.replace(binary)
        return binary


def crd() -> Path:
    got = subprocess.run(
        [go(), "mod", "download", "-json", f"{MODULE}@{VERSION}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return Path(json.loads(got.stdout)["Dir"]) / "deploy/crds/trust.cert-manager.io_bundles.yaml"


# --- the apiserver --------------------------------------------------------------------


@dataclass
class Api:
    kubeconfig: Path
    #: requests this bench itself made (polls, metric scrapes), to subtract
    own: int = 0

    def kubectl(self, *args: str, stdin: bytes | None = None) -> bytes:
        proc = subprocess.run(
            [KUBECTL, "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin, capture_output=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args[:3])} failed: {proc.stderr.decode()[-800:]}")
        return proc.stdout

    def each(self, items: list[T], call: Callable[[KubeAPI, T], object]) -> None:
        """``call`` for every item, sixteen at a time (kubectl works one object after
        the other: minutes for 5,000 namespaces, before anything is measured)."""
        kube = KubeAPI.connect("admin", kubeconfig=self.kubeconfig)
        try:
            parallel_count(items, lambda item: call(kube, item))
        finally:
            kube.close()

    def apply(self, docs: list[dict[str, Any]]) -> None:
        self.each(docs, lambda kube, doc: kube.apply(doc, force=True))

    def targets(self) -> dict[str, str]:
        """namespace -> the target Secret's PEM, for every target Secret there is."""
        self.own += 1
        raw = self.kubectl(
            "get", "--raw", f"/api/v1/secrets?fieldSelector=metadata.name%3D{TARGET}"
        )
        return {
            s["metadata"]["namespace"]: base64.b64decode(
                (s.get("data") or {}).get(KEY, "")
            ).decode()
            for s in json.loads(raw)["items"]
        }

    def requests(self) -> tuple[int, int]:
        """(Secret writes, all requests) so far, from apiserver_request_total."""
        self.own += 1
        writes = total = 0
        for line in self.kubectl("get", "--raw", "/metrics").decode().splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels, value = line.rsplit(" ", 1)
            count = int(float(value))
            total += count
            if 'resource="secrets"' in labels and any(
                f'verb="{v}"' in labels
                for v in ("POST", "PUT", "PATCH", "APPLY", "CREATE", "UPDATE")
            ):
                writes += count
        return writes, total


def wait(what: str, done: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``done`` holds (polled every POLL s); the bench ends after ``timeout``."""
    start = time.perf_counter()
    while not done():
        if time.perf_counter() - start > timeout:
            raise SystemExit(f"{what}: not after {timeout:.0f} s")
        time.sleep(POLL)
    return time.perf_counter() - start


# --- the controllers ------------------------------------------------------------------


@dataclass
class Figures:
    name: str
    start: float = 0.0
    change: float = 0.0
    new_namespace: float = 0.0
    rss_mib: float = 0.0
    cpu_s: float = 0.0
    writes: list[int] = field(default_factory=list)  # first sync, change, new ns, idle
    requests: int = 0


def _proc_figures(pid: int) -> tuple[float, float]:
    """(VmHWM MiB, user+system CPU seconds) of a running process."""
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return hwm / 1024, (int(stat[11]) + int(stat[12])) / ticks


def _has(pem: str) -> Callable[[str], bool]:
    body = "".join(pem.strip().splitlines()[1:-1])

    def holds(found: str) -> bool:
        return body in "".join(found.split())

    return holds


def run_one(
    name: str, command: list[str], api: Api, count: int, pems: list[str], idle: float,
    setup: Callable[[], None] = lambda: None, timeout: float = 900,
) -> Figures:  # fmt: skip
    figures = Figures(name)
    source(api, pems[0])
    setup()
    writes0, total0 = api.requests()
    own0 = api.own
    namespaces = [f"team-{i:05d}" for i in range(count)]

    def all_hold(pem: str) -> Callable[[], bool]:
        holds = _has(pem)

        def check() -> bool:
            found = api.targets()
            return all(holds(found.get(ns, "")) for ns in namespaces)

        return check

    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait(f"{name}: first sync", all_hold(pems[0]), timeout)
        figures.start = time.perf_counter() - started  # from the process's start
        w1, _ = api.requests()
        source(api, pems[1])
        figures.change = wait(f"{name}: the change", all_hold(pems[1]), timeout)
        w2, _ = api.requests()
        new = f"team-new-{name.split()[0]}"
        api.apply([{"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": new, "labels": {LABEL: "yes"}}}])  # fmt: skip
        holds = _has(pems[1])
        figures.new_namespace = wait(
            f"{name}: the new namespace", lambda: holds(api.targets().get(new, "")), timeout
        )
        w3, _ = api.requests()
        time.sleep(idle)  # the measurement: what it writes while nothing changes
        w4, total = api.requests()
        figures.rss_mib, figures.cpu_s = _proc_figures(proc.pid)
        figures.writes = [w1 - writes0, w2 - w1, w3 - w2, w4 - w3]
        figures.requests = total - total0 - (api.own - own0)
    finally:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        api.kubectl("delete", "namespace", f"team-new-{name.split()[0]}", "--wait=false",
                    "--ignore-not-found")  # fmt: skip
    return figures


def source(api: Api, pem: str) -> None:
    api.apply([{
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": SOURCE, "namespace": SOURCE_NS},
        "data": {KEY: base64.b64encode(pem.encode()).decode()},
    }])  # fmt: skip


def clear_targets(api: Api, count: int) -> None:
    """No target Secret left anywhere: the next controller starts from nothing."""
    api.each(list(api.targets()), lambda kube, ns: kube.delete("v1", "secrets", ns, TARGET))
    api.kubectl("delete", "bundles.trust.cert-manager.io", "--all", "--ignore-not-found")
    wait("target Secrets to be gone", lambda: not api.targets(), 120)


def bundle(api: Api) -> None:
    api.apply([{
        "apiVersion": "trust.cert-manager.io/v1alpha1", "kind": "Bundle",
        "metadata": {"name": TARGET},
        "spec": {
            "sources": [{"secret": {"name": SOURCE, "key": KEY}}],
            "target": {"secret": {"key": KEY},
                       "namespaceSelector": {"matchLabels": {LABEL: "yes"}}},
        },
    }])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespaces", type=int, default=500)
    parser.add_argument("--no-shipped", action="store_true", help="skip the throttled build")
    parser.add_argument("--idle", type=float, default=60.0)
    args = parser.parse_args()
    count: int = args.namespaces
    peers = [("trust-manager unthrottled", trust_manager(True))]
    if count <= 500 and not args.no_shipped:
        peers.append(("trust-manager as shipped", trust_manager(False)))
    with tempfile.TemporaryDirectory(prefix="airtrust-bench-") as tmp:
        work = Path(tmp)
        pems = []
        for n in ("one", "two"):
            subprocess.run([AIRTRUST, "ca", "create", "--out", str(work / n), "--name", f"CA {n}"],
                           check=True, capture_output=True)  # fmt: skip
            pems.append((work / n / "ca.crt").read_text())
        with started_cluster(work / "c") as kubeconfig:
            api = Api(kubeconfig)
            api.kubectl("apply", "--server-side", "-f", str(crd()))
            docs: list[dict[str, Any]] = [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SOURCE_NS}}
            ]
            docs += [
                {"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": f"team-{i:05d}", "labels": {LABEL: "yes"}}}
                for i in range(count)
            ]  # fmt: skip
            api.apply(docs)
            results = []
            airtrust = [
                AIRTRUST, "sync", "--kubeconfig", str(kubeconfig),
                "--source", f"secret/{SOURCE_NS}/{SOURCE}:{KEY}", "--selector", f"{LABEL}=yes",
                "--metrics-addr", "127.0.0.1:0",
            ]  # fmt: skip
            results.append(run_one("airtrust sync", airtrust, api, count, pems, args.idle))
            certs = work / "tm-tls"
            issue = ["cert", "issue", "--ca-dir", str(work / "one"), "--domain", "localhost"]
            subprocess.run([AIRTRUST, *issue, "--out", str(certs)], check=True, capture_output=True)
            for label, binary in peers:
                clear_targets(api, count)
                command = [
                    str(binary), "--kubeconfig", str(kubeconfig), "--trust-namespace", SOURCE_NS,
                    "--secret-targets-enabled", "--leader-elect=false",
                    "--webhook-certificate-dir", str(certs), "--webhook-host", "127.0.0.1",
                    "--webhook-port", "0", "--metrics-port", "0", "--readiness-probe-port", "0",
                ]  # fmt: skip
                results.append(
                    run_one(label, command, api, count, pems, args.idle, setup=lambda: bundle(api))
                )
    report(count, results)


def report(count: int, results: list[Figures]) -> None:
    print(f"\nnamespaces: {count} (one Secret each; polled every {POLL} s)")
    head = f"{'figure':38}" + "".join(f"{r.name:>28}" for r in results)
    print(head)
    rows: list[tuple[str, Callable[[Figures], str]]] = [
        ("start -> every namespace holds the CA", lambda r: f"{r.start:.1f} s"),
        ("CA changed -> every namespace updated", lambda r: f"{r.change:.1f} s"),
        ("new labelled namespace -> its Secret", lambda r: f"{r.new_namespace:.1f} s"),
        ("peak RSS (VmHWM)", lambda r: f"{r.rss_mib:.0f} MiB"),
        ("CPU seconds", lambda r: f"{r.cpu_s:.1f}"),
        ("Secret writes first / change / new ns", lambda r: " / ".join(map(str, r.writes[:3]))),
        ("Secret writes while idle", lambda r: str(r.writes[3])),
        ("apiserver requests (all)", lambda r: str(r.requests)),
    ]
    for label, cell in rows:
        print(f"{label:38}" + "".join(f"{cell(r):>28}" for r in results))
    base = results[0]
    for other in results[1:]:
        print(
            f"ratios {other.name} / airtrust: start {other.start / base.start:.2f}x, "
            f"change {other.change / base.change:.2f}x, RSS {other.rss_mib / base.rss_mib:.2f}x, "
            f"CPU {other.cpu_s / max(base.cpu_s, 0.01):.2f}x"
        )


if __name__ == "__main__":
    main()
