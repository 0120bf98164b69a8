//! The few Kubernetes protobuf request bodies Axle reads. kubectl's typed requests (`auth
//! can-i`, `create token`) send `application/vnd.kubernetes.protobuf` and do not fall back to
//! JSON; these kinds are decoded here into the JSON the handlers take. Replies stay JSON, which
//! those clients accept. Other kinds still get 415.
//!
//! The wire format: the magic `k8s\0`, then a `runtime.Unknown` whose `raw` field holds the
//! object's message (field numbers from upstream's `generated.proto`).

use serde_json::{json, Value};

const MAGIC: &[u8] = b"k8s\0";

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

#[derive(Clone, PartialEq, prost::Message)]
struct SelfSubjectAccessReview {
    #[prost(message, optional, tag = "2")]
    spec: Option<SelfSubjectAccessReviewSpec>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SelfSubjectAccessReviewSpec {
    #[prost(message, optional, tag = "1")]
    resource_attributes: Option<ResourceAttributes>,
    #[prost(message, optional, tag = "2")]
    non_resource_attributes: Option<NonResourceAttributes>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResourceAttributes {
    #[prost(string, tag = "1")]
    namespace: String,
    #[prost(string, tag = "2")]
    verb: String,
    #[prost(string, tag = "3")]
    group: String,
    #[prost(string, tag = "4")]
    version: String,
    #[prost(string, tag = "5")]
    resource: String,
    #[prost(string, tag = "6")]
    subresource: String,
    #[prost(string, tag = "7")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NonResourceAttributes {
    #[prost(string, tag = "1")]
    path: String,
    #[prost(string, tag = "2")]
    verb: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TokenRequest {
    #[prost(message, optional, tag = "2")]
    spec: Option<TokenRequestSpec>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TokenRequestSpec {
    #[prost(string, repeated, tag = "1")]
    audiences: Vec<String>,
    #[prost(int64, optional, tag = "4")]
    expiration_seconds: Option<i64>,
}

/// The JSON form of a protobuf body of a kind read here; None for any other body.
pub fn decode(bytes: &[u8]) -> Option<Value> {
    use prost::Message as _;
    let envelope = Unknown::decode(bytes.strip_prefix(MAGIC)?).ok()?;
    let type_meta = envelope.type_meta?;
    let raw = envelope.raw.as_slice();
    let body = match type_meta.kind.as_str() {
        "SelfSubjectAccessReview" => {
            let spec = SelfSubjectAccessReview::decode(raw).ok()?.spec.unwrap_or_default();
            let mut spec_json = json!({});
            if let Some(r) = spec.resource_attributes {
                spec_json["resourceAttributes"] = json!({
                    "namespace": r.namespace, "verb": r.verb, "group": r.group, "version": r.version,
                    "resource": r.resource, "subresource": r.subresource, "name": r.name,
                });
            }
            if let Some(n) = spec.non_resource_attributes {
                spec_json["nonResourceAttributes"] = json!({"path": n.path, "verb": n.verb});
            }
            json!({"spec": spec_json})
        }
        "TokenRequest" => {
            let spec = TokenRequest::decode(raw).ok()?.spec.unwrap_or_default();
            let mut spec_json = json!({"audiences": spec.audiences});
            if let Some(seconds) = spec.expiration_seconds {
                spec_json["expirationSeconds"] = json!(seconds);
            }
            json!({"spec": spec_json})
        }
        _ => return None,
    };
    let mut body = body;
    body["apiVersion"] = json!(type_meta.api_version);
    body["kind"] = json!(type_meta.kind);
    body["metadata"] = json!({});
    Some(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn self_subject_access_review_decodes_to_its_json_form() {
        let review = SelfSubjectAccessReview {
            spec: Some(SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: "default".into(),
                    verb: "create".into(),
                    resource: "pods".into(),
                    ..Default::default()
                }),
                non_resource_attributes: None,
            }),
        };
        let envelope = Unknown {
            type_meta: Some(TypeMeta {
                api_version: "authorization.k8s.io/v1".into(),
                kind: "SelfSubjectAccessReview".into(),
            }),
            raw: review.encode_to_vec(),
        };
        let mut body = MAGIC.to_vec();
        body.extend(envelope.encode_to_vec());
        let decoded = decode(&body).expect("decoded");
        assert_eq!(decoded["kind"], "SelfSubjectAccessReview");
        assert_eq!(decoded["spec"]["resourceAttributes"]["verb"], "create");
        assert_eq!(decoded["spec"]["resourceAttributes"]["resource"], "pods");
        assert!(decode(b"k8s\0garbage").is_none());
        assert!(decode(b"{}").is_none());
    }
}
