"""Run the airtrust CLI in this process and report its peak resident memory.

    python testkit/peak_rss.py OUT.json airtrust-args...

Writes {"vm_hwm_kib": ..., "exit": ...} to OUT.json: VmHWM from /proc/self/status,
the high-water mark of this process's resident set (threads included), read
after the command finished, plus the VmHWM each layer-scan worker process
reported as it ended (a sum of peaks: an upper bound of the memory in use at
any one time). The kernel measures it; nothing is sampled. Read
in the process itself: a child's maxrss from wait4 also counts its parent's
high-water mark when the parent spawned it with vfork, as subprocess does.

Run as a script by path (it imports only airtrust), by the tests and the
benches alike.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

SCRIPT = Path(__file__).resolve()


def vm_hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise SystemExit("no VmHWM in /proc/self/status")


def main() -> None:
    out = Path(sys.argv[1])
    sys.argv = ["airtrust", *sys.argv[2:]]
    from airtrust.cli.entry import run

    workers = Path(tempfile.mkdtemp(prefix="airtrust-scan-rss-"))
    os.environ["AIRTRUST_SCAN_WORKER_RSS"] = str(workers)
    code = 0
    try:
        run()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    peaks = [int(p.read_text() or 0) for p in workers.iterdir()]
    shutil.rmtree(workers, ignore_errors=True)
    out.write_text(json.dumps({"vm_hwm_kib": vm_hwm_kib() + sum(peaks), "exit": code}))
    sys.exit(code)


if __name__ == "__main__":
    main()
