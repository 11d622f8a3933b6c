"""``airtrust helm``: the commands that enable the custom CA, values fragments, and ``--run``.

Deployed state comes from the release Secrets (no helm binary needed);
``--run`` shells out to helm because installing charts is helm's job.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from airtrust.errors import InputError
from airtrust.files import OutputSet
from airtrust.plan.helm import HelmStep, nested_values

__all__ = ["run_step", "write_fragments"]


def write_fragments(steps: list[HelmStep], out: Path) -> list[Path]:
    outputs = OutputSet(force=True)
    for step in steps:
        body = yaml.safe_dump(nested_values(step.values), sort_keys=True)
        header = f"# {step.release} ({step.role}) on context {step.context}: written by airtrust\n"
        outputs.add(out / step.context / f"{step.release}.values.yaml", (header + body).encode())
    return outputs.commit()


def run_step(step: HelmStep, charts: Mapping[str, Path]) -> dict[str, Any]:
    archive = charts.get(step.chart)
    if archive is None:
        raise InputError(
            f"no chart archive given for {step.chart}",
            hint=f"pass --chart {step.chart}=PATH/TO/{step.chart}-VERSION.tgz",
        )
    if not archive.exists():
        raise InputError(f"{archive} does not exist", hint="point --chart at the chart archive")
    helm = shutil.which("helm")
    if helm is None:
        raise InputError("helm is not on PATH", hint="install helm, or run the printed commands")
    command = shlex.split(step.command(str(archive)))
    command[0] = helm
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise InputError(
            f"helm failed for {step.release} on context '{step.context}': {last}",
            hint="fix the chart or values and rerun",
            reference="helm-failed",
        )
    return {"context": step.context, "release": step.release, "ok": True}
