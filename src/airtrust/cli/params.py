"""typer parameter types, and the inputs they name, shared by several commands."""

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from airtrust.cli.output import Format
from airtrust.errors import InputError

if TYPE_CHECKING:
    from airtrust.pki.bundle import Bundle
    from airtrust.usecases.session import Session

__all__ = [
    "ConfigOpt",
    "KubeconfigOpt",
    "OutputOpt",
    "PasswordEnvOpt",
    "PasswordFileOpt",
    "StorePasswordOpt",
    "local_ca_files",
    "open_config",
    "pkcs12_password",
    "read_bundle",
    "store_password",
]

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="The airtrust.yaml to use.")]
KubeconfigOpt = Annotated[
    Path | None,
    typer.Option("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)."),
]
OutputOpt = Annotated[
    Format, typer.Option("--output", "-o", help="Result format.", case_sensitive=False)
]
StorePasswordOpt = Annotated[
    str | None,
    typer.Option(
        "--store-password-env",
        metavar="VAR",
        help="Password of the image's Java cacerts stores, from $VAR (default changeit).",
    ),
]

PasswordEnvOpt = Annotated[
    str | None,
    typer.Option(
        "--password-env",
        metavar="VAR",
        help="Password of PKCS#12 (.p12/.pfx) input files, from $VAR; password-less files "
        "and Java's default changeit need none.",
    ),
]
PasswordFileOpt = Annotated[
    str | None,
    typer.Option(
        "--password-file",
        metavar="FILE",
        help="Password of PKCS#12 input files, from the first line of FILE.",
    ),
]


def pkcs12_password(env: str | None, file: str | None) -> bytes | None:
    """The PKCS#12 input password of --password-env/--password-file, or None."""
    from airtrust.files import read_secret

    return read_secret(env=env, file=file, flags=("--password-env", "--password-file"))


def store_password(env: str | None) -> str:
    """The Java store password from $env, else Java's well-known default."""
    from airtrust.files import read_secret
    from airtrust.pki.truststore import DEFAULT_STORE_PASSWORD

    secret = read_secret(env=env) if env else None
    return secret.decode() if secret else DEFAULT_STORE_PASSWORD


def read_bundle(files: Sequence[str]) -> "Bundle":
    """The CA bundle of these files, validated as of now."""
    from airtrust.clock import utc_now
    from airtrust.files import read_input
    from airtrust.pki.bundle import parse_bundle

    return parse_bundle([(f, read_input(f)) for f in files], now=utc_now())


def local_ca_files(ca: Sequence[str], config: Path | None, *, what: str) -> list[str]:
    """The local CA files: --ca, else the config's ca.bundle; ``what`` needs them."""
    files = list(ca)
    if not files and config is not None:
        # A -c that does not exist is an error (load_config says so), never ignored.
        from airtrust.config import load_config

        files = [str(p) for p in load_config(config).ca.bundle]
    if not files:
        raise InputError(
            f"{what} needs the local CA", hint="pass --ca ca-bundle.pem or -c airtrust.yaml"
        )
    return files


def open_config(config_path: Path, kubeconfig: Path | None, *, connect: bool = True) -> "Session":
    """The session of ``-c airtrust.yaml``; a rotation recorded in the cluster decides the
    bundle and the TLS certificate (see usecases.session)."""
    from airtrust.clock import utc_now
    from airtrust.config import load_config
    from airtrust.usecases.session import open_session

    return open_session(
        load_config(config_path), now=utc_now(), kubeconfig=kubeconfig, connect=connect
    )
