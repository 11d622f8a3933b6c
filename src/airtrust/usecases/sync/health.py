"""Prometheus metrics and health endpoints of ``airtrust sync``."""

from __future__ import annotations

import http.server
import json
import threading
from dataclasses import dataclass, field

__all__ = ["Metrics", "serve_metrics"]


@dataclass
class Metrics:
    reconciles: int = 0
    errors: int = 0
    out_of_sync: int = 0
    expiry_seconds: float = 0.0
    source_valid: int = 0
    leader: int = 0
    writes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def render(self) -> str:
        rows = [
            (
                "airtrust_ca_expiry_seconds",
                "gauge",
                "Seconds until the earliest CA of the distributed bundle expires.",
                self.expiry_seconds,
            ),
            ("airtrust_reconcile_total", "counter", "Reconcile passes.", self.reconciles),
            (
                "airtrust_reconcile_errors_total",
                "counter",
                "Reconcile passes with errors.",
                self.errors,
            ),
            (
                "airtrust_targets_out_of_sync",
                "gauge",
                "Targets that differed from the bundle at the last pass.",
                self.out_of_sync,
            ),
            (
                "airtrust_source_valid",
                "gauge",
                "1 when the CA source passed validation.",
                self.source_valid,
            ),
            ("airtrust_leader", "gauge", "1 on the replica that holds the lease.", self.leader),
            ("airtrust_writes_total", "counter", "Objects written.", self.writes),
        ]
        out = []
        for name, kind, help_text, value in rows:
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
        return "\n".join(out) + "\n"

    @property
    def ready(self) -> bool:
        return self.reconciles > 0 or not self.leader


def serve_metrics(metrics: Metrics, address: str) -> http.server.ThreadingHTTPServer:
    host, _, port = address.rpartition(":")

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, code = metrics.render().encode(), 200
                ctype = "text/plain; version=0.0.4"
            elif self.path in ("/healthz", "/livez"):
                body, code, ctype = b"ok\n", 200, "text/plain"
            elif self.path == "/readyz":
                ready = metrics.ready
                body = json.dumps({"ready": ready}).encode()
                code, ctype = (200 if ready else 503), "application/json"
            else:
                body, code, ctype = b"not found\n", 404, "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
