//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), turned into the
//! JSON the rest of the server takes. kubectl's generator commands (`create deployment`,
//! `create secret`, …) and typed clients (`auth can-i`, `create token`) send them; replies
//! stay JSON, which those clients accept.
//!
//! The wire format: the magic `k8s\0`, then a `runtime.Unknown` whose `typeMeta` names the kind
//! and whose `raw` field holds the object's message. Messages are decoded by reflection over
//! upstream's descriptors (`data/kubernetes.fds.zst`, made by `tools/protobuf-gen`), so every
//! built-in kind of the groups there decodes without a line of code per kind. Upstream's field
//! names are its JSON names, so a field becomes the JSON member of the same name; the types
//! whose JSON form is not their message (times, quantities, int-or-string, raw JSON) are
//! written as upstream's JSON marshalling writes them. A custom resource is never protobuf
//! (as upstream): an unknown kind gets 415, after which clients send JSON.
//!
//! One difference the wire cannot tell: Go writes its non-pointer string fields even when
//! empty, so an empty string is left out (as `omitempty` would); zero numbers and `false` are
//! kept, since pointer fields such as `replicas: 0` or `allowPrivilegeEscalation: false` mean
//! something.

use api::ApiError;
use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, MessageDescriptor, ReflectMessage as _, Value as Field};
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

const MAGIC: &[u8] = b"k8s\0";

/// Upstream's descriptors of the served groups, zstd-compressed.
const DESCRIPTORS: &[u8] = include_bytes!("../data/kubernetes.fds.zst");

/// Message fields that are Go structs embedded `json:",inline"`: their members are the
/// object's own in JSON (`Probe.handler`, `Volume.volumeSource`, the selectors'
/// `localObjectReference`, …).
const INLINE: &[&str] = &[
    "handler",
    "volumeSource",
    "persistentVolumeSource",
    "ephemeralContainerCommon",
    "localObjectReference",
    "volumeStatus",
];

#[derive(Clone, PartialEq, prost::Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", tag = "2")]
    raw: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TypeMeta {
    #[prost(string, tag = "1")]
    api_version: String,
    #[prost(string, tag = "2")]
    kind: String,
}

/// Loaded at the first protobuf body, not at start.
fn pool() -> Option<&'static DescriptorPool> {
    static POOL: OnceLock<Option<DescriptorPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut bytes = Vec::new();
        let mut decoder = ruzstd::decoding::StreamingDecoder::new(DESCRIPTORS).ok()?;
        std::io::Read::read_to_end(&mut decoder, &mut bytes).ok()?;
        DescriptorPool::decode(bytes.as_slice()).ok()
    })
    .as_ref()
}

/// The message of `kind` in `api_version` (`apps/v1` → `api.apps.v1.Deployment`).
fn message_of(api_version: &str, kind: &str) -> Option<MessageDescriptor> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let package = match group {
        "" => format!("api.core.{version}"),
        "meta.k8s.io" => format!("apimachinery.pkg.apis.meta.{version}"),
        group => format!("api.{}.{version}", group.split('.').next().unwrap_or(group)),
    };
    pool()?.get_message_by_name(&format!("{package}.{kind}"))
}

/// The JSON form of a protobuf request body. 400 for a body that is not a well-formed
/// envelope or message; 415 for a kind that is never sent as protobuf (clients then send JSON).
pub fn decode(bytes: &[u8]) -> Result<Value, ApiError> {
    use prost::Message as _;
    let malformed =
        |why: String| ApiError::bad_request(format!("the protobuf body of the request is malformed: {why}"));
    let envelope = bytes.strip_prefix(MAGIC).ok_or_else(|| malformed("it does not begin with k8s\\0".into()))?;
    let envelope = Unknown::decode(envelope).map_err(|e| malformed(format!("the envelope: {e}")))?;
    let type_meta = envelope.type_meta.unwrap_or_default();
    let Some(descriptor) = message_of(&type_meta.api_version, &type_meta.kind) else {
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format (application/vnd.kubernetes.protobuf for {} {}) - \
             accepted media types include: application/json, application/yaml",
            type_meta.api_version, type_meta.kind
        )));
    };
    let message = DynamicMessage::decode(descriptor, envelope.raw.as_slice())
        .map_err(|e| malformed(format!("{} {}: {e}", type_meta.api_version, type_meta.kind)))?;
    let mut object = match message_json(&message) {
        Value::Object(object) => object,
        _ => Map::new(),
    };
    object.insert("apiVersion".into(), json!(type_meta.api_version));
    object.insert("kind".into(), json!(type_meta.kind));
    object.entry("metadata").or_insert_with(|| json!({}));
    Ok(Value::Object(object))
}

/// A message as upstream's JSON marshalling writes it.
fn message_json(message: &DynamicMessage) -> Value {
    let name = message.descriptor().full_name().to_string();
    let field = |name: &str| message.get_field_by_name(name).map(|v| v.into_owned());
    let int = |name: &str| match field(name) {
        Some(Field::I64(n)) => n,
        Some(Field::I32(n)) => i64::from(n),
        _ => 0,
    };
    let bytes = |name: &str| match field(name) {
        Some(Field::Bytes(b)) => b.to_vec(),
        _ => Vec::new(),
    };
    match name.rsplit_once("apimachinery.pkg.").map_or(name.as_str(), |(_, tail)| tail) {
        "apis.meta.v1.Time" => match (int("seconds"), int("nanos")) {
            (0, 0) => Value::Null,
            (seconds, _) => json!(api::meta::format_unix(seconds)),
        },
        "apis.meta.v1.MicroTime" => match (int("seconds"), int("nanos")) {
            (0, 0) => Value::Null,
            (seconds, nanos) => json!(api::meta::format_unix_micros(seconds, u32::try_from(nanos).unwrap_or(0))),
        },
        "apis.meta.v1.Duration" => json!(go_duration(int("duration"))),
        "api.resource.Quantity" => match field("string") {
            Some(Field::String(s)) => json!(s),
            _ => json!("0"),
        },
        "util.intstr.IntOrString" => match (int("type"), field("strVal")) {
            (1, Some(Field::String(s))) => json!(s),
            _ => json!(int("intVal")),
        },
        "runtime.RawExtension" | "apis.meta.v1.FieldsV1" => {
            let raw = bytes(if name.ends_with("FieldsV1") { "Raw" } else { "raw" });
            serde_json::from_slice(&raw).unwrap_or(Value::Null)
        }
        _ if name.ends_with(".v1.ExtraValue") => match field("items") {
            Some(Field::List(items)) => Value::Array(items.iter().map(field_json).collect()),
            _ => json!([]),
        },
        _ => {
            let mut object = Map::new();
            for (descriptor, value) in message.fields() {
                match (field_json(value), descriptor.kind().as_message().is_some()) {
                    (Value::Null, _) => {}
                    (Value::String(s), _) if s.is_empty() => {}
                    (Value::Object(members), true) if INLINE.contains(&descriptor.name()) => object.extend(members),
                    (value, _) => {
                        object.insert(descriptor.name().to_string(), value);
                    }
                }
            }
            Value::Object(object)
        }
    }
}

fn field_json(value: &Field) -> Value {
    use base64::Engine as _;
    match value {
        Field::Bool(b) => json!(b),
        Field::I32(n) => json!(n),
        Field::I64(n) => json!(n),
        Field::U32(n) => json!(n),
        Field::U64(n) => json!(n),
        Field::F32(n) => json!(n),
        Field::F64(n) => json!(n),
        Field::String(s) => json!(s),
        // []byte is base64 in upstream's JSON (Secret data, CSR requests).
        Field::Bytes(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        Field::EnumNumber(n) => json!(n),
        Field::Message(m) => message_json(m),
        Field::List(items) => Value::Array(items.iter().map(field_json).collect()),
        Field::Map(entries) => {
            let object = entries
                .iter()
                .map(|(key, value)| {
                    let key = match key {
                        MapKey::String(s) => s.clone(),
                        MapKey::Bool(b) => b.to_string(),
                        MapKey::I32(n) => n.to_string(),
                        MapKey::I64(n) => n.to_string(),
                        MapKey::U32(n) => n.to_string(),
                        MapKey::U64(n) => n.to_string(),
                    };
                    (key, field_json(value))
                })
                .collect();
            Value::Object(object)
        }
    }
}

/// Nanoseconds as Go's `time.Duration` prints them (`1h2m3.5s`, `150ms`, `0s`).
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        let (value, unit) = match n {
            n if n < 1_000 => (n as f64, "ns"),
            n if n < 1_000_000 => (n as f64 / 1e3, "µs"),
            n => (n as f64 / 1e6, "ms"),
        };
        return format!("{sign}{value}{unit}");
    }
    let (hours, rest) = (n / 3_600_000_000_000, n % 3_600_000_000_000);
    let (minutes, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let seconds = rest as f64 / 1e9;
    let mut out = sign.to_string();
    if hours > 0 {
        out.push_str(&format!("{hours}h{minutes}m"));
    } else if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{seconds}s"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    /// An envelope of `kind` holding `fields` encoded by reflection, as client-go would send it.
    fn envelope(api_version: &str, kind: &str, object: &Value) -> Vec<u8> {
        let descriptor = message_of(api_version, kind).expect("a known kind");
        let message = encode(&descriptor, object);
        let unknown = Unknown {
            type_meta: Some(TypeMeta { api_version: api_version.into(), kind: kind.into() }),
            raw: message.encode_to_vec(),
        };
        [MAGIC, &unknown.encode_to_vec()].concat()
    }

    /// The test's own encoder: JSON (in the message's own field form) into a message.
    fn encode(descriptor: &MessageDescriptor, object: &Value) -> DynamicMessage {
        let mut message = DynamicMessage::new(descriptor.clone());
        for (name, value) in object.as_object().expect("an object") {
            let field = descriptor.get_field_by_name(name).unwrap_or_else(|| panic!("no field {name}"));
            let value = match (field.kind(), value) {
                (prost_reflect::Kind::Message(m), Value::Array(items)) => {
                    Field::List(items.iter().map(|i| Field::Message(encode(&m, i))).collect())
                }
                (prost_reflect::Kind::Message(m), v) if field.is_map() => {
                    let value_kind = m.map_entry_value_field().kind();
                    let entries = v
                        .as_object()
                        .expect("a map")
                        .iter()
                        .map(|(k, v)| {
                            let v = match (&value_kind, v) {
                                (prost_reflect::Kind::Bytes, Value::String(s)) => {
                                    Field::Bytes(s.clone().into_bytes().into())
                                }
                                (_, Value::String(s)) => Field::String(s.clone()),
                                (prost_reflect::Kind::Message(q), v) => Field::Message(encode(q, v)),
                                other => panic!("unexpected {other:?}"),
                            };
                            (MapKey::String(k.clone()), v)
                        })
                        .collect();
                    Field::Map(entries)
                }
                (prost_reflect::Kind::Message(m), v) => Field::Message(encode(&m, v)),
                (prost_reflect::Kind::String, Value::String(s)) => Field::String(s.clone()),
                (prost_reflect::Kind::String, Value::Array(items)) => {
                    Field::List(items.iter().map(|i| Field::String(i.as_str().unwrap_or("").into())).collect())
                }
                (prost_reflect::Kind::Int32, v) => Field::I32(v.as_i64().unwrap_or(0) as i32),
                (prost_reflect::Kind::Int64, v) => Field::I64(v.as_i64().unwrap_or(0)),
                (prost_reflect::Kind::Bool, v) => Field::Bool(v.as_bool().unwrap_or(false)),
                other => panic!("unexpected {other:?}"),
            };
            message.set_field(&field, value);
        }
        message
    }

    #[test]
    fn a_deployment_decodes_to_upstream_json() {
        let deployment = json!({
            "metadata": {"name": "web", "namespace": "", "labels": {"app": "web"},
                         "creationTimestamp": {"seconds": 0, "nanos": 0}},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "nginx", "image": "nginx", "args": ["-g", "daemon off;"],
                        "ports": [{"containerPort": 80}],
                        "resources": {"limits": {"memory": {"string": "64Mi"}}},
                        "livenessProbe": {"handler": {"httpGet": {"path": "/", "port": {"type": 1, "strVal": "http"}}}},
                        "envFrom": [{"configMapRef": {"localObjectReference": {"name": "settings"}}}],
                    }]},
                },
                "strategy": {},
            },
        });
        let decoded = decode(&envelope("apps/v1", "Deployment", &deployment)).expect("decodes");
        assert_eq!(decoded["apiVersion"], "apps/v1");
        assert_eq!(decoded["kind"], "Deployment");
        assert_eq!(
            decoded["metadata"],
            json!({"name": "web", "labels": {"app": "web"}}),
            "empty and zero times left out"
        );
        assert_eq!(decoded["spec"]["replicas"], 0, "an explicit zero stays");
        assert_eq!(decoded["spec"]["strategy"], json!({}));
        let container = &decoded["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["args"], json!(["-g", "daemon off;"]));
        assert_eq!(container["ports"], json!([{"containerPort": 80}]));
        assert_eq!(container["resources"]["limits"]["memory"], "64Mi");
        assert_eq!(container["livenessProbe"]["httpGet"]["port"], "http", "embedded structs are inline");
        assert_eq!(container["envFrom"], json!([{"configMapRef": {"name": "settings"}}]));
    }

    #[test]
    fn secret_bytes_become_base64_and_times_rfc3339() {
        let secret = json!({"metadata": {"name": "s", "creationTimestamp": {"seconds": 1_700_000_000}},
                            "data": {"password": "hunter2"}, "type": "Opaque"});
        let decoded = decode(&envelope("v1", "Secret", &secret)).expect("decodes");
        assert_eq!(decoded["data"]["password"], "aHVudGVyMg==");
        assert_eq!(decoded["metadata"]["creationTimestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(decoded["type"], "Opaque");
    }

    #[test]
    fn the_typed_reviews_decode() {
        let review =
            json!({"spec": {"resourceAttributes": {"namespace": "default", "verb": "create", "resource": "pods"}}});
        let decoded =
            decode(&envelope("authorization.k8s.io/v1", "SelfSubjectAccessReview", &review)).expect("decodes");
        assert_eq!(decoded["spec"]["resourceAttributes"]["verb"], "create");
        let request = json!({"spec": {"audiences": ["https://axle.local"], "expirationSeconds": 600}});
        let decoded = decode(&envelope("authentication.k8s.io/v1", "TokenRequest", &request)).expect("decodes");
        assert_eq!(decoded["spec"]["expirationSeconds"], 600);
        assert_eq!(decoded["spec"]["audiences"], json!(["https://axle.local"]));
    }

    #[test]
    fn bad_bodies_are_refused_with_the_reason() {
        let refused = |bytes: &[u8]| decode(bytes).expect_err("refused");
        assert_eq!(refused(b"{}").code, 400);
        assert_eq!(refused(b"k8s\0\x0a\xff\xff").code, 400, "a truncated envelope");
        let mut truncated = envelope("v1", "ConfigMap", &json!({"metadata": {"name": "c"}, "data": {"k": "v"}}));
        truncated.truncate(truncated.len() - 3);
        let error = refused(&truncated);
        assert_eq!(error.code, 400);
        assert!(error.message.contains("malformed"), "{}", error.message);
        let custom = Unknown {
            type_meta: Some(TypeMeta { api_version: "axle.dev/v1alpha1".into(), kind: "Campaign".into() }),
            raw: Vec::new(),
        };
        assert_eq!(refused(&[MAGIC, &custom.encode_to_vec()].concat()).code, 415, "custom resources are JSON");
    }

    #[test]
    fn durations_print_as_go_does() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(3_723_000_000_000), "1h2m3s");
        assert_eq!(go_duration(150_000_000), "150ms");
    }
}
