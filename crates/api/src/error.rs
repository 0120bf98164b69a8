//! `ApiError`: every failure the API reports, shaped so it renders as the Kubernetes `Status`
//! object that kubectl and the client libraries parse into their usual messages
//! (`Error from server (NotFound): pods "x" not found`, `The Pod "x" is invalid: …`).

use serde_json::Value;

/// One field-level reason inside a 422 `Status` (`details.causes[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// Machine reason, e.g. `FieldValueRequired`, `FieldValueInvalid`, `FieldValueDuplicate`.
    pub reason: &'static str,
    pub message: String,
    /// The JSON path of the field, as Kubernetes prints it (`spec.containers[0].image`).
    pub field: String,
}

impl Cause {
    pub fn required(field: impl Into<String>) -> Cause {
        Cause { reason: "FieldValueRequired", message: "Required value".into(), field: field.into() }
    }

    pub fn invalid(field: impl Into<String>, value: &Value, why: impl Into<String>) -> Cause {
        let shown = match value {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        Cause {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {shown}: {}", why.into()),
            field: field.into(),
        }
    }

    pub fn unsupported(field: impl Into<String>, value: &Value, allowed: &[&str]) -> Cause {
        let quoted: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
        Cause {
            reason: "FieldValueNotSupported",
            message: format!("Unsupported value: {value}: supported values: {}", quoted.join(", ")),
            field: field.into(),
        }
    }

    pub fn duplicate(field: impl Into<String>, value: &Value) -> Cause {
        Cause { reason: "FieldValueDuplicate", message: format!("Duplicate value: {value}"), field: field.into() }
    }

    pub fn forbidden(field: impl Into<String>, why: impl Into<String>) -> Cause {
        Cause { reason: "FieldValueForbidden", message: format!("Forbidden: {}", why.into()), field: field.into() }
    }
}

/// A failed API request. `code` is the HTTP status; `reason` the Kubernetes `StatusReason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `details` of the Status, boxed: errors travel through every `Result` of the request path.
    pub details: Box<Details>,
}

/// The `details` of a `Status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    pub name: Option<String>,
    pub group: Option<String>,
    /// `details.kind`: the plural resource for most errors, the Kind for 422.
    pub kind: Option<String>,
    pub causes: Vec<Cause>,
    /// Seconds a client should wait before retrying (`details.retryAfterSeconds`).
    pub retry_after: Option<u32>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { code, reason, message: message.into(), details: Box::default() }
    }

    fn with_details(mut self, group: &str, kind: &str, name: &str) -> ApiError {
        self.details.group = Some(group.to_string());
        self.details.kind = Some(kind.to_string());
        self.details.name = Some(name.to_string());
        self
    }

    pub fn causes(&self) -> &[Cause] {
        &self.details.causes
    }

    pub fn retry_after(&self) -> Option<u32> {
        self.details.retry_after
    }

    /// `pods "x" not found`; `qualified` is `pods` or `deployments.apps`.
    pub fn not_found(group: &str, plural: &str, name: &str) -> ApiError {
        ApiError::new(404, "NotFound", format!("{} {name:?} not found", qualified(group, plural)))
            .with_details(group, plural, name)
    }

    pub fn already_exists(group: &str, plural: &str, name: &str) -> ApiError {
        ApiError::new(409, "AlreadyExists", format!("{} {name:?} already exists", qualified(group, plural)))
            .with_details(group, plural, name)
    }

    /// Optimistic-concurrency failure: the client's resourceVersion is stale.
    pub fn conflict(group: &str, plural: &str, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; \
                 please apply your changes to the latest version and try again",
                qualified(group, plural)
            ),
        )
        .with_details(group, plural, name)
    }

    /// A 409 Conflict with a free-form message (server-side apply field conflicts).
    pub fn conflict_with(group: &str, plural: &str, name: &str, message: String, causes: Vec<Cause>) -> ApiError {
        let mut err = ApiError::new(409, "Conflict", message).with_details(group, plural, name);
        err.details.causes = causes;
        err
    }

    /// 422: `The Pod "x" is invalid: spec.containers: Required value`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> ApiError {
        let summary: Vec<String> = causes
            .iter()
            .map(|c| if c.field.is_empty() { c.message.clone() } else { format!("{}: {}", c.field, c.message) })
            .collect();
        let summary = if summary.len() == 1 { summary.join("") } else { format!("[{}]", summary.join(", ")) };
        let mut err = ApiError::new(422, "Invalid", format!("{kind} {name:?} is invalid: {summary}"))
            .with_details(group, kind, name);
        err.details.causes = causes;
        err
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "Forbidden", message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(405, "MethodNotAllowed", message)
    }

    pub fn not_acceptable(message: impl Into<String>) -> ApiError {
        ApiError::new(406, "NotAcceptable", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> ApiError {
        ApiError::new(415, "UnsupportedMediaType", message)
    }

    /// 410 for a watch or list whose resourceVersion left the change log.
    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    /// 408 for a request that did not arrive in time (Kubernetes' reason `Timeout`).
    pub fn request_timeout(message: impl Into<String>) -> ApiError {
        ApiError::new(408, "Timeout", message)
    }

    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(413, "RequestEntityTooLarge", message)
    }

    /// 507 for a write that found the disk full (nothing was written).
    pub fn insufficient_storage(message: impl Into<String>) -> ApiError {
        let mut err = ApiError::new(507, "InsufficientStorage", message);
        err.details.retry_after = Some(5);
        err
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalError", message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        let mut err = ApiError::new(503, "ServiceUnavailable", message);
        err.details.retry_after = Some(1);
        err
    }

    /// A 404 for a path that names no resource at all (kubectl: "the server could not find the
    /// requested resource").
    pub fn no_route() -> ApiError {
        ApiError::new(404, "NotFound", "the server could not find the requested resource")
    }

    /// The `Status` object (`kind: Status`, `status: Failure`), for embedding (watch errors).
    pub fn to_status(&self) -> Value {
        serde_json::to_value(self.wire()).unwrap_or(Value::Null)
    }

    /// The `Status` reply body exactly as upstream writes it: members in its order, `details`
    /// always present, a trailing newline (clients such as `kubectl debug` rely on `details`).
    pub fn status_json(&self) -> Vec<u8> {
        wire_json(&self.wire())
    }

    fn wire(&self) -> StatusWire<'_> {
        let d = &self.details;
        StatusWire {
            kind: "Status",
            api_version: "v1",
            metadata: Empty {},
            status: "Failure",
            message: Some(&self.message),
            reason: Some(self.reason),
            details: DetailsWire {
                name: d.name.as_deref(),
                group: d.group.as_deref().filter(|g| !g.is_empty()),
                kind: d.kind.as_deref(),
                uid: None,
                causes: d
                    .causes
                    .iter()
                    .map(|c| CauseWire { reason: c.reason, message: &c.message, field: &c.field })
                    .collect(),
                retry_after_seconds: d.retry_after,
            },
            code: Some(self.code),
        }
    }
}

/// A `Status` in upstream's member order (its JSON is the Go struct's field order).
#[derive(serde::Serialize)]
struct StatusWire<'a> {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: Empty,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    details: DetailsWire<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
}

#[derive(serde::Serialize)]
struct Empty {}

#[derive(serde::Serialize)]
struct DetailsWire<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    causes: Vec<CauseWire<'a>>,
    #[serde(rename = "retryAfterSeconds", skip_serializing_if = "Option::is_none")]
    retry_after_seconds: Option<u32>,
}

#[derive(serde::Serialize)]
struct CauseWire<'a> {
    reason: &'static str,
    message: &'a str,
    field: &'a str,
}

fn wire_json(status: &StatusWire<'_>) -> Vec<u8> {
    let mut body = serde_json::to_vec(status).unwrap_or_default();
    body.push(b'\n');
    body
}

/// `pods`, or `deployments.apps` for a named group, as Kubernetes messages print resources.
pub fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

/// The `Status` reply body of a delete that returns no object, as upstream writes it.
pub fn success_status_json(group: &str, plural: &str, name: &str, uid: &str) -> Vec<u8> {
    wire_json(&StatusWire {
        kind: "Status",
        api_version: "v1",
        metadata: Empty {},
        status: "Success",
        message: None,
        reason: None,
        details: DetailsWire {
            name: Some(name),
            group: Some(group).filter(|g| !g.is_empty()),
            kind: Some(plural),
            uid: Some(uid),
            causes: Vec::new(),
            retry_after_seconds: None,
        },
        code: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_status_matches_kubectl_expectations() {
        let status = ApiError::not_found("apps", "deployments", "web").to_status();
        assert_eq!(status["code"], 404);
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["message"], "deployments.apps \"web\" not found");
        assert_eq!(status["details"]["kind"], "deployments");
        assert_eq!(status["details"]["group"], "apps");
    }

    #[test]
    fn invalid_status_lists_every_cause() {
        let err = ApiError::invalid(
            "",
            "Pod",
            "bad",
            vec![Cause::required("spec.containers"), Cause::required("metadata.name")],
        );
        let status = err.to_status();
        assert_eq!(status["code"], 422);
        assert_eq!(status["details"]["causes"].as_array().map(Vec::len), Some(2));
        assert!(err.message.starts_with("Pod \"bad\" is invalid: [spec.containers: Required value"));
    }

    #[test]
    fn status_bodies_are_written_as_upstream_writes_them() {
        let body = String::from_utf8(ApiError::no_route().status_json()).expect("utf-8");
        assert_eq!(
            body,
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\
             \"message\":\"the server could not find the requested resource\",\"reason\":\"NotFound\",\
             \"details\":{},\"code\":404}\n"
        );
        let body = String::from_utf8(success_status_json("apps", "deployments", "web", "u-1")).expect("utf-8");
        assert_eq!(
            body,
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Success\",\
             \"details\":{\"name\":\"web\",\"group\":\"apps\",\"kind\":\"deployments\",\"uid\":\"u-1\"}}\n"
        );
    }
}
