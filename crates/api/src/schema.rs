//! Structural OpenAPI v3 checks: unknown fields (for `fieldValidation=Strict` and pruning of
//! custom resources) and type/constraint errors (custom resources' `openAPIV3Schema`).
//!
//! One walker serves both the built-in kinds (schemas from the embedded OpenAPI documents,
//! with `$ref`/`allOf` indirection) and CRDs (inline structural schemas). It supports the
//! keywords schemas commonly use: `type`, `properties`, `additionalProperties`, `items`,
//! `required`, `enum`, `minimum`/`maximum`, `minLength`/`maxLength`, `minItems`/`maxItems`,
//! `nullable`, `x-kubernetes-preserve-unknown-fields`, `x-kubernetes-int-or-string`,
//! `x-kubernetes-embedded-resource`, and `allOf`/`anyOf`/`oneOf` for type alternatives.

use crate::error::Cause;
use serde_json::{Map, Value};

/// Resolves a `$ref` such as `#/components/schemas/io.k8s.api.core.v1.PodSpec`.
pub type Resolver<'a> = &'a dyn Fn(&str) -> Option<&'a Value>;

/// What a walk found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Findings {
    /// Paths of fields the schema does not know (`spec.containers[0].imagee`).
    pub unknown_fields: Vec<String>,
    /// Type and constraint violations.
    pub causes: Vec<Cause>,
}

/// Options of one walk.
#[derive(Debug, Clone, Copy, Default)]
pub struct Walk {
    /// Remove unknown fields from the object (CRs are pruned as Kubernetes prunes them).
    pub prune: bool,
    /// Report type and constraint violations (CRs). Built-in kinds rely on typed validation.
    pub check_types: bool,
}

const MAX_DEPTH: usize = 64;

/// Walks `value` against `schema`; `path` is the field path of `value` (`""` for the root).
pub fn walk<'a>(schema: &'a Value, value: &mut Value, path: &str, resolve: Resolver<'a>, options: Walk) -> Findings {
    let mut findings = Findings::default();
    walk_inner(schema, value, path, resolve, options, &mut findings, 0);
    findings
}

/// Follows `$ref` and single-element `allOf` wrappers to the schema that describes a value.
fn deref<'a>(schema: &'a Value, resolve: Resolver<'a>) -> &'a Value {
    let mut current = schema;
    for _ in 0..16 {
        if let Some(reference) = current.get("$ref").and_then(Value::as_str) {
            match resolve(reference) {
                Some(target) => current = target,
                None => return current,
            }
        } else if let Some([only]) = current.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
            if current.get("properties").is_none() && current.get("type").is_none() {
                current = only;
            } else {
                return current;
            }
        } else {
            return current;
        }
    }
    current
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match (expected, value) {
        ("number", Value::Number(_)) => true,
        ("integer", Value::Number(n)) => n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => expected == type_name(value),
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The alternatives a schema offers through `anyOf`/`oneOf`, dereferenced.
fn alternatives<'a>(schema: &'a Value, resolve: Resolver<'a>) -> Vec<&'a Value> {
    ["anyOf", "oneOf"]
        .iter()
        .filter_map(|k| schema.get(*k).and_then(Value::as_array))
        .flatten()
        .map(|s| deref(s, resolve))
        .collect()
}

fn walk_inner<'a>(
    schema: &'a Value,
    value: &mut Value,
    path: &str,
    resolve: Resolver<'a>,
    options: Walk,
    findings: &mut Findings,
    depth: usize,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let schema = deref(schema, resolve);
    // Kubernetes treats a null as an absent field rather than a type error.
    if value.is_null() {
        return;
    }
    let int_or_string = schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true)
        || schema.get("format").and_then(Value::as_str) == Some("int-or-string");
    let declared = schema.get("type").and_then(Value::as_str);
    let alts = alternatives(schema, resolve);
    if options.check_types {
        let ok = if int_or_string {
            matches!(value, Value::String(_)) || type_matches("integer", value)
        } else if let Some(t) = declared {
            type_matches(t, value)
        } else if !alts.is_empty() {
            alts.iter().any(|alt| alt.get("type").and_then(Value::as_str).is_none_or(|t| type_matches(t, value)))
        } else {
            true
        };
        if !ok {
            let expected =
                if int_or_string { "integer or string" } else { declared.unwrap_or("one of the allowed types") };
            findings.causes.push(Cause {
                reason: "FieldValueTypeInvalid",
                message: format!(
                    "Invalid value: {:?}: {path} in body must be of type {expected}: {:?}",
                    type_name(value),
                    type_name(value)
                ),
                field: path.to_string(),
            });
            return;
        }
        check_constraints(schema, value, path, findings);
    }
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true);
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let embedded = schema.get("x-kubernetes-embedded-resource").and_then(Value::as_bool) == Some(true);
            walk_object(map, properties, additional, embedded, preserve, path, resolve, options, findings, depth);
            if options.check_types {
                for req in
                    schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
                {
                    if map.get(req).is_none_or(Value::is_null) {
                        findings.causes.push(Cause::required(child(path, req)));
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk_inner(item_schema, item, &format!("{path}[{i}]"), resolve, options, findings, depth + 1);
                }
            }
        }
        _ => {}
    }
}

#[allow(clippy::too_many_arguments)]
fn walk_object<'a>(
    map: &mut Map<String, Value>,
    properties: Option<&'a Map<String, Value>>,
    additional: Option<&'a Value>,
    embedded: bool,
    preserve: bool,
    path: &str,
    resolve: Resolver<'a>,
    options: Walk,
    findings: &mut Findings,
    depth: usize,
) {
    let mut unknown = Vec::new();
    for (key, field_value) in map.iter_mut() {
        let field_path = child(path, key);
        if let Some(prop) = properties.and_then(|p| p.get(key)) {
            walk_inner(prop, field_value, &field_path, resolve, options, findings, depth + 1);
        } else if let Some(extra) = additional.filter(|a| a.is_object()) {
            walk_inner(extra, field_value, &field_path, resolve, options, findings, depth + 1);
        } else if embedded && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            // Embedded resources always carry their type and metadata.
        } else if preserve || additional == Some(&Value::Bool(true)) || (properties.is_none() && additional.is_none()) {
            // Free-form map: anything goes.
        } else {
            unknown.push(key.clone());
        }
    }
    for key in unknown {
        findings.unknown_fields.push(child(path, &key));
        if options.prune {
            map.remove(&key);
        }
    }
}

fn check_constraints(schema: &Value, value: &Value, path: &str, findings: &mut Findings) {
    let mut fail = |message: String| {
        findings.causes.push(Cause { reason: "FieldValueInvalid", message, field: path.to_string() });
    };
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            findings.causes.push(Cause {
                reason: "FieldValueNotSupported",
                message: format!("Unsupported value: {value}: supported values: {}", list.join(", ")),
                field: path.to_string(),
            });
            return;
        }
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
            if n < min {
                fail(format!("Invalid value: {value}: {path} in body should be greater than or equal to {min}"));
            }
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
            if n > max {
                fail(format!("Invalid value: {value}: {path} in body should be less than or equal to {max}"));
            }
        }
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
            if len < min {
                fail(format!("Invalid value: {value}: {path} in body should be at least {min} chars long"));
            }
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
            if len > max {
                fail(format!("Too long: may not be more than {max} bytes"));
            }
        }
    }
    if let Some(items) = value.as_array() {
        let len = items.len() as u64;
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
            if len < min {
                fail(format!("Invalid value: {len}: {path} in body should have at least {min} items"));
            }
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
            if len > max {
                fail(format!("Too many: {len}: must have at most {max} items"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Schemas without `$ref`s resolve nothing.
    fn walk_plain(schema: &Value, obj: &mut Value, options: Walk) -> Findings {
        let no_definitions = json!({});
        walk(schema, obj, "", &|r| no_definitions.get(r), options)
    }

    #[test]
    fn walk_reports_and_prunes_unknown_fields() {
        let schema = json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}});
        let mut obj = json!({"spec": {"size": 3, "colour": "red"}, "status": {"anything": 1}});
        let findings = walk_plain(&schema, &mut obj, Walk { prune: true, check_types: true });
        assert_eq!(findings.unknown_fields, vec!["spec.colour"]);
        assert!(findings.causes.is_empty());
        assert_eq!(obj, json!({"spec": {"size": 3}, "status": {"anything": 1}}));
    }

    #[test]
    fn walk_checks_types_enums_and_bounds() {
        let schema = json!({"type": "object", "required": ["spec"], "properties": {"spec": {"type": "object",
            "required": ["mode"],
            "properties": {"size": {"type": "integer", "minimum": 1, "maximum": 5},
                           "mode": {"type": "string", "enum": ["a", "b"]},
                           "port": {"x-kubernetes-int-or-string": true}}}}});
        let mut obj = json!({"spec": {"size": "big", "mode": "c", "port": "http"}});
        let findings = walk_plain(&schema, &mut obj, Walk { prune: false, check_types: true });
        let fields: Vec<&str> = findings.causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, vec!["spec.mode", "spec.size"]);
        let mut obj = json!({"spec": {"size": 9, "mode": "a"}});
        let findings = walk_plain(&schema, &mut obj, Walk { prune: false, check_types: true });
        assert_eq!(findings.causes.len(), 1);
        let mut obj = json!({});
        let findings = walk_plain(&schema, &mut obj, Walk { prune: false, check_types: true });
        assert_eq!(findings.causes, vec![Cause::required("spec")]);
    }

    #[test]
    fn walk_follows_refs() {
        let defs = json!({"Inner": {"type": "object", "properties": {"a": {"type": "string"}}}});
        let resolve = |r: &str| defs.get(r.trim_start_matches("#/components/schemas/"));
        let schema =
            json!({"type": "object", "properties": {"inner": {"allOf": [{"$ref": "#/components/schemas/Inner"}]}}});
        let mut obj = json!({"inner": {"a": "x", "b": "y"}});
        let findings = walk(&schema, &mut obj, "", &resolve, Walk::default());
        assert_eq!(findings.unknown_fields, vec!["inner.b"]);
    }
}
