#!/usr/bin/env python3
"""Generates the OpenAPI v3 documents that Axle serves at /openapi/v3/<group-version>.

Source: the `_definitions.json` that the PyPI package `kubernetes-validate` ships for one
Kubernetes release (`kubernetes-json-schema/v<X.Y.Z>-local/_definitions.json`). It holds every
definition of the upstream `swagger.json` with the upstream descriptions and vendor extensions
(`x-kubernetes-group-version-kind`, `x-kubernetes-patch-merge-key`, `x-kubernetes-list-type`, …),
converted to JSON Schema draft 2020-12. This script undoes that conversion:

* `"type": ["string", "null"]` becomes `"type": "string"` (upstream never allows null);
* the `enum` it adds to `apiVersion`/`kind` of every kind is dropped (upstream has none);
* `#/$defs/X` becomes `#/components/schemas/X`, and a `$ref` with siblings (a field's own
  description, patch strategy, …) is wrapped as `{"allOf": [{"$ref": …}], …}` as upstream's
  v3 documents do (OpenAPI 3.0 ignores siblings of `$ref`);
* `Quantity` and `IntOrString`, which it replaces by bare `oneOf`s, get back upstream's v3
  form and descriptions.

Upstream's v3 documents also carry `default` values derived from Go types; the v2-derived
source has none, so neither do these documents.

Each document is shaped like upstream's `/openapi/v3/api/v1`: `openapi: 3.0.0`, `info`,
`paths` for the resources Axle serves (every PATCH operation carries
`x-kubernetes-group-version-kind` and an inline `fieldValidation` query parameter, which is what
kubectl >= 1.29 looks for before sending `fieldValidation=Strict`), and `components.schemas`
holding only the schemas reachable from those paths. Parameter descriptions are Axle's own.

Outputs (under --crate-dir, the `openapi` crate):
* `data/<api__v1>_openapi.json.zst`: the compact, key-sorted JSON, zstd-compressed;
* `src/generated.rs`: the table of group-versions, file names, lengths and SHA-512 hashes.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

REF_PREFIX_SOURCE = "#/$defs/"
REF_PREFIX = "#/components/schemas/"

# --- what Axle serves -------------------------------------------------------------------------

# The group-versions served, in the order `group_versions()` lists them.
GROUP_VERSIONS = [
    ("", "v1"),
    ("apps", "v1"),
    ("coordination.k8s.io", "v1"),
    ("apiextensions.k8s.io", "v1"),
    ("autoscaling", "v1"),
    ("authorization.k8s.io", "v1"),
    ("authentication.k8s.io", "v1"),
    ("rbac.authorization.k8s.io", "v1"),
    ("batch", "v1"),
]


@dataclass
class Resource:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    subresources: list[str] = field(default_factory=list)  # "status", "scale", "log"
    create_only: bool = False  # review-style resources: POST only
    deletecollection: bool = True
    delete_returns_object: bool = False  # pods answer DELETE with the Pod


RESOURCES = [
    Resource("", "v1", "Namespace", "namespaces", False, ["status"], deletecollection=False),
    Resource("", "v1", "Node", "nodes", False, ["status"]),
    Resource("", "v1", "Pod", "pods", True, ["status", "log"], delete_returns_object=True),
    Resource("", "v1", "ConfigMap", "configmaps", True),
    Resource("", "v1", "Secret", "secrets", True),
    Resource("", "v1", "Event", "events", True),
    Resource("", "v1", "Service", "services", True, ["status"], deletecollection=False,
             delete_returns_object=True),
    Resource("", "v1", "ServiceAccount", "serviceaccounts", True, delete_returns_object=True),
    Resource("apps", "v1", "Deployment", "deployments", True, ["status", "scale"]),
    Resource("apps", "v1", "ReplicaSet", "replicasets", True, ["status", "scale"]),
    Resource("apps", "v1", "DaemonSet", "daemonsets", True, ["status"]),
    Resource("coordination.k8s.io", "v1", "Lease", "leases", True),
    Resource(
        "apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
        False, ["status"],
    ),
    Resource(
        "authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews",
        False, create_only=True,
    ),
    Resource(
        "authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews",
        False, create_only=True,
    ),
    Resource("batch", "v1", "Job", "jobs", True, ["status"]),
    Resource("batch", "v1", "CronJob", "cronjobs", True, ["status"]),
    Resource("rbac.authorization.k8s.io", "v1", "Role", "roles", True),
    Resource("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
    Resource("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True),
    Resource("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False),
]

# Kinds served only as a subresource's body: their schemas go into their own group-version's
# document even though no path of that document returns them.
EXTRA_KINDS = [("autoscaling", "v1", "Scale")]

# --- restored upstream definitions ------------------------------------------------------------

QUANTITY_DESCRIPTION = (
    "Quantity is a fixed-point representation of a number. It provides convenient "
    "marshaling/unmarshaling in JSON and YAML, in addition to String() and AsInt64() accessors.\n\n"
    "The serialization format is:\n\n"
    "``` <quantity>        ::= <signedNumber><suffix>\n\n"
    "\t(Note that <suffix> may be empty, from the \"\" case in <decimalSI>.)\n\n"
    "<digit>           ::= 0 | 1 | ... | 9 <digits>          ::= <digit> | <digit><digits> "
    "<number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits> "
    "<sign>            ::= \"+\" | \"-\" <signedNumber>    ::= <number> | <sign><number> "
    "<suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI> "
    "<binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei\n\n"
    "\t(International System of units; See: http://physics.nist.gov/cuu/Units/binary.html)\n\n"
    "<decimalSI>       ::= m | \"\" | k | M | G | T | P | E\n\n"
    "\t(Note that 1024 = 1Ki but 1000 = 1k; I didn't choose the capitalization.)\n\n"
    "<decimalExponent> ::= \"e\" <signedNumber> | \"E\" <signedNumber> ```\n\n"
    "No matter which of the three exponent forms is used, no quantity may represent a number "
    "greater than 2^63-1 in magnitude, nor may it have more than 3 decimal places. Numbers larger "
    "or more precise will be capped or rounded up. (E.g.: 0.1m will rounded up to 1m.) This may "
    "be extended in the future if we require larger or smaller quantities.\n\n"
    "When a Quantity is parsed from a string, it will remember the type of suffix it had, and "
    "will use the same type again when it is serialized.\n\n"
    "Before serializing, Quantity will be put in \"canonical form\". This means that "
    "Exponent/suffix will be adjusted up or down (with a corresponding increase or decrease in "
    "Mantissa) such that:\n\n"
    "- No precision is lost - No fractional digits will be emitted - The exponent (or suffix) is "
    "as large as possible.\n\n"
    "The sign will be omitted unless the number is negative.\n\n"
    "Examples:\n\n"
    "- 1.5 will be serialized as \"1500m\" - 1.5Gi will be serialized as \"1536Mi\"\n\n"
    "Note that the quantity will NEVER be internally represented by a floating point number. "
    "That is the whole point of this exercise.\n\n"
    "Non-canonical values will still parse as long as they are well formed, but will be "
    "re-emitted in their canonical form. (So always use canonical form, or don't diff.)\n\n"
    "This format is intended to make it difficult to use these numbers without writing some sort "
    "of special handling code in the hopes that that will cause implementors to also use a fixed "
    "point implementation."
)

INT_OR_STRING_DESCRIPTION = (
    "IntOrString is a type that can hold an int32 or a string.  When used in JSON or YAML "
    "marshalling and unmarshalling, it produces or consumes the inner type.  This allows you to "
    "have, for example, a JSON field that can accept a name or number."
)

RESTORED = {
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {
        "description": QUANTITY_DESCRIPTION,
        "oneOf": [{"type": "string"}, {"type": "number"}],
    },
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {
        "description": INT_OR_STRING_DESCRIPTION,
        "format": "int-or-string",
        "oneOf": [{"type": "integer"}, {"type": "string"}],
    },
}

# --- schema conversion ------------------------------------------------------------------------

# Keywords whose value is copied as data (never walked as a schema).
DATA_KEYWORDS = {
    "description", "format", "required", "enum",
    "x-kubernetes-group-version-kind", "x-kubernetes-list-map-keys", "x-kubernetes-list-type",
    "x-kubernetes-map-type", "x-kubernetes-patch-merge-key", "x-kubernetes-patch-strategy",
    "x-kubernetes-unions",
}


class SourceError(Exception):
    """The source holds something this converter does not know how to undo."""


def convert_schema(node: dict, where: str) -> dict:
    """Turns one draft-2020-12 schema of the source back into an OpenAPI 3.0 schema."""
    out: dict = {}
    for key, value in node.items():
        if key == "type":
            if isinstance(value, list):
                types = [t for t in value if t != "null"]
                if len(types) != 1:
                    raise SourceError(f"{where}: unexpected type list {value}")
                value = types[0]
            out[key] = value
        elif key == "$ref":
            if not value.startswith(REF_PREFIX_SOURCE):
                raise SourceError(f"{where}: unexpected $ref {value}")
            out[key] = REF_PREFIX + value[len(REF_PREFIX_SOURCE):]
        elif key == "properties":
            out[key] = {name: convert_schema(s, f"{where}.{name}") for name, s in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = convert_schema(value, f"{where}[{key}]") if isinstance(value, dict) else value
        elif key in ("oneOf", "anyOf", "allOf"):
            out[key] = [convert_schema(s, f"{where}[{key}]") for s in value]
        elif key in DATA_KEYWORDS:
            out[key] = copy.deepcopy(value)
        else:
            raise SourceError(f"{where}: unknown keyword {key!r}")
    if "$ref" in out and len(out) > 1:
        ref = out.pop("$ref")
        out["allOf"] = [{"$ref": ref}]
    return out


def convert_definitions(defs: dict, served: set[tuple[str, str]]) -> dict:
    """Converts every definition; keeps only the GVK entries of served group-versions."""
    schemas = {}
    for name, source in defs.items():
        if name in RESTORED:
            schemas[name] = copy.deepcopy(RESTORED[name])
            continue
        source = copy.deepcopy(source)
        gvks = source.get("x-kubernetes-group-version-kind")
        if gvks:
            # The source adds an enum of the kind's apiVersions and kind names; upstream has none.
            for prop in ("apiVersion", "kind"):
                source.get("properties", {}).get(prop, {}).pop("enum", None)
            kept = [g for g in gvks if (g["group"], g["version"]) in served]
            if kept:
                source["x-kubernetes-group-version-kind"] = kept
            else:
                del source["x-kubernetes-group-version-kind"]
        schema = convert_schema(source, name)
        if _has_key(schema, "enum"):
            raise SourceError(f"{name}: unexpected enum (upstream publishes none)")
        schemas[name] = schema
    return schemas


def _has_key(node, key: str) -> bool:
    """Whether `key` is a schema keyword anywhere in `node` (property names do not count)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "properties":
                if any(_has_key(s, key) for s in v.values()):
                    return True
            elif k == key:
                return True
            elif k not in DATA_KEYWORDS and _has_key(v, key):
                return True
    elif isinstance(node, list):
        return any(_has_key(v, key) for v in node)
    return False


def refs_in(node) -> set[str]:
    """Names of every `#/components/schemas/...` referenced anywhere inside `node`."""
    found = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith(REF_PREFIX):
                found.add(v[len(REF_PREFIX):])
            else:
                found |= refs_in(v)
    elif isinstance(node, list):
        for v in node:
            found |= refs_in(v)
    return found


def closure(schemas: dict, roots: set[str]) -> dict:
    """The schemas reachable from `roots`, keyed by name."""
    todo, seen = list(roots), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name not in schemas:
            raise SourceError(f"dangling reference to {name}")
        seen.add(name)
        todo.extend(refs_in(schemas[name]) - seen)
    return {name: schemas[name] for name in sorted(seen)}


def schema_for_kind(schemas: dict, group: str, version: str, kind: str) -> str:
    """The one definition whose only GVK is (group, version, kind)."""
    want = {"group": group, "version": version, "kind": kind}
    matches = [
        name for name, s in schemas.items()
        if s.get("x-kubernetes-group-version-kind") == [want]
    ]
    if len(matches) != 1:
        raise SourceError(f"{group}/{version} {kind}: expected one definition, found {matches}")
    return matches[0]


# --- paths ------------------------------------------------------------------------------------

def param(name: str, where: str, description: str, type_: str = "string", required=False) -> dict:
    p = {"description": description, "in": where, "name": name,
         "schema": {"type": type_, "uniqueItems": True}}
    if required:
        p["required"] = True
    return p


P_PRETTY = param("pretty", "query", "If 'true', the output is indented for reading.")
P_NAMESPACE = param("namespace", "path", "The namespace of the objects.", required=True)
P_DRY_RUN = param("dryRun", "query",
                  "If 'All', every stage of the request runs but nothing is persisted.")
P_FIELD_MANAGER = param("fieldManager", "query",
                        "The name of the actor making the change, recorded in managedFields.")
P_FIELD_MANAGER_PATCH = param(
    "fieldManager", "query",
    "The name of the actor making the change, recorded in managedFields. Required for apply "
    "patches (application/apply-patch+yaml).")
P_FIELD_VALIDATION = param(
    "fieldValidation", "query",
    "How the server treats unknown or duplicate fields in the body: 'Ignore' drops them "
    "silently, 'Warn' (the default) drops them with a warning header, 'Strict' rejects the "
    "request with 400 Bad Request naming them.")
P_FORCE = param("force", "query",
                "Apply patches only: take over fields that other managers own instead of "
                "failing with a conflict.", "boolean")
P_LIST = [
    param("allowWatchBookmarks", "query",
          "Watch only: ask for BOOKMARK events carrying the latest resourceVersion.", "boolean"),
    param("continue", "query", "The continue token of the previous page of a paged list."),
    param("fieldSelector", "query", "Only return objects whose fields match, e.g. 'metadata.name=x'."),
    param("labelSelector", "query", "Only return objects whose labels match, e.g. 'app=web'."),
    param("limit", "query", "The most objects to return; the rest comes with the continue token.",
          "integer"),
    param("resourceVersion", "query",
          "List: how fresh the answer must be. Watch: the version to start after."),
    param("resourceVersionMatch", "query",
          "How resourceVersion applies to a list: 'Exact' or 'NotOlderThan'."),
    param("sendInitialEvents", "query",
          "Watch only: begin with an ADDED event per existing object, then a BOOKMARK.",
          "boolean"),
    param("timeoutSeconds", "query", "End the list or watch call after this many seconds.",
          "integer"),
    param("watch", "query", "Stream ADDED, MODIFIED and DELETED events instead of listing.",
          "boolean"),
]
P_DELETE = [
    P_DRY_RUN,
    param("gracePeriodSeconds", "query",
          "Seconds before the object is deleted; zero deletes at once.", "integer"),
    param("orphanDependents", "query",
          "Deprecated, use propagationPolicy: whether dependents are orphaned.", "boolean"),
    param("propagationPolicy", "query",
          "What happens to dependents: 'Orphan', 'Background' or 'Foreground'."),
]
P_LOG = [
    param("container", "query",
          "The container to read; may be left out when the pod has only one."),
    param("follow", "query", "Keep the stream open and send new lines as they come.", "boolean"),
    param("limitBytes", "query", "Stop after this many bytes.", "integer"),
    param("previous", "query", "Read the log of the previous, terminated container.", "boolean"),
    param("sinceSeconds", "query", "Only lines newer than this many seconds.", "integer"),
    param("tailLines", "query", "Only this many lines from the end.", "integer"),
    param("timestamps", "query", "Prefix every line with its RFC 3339 timestamp.", "boolean"),
]

PATCH_TYPES = [
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
]


def ref(name: str) -> dict:
    return {"$ref": REF_PREFIX + name}


def content(schema: dict, types=("application/json",)) -> dict:
    return {t: {"schema": copy.deepcopy(schema)} for t in types}


def response(description: str, schema: dict | None = None, types=("application/json",)) -> dict:
    r = {"description": description}
    if schema is not None:
        r["content"] = content(schema, types)
    return r


UNAUTHORIZED = {"401": {"description": "Unauthorized"}}


def group_prefix(group: str, version: str) -> str:
    """`CoreV1`, `AppsV1`, `RbacAuthorizationV1`: the operationId infix upstream uses."""
    if not group:
        return "Core" + version.capitalize()
    first = group.split(".k8s.io")[0].split(".")
    name = first[0] + "".join(p.capitalize() for p in first[1:])
    return name[0].upper() + name[1:] + version.capitalize()


def tag(group: str, version: str) -> str:
    p = group_prefix(group, version)
    base = p[: -len(version)]
    return base[0].lower() + base[1:] + "_" + version


def gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def operation(action, description, op_id, gv, gvk, *, params=None, body=None, responses=None):
    op = {"description": description, "operationId": op_id}
    if params:
        op["parameters"] = copy.deepcopy(params)
    if body is not None:
        op["requestBody"] = body
    op["responses"] = {**(responses or {}), **UNAUTHORIZED}
    op["tags"] = [tag(*gv)]
    op["x-kubernetes-action"] = action
    op["x-kubernetes-group-version-kind"] = {
        "group": gvk[0], "kind": gvk[2], "version": gvk[1]}
    return op


def resource_paths(r: Resource, schemas: dict) -> dict:
    gv = (r.group, r.version)
    prefix = group_prefix(r.group, r.version)
    root = "/" + gv_path(r.group, r.version)
    obj = schema_for_kind(schemas, r.group, r.version, r.kind)
    gvk = (r.group, r.version, r.kind)
    ns = "Namespaced" if r.namespaced else ""
    coll = f"{root}/namespaces/{{namespace}}/{r.plural}" if r.namespaced else f"{root}/{r.plural}"
    scope_params = [P_NAMESPACE] if r.namespaced else []
    paths: dict = {}

    write_body = {"content": content(ref(obj), ("*/*",)), "required": True}
    write_params = [P_DRY_RUN, P_FIELD_MANAGER, P_FIELD_VALIDATION]
    created = {"200": response("OK", ref(obj)), "201": response("Created", ref(obj))}

    if r.create_only:
        paths[coll] = {
            "parameters": scope_params + [P_PRETTY],
            "post": operation(
                "post", f"create a {r.kind}", f"create{prefix}{ns}{r.kind}", gv, gvk,
                params=write_params, body=write_body,
                responses={**created, "202": response("Accepted", ref(obj))}),
        }
        return paths

    obj_list = schema_for_kind(schemas, r.group, r.version, r.kind + "List")
    status = "io.k8s.apimachinery.pkg.apis.meta.v1.Status"
    delete_options = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"
    list_types = ("application/json", "application/json;stream=watch")

    collection = {
        "get": operation(
            "list", f"list or watch objects of kind {r.kind}", f"list{prefix}{ns}{r.kind}", gv,
            gvk, params=P_LIST, responses={"200": response("OK", ref(obj_list), list_types)}),
        "parameters": scope_params + [P_PRETTY],
        "post": operation(
            "post", f"create a {r.kind}", f"create{prefix}{ns}{r.kind}", gv, gvk,
            params=write_params, body=write_body,
            responses={**created, "202": response("Accepted", ref(obj))}),
    }
    if r.deletecollection:
        collection["delete"] = operation(
            "deletecollection", f"delete collection of {r.kind}",
            f"delete{prefix}Collection{ns}{r.kind}", gv, gvk,
            params=[p for p in P_LIST if p["name"] not in ("allowWatchBookmarks", "watch")]
            + [p for p in P_DELETE],
            body={"content": content(ref(delete_options), ("*/*",))},
            responses={"200": response("OK", ref(status))})
    paths[coll] = collection

    if r.namespaced:
        paths[f"{root}/{r.plural}"] = {
            "get": operation(
                "list", f"list or watch objects of kind {r.kind}",
                f"list{prefix}{r.kind}ForAllNamespaces", gv, gvk, params=P_LIST,
                responses={"200": response("OK", ref(obj_list), list_types)}),
            "parameters": [P_PRETTY],
        }

    item_params = [param("name", "path", f"name of the {r.kind}", required=True)] + scope_params
    deleted = ref(obj) if r.delete_returns_object else ref(status)
    paths[f"{coll}/{{name}}"] = {
        "delete": operation(
            "delete", f"delete a {r.kind}", f"delete{prefix}{ns}{r.kind}", gv, gvk,
            params=P_DELETE, body={"content": content(ref(delete_options), ("*/*",))},
            responses={"200": response("OK", deleted), "202": response("Accepted", deleted)}),
        "get": operation(
            "get", f"read the specified {r.kind}", f"read{prefix}{ns}{r.kind}", gv, gvk,
            responses={"200": response("OK", ref(obj))}),
        "parameters": item_params + [P_PRETTY],
        "patch": patch_op(f"partially update the specified {r.kind}",
                          f"patch{prefix}{ns}{r.kind}", gv, gvk, obj),
        "put": operation(
            "put", f"replace the specified {r.kind}", f"replace{prefix}{ns}{r.kind}", gv, gvk,
            params=write_params, body=write_body, responses=created),
    }

    for sub in r.subresources:
        if sub == "log":
            paths[f"{coll}/{{name}}/log"] = {
                "get": operation(
                    "get", f"read log of the specified {r.kind}",
                    f"read{prefix}{ns}{r.kind}Log", gv, gvk, params=P_LOG,
                    responses={"200": response("OK", {"type": "string"}, ("text/plain",))}),
                "parameters": item_params + [P_PRETTY],
            }
            continue
        if sub == "status":
            sub_obj, sub_gvk, what, suffix = obj, gvk, "status", "Status"
        elif sub == "scale":
            sub_gvk = ("autoscaling", "v1", "Scale")
            sub_obj = schema_for_kind(schemas, *sub_gvk)
            what, suffix = "scale", "Scale"
        else:
            raise ValueError(sub)
        sub_body = {"content": content(ref(sub_obj), ("*/*",)), "required": True}
        sub_created = {"200": response("OK", ref(sub_obj)),
                       "201": response("Created", ref(sub_obj))}
        paths[f"{coll}/{{name}}/{sub}"] = {
            "get": operation(
                "get", f"read {what} of the specified {r.kind}",
                f"read{prefix}{ns}{r.kind}{suffix}", gv, sub_gvk,
                responses={"200": response("OK", ref(sub_obj))}),
            "parameters": item_params + [P_PRETTY],
            "patch": patch_op(f"partially update {what} of the specified {r.kind}",
                              f"patch{prefix}{ns}{r.kind}{suffix}", gv, sub_gvk, sub_obj),
            "put": operation(
                "put", f"replace {what} of the specified {r.kind}",
                f"replace{prefix}{ns}{r.kind}{suffix}", gv, sub_gvk,
                params=write_params, body=sub_body, responses=sub_created),
        }
    return paths


def patch_op(description: str, op_id: str, gv, gvk, obj: str) -> dict:
    return operation(
        "patch", description, op_id, gv, gvk,
        params=[P_DRY_RUN, P_FIELD_MANAGER_PATCH, P_FIELD_VALIDATION, P_FORCE],
        body={"content": content(ref("io.k8s.apimachinery.pkg.apis.meta.v1.Patch"), PATCH_TYPES),
              "required": True},
        responses={"200": response("OK", ref(obj)), "201": response("Created", ref(obj))})


def discovery_path(group: str, version: str) -> dict:
    return {
        "get": {
            "description": "get available resources",
            "operationId": f"get{group_prefix(group, version)}APIResources",
            "responses": {
                "200": response("OK", ref("io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList")),
                **UNAUTHORIZED,
            },
            "tags": [tag(group, version)],
        }
    }


def build_document(group: str, version: str, schemas: dict) -> dict:
    paths = {f"/{gv_path(group, version)}/": discovery_path(group, version)}
    for r in RESOURCES:
        if (r.group, r.version) == (group, version):
            paths.update(resource_paths(r, schemas))
    roots = refs_in(paths)
    for g, v, k in EXTRA_KINDS:
        if (g, v) == (group, version):
            roots.add(schema_for_kind(schemas, g, v, k))
    return {
        "components": {"schemas": closure(schemas, roots)},
        "info": {"title": "Kubernetes", "version": "unversioned"},
        "openapi": "3.0.0",
        "paths": dict(sorted(paths.items())),
    }


# --- output -----------------------------------------------------------------------------------

def file_name(path: str) -> str:
    """`apis/apps/v1` -> `apis__apps__v1_openapi.json.zst` (upstream's naming in api/openapi-spec/v3)."""
    return path.replace("/", "__") + "_openapi.json.zst"


def check_document(doc: dict, path: str) -> None:
    schemas = doc["components"]["schemas"]
    missing = {r for r in refs_in(doc) if r not in schemas}
    if missing:
        raise SourceError(f"{path}: unresolved references {sorted(missing)}")
    for route, item in doc["paths"].items():
        op = item.get("patch")
        if op is not None:
            names = [p["name"] for p in op.get("parameters", [])]
            if "fieldValidation" not in names or "x-kubernetes-group-version-kind" not in op:
                raise SourceError(f"{path}: PATCH {route} lacks fieldValidation or its GVK")


def rust_table(entries: list[dict], source: dict) -> str:
    lines = [
        "//! The table of embedded documents: written by `tools/openapi-gen/generate.sh`, not by hand.",
        "//!",
        "//! One entry per group-version, with the length and the SHA-512 (upper-case hex, as",
        "//! upstream's `/openapi/v3` index uses) of the decompressed JSON.",
        "",
        "// @generated by tools/openapi-gen/openapi_gen.py from " + source["package"] + ".",
        "",
        "use crate::Document;",
        "",
        "/// The Kubernetes release whose schemas the documents carry.",
        f"pub const KUBERNETES_VERSION: &str = {json.dumps(source['kubernetes'])};",
        "",
        "/// Where the schemas came from: the PyPI package and version the generator read.",
        f"pub const SOURCE: &str = {json.dumps(source['package'])};",
        "",
        "pub(crate) const GROUP_VERSIONS: &[&str] = &[",
    ]
    lines += [f"    {json.dumps(e['path'])}," for e in entries]
    lines += ["];", "", "pub(crate) const DOCUMENTS: &[Document] = &["]
    for e in entries:
        lines += [
            "    Document {",
            f"        path: {json.dumps(e['path'])},",
            f"        hash: {json.dumps(e['hash'])},",
            f"        len: {e['len']},",
            f"        zst: include_bytes!(\"../data/{e['file']}\"),",
            "    },",
        ]
    lines += ["];", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wheel", required=True, type=Path, help="kubernetes-validate wheel")
    ap.add_argument("--kubernetes-version", default="1.33.0",
                    help="which schema set of the wheel to use (default: %(default)s)")
    ap.add_argument("--crate-dir", required=True, type=Path, help="crates/openapi")
    ap.add_argument("--level", type=int, default=19, help="zstd level (default: %(default)s)")
    args = ap.parse_args(argv)

    member = f"kubernetes_validate/kubernetes-json-schema/v{args.kubernetes_version}-local/_definitions.json"
    with zipfile.ZipFile(args.wheel) as wheel:
        source_doc = json.loads(wheel.read(member))
        dist = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        package_version = next(line.split(":", 1)[1].strip()
                       for line in wheel.read(dist).decode().splitlines()
                       if line.startswith("Version:"))

    served = set(GROUP_VERSIONS)
    schemas = convert_definitions(source_doc["$defs"], served)

    data_dir = args.crate_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    for old in data_dir.glob("*_openapi.json.zst"):
        old.unlink()
    compressor = zstandard.ZstdCompressor(level=args.level, write_checksum=True)
    entries = []
    for group, version in GROUP_VERSIONS:
        path = gv_path(group, version)
        doc = build_document(group, version, schemas)
        check_document(doc, path)
        raw = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        packed = compressor.compress(raw)
        name = file_name(path)
        (data_dir / name).write_bytes(packed)
        entries.append({"path": path, "file": name, "len": len(raw),
                        "hash": hashlib.sha512(raw).hexdigest().upper()})
        print(f"{path:40} {len(doc['components']['schemas']):4} schemas "
              f"{len(doc['paths']):3} paths {len(raw):8} B json {len(packed):7} B zst")

    source = {"kubernetes": f"v{args.kubernetes_version}",
              "package": f"kubernetes-validate {package_version} (PyPI)"}
    (args.crate_dir / "src" / "generated.rs").write_text(rust_table(entries, source))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
