"""Admission latency of airtrust's webhook, as rendered, on the pod-network test cluster.

    .venv/bin/python bench/inject.py [--rates 20,100] [--duration 60] [--keep-replicas] [--drain S]

``scripts/testcluster up --node`` (apiserver, kubelet, kube-proxy, a pod
network); the airtrust image from ``scripts/release`` pushed with ``airtrust
image push oci:``; ``airtrust apply`` with ``inject_namespace`` (the serving
certificate, the CA secret); ``render --inject --service --failure-policy
Fail`` applied as written: two replicas behind their Service. Then pods are
created at each rate for ``--duration`` seconds in a namespace in the
webhook's scope and in one outside it (the peer: the same apiserver, the same
pods, no webhook call). Pods carry a scheduling gate, so they are admitted and
stored but never run: admission is what is measured, on two cores.

Reported per rate: p50/p99 of the apiserver's own
``apiserver_admission_webhook_admission_duration_seconds`` for this webhook
(interpolated within its buckets, whose first bound is 5 ms; the calls over its
100 ms bound are counted, since past 1% of them p99 is only an interpolation
between 100 and 500 ms), the client's pod
create latency in and out of scope (and the difference: what the webhook adds),
and failed creates, which must be 0, also while one replica is deleted halfway
through the in-scope run at the highest rate. Not a test.
"""

from __future__ import annotations

import argparse
import base64
import json
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import AIRTRUST, CACHE, KUBECTL, ROOT

NS, NAME = "airtrust-system", "airtrust-inject"
LABEL = ("airtrust.io/inject", "enabled")
METRIC = "apiserver_admission_webhook_admission_duration_seconds"


def run(*cmd: str | Path, stdin: bytes | None = None) -> str:
    proc = subprocess.run([str(c) for c in cmd], input=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).decode()[-2000:]
        raise SystemExit(f"{' '.join(map(str, cmd[:4]))} failed: {said}")
    return proc.stdout.decode()


@contextmanager
def node_cluster(folder: Path) -> Iterator[Path]:
    testcluster = ROOT / "scripts" / "testcluster"
    run(testcluster, "up", folder, "--node")
    try:
        yield folder
    finally:
        subprocess.run([str(testcluster), "down", str(folder)], check=False)


class Api:
    """The apiserver over HTTPS with the kubeconfig's client certificate (one pooled
    client for every thread: httpx's Client is thread-safe)."""

    def __init__(self, kubeconfig: Path, work: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
        files = {}
        for key in ("certificate-authority-data", "client-certificate-data", "client-key-data"):
            source = cluster if key.startswith("certificate-authority") else user
            path = work / key
            path.write_bytes(base64.b64decode(source[key]))
            path.chmod(0o600)
            files[key] = str(path)
        self.kubeconfig = kubeconfig
        # one TLS context with the client certificate (httpx 0.28+ no longer sends a
        # cert= pair: every create went out as system:anonymous and was refused)
        context = ssl.create_default_context(cafile=files["certificate-authority-data"])
        context.load_cert_chain(files["client-certificate-data"], files["client-key-data"])
        self.http = httpx.Client(
            base_url=cluster["server"],
            verify=context,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
            timeout=30,
        )

    def kubectl(self, *args: str | Path, stdin: bytes | None = None) -> str:
        return run(KUBECTL, "--kubeconfig", self.kubeconfig, *args, stdin=stdin)

    def histogram(self, webhook: str) -> dict[float, float]:
        """upper bound -> cumulative count of this webhook's admissions so far."""
        buckets: dict[float, float] = {}
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith(f"{METRIC}_bucket{{") and f'name="{webhook}"' in line:
                labels, value = line.rsplit(" ", 1)
                bound = labels.split('le="', 1)[1].split('"', 1)[0]
                key = float("inf") if bound == "+Inf" else float(bound)
                buckets[key] = buckets.get(key, 0.0) + float(value)
        return buckets


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The q-quantile of what was observed between two scrapes, as Prometheus'
    histogram_quantile interpolates it (linearly within the bucket)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(cumulative - below, 1e-9)
        lower, below = bound, cumulative
    return lower


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Run:
    namespace: str
    rate: int
    #: (s since the run started, create latency) per pod, to see the failover in time
    timeline: list[tuple[float, float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    admission_p50: float = float("nan")
    admission_p99: float = float("nan")
    admitted: float = 0.0
    killed_at: float | None = None
    #: webhook calls the apiserver saw take over 100 ms (its bucket bound)
    slow: float = 0.0

    @property
    def latencies(self) -> list[float]:
        return [took for _, took in self.timeline]

    def pct(self, q: float) -> float:
        return percentile(self.latencies, q)


def held_pod(name: str, image: str) -> dict[str, object]:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "schedulingGates": [{"name": "airtrust.bench/hold"}],
            "automountServiceAccountToken": False,
            "containers": [{"name": "main", "image": image, "command": ["true"]}],
        },
    }  # fmt: skip


def load(api: Api, ns: str, rate: int, duration: float, image: str, kill_at: float | None) -> Run:
    """Create ``rate`` pods per second for ``duration`` s; each create timed."""
    result = Run(ns, rate)
    lock = threading.Lock()

    def create(i: int) -> None:
        body = held_pod(f"p{rate}-{i:06d}", image)
        start = time.perf_counter()
        try:
            response = api.http.post(f"/api/v1/namespaces/{ns}/pods", json=body)
            ok, said = response.status_code == 201, response.text[:300]
        except httpx.HTTPError as exc:
            ok, said = False, str(exc)
        elapsed = time.perf_counter() - start
        with lock:
            result.timeline.append((start - started, elapsed))
            if not ok:
                result.failures.append(said)

    def kill() -> None:
        victim = json.loads(api.kubectl(
            "-n", NS, "get", "pods", "-l", f"app.kubernetes.io/name={NAME}", "-o", "json"
        ))["items"][0]["metadata"]["name"]  # fmt: skip
        api.kubectl("-n", NS, "delete", "pod", victim, "--wait=false")

    total = int(rate * duration)
    # The replica is deleted from its own thread: the schedule below never waits for
    # kubectl, so the creates around the deletion keep their pace.
    killer = threading.Timer(kill_at, kill) if kill_at is not None else None
    result.killed_at = kill_at
    started = time.perf_counter()
    if killer is not None:
        killer.start()
    with ThreadPoolExecutor(max_workers=48) as pool:
        for i in range(total):
            due = started + i / rate
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)  # the schedule: one pod every 1/rate s
            pool.submit(create, i)
    if killer is not None:
        killer.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="20,100")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument(
        "--keep-replicas", action="store_true", help="no replica deleted mid-run (the steady state)"
    )
    parser.add_argument(
        "--drain",
        type=float,
        help="replace the rendered --drain SECONDS (0: stop at once on SIGTERM), "
        "to measure what the drain buys in the failover",
    )
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory(prefix="airtrust-bench-") as tmp:
        work = Path(tmp)
        release = work / "release"
        run(sys.executable, ROOT / "scripts" / "release", release, "--platform", "x86_64",
            "--python", "3.11", "--base-cache", CACHE / "release-base")  # fmt: skip
        archive = next(release.glob("airtrust-offline-*.tar.gz"))
        run("tar", "-xzf", archive, "-C", release)
        layout = next(release.glob("airtrust-offline-*/images/airtrust-*.oci.tar"))
        with node_cluster(work / "c") as cluster:
            registry = (cluster / "registry").read_text().strip()
            image = f"{registry}/airtrust/airtrust:bench"
            run(AIRTRUST, "image", "push", f"oci:{layout}", image,
                "--registry-ca", cluster / "registry-ca.crt")  # fmt: skip
            pki = work / "pki"
            run(AIRTRUST, "quickstart", "--domain", "bench.example.test", "--out", pki)
            config = work / "airtrust.yaml"
            config.write_text(yaml.safe_dump({
                "domain": "bench.example.test", "version": "2.20",
                "ca": {"bundle": [str(pki / "ca-bundle.pem")]},
                "tls": {"cert": str(pki / "tls.crt"), "key": str(pki / "tls.key")},
                "issue_from": str(pki), "kubeconfig": str(cluster / "kubeconfig"),
                "control_plane": {"context": "admin"},
                "clusters": [{"context": "admin", "inject_namespace": NS}],
            }))  # fmt: skip
            run(AIRTRUST, "apply", "-c", config)
            rendered = work / "rendered"
            run(AIRTRUST, "render", "--inject", "--service", f"{NS}/{NAME}", "--image", image,
                "--ca", pki / "ca-bundle.pem", "--failure-policy", "Fail",
                "--out", rendered)  # fmt: skip
            api = Api(cluster / "kubeconfig", work)
            api.kubectl("apply", "--server-side", "-k", rendered)
            if args.drain is not None:
                deployment = json.loads(api.kubectl("-n", NS, "get", "deployment", NAME, "-o",
                                                    "json"))  # fmt: skip
                container = deployment["spec"]["template"]["spec"]["containers"][0]
                at = container["args"].index("--drain")
                patch = [{"op": "replace", "value": f"{args.drain:g}",
                          "path": f"/spec/template/spec/containers/0/args/{at + 1}"}]  # fmt: skip
                api.kubectl("-n", NS, "patch", "deployment", NAME, "--type", "json", "-p",
                            json.dumps(patch))  # fmt: skip
            api.kubectl("-n", NS, "rollout", "status", f"deployment/{NAME}", "--timeout=300s")
            hook = json.loads(api.kubectl("get", "mutatingwebhookconfiguration", NAME, "-o",
                                          "json"))["webhooks"][0]["name"]  # fmt: skip
            api.kubectl("create", "namespace", "bench-in")
            api.kubectl("label", "namespace", "bench-in", "=".join(LABEL))
            api.kubectl("create", "namespace", "bench-out")
            deadline = time.monotonic() + 120
            while "airtrust-ca-bundle" not in api.kubectl("-n", "bench-in", "get", "configmaps"):
                if time.monotonic() > deadline:
                    raise SystemExit("the bundle ConfigMap never reached bench-in")
                time.sleep(0.5)
            runs = []
            for rate in rates:
                for ns in ("bench-out", "bench-in"):
                    last = ns == "bench-in" and rate == max(rates) and not args.keep_replicas
                    kill = args.duration / 2 if last else None
                    before = api.histogram(hook)
                    done = load(api, ns, rate, args.duration, image, kill)
                    after = api.histogram(hook)
                    done.admission_p50 = quantile(before, after, 0.5)
                    done.admission_p99 = quantile(before, after, 0.99)
                    done.admitted = (after.get(float("inf"), 0.0)
                                     - before.get(float("inf"), 0.0))  # fmt: skip
                    done.slow = done.admitted - (after.get(0.1, 0.0) - before.get(0.1, 0.0))
                    runs.append(done)
                    api.kubectl("-n", ns, "delete", "pods", "--all", "--wait=false")
                    api.kubectl("-n", NS, "rollout", "status", f"deployment/{NAME}",
                                "--timeout=300s")  # fmt: skip
    report(runs, args.duration)


def report(runs: list[Run], duration: float) -> None:
    print(f"\npods created for {duration:.0f} s per run (scheduling-gated: admitted, stored)")
    print(f"{'rate':>5} {'namespace':10} {'pods':>6} {'failed':>6} {'create p50':>11} "
          f"{'create p99':>11} {'webhook calls':>13} {'webhook p50':>12} "
          f"{'webhook p99':>12} {'over 100ms':>10} {'create max':>11}")  # fmt: skip
    for r in runs:
        print(f"{r.rate:>5} {r.namespace:10} {len(r.latencies):>6} {len(r.failures):>6} "
              f"{r.pct(0.5) * 1e3:>9.1f}ms {r.pct(0.99) * 1e3:>9.1f}ms {r.admitted:>13.0f} "
              f"{r.admission_p50 * 1e3:>10.2f}ms {r.admission_p99 * 1e3:>10.2f}ms "
              f"{r.slow:>10.0f} {max(r.latencies, default=0.0) * 1e3:>9.1f}ms")  # fmt: skip
    by = {(r.rate, r.namespace): r for r in runs}
    for rate in sorted({r.rate for r in runs}):
        inside, outside = by[(rate, "bench-in")], by[(rate, "bench-out")]
        added = [(inside.pct(q) - outside.pct(q)) * 1e3 for q in (0.5, 0.99)]
        print(f"{rate}/s: the webhook adds {added[0]:.1f} ms at p50, {added[1]:.1f} ms at p99 "
              f"(create latency in scope - out of scope); mean in "
              f"{statistics.mean(inside.latencies) * 1e3:.1f} ms, out "
              f"{statistics.mean(outside.latencies) * 1e3:.1f} ms")  # fmt: skip
    for r in runs:
        if r.killed_at is None:
            continue
        # Where the slow creates fell, second by second from the deletion on.
        print(
            f"{r.rate}/s, {r.namespace}, a replica deleted at {r.killed_at:.0f} s: "
            f"creates over 100 ms, per second from then"
        )
        counts = [0] * 20
        for at, took in r.timeline:
            second = int(at - r.killed_at)
            if 0 <= second < len(counts) and took > 0.1:
                counts[second] += 1
        before = sum(1 for at, took in r.timeline if at < r.killed_at and took > 0.1)
        print(f"  before: {before}; then {' '.join(map(str, counts))}")
        windows = {
            "before the deletion": [t for at, t in r.timeline if at < r.killed_at],
            "20 s from it": [t for at, t in r.timeline if r.killed_at <= at < r.killed_at + 20],
            "after those": [t for at, t in r.timeline if at >= r.killed_at + 20],
        }
        for name, latencies in windows.items():
            if latencies:
                print(f"  {name}: {len(latencies)} creates, "
                      f"p50 {percentile(latencies, 0.5) * 1e3:.1f} ms, "
                      f"p99 {percentile(latencies, 0.99) * 1e3:.1f} ms")  # fmt: skip
    for r in runs:
        for said in r.failures[:3]:
            print(f"failed ({r.rate}/s, {r.namespace}): {said}")


if __name__ == "__main__":
    main()
