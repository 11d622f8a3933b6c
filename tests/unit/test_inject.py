"""Admission-time injection (pure): the JSON Patch for a pod, its idempotence, opt-out and
the Java opt-in; the webhook's answers; label selectors for the webhook configuration."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import ssl
import threading
from typing import Any

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from airtrust.plan.inject import ENV_VARS, INJECTED_ANNOTATION, InjectSettings, mutate_pod
from airtrust.plan.manifests import label_selector
from airtrust.usecases.inject.serve import ServingCertificate
from airtrust.usecases.inject.webhook import WebhookApp, review_response
from tests.helpers.certs import make

SETTINGS = InjectSettings()


def _resolve(doc: Any, path: str) -> tuple[Any, str]:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
    for part in parts[:-1]:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc, parts[-1]


def apply_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 add/replace, enough to check what the apiserver will store."""
    out = copy.deepcopy(doc)
    for op in ops:
        parent, key = _resolve(out, op["path"])
        if isinstance(parent, list):
            if key == "-":
                parent.append(op["value"])
            elif op["op"] == "replace":
                parent[int(key)] = op["value"]
            else:
                parent.insert(int(key), op["value"])
        else:
            assert op["op"] == "add" or key in parent
            parent[key] = op["value"]
    return out


def pod(**meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "n", **meta},
        "spec": {
            "initContainers": [{"name": "init", "image": "x"}],
            "containers": [
                {"name": "a", "image": "x", "env": [{"name": "REQUESTS_CA_BUNDLE", "value": "/m"}]},
                {"name": "b", "image": "x", "volumeMounts": [{"name": "data", "mountPath": "/d"}]},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    }


def test_every_container_gets_the_mount_and_unset_variables_only() -> None:
    mutated = apply_patch(pod(), mutate_pod(pod(), SETTINGS).patch)
    spec = mutated["spec"]
    assert [v["name"] for v in spec["volumes"]] == ["data", "airtrust-ca"]
    for container in spec["initContainers"] + spec["containers"]:
        assert {
            "name": "airtrust-ca",
            "mountPath": "/etc/airtrust/ca",
            "readOnly": True,
        } in container["volumeMounts"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert set(env) == set(ENV_VARS)
    a = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    assert a["REQUESTS_CA_BUNDLE"] == "/m" and a["SSL_CERT_FILE"] == SETTINGS.bundle_path
    assert "JAVA_TOOL_OPTIONS" not in a  # Java only when the pod opts in
    record = json.loads(mutated["metadata"]["annotations"][INJECTED_ANNOTATION])
    assert "REQUESTS_CA_BUNDLE" not in record["containers"]["a"]
    assert mutate_pod(mutated, SETTINGS).patch == []  # idempotent


@pytest.mark.parametrize("where", ["labels", "annotations"])
def test_a_pod_that_opts_out_is_left_alone(where: str) -> None:
    mutation = mutate_pod(pod(**{where: {"airtrust.io/inject": "false"}}), SETTINGS)
    assert mutation.patch == [] and "false" in mutation.skipped


def test_java_opt_in_appends_to_existing_options_once() -> None:
    source = pod(annotations={"airtrust.io/inject-java": "true"})
    source["spec"]["containers"][0]["env"].append({"name": "JAVA_TOOL_OPTIONS", "value": "-Xmx1g"})
    mutated = apply_patch(source, mutate_pod(source, SETTINGS).patch)
    env = {e["name"]: e["value"] for e in mutated["spec"]["containers"][0]["env"]}
    assert env["JAVA_TOOL_OPTIONS"] == f"-Xmx1g {SETTINGS.java_flags}"
    other = {e["name"]: e["value"] for e in mutated["spec"]["containers"][1]["env"]}
    assert other["JAVA_TOOL_OPTIONS"] == SETTINGS.java_flags
    items = mutated["spec"]["volumes"][1]["configMap"]["items"]
    assert {i["key"] for i in items} == {"ca-bundle.pem", "truststore.p12"}
    assert mutate_pod(mutated, SETTINGS).patch == []


def test_review_answers_allow_with_a_patch_and_never_refuse() -> None:
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "u1", "kind": {"kind": "Pod"}, "operation": "CREATE", "object": pod()},
    }
    answer, mutated = review_response(review, SETTINGS)
    response = answer["response"]
    assert mutated and response["uid"] == "u1" and response["allowed"] is True
    assert json.loads(base64.b64decode(response["patch"])) == mutate_pod(pod(), SETTINGS).patch
    broken = copy.deepcopy(review)
    broken["request"]["object"] = {"spec": {"containers": "not-a-list"}}
    app = WebhookApp(SETTINGS)
    status, body = asyncio.run(_post(app, json.dumps(broken).encode()))
    assert status == 200 and body["response"]["allowed"] is True and "patch" not in body["response"]
    assert "left unchanged" in body["response"]["warnings"][0]
    assert asyncio.run(_post(app, b"not json"))[0] == 400


async def _post(app: WebhookApp, body: bytes) -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "path": "/mutate", "method": "POST"}, receive, send)
    status = sent[0]["status"]
    try:
        return status, json.loads(sent[1]["body"])
    except ValueError:
        return status, {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("airtrust.io/inject=enabled", {"matchLabels": {"airtrust.io/inject": "enabled"}}),
        ("runai/queue", {"matchExpressions": [{"key": "runai/queue", "operator": "Exists"}]}),
        (
            "a=b,c!=d,!e",
            {
                "matchLabels": {"a": "b"},
                "matchExpressions": [
                    {"key": "c", "operator": "NotIn", "values": ["d"]},
                    {"key": "e", "operator": "DoesNotExist"},
                ],
            },
        ),
    ],
)
def test_label_selectors(text: str, expected: dict[str, Any]) -> None:
    assert label_selector(text) == expected


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (
            lambda p: p["spec"]["volumes"].append({"name": "airtrust-ca", "emptyDir": {}}),
            "its own volume named airtrust-ca",
        ),
        (
            lambda p: p["spec"]["containers"][1]["volumeMounts"].append(
                {"name": "data", "mountPath": "/etc/airtrust/ca"}
            ),
            "container b mounts data at /etc/airtrust/ca",
        ),
        (
            lambda p: p["spec"]["initContainers"][0].update(
                volumeMounts=[{"name": "airtrust-ca", "mountPath": "/elsewhere"}]
            ),
            "container init mounts airtrust-ca at /elsewhere",
        ),
    ],
)
def test_a_pod_whose_own_spec_takes_the_bundle_volume_or_folder_is_left_as_written(
    change: Any, said: str
) -> None:
    """Merging would mount a volume that is not the bundle where the variables point
    (breaking public TLS too): the pod is admitted unchanged and its author warned."""
    source = pod()
    change(source)
    mutation = mutate_pod(source, SETTINGS)
    assert mutation.patch == [] and said in mutation.conflict
    review = {"request": {"uid": "u", "kind": {"kind": "Pod"}, "object": source}}
    response = review_response(review, SETTINGS)[0]["response"]
    assert response["allowed"] is True and "patch" not in response
    assert said in response["warnings"][0] and "not injected" in response["warnings"][0]


def test_a_container_with_env_from_is_injected_and_the_client_warned_of_what_it_overrides() -> None:
    """env beats envFrom in Kubernetes and the webhook cannot see what the source holds:
    the container still gets the bundle, and the warning names the pod, the container,
    the sources and the injected names, and the way out (env, which is never touched)."""
    source = pod(generateName="web-")
    source["metadata"].pop("name")
    a, b = source["spec"]["containers"]
    a["envFrom"] = [{"configMapRef": {"name": "settings"}}, {"secretRef": {"name": "keys"}}]
    b["envFrom"] = [{"prefix": "APP_", "configMapRef": {"name": "other"}}]
    source["spec"]["initContainers"][0]["envFrom"] = [
        {"prefix": "SSL_", "configMapRef": {"name": "tls"}}
    ]
    mutation = mutate_pod(source, SETTINGS)
    mutated = apply_patch(source, mutation.patch)
    env = {e["name"]: e["value"] for e in mutated["spec"]["containers"][0]["env"]}
    assert env["SSL_CERT_FILE"] == SETTINGS.bundle_path and env["REQUESTS_CA_BUNDLE"] == "/m"
    assert mutated["spec"]["containers"][0]["envFrom"] == a["envFrom"]
    init, main = mutation.warnings  # b's prefix cannot make any of the names
    assert init.startswith("airtrust inject: pod n/web-* container init: the injected env "
                           "SSL_CERT_FILE overrides any of these names its envFrom "
                           "(configMap tls prefix SSL_) sets")  # fmt: skip
    names = ", ".join(v for v in ENV_VARS if v != "REQUESTS_CA_BUNDLE")  # a sets it in env
    assert main == (
        f"airtrust inject: pod n/web-* container a: the injected env {names} overrides any of "
        "these names its envFrom (configMap settings, secret keys) sets; to keep your own "
        "values, set them in the container's env, which airtrust leaves alone"
    )
    review = {"request": {"uid": "u", "kind": {"kind": "Pod"}, "object": source}}
    response = review_response(review, SETTINGS)[0]["response"]
    assert response["warnings"] == [init, main] and "patch" in response
    # Re-admitted injected: nothing to do, nothing to say.
    again = mutate_pod(mutated, SETTINGS)
    assert again.patch == [] and again.warnings == ()
    java = pod(annotations={"airtrust.io/inject-java": "true"})
    java["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": "jvm"}}]
    (said,) = mutate_pod(java, SETTINGS).warnings
    assert "JAVA_TOOL_OPTIONS" in said


def _webhook_docs(**extra: Any) -> dict[str, Any]:
    from airtrust.plan.source import Source
    from airtrust.usecases.render import inject_objects

    rendered = inject_objects(
        ca_pem=b"-----BEGIN CERTIFICATE-----\n",
        namespace_selector="airtrust.io/inject=enabled",
        failure_policy="Fail",
        timeout_seconds=5,
        service=("airtrust-system", "airtrust-inject"),
        image="reg.local/airtrust:1",
        source=Source.parse("secret/airtrust-system/runai-ca-cert", "runai-ca.pem"),
        **extra,
    )
    docs: dict[str, Any] = {f"{d['kind']}/{d['metadata']['name']}": d for d in rendered.docs}
    docs["requires"] = rendered.requires
    return docs


def test_the_rendered_webhook_keeps_one_replica_through_voluntary_disruptions() -> None:
    docs = _webhook_docs()
    pdb = docs["PodDisruptionBudget/airtrust-inject"]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["metadata"]["namespace"] == "airtrust-system"
    assert pdb["spec"]["minAvailable"] == 1
    deployment = docs["Deployment/airtrust-inject"]
    assert deployment["spec"]["replicas"] == 2
    template = deployment["spec"]["template"]["metadata"]["labels"]
    selected = pdb["spec"]["selector"]["matchLabels"]
    assert selected.items() <= template.items()
    assert selected == deployment["spec"]["selector"]["matchLabels"]


def test_the_webhook_never_matches_its_own_namespace_or_kube_system() -> None:
    """Under Fail, a webhook whose own pods needed it could never come back."""
    from airtrust.plan.manifests import webhook_configuration

    (webhook,) = _webhook_docs()["MutatingWebhookConfiguration/airtrust-inject"]["webhooks"]
    selector = webhook["namespaceSelector"]
    assert selector["matchLabels"] == {"airtrust.io/inject": "enabled"}
    assert selector["matchExpressions"] == [
        {
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": ["airtrust-system", "kube-system"],
        }
    ]
    by_url = webhook_configuration(
        ca_bundle=b"x", namespace_selector="runai/queue,!skip", failure_policy="Ignore",
        timeout_seconds=5, url="https://127.0.0.1:8443/mutate",
    )  # fmt: skip
    expressions = by_url["webhooks"][0]["namespaceSelector"]["matchExpressions"]
    assert expressions == [
        {"key": "runai/queue", "operator": "Exists"},
        {"key": "skip", "operator": "DoesNotExist"},
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]},
    ]


def test_a_ca_source_apply_keeps_is_required_not_rendered() -> None:
    """Two writers of one Secret would conflict at the first rotation."""
    kept = _webhook_docs(source_kept_by_apply=True)
    assert not any(k.startswith("Secret/") for k in kept)
    assert any(
        r.startswith("secret airtrust-system/runai-ca-cert") and "inject_namespace" in r
        for r in kept["requires"]
    )
    rendered = _webhook_docs()
    assert rendered["Secret/runai-ca-cert"]["data"]["runai-ca.pem"]


# --- render --inject --url: where the apiserver posts the review -------------------------

_HOSTS = st.sampled_from(["127.0.0.1", "h", "inject.example.test", "[::1]", "Webhook.Corp"])
_PORTS = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))


@given(host=_HOSTS, port=_PORTS, path=st.sampled_from(["", "/", "/mutate"]))
def test_a_bare_url_or_the_mutate_path_means_the_mutate_path_and_is_idempotent(
    host: str, port: str, path: str
) -> None:
    from airtrust.plan.inject import MUTATE_PATH, webhook_url

    url = webhook_url(f"https://{host}{port}{path}")
    assert url == f"https://{host}{port}{MUTATE_PATH}"
    assert webhook_url(url) == url


@given(
    host=_HOSTS,
    port=_PORTS,
    path=st.text(alphabet="abcmutez/_-.%0", min_size=1, max_size=12)
    .map(lambda p: "/" + p.lstrip("/"))
    .filter(lambda p: p not in ("/", "/mutate")),
)
def test_any_other_path_is_refused_saying_which_urls_would_do(
    host: str, port: str, path: str
) -> None:
    from airtrust.errors import InputError, WebhookUrlError
    from airtrust.plan.inject import webhook_url

    given_url = f"https://{host}{port}{path}"
    with pytest.raises(WebhookUrlError) as raised:
        webhook_url(given_url)
    assert isinstance(raised.value, InputError)  # exit 2: bad input, nothing changed
    base = f"https://{host}{port}"
    assert raised.value.one_line() == (
        f"--url {given_url}: the webhook serves admissions at /mutate only; "
        f"give {base} or {base}/mutate [bad-webhook-url]"
    )


@pytest.mark.parametrize(
    ("given_url", "said"),
    [
        ("http://h:1", "over https only; give https://h:1"),
        ("h:1/mutate", "over https only"),
        ("https://h:1/mutate?x=1", "a query string or fragment"),
        ("https://h:1?", "a query string or fragment"),
        ("https://h:1/#frag", "a query string or fragment"),
        ("https://user:pw@h:1", "user information in a webhook URL; give https://h:1"),
        ("https://:1", "needs a host"),
        ("https://h:port", "needs a host"),
        ("https://h:99999", "needs a host"),
        ("https://h:", "needs a host"),
    ],
)
def test_what_the_apiserver_would_refuse_is_refused_in_one_line(given_url: str, said: str) -> None:
    from airtrust.errors import WebhookUrlError
    from airtrust.plan.inject import webhook_url

    with pytest.raises(WebhookUrlError) as raised:
        webhook_url(given_url)
    line = raised.value.one_line()
    assert line.startswith(f"--url {given_url}: ") and said in line, line
    assert "\n" not in line


def test_the_rendered_configuration_posts_to_the_mutate_path() -> None:
    from airtrust.usecases.render import inject_objects

    rendered = inject_objects(
        ca_pem=b"-----BEGIN CERTIFICATE-----\n",
        namespace_selector="airtrust.io/inject=enabled",
        failure_policy="Ignore",
        timeout_seconds=5,
        url="https://127.0.0.1:8443",
    )
    (config,) = rendered.docs
    assert config["webhooks"][0]["clientConfig"]["url"] == "https://127.0.0.1:8443/mutate"


@pytest.mark.parametrize(
    ("client", "path"),
    [
        ({"url": "https://h:1/mutate"}, ""),
        ({"url": "https://h:1/inject"}, "/inject"),
        ({"url": "https://h:1"}, "/"),
        ({"url": "https://h:1/mutate/x"}, "/mutate/x"),
        ({"service": {"namespace": "n", "name": "s", "path": "/mutate"}}, ""),
        ({"service": {"namespace": "n", "name": "s"}}, "/"),
        ({"service": {"namespace": "n", "name": "s", "path": "/hook"}}, "/hook"),
        ({}, ""),
    ],
)
def test_a_live_configuration_at_another_path_is_named(client: dict[str, Any], path: str) -> None:
    from airtrust.plan.inject import misrouted_path

    assert misrouted_path(client) == path


def _handshake_serial(server: ssl.SSLContext, ca_pem: bytes) -> int:
    """The serial of the certificate ``server`` presents, over in-memory BIOs."""
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cadata=ca_pem.decode())
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="webhook.test")
    serving = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for end in (client, serving):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    der = client.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_a_half_rewritten_pair_never_replaces_the_served_certificate() -> None:
    """A new key beside the old certificate (a writer that is not atomic) is refused
    and the server keeps presenting the old pair; the whole new pair then serves."""
    ca = make("Webhook Test CA")
    old = make("webhook", issuer=ca, ca=False, dns=("webhook.test",))
    new = make("webhook", issuer=ca, ca=False, dns=("webhook.test",))
    front = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving = ServingCertificate(front)
    serving.load(old.pem, old.key_pem)
    with pytest.raises(ssl.SSLError, match=r"KEY_VALUES_MISMATCH|key values mismatch"):
        serving.load(old.pem, new.key_pem)
    assert _handshake_serial(front, ca.pem) == old.cert.serial_number
    serving.load(new.pem, new.key_pem)
    assert _handshake_serial(front, ca.pem) == new.cert.serial_number


def test_handshakes_during_reloads_each_get_a_whole_pair() -> None:
    """The event loop accepts connections while the watcher thread loads a new pair.
    Loading into the live context let a handshake fall between OpenSSL's certificate
    step and its key step and fail ('Unexpected EOF' at the client, seen in CI); each
    handshake here runs beside a thread that reloads without pause, and every one must
    present one of the two pairs, whole."""
    ca = make("Webhook Test CA")
    pairs = [make("webhook", issuer=ca, ca=False, dns=("webhook.test",)) for _ in range(2)]
    front = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving = ServingCertificate(front)
    serving.load(pairs[0].pem, pairs[0].key_pem)
    stop = threading.Event()
    loads = 0

    def reload_without_pause() -> None:
        nonlocal loads
        while not stop.is_set():
            pair = pairs[loads % 2]
            serving.load(pair.pem, pair.key_pem)
            loads += 1

    loader = threading.Thread(target=reload_without_pause, daemon=True)
    loader.start()
    try:
        serials = {_handshake_serial(front, ca.pem) for _ in range(300)}
    finally:
        stop.set()
        loader.join()
    assert loads > 0
    assert serials <= {pair.cert.serial_number for pair in pairs}


def test_reloading_writes_nothing_to_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The webhook runs with a read-only root filesystem: the pair goes through memory
    files, never a temporary folder (a reload that needs one fails there forever)."""

    def read_only(*_: object, **__: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr("tempfile.TemporaryDirectory", read_only)
    monkeypatch.setattr("tempfile.mkstemp", read_only)
    ca = make("Webhook Test CA")
    pair = make("webhook", issuer=ca, ca=False, dns=("webhook.test",))
    front = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ServingCertificate(front).load(pair.pem, pair.key_pem)
    assert _handshake_serial(front, ca.pem) == pair.cert.serial_number
