//! The OpenAPI v3 documents Axle serves at `/openapi/v3/<group-version>`.
//!
//! kubectl reads them for two things. `kubectl explain` walks `components.schemas` from the
//! schema whose `x-kubernetes-group-version-kind` names the kind asked for. `kubectl apply` and
//! `create` (1.29 and later) look for a PATCH operation of the object's kind that takes a
//! `fieldValidation` query parameter; when they find one they skip client-side validation and
//! send `fieldValidation=Strict`, leaving the check to the server.
//!
//! The documents hold upstream's schemas for the built-in kinds Axle serves (descriptions,
//! `x-kubernetes-patch-merge-key`, `x-kubernetes-list-type`, …, named as upstream names them,
//! e.g. `io.k8s.api.core.v1.Pod`) and only the schemas those kinds reach. They are produced
//! offline by `tools/openapi-gen` (see its README) from the PyPI package named in [`SOURCE`],
//! and embedded here zstd-compressed, with a table ([`generated`]) of their content hashes.
//!
//! This crate does no I/O and knows nothing about HTTP: the API server maps the path of a request
//! to [`document`] and the `?hash=` of the `/openapi/v3` index to [`hash`].
//!
//! ```
//! let body = openapi::document("apis/apps/v1").expect("apps/v1 is served");
//! assert!(body.starts_with(b"{"));
//! assert_eq!(openapi::hash("apis/apps/v1").map(str::len), Some(128));
//! ```

pub mod generated;

mod skeletons {
    include!(concat!(env!("OUT_DIR"), "/skeletons.rs"));
}

pub use generated::{KUBERNETES_VERSION, SOURCE};

/// One embedded document.
pub(crate) struct Document {
    /// The group-version path as it follows `/openapi/v3/`: `api/v1`, `apis/apps/v1`.
    pub(crate) path: &'static str,
    /// SHA-512 of the decompressed JSON, upper-case hex.
    pub(crate) hash: &'static str,
    /// Length of the decompressed JSON in bytes.
    pub(crate) len: usize,
    /// The JSON, zstd-compressed.
    pub(crate) zst: &'static [u8],
}

/// The group-version paths that have a document, in discovery order: `api/v1`, `apis/apps/v1`, …
///
/// These are the keys of the `paths` map of the `/openapi/v3` index.
pub fn group_versions() -> &'static [&'static str] {
    generated::GROUP_VERSIONS
}

/// The JSON document for a group-version path such as `api/v1` or `apis/apps/v1` (a leading `/`
/// is ignored), or `None` when the path has none.
///
/// Each call decompresses the document anew (the largest, `api/v1`, is about 400 KiB); a caller
/// serving it often may keep the bytes, keyed by [`hash`].
pub fn document(path: &str) -> Option<Vec<u8>> {
    find(path).map(decompress)
}

/// A stable hash of the document for `path`: the SHA-512 of its JSON in upper-case hex, the form
/// upstream uses for `?hash=` in the `/openapi/v3` index (and as the document's ETag).
pub fn hash(path: &str) -> Option<&'static str> {
    find(path).map(|doc| doc.hash)
}

/// The schema skeletons: every schema of the documents, by name (`io.k8s.api.core.v1.Pod`), as
/// compact JSON without `description` and `example`, sorted by name. A schema's place in this
/// slice is its index for [`skeleton_index`].
///
/// The skeletons are the schemas' structure (types, properties, `$ref`s, `x-kubernetes-*`), a
/// small fraction of the documents' bytes: enough to check objects against, with nothing to
/// decompress and only the schemas a check reaches to parse.
pub fn skeletons() -> &'static [(&'static str, &'static str)] {
    skeletons::SKELETONS
}

/// The index in [`skeletons`] of the schema named `name`, which may be given as a `$ref`
/// (`#/components/schemas/io.k8s.api.core.v1.PodSpec`).
pub fn skeleton_index(name: &str) -> Option<usize> {
    let name = name.strip_prefix("#/components/schemas/").unwrap_or(name);
    skeletons::SKELETONS.binary_search_by(|(candidate, _)| (*candidate).cmp(name)).ok()
}

/// The name of the schema of a built-in kind, from its `x-kubernetes-group-version-kind`:
/// `("apps", "v1", "Deployment")` → `io.k8s.api.apps.v1.Deployment`.
pub fn schema_of_kind(group: &str, version: &str, kind: &str) -> Option<&'static str> {
    skeletons::KINDS
        .binary_search_by(|((g, v, k), _)| (*g, *v, *k).cmp(&(group, version, kind)))
        .ok()
        .map(|i| skeletons::KINDS[i].1)
}

fn find(path: &str) -> Option<&'static Document> {
    let path = path.strip_prefix('/').unwrap_or(path);
    generated::DOCUMENTS.iter().find(|doc| doc.path == path)
}

fn decompress(doc: &Document) -> Vec<u8> {
    let mut out = Vec::with_capacity(doc.len);
    // The embedded bytes are fixed at build time and checked by this crate's tests, so a failure
    // here means a corrupted build rather than bad input.
    ruzstd::decoding::FrameDecoder::new()
        .decode_all_to_vec(doc.zst, &mut out)
        .unwrap_or_else(|e| panic!("embedded OpenAPI document '{}' does not decode: {e}", doc.path));
    assert_eq!(out.len(), doc.len, "embedded OpenAPI document '{}' has the wrong length", doc.path);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use sha2::{Digest, Sha512};

    const SCHEMA_REF: &str = "#/components/schemas/";

    fn parsed(path: &str) -> Value {
        let bytes = document(path).unwrap_or_else(|| panic!("no document for '{path}'"));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("'{path}' is not JSON: {e}"))
    }

    fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
        &doc["components"]["schemas"][name]
    }

    fn gvk(group: &str, version: &str, kind: &str) -> Value {
        serde_json::json!({"group": group, "version": version, "kind": kind})
    }

    fn collect_refs<'a>(value: &'a Value, refs: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    match (key.as_str(), child) {
                        ("$ref", Value::String(target)) => refs.push(target),
                        _ => collect_refs(child, refs),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| collect_refs(item, refs)),
            _ => {}
        }
    }

    #[test]
    fn group_versions_match_the_served_set() {
        assert_eq!(
            group_versions(),
            [
                "api/v1",
                "apis/apps/v1",
                "apis/coordination.k8s.io/v1",
                "apis/apiextensions.k8s.io/v1",
                "apis/autoscaling/v1",
                "apis/authorization.k8s.io/v1",
                "apis/authentication.k8s.io/v1",
                "apis/rbac.authorization.k8s.io/v1",
                "apis/batch/v1",
            ]
        );
    }

    #[test]
    fn document_decompresses_every_group_version() {
        for path in group_versions() {
            let bytes = document(path).expect("listed paths have a document");
            assert!(!bytes.is_empty(), "'{path}' is empty");
        }
    }

    #[test]
    fn document_is_an_openapi_3_document() {
        for path in group_versions() {
            let doc = parsed(path);
            assert_eq!(doc["openapi"], "3.0.0", "{path}");
            assert_eq!(doc["info"]["title"], "Kubernetes", "{path}");
            assert!(doc["paths"].is_object(), "{path}");
            assert!(!doc["components"]["schemas"].as_object().expect("schemas").is_empty(), "{path}");
        }
    }

    #[test]
    fn document_ignores_a_leading_slash() {
        assert_eq!(document("/api/v1"), document("api/v1"));
        assert_eq!(hash("/apis/apps/v1"), hash("apis/apps/v1"));
    }

    #[test]
    fn document_unknown_group_version_is_none() {
        for path in ["", "api", "api/v2", "apis/batch/v1beta1", "apis/apps/v1beta1", "apis/apps/v1/"] {
            assert_eq!(document(path), None, "'{path}'");
            assert_eq!(hash(path), None, "'{path}'");
        }
    }

    #[test]
    fn hash_is_the_sha512_of_the_document() {
        for path in group_versions() {
            let expected: String =
                Sha512::digest(document(path).expect("document")).iter().map(|b| format!("{b:02X}")).collect();
            assert_eq!(hash(path), Some(expected.as_str()), "{path}");
        }
    }

    #[test]
    fn refs_all_resolve_within_their_document() {
        for path in group_versions() {
            let doc = parsed(path);
            let mut refs = Vec::new();
            collect_refs(&doc, &mut refs);
            assert!(!refs.is_empty(), "{path}");
            for target in refs {
                let name = target
                    .strip_prefix(SCHEMA_REF)
                    .unwrap_or_else(|| panic!("{path}: '{target}' is not a components/schemas ref"));
                assert!(schema(&doc, name).is_object(), "{path}: '{target}' does not resolve");
            }
        }
    }

    #[test]
    fn pod_schema_has_group_version_kind_and_upstream_extensions() {
        let doc = parsed("api/v1");
        let pod = schema(&doc, "io.k8s.api.core.v1.Pod");
        assert_eq!(pod["x-kubernetes-group-version-kind"], serde_json::json!([gvk("", "v1", "Pod")]));
        assert!(pod["description"].as_str().is_some_and(|d| d.starts_with("Pod is a collection of containers")));
        assert_eq!(pod["properties"]["spec"]["allOf"][0]["$ref"], "#/components/schemas/io.k8s.api.core.v1.PodSpec");

        let containers = &schema(&doc, "io.k8s.api.core.v1.PodSpec")["properties"]["containers"];
        assert_eq!(containers["type"], "array");
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-list-type"], "map");
        assert_eq!(schema(&doc, "io.k8s.api.core.v1.Container")["required"], serde_json::json!(["name"]));
    }

    #[test]
    fn served_kinds_have_a_schema_with_their_group_version_kind() {
        let kinds: &[(&str, &str, &str, &[&str])] = &[
            (
                "api/v1",
                "",
                "v1",
                &["Namespace", "Node", "Pod", "ConfigMap", "Secret", "Event", "Service", "ServiceAccount", "PodList"],
            ),
            ("apis/apps/v1", "apps", "v1", &["Deployment", "ReplicaSet", "DaemonSet", "DeploymentList"]),
            ("apis/coordination.k8s.io/v1", "coordination.k8s.io", "v1", &["Lease", "LeaseList"]),
            ("apis/apiextensions.k8s.io/v1", "apiextensions.k8s.io", "v1", &["CustomResourceDefinition"]),
            ("apis/autoscaling/v1", "autoscaling", "v1", &["Scale"]),
            ("apis/authorization.k8s.io/v1", "authorization.k8s.io", "v1", &["SelfSubjectAccessReview"]),
            (
                "apis/rbac.authorization.k8s.io/v1",
                "rbac.authorization.k8s.io",
                "v1",
                &["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "RoleList"],
            ),
        ];
        for (path, group, version, names) in kinds {
            let doc = parsed(path);
            let schemas = doc["components"]["schemas"].as_object().expect("schemas");
            for kind in *names {
                let want = gvk(group, version, kind);
                let found = schemas.values().filter(|s| {
                    s["x-kubernetes-group-version-kind"].as_array().is_some_and(|list| list.contains(&want))
                });
                assert_eq!(found.count(), 1, "{path}: one schema for {kind}");
            }
        }
    }

    #[test]
    fn every_patch_operation_takes_field_validation_and_names_its_kind() {
        for path in group_versions() {
            let doc = parsed(path);
            for (route, item) in doc["paths"].as_object().expect("paths") {
                let Some(patch) = item.get("patch") else {
                    continue;
                };
                let params = patch["parameters"].as_array().expect("inline parameters");
                assert!(params.iter().any(|p| p["name"] == "fieldValidation"), "{path}: PATCH {route}");
                assert!(patch["x-kubernetes-group-version-kind"]["kind"].is_string(), "{path}: PATCH {route}");
            }
        }
    }

    #[test]
    fn patch_operations_exist_for_each_mutable_kind() {
        let cases = [
            ("api/v1", "/api/v1/namespaces/{namespace}/pods/{name}", gvk("", "v1", "Pod")),
            ("api/v1", "/api/v1/namespaces/{name}", gvk("", "v1", "Namespace")),
            (
                "apis/apps/v1",
                "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
                gvk("apps", "v1", "Deployment"),
            ),
            (
                "apis/apps/v1",
                "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale",
                gvk("autoscaling", "v1", "Scale"),
            ),
            (
                "apis/apiextensions.k8s.io/v1",
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}",
                gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            ),
            (
                "apis/rbac.authorization.k8s.io/v1",
                "/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}",
                gvk("rbac.authorization.k8s.io", "v1", "ClusterRole"),
            ),
        ];
        for (path, route, want) in cases {
            let doc = parsed(path);
            assert_eq!(doc["paths"][route]["patch"]["x-kubernetes-group-version-kind"], want, "{path}: {route}");
        }
    }

    #[test]
    fn int_or_string_and_quantity_have_upstream_v3_forms() {
        let doc = parsed("apis/apps/v1");
        let int_or_string = schema(&doc, "io.k8s.apimachinery.pkg.util.intstr.IntOrString");
        assert_eq!(int_or_string["format"], "int-or-string");
        assert_eq!(int_or_string["oneOf"], serde_json::json!([{"type": "integer"}, {"type": "string"}]));
        let quantity = schema(&doc, "io.k8s.apimachinery.pkg.api.resource.Quantity");
        assert_eq!(quantity["oneOf"], serde_json::json!([{"type": "string"}, {"type": "number"}]));
        assert!(quantity["description"].as_str().is_some_and(|d| d.starts_with("Quantity is")));
    }

    /// Whether `skeleton` is `schema` without its documentation: the same keys and values, less
    /// `description` and `example` where they are keywords (the keys of `properties` are field
    /// names and all stay).
    fn is_undocumented(schema: &Value, skeleton: &Value, field_names: bool) -> bool {
        match (schema, skeleton) {
            (Value::Object(documented), Value::Object(bare)) => {
                let kept = documented
                    .iter()
                    .filter(|(key, _)| field_names || !matches!(key.as_str(), "description" | "example"));
                kept.clone().count() == bare.len()
                    && kept.into_iter().all(|(key, value)| {
                        bare.get(key).is_some_and(|b| is_undocumented(value, b, !field_names && key == "properties"))
                    })
            }
            (Value::Array(documented), Value::Array(bare)) => {
                documented.len() == bare.len() && documented.iter().zip(bare).all(|(d, b)| is_undocumented(d, b, false))
            }
            (documented, bare) => documented == bare,
        }
    }

    #[test]
    fn skeletons_are_the_documents_schemas_without_their_documentation() {
        let mut seen = 0;
        for path in group_versions() {
            let doc = parsed(path);
            for (name, documented) in doc["components"]["schemas"].as_object().expect("schemas") {
                let index = skeleton_index(name).unwrap_or_else(|| panic!("{path}: no skeleton for {name}"));
                let (skeleton_name, json) = skeletons()[index];
                assert_eq!(skeleton_name, name);
                let skeleton: Value = serde_json::from_str(json).expect("a skeleton is JSON");
                assert!(is_undocumented(documented, &skeleton, false), "{path}: skeleton of {name}");
                seen += 1;
            }
        }
        assert!(seen > skeletons().len(), "documents share schemas");
        let total: usize = skeletons().iter().map(|(_, json)| json.len()).sum();
        let documents: usize = group_versions().iter().filter_map(|p| document(p)).map(|d| d.len()).sum();
        assert!(total * 5 < documents, "skeletons take {total} bytes, the documents {documents}");
    }

    #[test]
    fn skeletons_keep_fields_named_like_documentation_keywords() {
        let name = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps";
        let index = skeleton_index(&format!("{SCHEMA_REF}{name}")).expect("JSONSchemaProps");
        let props: Value = serde_json::from_str(skeletons()[index].1).expect("JSON");
        assert!(props.get("description").is_none());
        assert_eq!(props["properties"]["description"]["type"], "string");
        assert!(props["properties"]["example"].is_object());
    }

    #[test]
    fn schema_of_kind_names_the_schema_of_each_served_kind() {
        assert_eq!(schema_of_kind("", "v1", "Pod"), Some("io.k8s.api.core.v1.Pod"));
        assert_eq!(schema_of_kind("apps", "v1", "Deployment"), Some("io.k8s.api.apps.v1.Deployment"));
        assert_eq!(
            schema_of_kind("rbac.authorization.k8s.io", "v1", "ClusterRole"),
            Some("io.k8s.api.rbac.v1.ClusterRole")
        );
        assert_eq!(schema_of_kind("apps", "v1", "Pod"), None);
        assert_eq!(schema_of_kind("", "v2", "Pod"), None);
        assert_eq!(skeleton_index("io.k8s.api.core.v1.Nothing"), None);
        assert!(skeletons().windows(2).all(|pair| pair[0].0 < pair[1].0), "sorted by name");
    }

    #[test]
    fn schemas_carry_no_json_schema_only_constructs() {
        // The source is JSON Schema 2020-12 with nullable type lists; OpenAPI 3.0 has neither.
        for path in group_versions() {
            let bytes = document(path).expect("document");
            let text = std::str::from_utf8(&bytes).expect("UTF-8");
            assert!(!text.contains("\"null\""), "{path}: a null type survived");
            assert!(!text.contains("$defs"), "{path}: a JSON Schema $defs ref survived");
        }
    }
}
