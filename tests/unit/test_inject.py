"""Admission-time injection (pure): the JSON Patch for a pod, its idempotence, opt-out and
the Java opt-in; the webhook's answers; label selectors for the webhook configuration."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from typing import Any

import pytest

from airtrust.plan.inject import ENV_VARS, INJECTED_ANNOTATION, InjectSettings, mutate_pod
from airtrust.plan.manifests import label_selector
from airtrust.usecases.inject.webhook import WebhookApp, review_response

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
