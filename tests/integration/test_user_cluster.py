"""Cluster commands as a new user runs them (issue 27): each test runs the command as
written in the report and judges what the user sees, and what kubectl, helm, sh,
skopeo+umoci+openssl or the apiserver say about the result."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, assert_one_line_error, run_cli
from tests.integration.conftest import free_port, wait_for, wait_for_port
from tests.integration.kube import BIN, KubeCluster
from tests.integration.registry import (
    Registry,
    host_bundle,
    make_tar,
    openssl_verifies,
    push_tar,
    unpack,
)

pytestmark = pytest.mark.integration
DOMAIN = "runai.example.test"
IMAGE = "registry.local/airtrust:0.1.0"


def _ok(result: Any) -> Any:
    assert result.code == 0, result.out + result.err
    return result


@pytest.fixture(scope="module")
def qs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quickstart folder: the local CA, the control plane's certificate, the bundle."""
    folder = tmp_path_factory.mktemp("user") / "qs"
    _ok(run_cli("quickstart", "--domain", DOMAIN, "--out", folder))
    return folder


def _config(folder: Path, qs: Path, kubeconfig: Path) -> Path:
    path = folder / "airtrust.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "profile": "runai",
                "version": "2.20",
                "domain": DOMAIN,
                "ca": {"bundle": [str(qs / "ca-bundle.pem")]},
                "tls": {"cert": str(qs / "tls.crt"), "key": str(qs / "tls.key")},
                "kubeconfig": str(kubeconfig),
                "control_plane": {"context": "admin"},
                "clusters": [{"context": "admin"}],
            }
        )
    )
    return path


def _secret_data(cluster: KubeCluster, namespace: str, name: str) -> dict[str, str] | None:
    proc = cluster.kubectl("get", "secret", name, "-n", namespace, "-o", "json", check=False)
    if proc.returncode != 0:
        assert b"NotFound" in proc.stderr, proc.stderr
        return None
    data: dict[str, str] = json.loads(proc.stdout)["data"]
    return data


# --- 5: a missing config is an error everywhere ------------------------------------------


def test_render_controller_with_a_missing_config_is_an_error(tmp_path: Path) -> None:
    out = tmp_path / "d"
    result = run_cli(
        "render", "--controller", "--image", "x", "-c", tmp_path / "nonexist.yaml", "--out", out
    )
    assert_one_line_error(result, 2, "nonexist.yaml does not exist", "[bad-config]")
    assert not out.exists()
    injected = run_cli(
        "render", "--inject", "--url", "https://127.0.0.1:8443/mutate",
        "-c", tmp_path / "nonexist.yaml", "--out", out,
    )  # fmt: skip
    assert_one_line_error(injected, 2, "nonexist.yaml does not exist")
    assert not out.exists()


# --- 6: quickstart never replaces another CA without a plan and --force ------------------


def test_quickstart_shows_the_plan_and_refuses_to_replace_another_ca(
    tidy_cluster: KubeCluster, qs: Path, tmp_path: Path
) -> None:
    # The tidy_cluster already trusts another CA, put there by hand as the manual page says.
    tidy_cluster.kubectl("create", "namespace", "runai-backend")
    tidy_cluster.kubectl(
        "-n", "runai-backend", "create", "secret", "generic", "runai-ca-cert",
        f"--from-file=runai-ca.pem={qs / 'ca-bundle.pem'}",
    )  # fmt: skip
    before = _secret_data(tidy_cluster, "runai-backend", "runai-ca-cert")
    other = tmp_path / "other"
    args = ["quickstart", "--domain", DOMAIN, "--out", other, "--context", "admin"]
    args += ["--kubeconfig", tidy_cluster.kubeconfig]
    refused = run_cli(*args)
    assert refused.code == 1, refused.out + refused.err
    assert "update" in refused.out and "Secret runai-backend/runai-ca-cert" in refused.out
    assert "runai-ca.pem: certificates" in refused.out  # the plan says what changes, by fingerprint
    assert len(refused.error_lines) == 1 and "[quickstart-would-replace]" in refused.err
    assert "--force" in refused.error_lines[0] and "Traceback" not in refused.err
    # Nothing was written on the tidy_cluster: not the CA secret, not the TLS secret.
    assert _secret_data(tidy_cluster, "runai-backend", "runai-ca-cert") == before
    assert _secret_data(tidy_cluster, "runai-backend", "runai-backend-tls") is None

    forced = _ok(run_cli(*args, "--force", "-o", "json"))
    applied = json.loads(forced.out)["apply"]
    assert applied["writes"] >= 2
    after = _secret_data(tidy_cluster, "runai-backend", "runai-ca-cert")
    assert after is not None and after != before
    import base64

    assert base64.b64decode(after["runai-ca.pem"]) == (other / "ca-bundle.pem").read_bytes()
    # The data airtrust did not write was backed up first, beside it.
    backups = [
        s["metadata"]["name"]
        for s in tidy_cluster.get("secrets", "-n", "runai-backend")["items"]
        if s["metadata"]["name"].startswith("runai-ca-cert-backup")
    ]
    assert backups, tidy_cluster.get("secrets", "-n", "runai-backend")
    backup = _secret_data(tidy_cluster, "runai-backend", backups[0])
    assert backup is not None and backup["runai-ca.pem"] == before["runai-ca.pem"]  # type: ignore[index]
    # And the folder's own config agrees now: a rerun changes nothing, without --force.
    again = _ok(run_cli(*args, "-o", "json"))
    assert json.loads(again.out)["apply"]["writes"] == 0


# --- 7: a server dry run says it wrote nothing -------------------------------------------


def test_apply_server_dry_run_says_would_apply_and_writes_nothing(
    tidy_cluster: KubeCluster, qs: Path, tmp_path: Path
) -> None:
    config = _config(tmp_path, qs, tidy_cluster.kubeconfig)
    tidy_cluster.kubectl("create", "namespace", "runai-backend")
    tidy_cluster.kubectl("create", "namespace", "runai")
    shown = _ok(run_cli("apply", "-c", config, "--dry-run=server"))
    assert "would apply" in shown.out and "0 writes (dry run)" in shown.out, shown.out
    assert "applied" not in shown.out and "write(s)" not in shown.out, shown.out
    data = json.loads(_ok(run_cli("apply", "-c", config, "--dry-run=server", "-o", "json")).out)
    assert data["writes"] == 0 and data["would_apply"] > 0
    assert {r["status"] for r in data["results"]} <= {"would apply", "unchanged"}
    # kubectl, not airtrust, says nothing was stored.
    assert _secret_data(tidy_cluster, "runai-backend", "runai-ca-cert") is None
    assert _secret_data(tidy_cluster, "runai", "runai-ca-cert") is None
    real = _ok(run_cli("apply", "-c", config))
    assert "applied" in real.out and "write(s)" in real.out
    assert _secret_data(tidy_cluster, "runai", "runai-ca-cert") is not None


# --- 8: doctor with an unreachable tidy_cluster still reports what needs none -----------------


def test_doctor_with_an_unreachable_cluster_reports_the_rest(qs: Path, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    kubeconfig = tmp_path / "unreachable.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "gone",
                        "cluster": {
                            "server": f"https://127.0.0.1:{port}",
                            "insecure-skip-tls-verify": True,
                        },
                    }
                ],
                "users": [{"name": "gone", "user": {"token": "x"}}],
                "contexts": [{"name": "admin", "context": {"cluster": "gone", "user": "gone"}}],
                "current-context": "admin",
            }
        )
    )
    config = _config(tmp_path, qs, kubeconfig)
    result = run_cli("doctor", "-c", config, "--kubeconfig", kubeconfig, "-o", "json")
    assert result.code == 1, result.out + result.err
    checks = {c["name"]: c for c in json.loads(result.out)["checks"]}
    assert checks["ca-bundle"]["status"] == "ok"
    assert "control-plane-endpoint" in checks  # checked from outside, no cluster needed
    cluster = checks["cluster"]
    assert cluster["status"] == "fail" and cluster["context"] == "admin"
    assert "the cluster checks did not run" in cluster["evidence"]
    assert f"127.0.0.1:{port}" in cluster["evidence"] or "reach" in cluster["evidence"]
    table = run_cli("doctor", "-c", config, "--kubeconfig", kubeconfig)
    assert table.code == 1 and "FAIL\tcluster\tapiserver" in table.out, table.out
    assert "Traceback" not in table.err


# --- 9, 10: render --inject / --controller as documented, applied to a fresh cluster ----


def test_render_inject_service_needs_image_as_readme_and_help_say(qs: Path, tmp_path: Path) -> None:
    out = tmp_path / "w"
    result = run_cli(
        "render", "--inject", "--service", "airtrust-system/airtrust-inject",
        "--ca", qs / "ca-bundle.pem", "--out", out,
    )  # fmt: skip
    assert_one_line_error(result, 2, "--inject --service needs --image")
    assert not out.exists()
    readme = (ROOT / "README.md").read_text()
    assert "render --inject (--url URL \\| --service NS/airtrust-inject --image IMG)" in readme
    helped = _ok(run_cli("render", "--help", env={"COLUMNS": "250"}))
    assert "required with --controller and with --inject --service" in " ".join(helped.out.split())


def test_rendered_folders_apply_to_an_empty_cluster(
    cluster: KubeCluster, qs: Path, tmp_path: Path
) -> None:
    """Each rendered folder goes to an apiserver that holds nothing of airtrust's. A server
    dry run alone cannot judge a folder that creates its namespace (the namespace is not
    stored, so every object in it is refused), so the folder is applied for real, then
    once more with --dry-run=server: both must pass, with the apiserver as the judge."""
    controller = tmp_path / "controller"
    _ok(
        run_cli(
            "render", "--controller", "--image", IMAGE, "--ca", qs / "ca-bundle.pem",
            "--out", controller,
        )
    )  # fmt: skip
    inject = tmp_path / "inject"
    rendered = _ok(
        run_cli(
            "render", "--inject", "--service", "airtrust-system/airtrust-inject",
            "--image", IMAGE, "--ca", qs / "ca-bundle.pem", "--out", inject, "-o", "json",
        )
    )  # fmt: skip
    # The serving certificate (a private key) is never rendered: it is named, with the fix.
    requires = json.loads(rendered.out)["requires"]
    assert any(r.startswith("secret airtrust-system/airtrust-inject-tls") for r in requires)
    assert "needs secret airtrust-system/airtrust-inject-tls" in rendered.err
    for folder in (controller, inject):
        cluster.kubectl("apply", "--server-side", "-k", str(folder))
        cluster.kubectl("apply", "--server-side", "--dry-run=server", "-k", str(folder))
    assert cluster.exists("namespace", "airtrust-system")
    source = _secret_data(cluster, "airtrust-system", "local-ca")
    import base64

    assert source is not None
    assert base64.b64decode(source["runai-ca.pem"]) == (qs / "ca-bundle.pem").read_bytes()
    assert "PRIVATE KEY" not in base64.b64decode(source["runai-ca.pem"]).decode()
    assert cluster.exists("deployment", "airtrust-sync", "airtrust-system")
    assert cluster.exists("deployment", "airtrust-inject", "airtrust-system")
    assert cluster.exists("mutatingwebhookconfiguration", "airtrust-inject")


# --- 11: helm commands use the values file render writes --------------------------------


def test_render_helm_commands_use_the_values_files_beside_them(qs: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, qs, tmp_path / "unused.kubeconfig")
    out = tmp_path / "out"
    _ok(run_cli("render", "-c", config, "--out", out, "--offline"))
    script = out / "helm" / "commands.sh"
    installs = [
        shlex.split(line)
        for line in script.read_text().splitlines()
        if line.startswith("helm upgrade --install")
    ]
    assert len(installs) == 2, script.read_text()
    for argv in installs:
        values = argv[argv.index("-f") + 1]
        # Relative to the script's folder, which the script changes into first.
        assert 'cd "$(dirname "$0")"' in script.read_text()
        file = script.parent / values
        assert file.exists(), values
        parsed = yaml.safe_load(file.read_text())
        assert parsed["global"]["customCA"]["enabled"] is True
        assert "An install also needs:" in file.read_text()
    # sh itself accepts the script.
    syntax = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, check=False)
    assert syntax.returncode == 0, syntax.stderr


def test_doctor_fix_for_a_missing_release_installs_with_a_values_file(
    shared_cluster: KubeCluster, qs: Path, tmp_path: Path
) -> None:
    config = _config(tmp_path, qs, shared_cluster.kubeconfig)
    result = run_cli("doctor", "-c", config, "-o", "json")
    helm = [c for c in json.loads(result.out)["checks"] if c["name"] == "helm"]
    assert helm and all(c["evidence"].startswith("release not installed") for c in helm)
    for check in helm:
        argv = shlex.split(check["fix"])
        assert argv[:3] == ["helm", "upgrade", "--install"]
        assert argv[argv.index("-f") + 1].endswith(".values.yaml"), check["fix"]
        assert "values.yaml" in check["evidence"]


# --- 12: the --shell script and the printed steps run twice ------------------------------


def test_shell_script_runs_twice_against_a_cluster(
    tidy_cluster: KubeCluster, tmp_path: Path
) -> None:
    folder = tmp_path / "qs"
    script = tmp_path / "steps.sh"
    _ok(run_cli("quickstart", "--domain", DOMAIN, "--out", folder, "--shell", script))
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "KUBECONFIG": str(tidy_cluster.kubeconfig),
        "HOME": str(tmp_path),
    }
    for run in (1, 2):
        ran = subprocess.run(
            ["sh", str(script)], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert ran.returncode == 0, (run, ran.stderr)
        assert "AlreadyExists" not in ran.stderr and "already exists" not in ran.stderr
    for namespace in ("runai-backend", "runai"):
        assert _secret_data(tidy_cluster, namespace, "runai-ca-cert") is not None
    assert _secret_data(tidy_cluster, "runai-backend", "runai-backend-tls") is not None
    # The printed next steps are the same commands: each runs again too.
    listed = json.loads(
        _ok(run_cli("quickstart", "--domain", DOMAIN, "--out", folder, "-o", "json")).out
    )
    for step in listed["next_steps"]:
        if step["when"] in ("always", "kubernetes") and step["command"].startswith("kubectl"):
            ran = subprocess.run(
                ["sh", "-c", step["command"]], env=env, capture_output=True, text=True, check=False
            )
            assert ran.returncode == 0, (step["command"], ran.stderr)


# --- 13: image inspect's hint runs as printed --------------------------------------------


def test_image_inspect_hint_is_a_runnable_patch(
    registry: Registry, qs: Path, tmp_path: Path
) -> None:
    layer = make_tar(
        tmp_path / "l.tar",
        {
            "etc": "dir",
            "etc/ssl": "dir",
            "etc/ssl/certs": "dir",
            "etc/ssl/certs/ca-certificates.crt": host_bundle(),
        },
    )
    ref = registry.ref("user/app:1.0")
    push_tar(ref, layer)
    inspected = run_cli("image", "inspect", ref, "--ca", qs / "ca-bundle.pem")
    assert inspected.code == 1 and len(inspected.error_lines) == 1, inspected.err
    line = inspected.error_lines[0]
    assert "..." not in line, line
    command = line.split("patch it: ", 1)[1].rsplit(" [image-untrusted]", 1)[0]
    argv = shlex.split(command)
    assert argv[argv.index("--to") + 1] == registry.ref("user/app:1.0-airtrust")
    patched = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert patched.returncode == 0, patched.stderr
    # skopeo + umoci unpack the new image; openssl judges its OS bundle.
    rootfs = unpack(registry.ref("user/app:1.0-airtrust"), tmp_path / "unpacked")
    assert openssl_verifies(rootfs / "etc/ssl/certs/ca-certificates.crt", qs / "tls.crt")
    assert not openssl_verifies(Path("/etc/ssl/certs/ca-certificates.crt"), qs / "tls.crt")


# --- 14: printed airtrust commands name the program that ran -----------------------------


def test_printed_verify_step_names_the_program_that_ran(tmp_path: Path) -> None:
    program = Path(sys.executable).parent / "airtrust"
    assert program.exists(), program
    env = {**os.environ, "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    ran = subprocess.run(
        [str(program), "quickstart", "--domain", DOMAIN, "--out", str(tmp_path / "qs")],
        env=env, capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    verify = [line for line in ran.stdout.splitlines() if " verify --ca " in line]
    assert len(verify) == 1, ran.stdout
    assert verify[0].startswith(f"{program} verify --ca "), verify[0]
    # Copied into a shell as printed, it runs that program (the endpoint is not up: the
    # program's own one-line error about the host, not 'command not found').
    copied = subprocess.run(
        ["sh", "-c", verify[0]], env=env, capture_output=True, text=True, cwd=tmp_path,
        timeout=60, check=False,
    )  # fmt: skip
    assert "not found" not in copied.stderr.split("airtrust:")[0], copied.stderr
    assert copied.stderr.startswith("airtrust: error:"), copied.stderr
    # With airtrust on PATH as this very program, the short name is printed.
    on_path = {**env, "PATH": f"{program.parent}:/usr/bin:/bin"}
    short = subprocess.run(
        [str(program), "quickstart", "--domain", DOMAIN, "--out", str(tmp_path / "qs")],
        env=on_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert any(line.startswith("airtrust verify --ca ") for line in short.stdout.splitlines())


# --- 15: no markup reaches a pipe ---------------------------------------------------------


#: rich markup as a pipe would show it verbatim: a closing tag, or an opening style tag.
MARKUP = re.compile(
    r"\[/|\[(bold|dim|italic|underline|reverse|red|green|yellow|blue|magenta|cyan|white|link)\b"
)


def _command_paths() -> set[tuple[str, ...]]:
    """Every command a user can run, read from the CLI's own tree (typer's click
    Group), so a command added later is in this set without a line changed here."""
    import click

    with warnings.catch_warnings():  # typer's own use of click's deprecated names
        warnings.simplefilter("ignore", DeprecationWarning)
        import typer.main

    from airtrust.cli.main import app

    def walk(command: click.Command, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from walk(sub, (*path, name))
        else:
            yield path

    return set(walk(typer.main.get_command(app), ()))


def _path_of(args: tuple[str | Path, ...], paths: set[tuple[str, ...]]) -> tuple[str, ...] | None:
    words = tuple(str(a) for a in args)
    return next((p for p in paths if words[: len(p)] == p), None)


def test_no_command_prints_markup_into_a_pipe(
    qs: Path, tmp_path: Path, shared_cluster: KubeCluster, registry: Registry
) -> None:
    """Every command in the CLI's tree runs with its output a pipe (run_cli captures
    it), with arguments that make it print something a user sees: its result, or its
    one-line error where it needs what this test does not give it (a node, a running
    rotation, an OCI layout). None of it carries rich markup."""
    config = _config(tmp_path, qs, shared_cluster.kubeconfig)
    _ok(run_cli("ca", "create", "--out", tmp_path / "ca"))
    layer = make_tar(
        tmp_path / "l.tar",
        {"etc": "dir", "etc/ssl": "dir", "etc/ssl/certs": "dir",
         "etc/ssl/certs/ca-certificates.crt": host_bundle()},
    )  # fmt: skip
    ref = registry.ref("markup/app:1.0")
    push_tar(ref, layer)
    kube = ("--kubeconfig", shared_cluster.kubeconfig)
    source = "secret/markup-nowhere/local-ca"
    (tmp_path / "node-root").mkdir()
    runs: list[tuple[str | Path, ...]] = [
        ("--version",),
        ("ca", "create", "--out", tmp_path / "ca2"),
        ("cert", "issue", "--ca-dir", tmp_path / "ca", "--domain", "localhost",
         "--out", tmp_path / "leaf"),
        ("verify", "--ca", qs / "ca-bundle.pem", qs / "tls.crt", "--hostname", DOMAIN),
        ("inspect", qs / "tls.crt"),
        ("bundle", "build", qs / "ca-bundle.pem", "--out", tmp_path / "b.pem"),
        ("quickstart", "--domain", DOMAIN, "--out", tmp_path / "qs2"),
        ("init", "--domain", DOMAIN, "--context", "admin", "--out", tmp_path / "init.yaml"),
        ("plan", "-c", config),
        ("apply", "-c", config, "--dry-run=server"),
        ("render", "-c", config, "--out", tmp_path / "r"),
        ("render", "--controller", "--image", IMAGE, "--out", tmp_path / "rc"),
        ("render", "--inject", "--url", "https://127.0.0.1:8443/mutate",
         "--ca", qs / "ca-bundle.pem", "--out", tmp_path / "ri"),
        ("render", "--node-trust", "--image", IMAGE, "--source", source,
         "--registry", registry.host, "--out", tmp_path / "rn"),
        ("doctor", "-c", config),
        ("doctor", "-c", config, "--html", tmp_path / "report.html"),
        ("helm", "-c", config),
        ("chart", "values", "-c", config, "--offline", "--out", tmp_path / "values.yaml"),
        ("rotate", "status", "-c", config),
        # No rotation is recorded, and the new CA folder is missing: one-line errors.
        ("rotate", "start", "-c", config, "--new-ca", tmp_path / "no-such-ca"),
        ("rotate", "finish", "-c", config),
        # The source is missing on the cluster: a one-line error after one pass.
        ("sync", "--once", "--source", source, "--namespace", "default", *kube),
        # No such configuration: unregister is done at once ("absent already is fine").
        ("inject", "unregister", "--name", "markup-absent", *kube),
        ("inject", "serve", "--listen", "127.0.0.1:1", "--cert", tmp_path / "none.crt",
         "--key", tmp_path / "none.key", "--ca", qs / "ca-bundle.pem", *kube),
        ("image", "inspect", ref, "--ca", qs / "ca-bundle.pem"),
        ("image", "patch", ref, "--ca", qs / "ca-bundle.pem",
         "--to", registry.ref("markup/app:1.0-airtrust")),
        ("image", "dockerfile", ref, "--ca", qs / "ca-bundle.pem", "--out", tmp_path / "ctx"),
        ("image", "push", tmp_path / "no-such-layout.tar", registry.ref("markup/pushed:1")),
        ("image", "build-controller", "--base", f"oci:{tmp_path / 'no-base.tar'}",
         "--to", f"oci:{tmp_path / 'out.tar'}", "--wheels", tmp_path / "no-wheels"),
        ("node", "install", "--registry", registry.host, "--ca", qs / "ca-bundle.pem",
         "--root", tmp_path / "node-root", "--runtime", "docker", "--dry-run"),
        ("node", "sync", "--once", "--source", source, "--registry", registry.host,
         "--node", "markup-node", "--root", tmp_path / "node-root", "--runtime",
         "containerd", *kube),
    ]  # fmt: skip
    paths = _command_paths()
    covered = {_path_of(args, paths) for args in runs}
    assert paths <= covered, f"commands run by no line here: {sorted(paths - covered)}"
    # Independent of each other: a few at a time (each is a Python start-up, a wait on
    # the apiserver or the registry).
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda args: run_cli(*args), runs))
    for args, result in zip(runs, results, strict=True):
        said = result.out + result.err
        assert said.strip(), (args, "printed nothing")
        assert "Traceback" not in said, (args, said)
        assert MARKUP.search(said) is None, (args, said)
    verified = run_cli("verify", "--ca", qs / "ca-bundle.pem", qs / "tls.crt", "--hostname", DOMAIN)
    assert verified.code == 0 and verified.out.startswith("OK "), verified.out


# --- 22: inject serve writes the bundle when a namespace is labelled ----------------------


@pytest.fixture
def webhook_certificate(tmp_path: Path) -> Path:
    folder = tmp_path / "wh"
    _ok(run_cli("quickstart", "--domain", "localhost", "--ip", "127.0.0.1", "--out", folder))
    return folder


@pytest.fixture
def served(
    shared_cluster: KubeCluster, webhook_certificate: Path, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "airtrust", "inject", "serve",
                "--listen", f"127.0.0.1:{port}",
                "--cert", str(webhook_certificate / "tls.crt"),
                "--key", str(webhook_certificate / "tls.key"),
                "--ca", str(webhook_certificate / "ca-bundle.pem"),
                "--kubeconfig", str(shared_cluster.kubeconfig),
                # A pass every 10 minutes: only the watch can write within the test.
                "--interval", "600",
                "--namespace-selector", "user-test.airtrust.io/inject=enabled",
            ],
            stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for_port(port, process, timeout=30)
        yield process, log, port
    finally:
        process.terminate()
        process.wait(20)


def test_inject_serve_writes_the_bundle_when_a_namespace_is_labelled(
    shared_cluster: KubeCluster, served: tuple[subprocess.Popen[bytes], Path, int]
) -> None:
    _, log, port = served
    wait_for(
        "the start-up line",
        lambda: f"serving https://127.0.0.1:{port}/mutate" in log.read_text(),
    )
    line = next(x for x in log.read_text().splitlines() if "serving https://" in x)
    assert "namespaces in scope: user-test.airtrust.io/inject=enabled" in line, line
    assert "bundle ConfigMap airtrust-ca-bundle" in line, line
    namespace = "labelled-later"
    shared_cluster.kubectl("create", "namespace", namespace)

    def has_bundle() -> bool:
        proc = shared_cluster.kubectl(
            "get", "configmap", "airtrust-ca-bundle", "-n", namespace, check=False
        )
        return proc.returncode == 0

    assert not has_bundle()
    shared_cluster.kubectl("label", "namespace", namespace, "user-test.airtrust.io/inject=enabled")
    wait_for("the bundle ConfigMap in the namespace just labelled", has_bundle, timeout=20)
    data = shared_cluster.get("configmap", "airtrust-ca-bundle", "-n", namespace)["data"]
    assert "-----BEGIN CERTIFICATE-----" in data["ca-bundle.pem"]
    assert "PRIVATE KEY" not in data["ca-bundle.pem"]


def test_render_out_that_is_a_file_and_a_shell_that_is_a_folder_change_nothing(
    qs: Path, tmp_path: Path
) -> None:
    target = tmp_path / "f1"
    target.write_text("keep me\n")
    config = _config(tmp_path, qs, tmp_path / "unused.kubeconfig")
    for args in (
        ("render", "-c", config, "--offline", "--out", target),
        ("render", "--controller", "--image", IMAGE, "--out", target),
        ("render", "--inject", "--url", "https://127.0.0.1:8443/mutate", "--ca",
         qs / "ca-bundle.pem", "--out", target),
    ):  # fmt: skip
        assert_one_line_error(run_cli(*args), 2, "f1 is a file, not a folder")
        assert target.read_text() == "keep me\n"
    folder = tmp_path / "steps"
    (folder / "mine").mkdir(parents=True)
    out = tmp_path / "qs-new"
    refused = run_cli("quickstart", "--domain", DOMAIN, "--out", out, "--shell", folder)
    assert_one_line_error(refused, 2, "is a folder", "[output-is-folder]")
    assert not out.exists() and (folder / "mine").is_dir()
