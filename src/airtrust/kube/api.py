"""A thin Kubernetes REST adapter: exact JSON bodies, errors that name the context.

lightkube reads the kubeconfig and builds the authenticated HTTP client
(certificates, tokens, exec plugins); the requests themselves are plain REST
so that what ``apply`` sends is byte for byte what ``render`` writes, and so
discovery and access reviews need no typed models. Every failure becomes an
:class:`~airtrust.errors.AirtrustError` naming the context and the object.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2 as httpx

from airtrust.errors import (
    ApiFailure,
    ConfigError,
    Conflict,
    InputError,
    PermissionDenied,
    Unreachable,
)
from airtrust.kube.http11 import Http11Pool

__all__ = [
    "FIELD_MANAGER",
    "METADATA_LIST",
    "METADATA_OBJECT",
    "PLURALS",
    "JsonObj",
    "KubeAPI",
    "kubeconfig_path",
]

JsonObj = dict[str, Any]

#: Server-side apply field manager: how the apiserver knows which fields are ours.
FIELD_MANAGER = "airtrust"

#: Accept headers that ask for metadata alone (as client-go's metadata informers do):
#: a watcher that only needs to know *that* something changed does not parse every
#: Secret's data, which is most of the bytes and most of the memory at scale.
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
METADATA_OBJECT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"


def kubeconfig_path(explicit: Path | None) -> Path:
    """--kubeconfig, else the first file of $KUBECONFIG, else ~/.kube/config (as kubectl)."""
    if explicit is not None:
        return explicit
    env = os.environ.get("KUBECONFIG")
    if env:
        for part in env.split(os.pathsep):
            if part and Path(part).exists():
                return Path(part)
    return Path.home() / ".kube" / "config"


def _path(api_version: str, plural: str, namespace: str | None, name: str | None = None) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{quote(namespace)}"
    base += f"/{plural}"
    if name:
        base += f"/{quote(name)}"
    return base


PLURALS = {
    "Secret": "secrets",
    "Namespace": "namespaces",
    "ConfigMap": "configmaps",
    "Image": "images",
    "Proxy": "proxies",
    "Lease": "leases",
    "Job": "jobs",
    "Pod": "pods",
}


def _shared_factory(params: dict[str, Any]) -> Callable[[], httpx.Client]:
    """HTTP clients that share one TLS context and one auth: the kubeconfig's CA and
    client certificate are loaded once, not once per client of the pool (sixteen
    writers made sixteen contexts, each with its own copy of the certificates)."""

    def factory() -> httpx.Client:
        return httpx.Client(**params)

    return factory


def _http11(params: dict[str, Any], timeout: float) -> Http11Pool | None:
    """The plain-request pool over the same TLS context and auth, unless a transport
    was given (tests hand httpx a mock)."""
    if params.get("transport") is not None or not isinstance(params.get("verify"), ssl.SSLContext):
        return None
    return Http11Pool(str(params["base_url"]), params["verify"], params.get("auth"), timeout)


class KubeAPI:
    """One cluster context; safe to call from many threads."""

    def __init__(
        self,
        context: str,
        factory: Callable[[], httpx.Client],
        http11: Http11Pool | None = None,
    ) -> None:
        self.context = context
        self._factory = factory
        #: plain requests go here; streams (watches) and a refused credential, to httpx
        self._http11 = http11
        self._idle: list[httpx.Client] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def client(self) -> Iterator[httpx.Client]:
        """An HTTP client this thread alone uses until the block ends."""
        with self._lock:
            client = self._idle.pop() if self._idle else None
        if client is None:
            client = self._factory()
        try:
            yield client
        finally:
            with self._lock:
                self._idle.append(client)

    @classmethod
    def connect(
        cls,
        context: str,
        *,
        kubeconfig: Path | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> KubeAPI:
        from lightkube.config import client_adapter
        from lightkube.config.kubeconfig import KubeConfig

        path = kubeconfig_path(kubeconfig)
        if not path.exists():
            raise ConfigError(
                f"kubeconfig {path} does not exist", hint="pass --kubeconfig FILE or set KUBECONFIG"
            )
        try:
            config = KubeConfig.from_file(path)
        except FileNotFoundError:
            raise ConfigError(
                f"kubeconfig {path} does not exist",
                hint="pass --kubeconfig FILE or set KUBECONFIG",
            ) from None
        except Exception as exc:
            raise ConfigError(
                f"cannot read kubeconfig {path}: {exc}", hint="check the file"
            ) from None
        if not context:
            context = config.current_context or ""
        if context not in config.contexts:
            known = ", ".join(sorted(config.contexts)) or "none"
            raise InputError(
                f"context '{context}' is not in {path} (it has: {known})",
                hint="fix the context name in airtrust.yaml or --context",
                reference="unknown-context",
            )
        single = config.get(context)
        assert single is not None
        params = client_adapter.ConnectionParams(
            timeout=httpx.Timeout(timeout), transport=transport, trust_env=False
        )
        try:
            # once: a broken certificate or user entry fails here, not mid-apply
            shared = params.httpx_params(single)
        except Exception as exc:
            raise ConfigError(
                f"context '{context}': cannot set up the connection ({exc})",
                hint="check the kubeconfig's certificate and user entries",
            ) from None
        return cls(context, _shared_factory(shared), _http11(shared, timeout))

    @classmethod
    def in_cluster(cls, *, timeout: float = 30.0) -> KubeAPI:
        """The pod's service account, as every in-cluster controller connects."""
        from lightkube.config import client_adapter
        from lightkube.config.kubeconfig import KubeConfig

        try:
            single = KubeConfig.from_service_account().get()
        except Exception as exc:
            raise ConfigError(
                f"not running in a cluster ({exc})", hint="use --kubeconfig/--context outside a pod"
            ) from None
        assert single is not None
        params = client_adapter.ConnectionParams(timeout=httpx.Timeout(timeout), trust_env=False)
        shared = params.httpx_params(single)
        return cls("in-cluster", _shared_factory(shared), _http11(shared, timeout))

    def close(self) -> None:
        with self._lock:
            clients, self._idle = self._idle, []
        for client in clients:
            client.close()
        if self._http11 is not None:
            self._http11.close()

    # --- transport --------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str | None = None,
        params: dict[str, str] | None = None,
        what: str = "",
        accept: str = "application/json",
    ) -> httpx.Response:
        headers = {"Accept": accept}
        content = None
        if body is not None:
            content = json.dumps(body, sort_keys=True).encode()
            headers["Content-Type"] = content_type or "application/json"
        try:
            response = None
            if self._http11 is not None:
                response = self._http11.request(
                    method, path, headers=headers, params=params, content=content
                )
            if response is None:
                with self.client() as client:
                    response = client.request(
                        method, path, content=content, headers=headers, params=params
                    )
        except (httpx.TransportError, OSError, http.client.HTTPException) as exc:
            raise Unreachable(
                f"context '{self.context}': cannot reach the apiserver ({exc})",
                hint="check the cluster is up and the kubeconfig's server address",
                reference="cluster-unreachable",
            ) from None
        if response.status_code == 401 or (
            response.status_code == 403 and " cannot " in _message(response)
        ):
            # RBAC denials read 'User "x" cannot get resource ...'; other 403s
            # (a terminating namespace, admission) are not about permissions.
            raise PermissionDenied(
                f"context '{self.context}': {method} {what or path} is forbidden "
                f"({_message(response)})",
                hint="grant the missing permission (airtrust apply lists them all first)",
            )
        return response

    def _check(self, response: httpx.Response, what: str) -> JsonObj:
        if response.status_code >= 400:
            raise ApiFailure(
                f"context '{self.context}': {what} failed: {response.status_code} "
                f"{_message(response)}",
                hint="see the apiserver's message; rerun with --debug for details",
            )
        data: JsonObj = response.json()
        return data

    # --- reads --------------------------------------------------------------------------

    def api_groups(self) -> set[str]:
        data = self._check(self.request("GET", "/apis", what="discovery"), "discovery")
        return {g["name"] for g in data.get("groups", [])}

    def get(
        self, api_version: str, plural: str, namespace: str | None, name: str
    ) -> JsonObj | None:
        what = f"{plural} {namespace + '/' if namespace else ''}{name}"
        response = self.request("GET", _path(api_version, plural, namespace, name), what=what)
        if response.status_code == 404:
            return None
        return self._check(response, f"get {what}")

    def list_objects(
        self,
        api_version: str,
        plural: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        metadata_only: bool = False,
    ) -> Iterator[JsonObj]:
        """Every object, a page of 500 at a time: a caller that consumes the pages as
        they come holds one page, not the whole collection."""
        params = {"limit": "500"}
        accept = METADATA_LIST if metadata_only else "application/json"
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        what = f"list {plural}"
        while True:
            data = self._check(
                self.request(
                    "GET",
                    _path(api_version, plural, namespace),
                    params=params,
                    what=what,
                    accept=accept,
                ),
                what,
            )
            yield from data.get("items") or []  # a metadata list of none says null
            token = data.get("metadata", {}).get("continue")
            if not token:
                return
            params["continue"] = token

    def namespaces(self, label_selector: str | None = None) -> list[str]:
        return sorted(
            n["metadata"]["name"]
            for n in self.list_objects(
                "v1", "namespaces", label_selector=label_selector, metadata_only=True
            )
        )

    # --- writes -------------------------------------------------------------------------

    def create(self, manifest: JsonObj, *, dry_run: bool = False) -> JsonObj | None:
        """POST; None when it already exists (namespaces: create only when missing)."""
        meta = manifest["metadata"]
        plural = PLURALS[manifest["kind"]]
        path = _path(manifest["apiVersion"], plural, meta.get("namespace"))
        params = {"fieldManager": FIELD_MANAGER}
        if dry_run:
            params["dryRun"] = "All"
        what = f"create {manifest['kind']} {meta['name']}"
        response = self.request("POST", path, body=manifest, params=params, what=what)
        if response.status_code == 409:
            return None
        return self._check(response, what)

    def replace(self, manifest: JsonObj) -> JsonObj | None:
        """PUT with the manifest's resourceVersion; None when someone else wrote first (409)."""
        meta = manifest["metadata"]
        plural = PLURALS[manifest["kind"]]
        path = _path(manifest["apiVersion"], plural, meta.get("namespace"), meta["name"])
        what = f"replace {manifest['kind']} {meta['name']}"
        response = self.request(
            "PUT", path, body=manifest, params={"fieldManager": FIELD_MANAGER}, what=what
        )
        if response.status_code == 409:
            return None
        return self._check(response, what)

    def delete(self, api_version: str, plural: str, namespace: str | None, name: str) -> None:
        """DELETE (background propagation); gone already is fine."""
        what = f"delete {plural} {namespace + '/' if namespace else ''}{name}"
        response = self.request(
            "DELETE",
            _path(api_version, plural, namespace, name),
            params={"propagationPolicy": "Background"},
            what=what,
        )
        if response.status_code != 404:
            self._check(response, what)

    def apply(self, manifest: JsonObj, *, force: bool = False, dry_run: bool = False) -> JsonObj:
        """Server-side apply as field manager ``airtrust``; raises Conflict on 409."""
        meta = manifest["metadata"]
        plural = PLURALS.get(manifest["kind"]) or manifest["kind"].lower() + "s"
        path = _path(manifest["apiVersion"], plural, meta.get("namespace"), meta["name"])
        params = {"fieldManager": FIELD_MANAGER, "force": "true" if force else "false"}
        if dry_run:
            params["dryRun"] = "All"
        what = f"{manifest['kind']} {meta.get('namespace', '')}/{meta['name']}"
        response = self.request(
            "PATCH",
            path,
            body=manifest,
            params=params,
            content_type="application/apply-patch+yaml",
            what=what,
        )
        if response.status_code == 409:
            causes = response.json().get("details", {}).get("causes", [])
            managers = tuple(
                sorted(
                    {
                        c.get("message", "").split('"')[1]
                        for c in causes
                        if '"' in c.get("message", "")
                    }
                )
            )
            fields = ", ".join(sorted({c.get("field", "?") for c in causes}))
            raise Conflict(
                f"context '{self.context}': {what}: {fields} owned by "
                f"{', '.join(managers) or 'another manager'}",
                managers=managers,
                hint="rerun with --force-conflicts to take over (airtrust backs up the old data "
                "first)",
            )
        return self._check(response, f"apply {what}")

    def json_patch(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        name: str,
        ops: list[JsonObj],
        *,
        dry_run: bool = False,
    ) -> JsonObj:
        params = {"fieldManager": FIELD_MANAGER}
        if dry_run:
            params["dryRun"] = "All"
        what = f"{plural} {namespace}/{name}"
        response = self.request(
            "PATCH",
            _path(api_version, plural, namespace, name),
            body=ops,
            params=params,
            content_type="application/json-patch+json",
            what=what,
        )
        if response.status_code == 422 and "test" in response.text:
            raise ApiFailure(
                f"context '{self.context}': {what} changed while airtrust was patching it",
                hint="run plan again",
            )
        return self._check(response, f"patch {what}")

    def can_i(
        self, verb: str, resource: str, *, group: str = "", namespace: str | None = None
    ) -> bool:
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "verb": verb,
                    "resource": resource,
                    "group": group,
                    **({"namespace": namespace} if namespace else {}),
                }
            },
        }
        response = self.request(
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            body=review,
            what="access review",
        )
        return bool(self._check(response, "access review").get("status", {}).get("allowed"))


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message", response.reason_phrase))
    except ValueError:
        return response.reason_phrase
