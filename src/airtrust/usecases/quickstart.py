"""``airtrust quickstart``: a local CA, the control plane's certificate and the bundle
in one folder, and (with a context) the clusters set up from it.

Idempotent by design: a second run reuses what the folder holds and changes
nothing on the clusters. What it never does silently is replace data on a
cluster that a quickstart folder did not produce: a cluster that already holds
another CA or another TLS certificate is shown the plan and refused unless the
user passes ``--force`` (the old data is backed up first, as ``apply`` does).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from airtrust.config import config_text, load_config
from airtrust.errors import AirtrustError, CheckFailed, InputError, OutputIsFolder
from airtrust.files import OutputSet
from airtrust.pki import authority, keys, names
from airtrust.pki.bundle import Bundle, build_bundle, certificate_to_pem, read_certificates
from airtrust.pki.tlssecret import RENEW_BEFORE
from airtrust.pki.verify import verify_server
from airtrust.plan.model import Plan
from airtrust.plan.steps import Step, When, manual_steps, shell_script
from airtrust.profiles import Profile, load_profile
from airtrust.usecases import apply
from airtrust.usecases.session import open_session
from airtrust.usecases.workspace import (
    BUNDLE,
    CA_CERT,
    CA_KEY,
    TLS_CERT,
    TLS_KEY,
    Authority,
    create_ca,
    issue_server_files,
    load_authority,
)

__all__ = [
    "CONFIG_NAME",
    "QuickstartReport",
    "WouldReplace",
    "quickstart",
    "set_up_clusters",
]

#: The config quickstart writes into its folder when given a context.
CONFIG_NAME = "airtrust.yaml"


class WouldReplace(CheckFailed):
    """The clusters hold data (another CA, another certificate) quickstart would replace."""

    reference = "quickstart-would-replace"

    def __init__(self, plan: Plan, replaced: Sequence[str]) -> None:
        super().__init__(
            f"the clusters already hold other data in {', '.join(replaced)}; quickstart "
            "would replace it",
            hint="check the plan above, then rerun with --force to replace it (the old data "
            "is backed up first), or use a folder with the CA the clusters trust (--ca-dir)",
        )
        self.plan = plan


@dataclass
class QuickstartReport:
    folder: str
    domain: str
    steps: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    next_steps: list[Step] = field(default_factory=list)
    #: what apply did on the clusters (with a context), else None
    applied: apply.ApplyReport | None = None

    def step(self, name: str, action: str, detail: str) -> None:
        self.steps.append({"step": name, "action": action, "detail": detail})


def _server_reusable(
    folder: Path, ca: Authority, domain: str, sans: Sequence[str], now: dt.datetime
) -> str | None:
    """Why the existing tls.crt cannot be kept, or None when it can."""
    cert_path, key_path = folder / TLS_CERT, folder / TLS_KEY
    if not cert_path.exists() or not key_path.exists():
        return "no certificate yet"
    try:
        leaf = read_certificates(cert_path.read_bytes(), str(cert_path))[0].certificate
        key = keys.key_from_pem(key_path.read_bytes(), source=str(key_path))
    except InputError as exc:
        return f"existing files unreadable ({exc.message})"
    if not keys.public_key_matches(key, leaf.public_key()):
        return "tls.key does not match tls.crt"
    try:
        for name in (domain, *sans):
            verify_server(
                leaf, anchors=[ca.root], intermediates=ca.intermediates(), hostname=name, now=now
            )
    except AirtrustError as exc:
        return exc.message
    if leaf.not_valid_after_utc - now < RENEW_BEFORE:
        return f"expires on {leaf.not_valid_after_utc:%Y-%m-%d}"
    return None


def quickstart(
    folder: Path,
    domain: str,
    *,
    now: dt.datetime,
    sans: Sequence[str] = (),
    ips: Sequence[names.IPAddress] = (),
    ca_folder: Path | None = None,
    ca_name: str = "airtrust local root CA",
    key_type: keys.KeyType = keys.DEFAULT_KEY_TYPE,
    passphrase: bytes | None = None,
    profile: Profile | None = None,
    program: str = "airtrust",
    shell: Path | None = None,
) -> QuickstartReport:
    """Create (or reuse) CA, server certificate and bundle in ``folder``. Idempotent.

    ``program`` is how the user ran airtrust (``.venv/bin/airtrust`` when it is
    not on PATH), so the printed next steps run as they are copied. ``shell`` also
    gets the manual steps as an executable script; a folder there is refused before
    ``folder`` is filled, so a refused ``--shell`` leaves nothing half-done.
    """
    if shell is not None and shell.is_dir():
        raise OutputIsFolder(f"--shell {shell} is a folder", hint="give a file path for the script")
    domain = names.normalise_dns_name(domain)
    profile = profile or load_profile()
    report = QuickstartReport(str(folder), domain)
    outputs = OutputSet(force=True)
    if ca_folder is not None:
        ca = load_authority(ca_folder, passphrase=passphrase)
        report.step("ca", "reused", f"external CA {ca.certificate.subject.rfc4514_string()}")
    elif (folder / CA_CERT).exists() or (folder / CA_KEY).exists():
        ca = load_authority(folder, passphrase=passphrase)
        report.step("ca", "reused", ca.certificate.subject.rfc4514_string())
    else:
        created = create_ca(
            folder, authority.CASpec(ca_name), key_type, now=now, passphrase=passphrase
        )
        ca = created.authority
        outputs.files.extend(created.outputs.files)
        report.step("ca", "created", ca.certificate.subject.rfc4514_string())

    bundle: Bundle = build_bundle(
        [a for c in ca.chain for a in read_certificates(certificate_to_pem(c), "CA chain")],
        now=now,
    )
    bundle_pem = bundle.to_pem()
    bundle_path = folder / BUNDLE
    if bundle_path.exists() and bundle_path.read_bytes() == bundle_pem:
        report.step("bundle", "unchanged", f"{len(bundle.anchors)} CA certificate(s)")
    else:
        outputs.add(bundle_path, bundle_pem)
        report.step("bundle", "written", f"{len(bundle.anchors)} CA certificate(s)")

    why = _server_reusable(folder, ca, domain, sans, now)
    if why is None:
        report.step("tls", "reused", f"{TLS_CERT} for {domain}")
    else:
        server = issue_server_files(
            ca,
            authority.ServerSpec(domain, tuple(sans), tuple(ips)),
            key_type,
            out=folder,
            now=now,
            force=True,
        )
        outputs.files.extend(server.outputs.files)
        report.warnings.extend(server.warnings)
        report.step("tls", "issued", f"{TLS_CERT} for {domain} ({why})")
    outputs.commit()
    report.next_steps = [
        *manual_steps(
            profile,
            profile.default_version,
            bundle=folder / BUNDLE,
            cert=folder / TLS_CERT,
            key=folder / TLS_KEY,
        ),
        Step(f"{program} verify --ca {folder / BUNDLE} https://{domain}", When.LATER),
    ]
    if shell is not None:
        script = OutputSet(force=True)
        script.add(shell, shell_script(report.next_steps, profile).encode())
        script.commit()
        shell.chmod(0o755)
    return report


def set_up_clusters(
    report: QuickstartReport,
    *,
    context: str,
    clusters: Sequence[str],
    kubeconfig: Path | None,
    now: dt.datetime,
    force: bool = False,
    program: str = "airtrust",
    progress: apply.Progress | None = None,
) -> QuickstartReport:
    """The cluster half: write ``DIR/airtrust.yaml``, then plan and apply it.

    Refuses (:class:`WouldReplace`, nothing written on any cluster) when the plan
    replaces data already there, unless ``force``. The next steps become the
    ones that follow an apply.
    """
    folder = Path(report.folder)
    path = folder / CONFIG_NAME
    text = config_text(
        domain=report.domain,
        context=context,
        clusters=list(clusters) or [context],
        bundle=BUNDLE,
        cert=TLS_CERT,
        key=TLS_KEY,
        version=None,
        kubeconfig=str(kubeconfig.resolve()) if kubeconfig else None,
    )
    if not path.exists() or path.read_text() != text:
        outputs = OutputSet(force=True)
        outputs.add(path, text.encode())
        outputs.commit()
    with open_session(load_config(path), now=now, kubeconfig=kubeconfig) as session:
        plan = apply.make_plan(session)
        replaced = sorted(
            {f"{c.desired.ref} ({c.context})" for c in plan.pending if c.replaces_data}
        )
        if replaced and not force:
            raise WouldReplace(plan, replaced)
        apply.preflight(session, plan)
        applied = apply.execute(session, plan, force=force, progress=progress)
    report.applied = applied
    report.step(
        "clusters",
        "applied" if applied.writes else "unchanged",
        f"{applied.writes} write(s) via {path}",
    )
    report.next_steps = [
        Step(f"{program} plan -c {path}", note="shows no changes now"),
        Step(
            f"{program} helm -c {path}",
            note="the Helm commands that enable the custom CA and keep each release's values",
        ),
    ]
    return report
