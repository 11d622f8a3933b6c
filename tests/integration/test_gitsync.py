"""The real git-sync v4.4.0 (a faithful rebuild of the sidecar image), cloning over TLS
from a server whose certificate the local CA issued.

Judges: the real git-sync binary, run as the image runs it (its entrypoint, user
65533, its env) in a chroot of the image unpacked by skopeo + umoci; buildah for
the Dockerfile builds. Shown: the documented Dockerfile adds nothing to this
image (and says nothing); ``image patch`` and ``image dockerfile`` work.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.integration.conftest import (
    assert_untrusted,
    bare_repository,
    git_https_server,
    require,
)
from tests.integration.gitsync import push_gitsync, run_gitsync
from tests.integration.registry import Registry, crane, started_registry, unpack

pytestmark = pytest.mark.integration


@dataclass
class World:
    registry: Registry
    pki: Path
    base: str  # the faithful git-sync image in the registry
    repo: str  # https://127.0.0.1:PORT/repo.git, certificate from the local CA
    work: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    work = tmp_path_factory.mktemp("gitsync")
    pki = work / "pki"
    assert run_cli("quickstart", "--domain", "git.example.test", "--out", pki).code == 0
    issued = run_cli(
        "cert",
        "issue",
        "--ca-dir",
        pki,
        "--domain",
        "git.example.test",
        "--ip",
        "127.0.0.1",
        "--out",
        work / "server",
    )
    assert issued.code == 0, issued.err
    root = work / "git"
    bare_repository(root, "synced by the real git-sync\n")
    with (
        started_registry(work / "registry") as registry,
        git_https_server(work / "server" / "tls.crt", work / "server" / "tls.key", root) as srv,
    ):
        base = registry.ref("git-sync/git-sync:v4.4.0")
        push_gitsync(base)
        yield World(registry, pki, base, f"https://127.0.0.1:{srv.port}/repo.git", work)


def _sync(
    world: World, ref: str, name: str, user: str = "65533:65533"
) -> subprocess.CompletedProcess[str]:
    """Unpack ``ref`` as a runtime would and run git-sync in it, as the image runs it
    (always as 65533, the user the sidecar runs as)."""
    rootfs = unpack(ref, world.work / f"unpacked-{name}")
    config = json.loads(crane("config", ref, "--insecure"))["config"]
    assert config["User"] == user and config["Entrypoint"] == ["/git-sync"], config
    result = run_gitsync(rootfs, config.get("Env") or [], world.repo)
    if result.returncode == 0:
        synced = rootfs / "tmp" / "git" / "current" / "README"
        assert synced.read_text() == "synced by the real git-sync\n", result.stderr
    return result


def _inspect(world: World, ref: str) -> int:
    return run_cli("image", "inspect", ref, "--ca", world.pki / "ca-bundle.pem").code


def _buildah(world: World, context: Path, dest: str) -> str:
    """buildah bud (chroot isolation, own storage) + push; the build's output."""
    storage = [
        "--root",
        str(world.work / "buildah" / "root"),
        "--runroot",
        str(world.work / "buildah" / "run"),
    ]
    buildah = require("buildah")
    built = subprocess.run(
        [
            buildah,
            *storage,
            "bud",
            "--isolation",
            "chroot",
            "--tls-verify=false",
            "-t",
            "localhost/airtrust-test",
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if built.returncode != 0:
        pytest.fail(f"buildah bud failed: {built.stderr[-2000:]}")
    subprocess.run(
        [
            buildah,
            *storage,
            "push",
            "--tls-verify=false",
            "localhost/airtrust-test",
            f"docker://{dest}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return built.stdout + built.stderr


def test_the_unpatched_image_fails_with_a_certificate_error(world: World) -> None:
    result = _sync(world, world.base, "base")
    # git-sync runs the image's git (libcurl-gnutls) and logs what it said.
    assert_untrusted("git", result, "git-sync in the unpatched image")
    assert _inspect(world, world.base) == 1


def test_the_documented_dockerfile_silently_adds_nothing(world: World) -> None:
    context = world.work / "documented"
    (context / "anchors").mkdir(parents=True)
    shutil.copy(world.pki / "ca.crt", context / "anchors" / "local-ca.crt")
    (context / "Dockerfile").write_text(
        f"FROM {world.base}\nUSER root\n"
        "COPY anchors/ /usr/local/share/ca-certificates/\nRUN update-ca-certificates\n"
    )
    dest = world.registry.ref("documented/git-sync:v4.4.0")
    log = _buildah(world, context, dest)
    # The build succeeds; update-ca-certificates cannot find(1) the CA and says 0 added.
    assert "0 added" in log, log[-2000:]
    # Its other defect: USER root is never reverted.
    result = _sync(world, dest, "documented", user="root")
    assert_untrusted("git", result, "git-sync built from the documented Dockerfile")
    assert _inspect(world, dest) == 1


def test_image_patch_makes_the_real_git_sync_clone(world: World) -> None:
    dest = world.registry.ref("patched/git-sync:v4.4.0")
    patched = run_cli(
        "image", "patch", world.base, "--ca", world.pki / "ca-bundle.pem", "--to", dest
    )
    assert patched.code == 0, patched.err
    result = _sync(world, dest, "patched")
    assert result.returncode == 0, result.stderr[-2000:]
    assert _inspect(world, dest) == 0


def test_image_dockerfile_context_built_with_buildah_works(world: World) -> None:
    context = world.work / "airtrust-context"
    written = run_cli(
        "image",
        "dockerfile",
        world.base,
        "--ca",
        world.pki / "ca-bundle.pem",
        "--out",
        context,
        "-o",
        "json",
    )
    assert written.code == 0, written.err
    data = json.loads(written.out)
    assert data["method"] == "copy-files" and "find" in data["why"], data
    assert "RUN" not in (context / "Dockerfile").read_text()
    dest = world.registry.ref("built/git-sync:v4.4.0")
    _buildah(world, context, dest)
    result = _sync(world, dest, "built")
    assert result.returncode == 0, result.stderr[-2000:]
    assert _inspect(world, dest) == 0
