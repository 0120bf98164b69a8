//! OpenAPI schemas at run time: the structural skeletons of the built-in kinds (for unknown-field
//! detection and pruning) and the OpenAPI documents of custom resources (from their CRDs).

use api::resource::ResourceType;
use api::schema::{walk, Findings, Walk};
use api::{ApiError, Registry};
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

/// The skeleton of the built-in schema named `name` (or `#/components/schemas/<name>`), parsed
/// the first time a check reaches it and kept from then on. Only the schemas of kinds written
/// since start are ever parsed: a server that stores ClusterRoles and Pods holds those, not the
/// two hundred other schemas of the embedded documents.
fn builtin_schema(name: &str) -> Option<&'static Value> {
    static PARSED: OnceLock<Vec<OnceLock<Value>>> = OnceLock::new();
    let parsed = PARSED.get_or_init(|| openapi::skeletons().iter().map(|_| OnceLock::new()).collect());
    let index = openapi::skeleton_index(name)?;
    Some(parsed[index].get_or_init(|| {
        let (name, json) = openapi::skeletons()[index];
        serde_json::from_str(json).unwrap_or_else(|e| {
            // The skeletons are built with the binary and checked by the openapi crate's tests:
            // this is a broken build. An empty schema accepts any value rather than prune it.
            tracing::error!(%name, error = %e, "embedded schema skeleton does not parse");
            json!({})
        })
    }))
}

/// How unknown fields are treated (the `fieldValidation` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

impl FieldValidation {
    pub fn parse(value: Option<&str>) -> Result<FieldValidation, ApiError> {
        match value {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other:?}; supported values: Ignore, Strict, Warn"
            ))),
        }
    }
}

/// Checks an object against its schema: prunes unknown fields (returned as warnings), fails in
/// strict mode, and for custom resources checks types and constraints (422).
pub fn check(rt: &ResourceType, obj: &mut Value, validation: FieldValidation) -> Result<Vec<String>, ApiError> {
    let findings = if rt.custom {
        match &rt.schema {
            Some(schema) => {
                let mut schema = (**schema).clone();
                // Every object has these; CRD schemas usually omit them.
                if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
                    for field in ["apiVersion", "kind"] {
                        props.entry(field).or_insert(json!({"type": "string"}));
                    }
                    props.insert(
                        "metadata".into(),
                        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
                    );
                }
                let no_refs = Map::new();
                walk(&schema, obj, "", &|r| no_refs.get(r), Walk { prune: true, check_types: true })
            }
            None => Findings::default(),
        }
    } else {
        match openapi::schema_of_kind(&rt.group, &rt.version, &rt.kind).and_then(builtin_schema) {
            Some(schema) => walk(schema, obj, "", &builtin_schema, Walk { prune: true, check_types: false }),
            None => Findings::default(),
        }
    };
    if !findings.causes.is_empty() {
        return Err(ApiError::invalid(&rt.group, &rt.kind, api::meta::name_of(obj), findings.causes));
    }
    let unknown = findings.unknown_fields;
    match validation {
        FieldValidation::Strict if !unknown.is_empty() => {
            let list: Vec<String> = unknown.iter().map(|f| format!("unknown field {f:?}")).collect();
            Err(ApiError::bad_request(format!(
                "{} in version {:?} cannot be handled as a {}: strict decoding error: {}",
                rt.kind,
                rt.version,
                rt.kind,
                list.join(", ")
            )))
        }
        FieldValidation::Warn => Ok(unknown.into_iter().map(|f| format!("unknown field {f:?}")).collect()),
        _ => Ok(Vec::new()),
    }
}

/// The OpenAPI v3 document of one custom group version, built from the CRDs' schemas, in the
/// shape kubectl reads (`x-kubernetes-group-version-kind` on schemas and PATCH operations).
pub fn custom_document(registry: &Registry, group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    let reversed: Vec<&str> = group.split('.').rev().collect();
    for t in registry.in_group_version(group, version).filter(|t| t.custom) {
        let name = format!("{}.{version}.{}", reversed.join("."), t.kind);
        let gvk = json!([{"group": group, "version": version, "kind": t.kind}]);
        let mut schema = t.schema.as_deref().cloned().unwrap_or_else(|| json!({"type": "object"}));
        if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
            props.entry("apiVersion").or_insert(json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
            props.entry("kind").or_insert(json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
            props.entry("metadata").or_insert(json!({"type": "object", "description": "Standard object's metadata."}));
        }
        schema["x-kubernetes-group-version-kind"] = gvk.clone();
        let reference = json!({"$ref": format!("#/components/schemas/{name}")});
        let ok = json!({"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}});
        let params = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        ]);
        let op = |verb: &str| {
            json!({"operationId": format!("{verb}{}{}", t.kind, version), "parameters": params,
                   "responses": ok, "x-kubernetes-action": verb, "x-kubernetes-group-version-kind": gvk[0]})
        };
        let base = if t.namespaced() {
            format!("/apis/{group}/{version}/namespaces/{{namespace}}/{}", t.plural)
        } else {
            format!("/apis/{group}/{version}/{}", t.plural)
        };
        paths.insert(base.clone(), json!({"get": op("list"), "post": op("post")}));
        paths.insert(
            format!("{base}/{{name}}"),
            json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}),
        );
        schemas.insert(name, schema);
    }
    json!({"openapi": "3.0.0", "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
           "paths": paths, "components": {"schemas": schemas}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin(api_version: &str, kind: &str) -> ResourceType {
        Registry::builtin().by_kind(api_version, kind).expect("a built-in kind").clone()
    }

    #[test]
    fn unknown_fields_of_built_in_kinds_are_warned_about_and_pruned() {
        let rt = builtin("v1", "ConfigMap");
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labelz": {}},
                            "data": {"k": "v"}, "dta": 1});
        let warnings = check(&rt, &mut cm, FieldValidation::Warn).expect("warnings only");
        assert_eq!(warnings, ["unknown field \"metadata.labelz\"", "unknown field \"dta\""]);
        assert_eq!(cm, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}}));

        let mut strict = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "dta": 1});
        let error = check(&rt, &mut strict, FieldValidation::Strict).expect_err("strict");
        assert!(error.to_string().contains("unknown field \"dta\""), "{error}");
    }

    #[test]
    fn nested_references_of_built_in_kinds_are_followed() {
        let rt = builtin("apps/v1", "Deployment");
        let mut deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "a"}},
                "spec": {"containers": [{"name": "c", "image": "i", "imagee": "typo",
                    "resources": {"limits": {"memory": "1Mi"}}}]}}}});
        let warnings = check(&rt, &mut deployment, FieldValidation::Warn).expect("warnings only");
        assert_eq!(warnings, ["unknown field \"spec.template.spec.containers[0].imagee\""]);
        assert_eq!(deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"], "1Mi");
    }

    #[test]
    fn a_crd_schema_keeps_its_descriptions_and_examples() {
        let rt = builtin("apiextensions.k8s.io/v1", "CustomResourceDefinition");
        let schema = json!({"type": "object", "description": "A widget.",
            "properties": {"size": {"type": "integer", "description": "How big.", "example": 3}}});
        let mut crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": schema.clone()}}]}});
        let warnings = check(&rt, &mut crd, FieldValidation::Strict).expect("a valid CRD");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], schema);
    }
}
