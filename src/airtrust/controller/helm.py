"""``airtrust helm``: the commands that enable the custom CA, values fragments, and ``--run``.

Deployed state comes from the release Secrets (no helm binary needed);
``--run`` shells out to helm because installing charts is helm's job.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from airtrust.errors import InputError
from airtrust.files import OutputSet
from airtrust.plan.helm import HelmStep, nested_values

__all__ = ["changes", "chart_version", "run_step", "write_fragments"]


def write_fragments(steps: list[HelmStep], out: Path) -> list[Path]:
    outputs = OutputSet(force=True)
    for step in steps:
        body = yaml.safe_dump(nested_values(step.values), sort_keys=True)
        header = f"# {step.release} ({step.role}) on context {step.context}: written by airtrust\n"
        outputs.add(out / step.context / f"{step.release}.values.yaml", (header + body).encode())
    return outputs.commit()


def chart_version(archive: Path) -> str:
    """The version in a chart archive's Chart.yaml (``CHART/Chart.yaml`` in the .tgz)."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            member = next(
                m
                for m in tar.getmembers()
                if m.name.count("/") == 1 and m.name.endswith("/Chart.yaml")
            )
            handle = tar.extractfile(member)
            meta = yaml.safe_load(handle.read() if handle else b"") or {}
        return str(meta["version"])
    except (OSError, tarfile.TarError, StopIteration, KeyError, TypeError, yaml.YAMLError):
        raise InputError(
            f"{archive} is not a Helm chart archive (no CHART/Chart.yaml with a version)",
            hint="give the .tgz that helm package or helm pull wrote",
        ) from None


def _flat_keys(values: Mapping[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            keys |= _flat_keys(value, path + ".")
        else:
            keys.add(path)
    return keys


def run_step(step: HelmStep, charts: Mapping[str, Path]) -> dict[str, Any]:
    """Carry out one step with helm; raise with helm's last line when it fails. A release
    that is not installed is skipped: installing needs values only the user has."""
    if step.installed is None:
        return {
            "context": step.context,
            "release": step.release,
            "ok": False,
            "skipped": step.note or "not installed",
        }
    name = step.chart.rsplit("/", 1)[-1]
    archive = charts.get(name) or charts.get(step.chart)
    if archive is None:
        raise InputError(
            f"no chart archive given for {step.chart} (release {step.release}, context "
            f"'{step.context}')",
            hint=f"pass --chart {name}=PATH/TO/{name}-VERSION.tgz",
        )
    if not archive.exists():
        raise InputError(f"{archive} does not exist", hint="point --chart at the chart archive")
    helm = shutil.which("helm")
    if helm is None:
        raise InputError("helm is not on PATH", hint="install helm, or run the printed commands")
    version = chart_version(archive)
    with tempfile.TemporaryDirectory(prefix="airtrust-helm-") as tmp:
        saved = str(Path(tmp) / f"{step.release}.values.yaml")
        for command in step.commands(str(archive), version, saved=saved):
            argv = [helm, *command.argv[1:]]
            out = None
            if command.stdout_to:
                # The saved values may hold secrets (client secrets): 0600, removed after.
                out = os.open(command.stdout_to, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                proc = subprocess.run(
                    argv,
                    stdout=out if out is not None else subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    check=False,
                )
            finally:
                if out is not None:
                    os.close(out)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise InputError(
                    f"helm failed for {step.release} on context '{step.context}': {last}",
                    hint="fix the chart or values and rerun",
                    reference="helm-failed",
                )
    return {
        "context": step.context,
        "release": step.release,
        "ok": True,
        "chart_version": f"{step.chart_version} -> {version}",
        "path": "reuse-values" if version == step.chart_version else "saved values (-f)",
    }


def changes(before: HelmStep, after: HelmStep) -> dict[str, Any]:
    """What an upgrade changed, by value name only (values may be secrets)."""
    old = before.live.user_values if before.live else {}
    new = after.live.user_values if after.live else {}
    old_keys, new_keys = _flat_keys(old), _flat_keys(new)
    return {
        "revision": f"{before.live.revision if before.live else '-'} -> "
        f"{after.live.revision if after.live else '-'}",
        "chart_version": f"{before.chart_version} -> {after.chart_version}",
        "values_added": sorted(new_keys - old_keys),
        "values_lost": sorted(old_keys - new_keys),
        "values_kept": len(old_keys & new_keys),
    }
