//! OpenAPI schemas at run time: the structural skeletons of the built-in kinds (for unknown-field
//! detection and pruning) and the OpenAPI documents of custom resources (from their CRDs).

use api::resource::ResourceType;
use api::schema::{walk, Findings, Walk};
use api::{ApiError, Registry};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::OnceLock;

/// A JSON value read with `description`/`example` keys skipped: the schema skeleton is a small
/// fraction of the documented OpenAPI document, so holding it costs little memory.
struct Skeleton(Value);

impl<'de> Deserialize<'de> for Skeleton {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SkeletonVisitor;
        impl<'de> Visitor<'de> for SkeletonVisitor {
            type Value = Skeleton;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Skeleton, E> {
                Ok(Skeleton(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Skeleton, E> {
                Ok(Skeleton(json!(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Skeleton, E> {
                Ok(Skeleton(json!(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Skeleton, E> {
                Ok(Skeleton(json!(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Skeleton, E> {
                Ok(Skeleton(Value::String(v.to_string())))
            }
            fn visit_unit<E>(self) -> Result<Skeleton, E> {
                Ok(Skeleton(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skeleton, A::Error> {
                let mut items = Vec::new();
                while let Some(Skeleton(item)) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Skeleton(Value::Array(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skeleton, A::Error> {
                let mut out = Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "description" || key == "example" {
                        map.next_value::<IgnoredAny>()?;
                    } else {
                        let Skeleton(value) = map.next_value()?;
                        out.insert(key, value);
                    }
                }
                Ok(Skeleton(Value::Object(out)))
            }
        }
        deserializer.deserialize_any(SkeletonVisitor)
    }
}

/// Schema skeletons of all built-in group versions, by schema name, loaded on first use.
struct BuiltinSchemas {
    schemas: HashMap<String, Value>,
    /// (group, version, kind) → schema name.
    by_kind: HashMap<(String, String, String), String>,
}

fn builtin_schemas() -> &'static BuiltinSchemas {
    static SCHEMAS: OnceLock<BuiltinSchemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let mut schemas = HashMap::new();
        let mut by_kind = HashMap::new();
        for path in openapi::group_versions() {
            let Some(bytes) = openapi::document(path) else { continue };
            let Ok(Skeleton(mut doc)) = serde_json::from_slice::<Skeleton>(&bytes) else {
                tracing::error!(%path, "embedded OpenAPI document does not parse");
                continue;
            };
            let Value::Object(components) = doc["components"]["schemas"].take() else { continue };
            for (name, schema) in components {
                for gvk in schema["x-kubernetes-group-version-kind"].as_array().into_iter().flatten() {
                    let key = (
                        gvk["group"].as_str().unwrap_or("").to_string(),
                        gvk["version"].as_str().unwrap_or("").to_string(),
                        gvk["kind"].as_str().unwrap_or("").to_string(),
                    );
                    by_kind.entry(key).or_insert_with(|| name.clone());
                }
                schemas.entry(name).or_insert(schema);
            }
        }
        // The decompressed documents were the server's largest allocation and are freed now;
        // give their pages back rather than keep them in the allocator's free lists.
        // SAFETY: malloc_trim only returns free heap pages to the kernel.
        unsafe { libc::malloc_trim(0) };
        BuiltinSchemas { schemas, by_kind }
    })
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
        let schemas = builtin_schemas();
        let key = (rt.group.clone(), rt.version.clone(), rt.kind.clone());
        match schemas.by_kind.get(&key).and_then(|name| schemas.schemas.get(name)) {
            Some(schema) => {
                let resolve =
                    |reference: &str| schemas.schemas.get(reference.trim_start_matches("#/components/schemas/"));
                walk(schema, obj, "", &resolve, Walk { prune: true, check_types: false })
            }
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
