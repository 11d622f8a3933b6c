"""The airtrust command line (also installed as ``kubectl-airtrust``).

Only this package prints or sets exit codes. Heavy modules (cryptography,
rich, pydantic) are imported inside the commands so ``airtrust --help``
starts fast. Exit codes: 0 ok, 1 a check failed, 2 bad input or usage,
3 environment unreachable, 4 changes pending.
"""

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer

from airtrust.cli import apply, chart, doctor, helm, image, inject, node, render, rotate, sync
from airtrust.cli.output import Format, emit, error, escape, rows_table, settings, warn
from airtrust.cli.params import OutputOpt, PasswordEnvOpt, PasswordFileOpt, pkcs12_password
from airtrust.clock import utc_now
from airtrust.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CheckFailed,
    InputError,
    VerificationFailed,
)
from airtrust.pki.choices import BundleFormat, KeyType, Profile

__all__ = [
    "ConnectToOpt",
    "ForceOpt",
    "KeyTypeChoice",
    "PassEnvOpt",
    "PassFileOpt",
    "app",
    "bundle_app",
    "bundle_build",
    "ca_app",
    "ca_create",
    "cert_app",
    "cert_issue",
    "dispatch",
    "inspect_cmd",
    "main",
    "quickstart_cmd",
    "verify_cmd",
]

if TYPE_CHECKING:
    from cryptography import x509

app = typer.Typer(
    name="airtrust",
    help="Make a private CA work across an air-gapped Kubernetes AI platform, and prove it.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    # Plain rich help: the markdown renderer alone costs ~30 ms of start-up.
    rich_markup_mode=None,
)
ca_app = typer.Typer(help="Create certificate authorities.", no_args_is_help=True)
cert_app = typer.Typer(help="Issue certificates from a local CA.", no_args_is_help=True)
bundle_app = typer.Typer(help="Build CA bundles and truststores.", no_args_is_help=True)
app.add_typer(ca_app, name="ca")
app.add_typer(cert_app, name="cert")
app.add_typer(bundle_app, name="bundle")
for group in (rotate, sync, doctor, apply, render, helm):
    group.register(app)
image.register(app)
inject.register(app)
node.register(app)
chart.register(app)

ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")]
PassEnvOpt = Annotated[
    str | None,
    typer.Option("--passphrase-env", metavar="VAR", help="Read the key passphrase from $VAR."),
]
PassFileOpt = Annotated[
    str | None,
    typer.Option("--passphrase-file", metavar="FILE", help="Read the key passphrase from FILE."),
]
_KEY_TYPE_HELP = (
    "Key algorithm: ec-p256 (default: small, fast, accepted by every client), "
    "ec-p384, rsa-2048, rsa-3072, rsa-4096."
)
#: --key-type as a typed choice: click lists, completes and checks the values.
KeyTypeChoice = Annotated[
    KeyType, typer.Option("--key-type", help=_KEY_TYPE_HELP, case_sensitive=False)
]


def _now() -> dt.datetime:
    return utc_now()


def _ask_passphrase(what: str) -> bytes:
    """A new passphrase typed twice on the terminal. Without one (CI, cron, a pipe)
    getpass would warn, read stdin and end in "aborted": say what to do instead."""
    import sys

    if not sys.stdin.isatty():
        raise InputError(
            f"{what} is to be encrypted but there is no terminal to ask for its passphrase",
            hint="give it with --passphrase-env VAR or --passphrase-file FILE",
            reference="no-terminal",
        )
    return str(
        typer.prompt(f"Passphrase for {what}", hide_input=True, confirmation_prompt=True)
    ).encode()


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"airtrust {version('airtrust')}")
        raise typer.Exit()


@app.callback()
def main(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only results and errors.")] = False,
    no_color: Annotated[bool, typer.Option("--no-color", help="Plain output.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    width: Annotated[
        int | None,
        typer.Option("--width", min=20, help="Draw tables at this width (also in a pipe)."),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
) -> None:
    """Make a private CA work across an air-gapped Kubernetes AI platform, and prove it."""
    settings.quiet, settings.color, settings.debug = quiet, not no_color, debug
    settings.width = width


# --- ca -------------------------------------------------------------------------------


@ca_app.command("create")
def ca_create(
    out: Annotated[Path, typer.Option("--out", help="Folder for ca.crt, ca.key, chain.pem.")],
    name: Annotated[
        str | None,
        typer.Option("--name", help="Common name (default: airtrust local root/intermediate CA)."),
    ] = None,
    organization: Annotated[str | None, typer.Option("--org", help="Organization.")] = None,
    key_type: KeyTypeChoice = KeyType.EC_P256,
    days: Annotated[int, typer.Option("--days", help="Validity; default 10 years.")] = 3650,
    path_length: Annotated[
        int | None,
        typer.Option(
            "--path-length", help="Max intermediates below (root: unlimited, intermediate: 0)."
        ),
    ] = None,
    permit_dns: Annotated[
        list[str] | None,
        typer.Option("--permit-dns", help="Name constraint: permitted DNS subtree."),
    ] = None,
    permit_ip: Annotated[
        list[str] | None, typer.Option("--permit-ip", help="Name constraint: permitted CIDR.")
    ] = None,
    intermediate: Annotated[
        bool, typer.Option("--intermediate", help="Create an intermediate signed by --parent.")
    ] = False,
    parent: Annotated[
        Path | None, typer.Option("--parent", help="CA folder of the parent (with --intermediate).")
    ] = None,
    parent_passphrase_env: Annotated[
        str | None,
        typer.Option(
            "--parent-passphrase-env",
            metavar="VAR",
            help="Read the passphrase of the parent's ca.key from $VAR.",
        ),
    ] = None,
    parent_passphrase_file: Annotated[
        str | None,
        typer.Option(
            "--parent-passphrase-file",
            metavar="FILE",
            help="Read the passphrase of the parent's ca.key from FILE.",
        ),
    ] = None,
    encrypt_key: Annotated[
        bool,
        typer.Option(
            "--encrypt-key",
            help="Encrypt ca.key; the passphrase comes from --passphrase-env/--passphrase-file, "
            "else it is asked on the terminal.",
        ),
    ] = False,
    passphrase_env: PassEnvOpt = None,
    passphrase_file: PassFileOpt = None,
    force: ForceOpt = False,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Create a root CA, or an intermediate with --intermediate --parent DIR.

    The key is written 0600; every CA is checked by airtrust's verifier before
    anything is written.
    """
    from airtrust.files import read_secret
    from airtrust.pki import authority, names
    from airtrust.usecases.workspace import create_ca_folder

    if intermediate != (parent is not None):
        raise InputError(
            "--intermediate and --parent go together",
            hint="give both to make an intermediate, or neither for a root",
        )
    passphrase = read_secret(env=passphrase_env, file=passphrase_file)
    if encrypt_key and passphrase is None:
        passphrase = _ask_passphrase("ca.key")
    parent_secret = None
    if parent is not None:
        parent_secret = read_secret(
            env=parent_passphrase_env,
            file=parent_passphrase_file,
            flags=("--parent-passphrase-env", "--parent-passphrase-file"),
        )
    default_name = "airtrust local intermediate CA" if intermediate else "airtrust local root CA"
    spec = authority.CASpec(
        common_name=name or default_name,
        organization=organization,
        days=days,
        path_length=path_length,
        permitted_dns=tuple(permit_dns or ()),
        permitted_ip=tuple(names.parse_network(n) for n in permit_ip or ()),
    )
    result = create_ca_folder(
        out,
        spec,
        key_type,
        now=_now(),
        parent=parent,
        parent_passphrase=parent_secret,
        passphrase=passphrase,
        force=force,
    )
    for w in result.warnings:
        warn(w)
    data = result.to_dict()
    emit(
        data,
        output,
        table=lambda c: c.print(
            f"created CA [bold]{escape(data['subject'])}[/bold]\n  sha256 {data['sha256']}\n"
            f"  valid until {data['not_after']}\n  files: {escape(', '.join(data['files']))}"
        ),
    )


# --- cert -----------------------------------------------------------------------------


@cert_app.command("issue")
def cert_issue(
    domain: Annotated[str, typer.Option("--domain", help="Server DNS name (CN and first SAN).")],
    ca_dir: Annotated[Path, typer.Option("--ca-dir", help="CA folder (ca.crt, ca.key).")],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for tls.crt (with chain) and tls.key.")
    ],
    san: Annotated[list[str] | None, typer.Option("--san", help="Extra DNS name.")] = None,
    ip: Annotated[list[str] | None, typer.Option("--ip", help="IP address SAN.")] = None,
    days: Annotated[
        int,
        typer.Option(
            "--days", help="Validity; default 397 days (browsers cap server certificates at 398)."
        ),
    ] = 397,
    key_type: KeyTypeChoice = KeyType.EC_P256,
    passphrase_env: PassEnvOpt = None,
    passphrase_file: PassFileOpt = None,
    force: ForceOpt = False,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Issue a TLS server certificate, ready for a kubernetes.io/tls Secret."""
    from airtrust.files import read_secret
    from airtrust.pki import authority, names
    from airtrust.usecases.workspace import issue_to_folder

    passphrase = read_secret(env=passphrase_env, file=passphrase_file)
    spec = authority.ServerSpec(
        domain=names.normalise_dns_name(domain),
        dns_names=tuple(names.normalise_dns_name(s) for s in san or ()),
        ips=tuple(names.parse_ip(i) for i in ip or ()),
        days=days,
    )
    result = issue_to_folder(
        ca_dir, spec, key_type, out=out, now=_now(), passphrase=passphrase, force=force
    )
    for w in result.warnings:
        warn(w)
    data = result.to_dict()
    emit(
        data,
        output,
        table=lambda c: c.print(
            f"issued [bold]{escape(data['subject'])}[/bold] for "
            f"{escape(', '.join(data['names']))}\n"
            f"  valid until {data['not_after']}\n  files: {escape(', '.join(data['files']))}"
        ),
    )


# --- inspect / verify -----------------------------------------------------------------


ConnectToOpt = Annotated[
    str | None,
    typer.Option(
        "--connect-to",
        metavar="HOST:PORT:ADDR:PORT",
        help="Reach the URL's HOST:PORT at ADDR:PORT, as curl and doctor do "
        "(ADDR or ADDR:PORT alone: the URL's host at that address).",
    ),
]


@app.command("inspect")
def inspect_cmd(
    target: Annotated[
        str,
        typer.Argument(help="PEM/DER/PKCS#7/PKCS#12 file, '-' for stdin, or https://HOST:PORT."),
    ],
    connect_to: ConnectToOpt = None,
    password_env: PasswordEnvOpt = None,
    password_file: PasswordFileOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Show every certificate of a bundle, chain or live endpoint, with warnings."""
    from airtrust.cli.inspect import inspect  # shared with the fast lane in entry.py

    inspect(target, connect_to, output, pkcs12_password(password_env, password_file))


@app.command("verify")
def verify_cmd(
    target: Annotated[
        str, typer.Argument(help="Certificate file (leaf first) or https://HOST:PORT.")
    ],
    ca: Annotated[
        list[str], typer.Option("--ca", help="CA bundle file(s) to trust (CA certificates only).")
    ],
    hostname: Annotated[
        str | None, typer.Option("--hostname", help="Name to check (default: the URL's host).")
    ] = None,
    untrusted: Annotated[
        list[str] | None, typer.Option("--untrusted", help="Extra intermediates file.")
    ] = None,
    profile: Annotated[
        Profile,
        typer.Option(
            "--profile",
            case_sensitive=False,
            help="strict (the web PKI) or relaxed (accepts exactly the deviations listed above).",
        ),
    ] = Profile.STRICT,
    at: Annotated[
        str | None, typer.Option("--at", help="Validate at this ISO time instead of now.")
    ] = None,
    connect_to: ConnectToOpt = None,
    password_env: PasswordEnvOpt = None,
    password_file: PasswordFileOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Path validation of a certificate or live endpoint against a CA bundle.

    The relaxed profile accepts exactly: basicConstraints non-critical on CAs;
    CAs without SKI/AKI; servers without AKI; servers without extendedKeyUsage
    or with anyExtendedKeyUsage; CAs with extendedKeyUsage.
    """
    from airtrust.cli.inspect import load_target
    from airtrust.pki.bundle import fingerprint
    from airtrust.pki.verify import RELAXATIONS, verify_server

    chosen = profile
    password = pkcs12_password(password_env, password_file)
    now = _now()
    if at is not None:
        try:
            now = dt.datetime.fromisoformat(at)
        except ValueError:
            raise InputError(
                f"'{at}' is not an ISO time", hint="e.g. 2027-01-31T12:00:00Z"
            ) from None
        if now.tzinfo is None:
            now = now.replace(tzinfo=dt.UTC)
    anchors = _anchors(ca, password)
    certs, label = load_target(target, connect_to, password=password)
    extra = [c for n in untrusted or () for c in _certificates(n, password)]
    if hostname is None and target.startswith("https://"):
        from airtrust.probe.tls import parse_endpoint

        hostname = parse_endpoint(target).host
    try:
        result = verify_server(
            certs[0],
            anchors=anchors,
            intermediates=[*certs[1:], *extra],
            hostname=hostname,
            now=now,
            profile=chosen,
        )
    except VerificationFailed as exc:
        if output is not Format.TABLE:
            emit(
                {
                    "source": label,
                    "verified": False,
                    "reason": exc.reason,
                    "message": exc.message,
                    "hint": exc.hint,
                },
                output,
            )
        raise
    data: dict[str, Any] = {
        "source": label,
        "verified": True,
        "hostname": result.hostname,
        "profile": str(result.profile),
        "relaxed": list(RELAXATIONS) if chosen is Profile.RELAXED else [],
        "chain": [
            {"subject": c.subject.rfc4514_string(), "sha256": fingerprint(c)} for c in result.chain
        ],
    }
    if chosen is Profile.RELAXED:
        warn("relaxed profile: accepted " + "; ".join(RELAXATIONS))
    emit(
        data,
        output,
        table=lambda c: c.print(
            f"[green]OK[/green] {escape(label)} is trusted for {escape(result.hostname)} "
            f"({result.profile} profile)\n"
            + "\n".join(f"  {i}: {escape(x['subject'])}" for i, x in enumerate(data["chain"]))
        ),
    )


def _certificates(name: str, password: bytes | None) -> "list[x509.Certificate]":
    from airtrust.files import read_input
    from airtrust.pki.bundle import read_certificates

    return [a.certificate for a in read_certificates(read_input(name), name, password=password)]


def _anchors(files: list[str], password: bytes | None) -> "list[x509.Certificate]":
    """The CA certificates of every --ca file; a file with none is refused, and
    non-CA certificates beside CAs are left out, with a warning."""
    from airtrust.files import read_input
    from airtrust.pki.bundle import read_certificates
    from airtrust.pki.verify import ca_anchors

    anchors: list[x509.Certificate] = []
    for name in files:
        cas, others = ca_anchors(name, read_certificates(read_input(name), name, password=password))
        if others:
            warn(
                f"--ca {name}: left out {len(others)} certificate(s) that are not CAs "
                f"({others[0]}{', ...' if len(others) > 1 else ''}); only CAs anchor a path"
            )
        anchors += cas
    return anchors


# --- bundle ---------------------------------------------------------------------------


@bundle_app.command("build")
def bundle_build(
    inputs: Annotated[
        list[str], typer.Argument(help="PEM, DER, PKCS#7 or PKCS#12 files ('-' for stdin).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output file (a folder for hashdir).")],
    fmt: Annotated[
        BundleFormat,
        typer.Option(
            "--format",
            "-f",
            case_sensitive=False,
            help="pem, pkcs12 or jks (a file), or hashdir (a folder of <subject hash>.N files).",
        ),
    ] = BundleFormat.PEM,
    allow_leaf: Annotated[
        bool, typer.Option("--allow-leaf", help="Keep non-CA certificates.")
    ] = False,
    allow_expired: Annotated[
        bool, typer.Option("--allow-expired", help="Keep expired CAs.")
    ] = False,
    comments: Annotated[
        bool, typer.Option("--comments", help="Write '# subject' above each PEM block.")
    ] = False,
    store_password_env: Annotated[
        str | None,
        typer.Option(
            "--store-password-env", metavar="VAR", help="Truststore password (default changeit)."
        ),
    ] = None,
    password_env: PasswordEnvOpt = None,
    password_file: PasswordFileOpt = None,
    force: ForceOpt = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="List every certificate (as -o table).")
    ] = False,
    output: Annotated[
        Format | None,
        typer.Option(
            "--output",
            "-o",
            help="Result format (default: a short summary; table lists every certificate).",
            case_sensitive=False,
        ),
    ] = None,
) -> None:
    """Merge CA certificates into one canonical bundle or truststore."""
    from airtrust.cli.params import store_password as read_store_password
    from airtrust.files import OutputSet, read_input
    from airtrust.pki import truststore
    from airtrust.pki.bundle import parse_bundle

    store_password = read_store_password(store_password_env)
    bundle = parse_bundle(
        [(name, read_input(name)) for name in inputs],
        now=_now(),
        allow_leaf=allow_leaf,
        allow_expired=allow_expired,
        password=pkcs12_password(password_env, password_file),
    )
    outputs = OutputSet(force=force)
    folder_hint = "give a file path (or -f hashdir)"
    if fmt is BundleFormat.PEM:
        outputs.add(out, bundle.to_pem(comments=comments), folder_hint=folder_hint)
    elif fmt is BundleFormat.PKCS12:
        outputs.add(out, truststore.to_pkcs12(bundle, store_password), folder_hint=folder_hint)
    elif fmt is BundleFormat.JKS:
        outputs.add(out, truststore.to_jks(bundle, store_password), folder_hint=folder_hint)
    else:
        outputs.add_tree(out, truststore.hash_dir_entries(bundle), names=truststore.HASH_DIR_NAMES)
    outputs.commit()
    summary = (
        f"wrote {out} ({fmt}): {len(bundle.anchors)} CA certificate(s) kept from "
        f"{len(inputs)} file(s), {bundle.duplicates} duplicate(s) dropped"
    )
    data: dict[str, Any] = {
        "out": str(out),
        "format": fmt.value,
        "digest": bundle.digest,
        "files": len(inputs),
        "kept": len(bundle.anchors),
        "duplicates": bundle.duplicates,
        "notes": list(bundle.notes),
        "certificates": [
            {"subject": a.subject, "sha256": a.fingerprint, "from": a.origin}
            for a in bundle.anchors
        ],
    }

    def table(console: Any) -> None:
        if output is Format.TABLE or verbose:
            console.print(
                rows_table(
                    f"{out} ({fmt}, {len(bundle.anchors)} CA certificates)",
                    ["subject", "sha256", "from"],
                    [(a.subject, a.fingerprint[:16], a.origin) for a in bundle.anchors],
                )
            )
        console.print(summary, markup=False, soft_wrap=True)
        for note in bundle.notes:
            console.print(f"note: {note}", markup=False, soft_wrap=True)

    emit(data, output or Format.TABLE, table=table)


# --- quickstart -----------------------------------------------------------------------


@app.command("quickstart")
def quickstart_cmd(
    domain: Annotated[str, typer.Option("--domain", help="Control-plane DNS name.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the CA, bundle and TLS files.")],
    san: Annotated[list[str] | None, typer.Option("--san", help="Extra DNS name.")] = None,
    ip: Annotated[list[str] | None, typer.Option("--ip", help="IP address SAN.")] = None,
    ca_dir: Annotated[
        Path | None, typer.Option("--ca-dir", help="Use this CA instead of creating one.")
    ] = None,
    key_type: KeyTypeChoice = KeyType.EC_P256,
    passphrase_env: PassEnvOpt = None,
    passphrase_file: PassFileOpt = None,
    context: Annotated[
        str | None,
        typer.Option("--context", help="Also set up this control-plane kube context."),
    ] = None,
    cluster_context: Annotated[
        list[str] | None,
        typer.Option("--cluster-context", help="GPU cluster context (default: --context)."),
    ] = None,
    kubeconfig: Annotated[
        Path | None, typer.Option("--kubeconfig", help="kubeconfig (default: $KUBECONFIG).")
    ] = None,
    shell: Annotated[
        Path | None,
        typer.Option("--shell", help="Also write the manual steps as a shell script here."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="With --context: replace a CA or certificate the clusters already hold "
            "(backed up first).",
        ),
    ] = False,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Create or reuse a CA, the control-plane certificate and the bundle in one go.

    With --context it also writes DIR/airtrust.yaml and applies it (init + plan
    + apply). Idempotent: a second run reuses what the folder holds and changes
    nothing on the clusters.
    """
    from airtrust.cli.output import invoked_as
    from airtrust.files import read_secret
    from airtrust.pki import names
    from airtrust.plan.steps import HEADINGS
    from airtrust.usecases import quickstart as use_case

    program = invoked_as()
    report = use_case.quickstart(
        out,
        domain,
        now=_now(),
        sans=[names.normalise_dns_name(s) for s in san or ()],
        ips=[names.parse_ip(i) for i in ip or ()],
        ca_folder=ca_dir,
        key_type=key_type,
        passphrase=read_secret(env=passphrase_env, file=passphrase_file),
        program=program,
        shell=shell,
    )
    for w in report.warnings:
        warn(w)
    if context is not None:
        try:
            use_case.set_up_clusters(
                report,
                context=context,
                clusters=list(cluster_context or ()),
                kubeconfig=kubeconfig,
                now=_now(),
                force=force,
                program=program,
            )
        except use_case.WouldReplace as exc:
            emit(exc.plan.to_dict(), output, table=apply.plan_table(exc.plan))
            raise
    data: dict[str, Any] = {
        "folder": report.folder,
        "domain": report.domain,
        "steps": report.steps,
        "next_steps": [s.to_dict() for s in report.next_steps],
    }
    applied = report.applied
    if applied is not None:
        data["apply"] = applied.to_dict()

    def table(console: Any) -> None:
        console.print(
            rows_table(
                f"quickstart {report.domain} -> {report.folder}",
                ["step", "action", "detail"],
                [(s["step"], s["action"], s["detail"]) for s in report.steps],
            )
        )
        console.print("Next steps (one command per line):")
        previous = None
        for step in report.next_steps:
            if step.when in HEADINGS and step.when != previous:
                console.print(HEADINGS[step.when], markup=False, soft_wrap=True)
            previous = step.when
            if step.note:
                console.print(f"# {step.note}", markup=False, soft_wrap=True)
            console.print(step.command, markup=False, soft_wrap=True, highlight=False)

    emit(data, output, table=table)
    if applied is not None and applied.failed:
        raise CheckFailed(
            f"{len(applied.failed)} object(s) not applied; first: {applied.failed[0].message}",
            hint="fix the cause and rerun quickstart (it converges)",
            reference="apply-incomplete",
        )


# --- entry point ----------------------------------------------------------------------


def dispatch(args: list[str]) -> int:
    """Run the typer app on ``args``; click's own outcomes become exit codes.

    Library errors pass through to :func:`airtrust.cli.entry.run`, which
    prints them for this path and the fast lane alike.
    """
    try:
        code = app(args=args, prog_name="airtrust", standalone_mode=False)
        return code if isinstance(code, int) else EXIT_OK  # click returns typer.Exit codes here
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        error("aborted")
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        # click's own errors (typer is built on click): bad option, missing argument.
        ctx = getattr(exc, "ctx", None)
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        error(f"{exc.format_message()}{where} [usage]")
        # A usage mistake is bad input; any other click error keeps click's code.
        return EXIT_BAD_INPUT if isinstance(exc, click.UsageError) else int(exc.exit_code)
