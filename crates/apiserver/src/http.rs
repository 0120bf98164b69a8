//! HTTP plumbing shared by every handler: the response body type (whole or streamed),
//! request facts (query, media types), body decoding with size caps, and Status replies.

use api::ApiError;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::Value;
use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Largest request body accepted (the upstream API server's limit is 3 MiB).
pub const MAX_BODY: usize = 3 << 20;

/// A response body: either complete bytes or a stream of chunks (watch, follow logs).
pub enum Body {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(rx) => rx.poll_recv(cx).map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

pub type Reply = Response<Body>;

pub fn bytes_reply(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Body::Full(Some(body.into())));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub fn json_reply(status: u16, value: &Value) -> Reply {
    let body = serde_json::to_vec(value).unwrap_or_default();
    bytes_reply(status, "application/json", body)
}

pub fn error_reply(err: &ApiError) -> Reply {
    let mut reply = bytes_reply(err.code, "application/json", err.status_json());
    if let Some(seconds) = err.retry_after() {
        if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
            reply.headers_mut().insert("Retry-After", v);
        }
    }
    reply
}

pub fn stream_reply(content_type: &'static str, rx: mpsc::Receiver<Bytes>) -> Reply {
    let mut response = Response::new(Body::Stream(rx));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Query parameters (last value wins, as Go's `url.Values.Get` reads the first; clients
/// never repeat the ones we read).
#[derive(Debug, Default, Clone)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        Query(form_urlencoded::parse(raw.unwrap_or("").as_bytes()).into_owned().collect())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Go's `strconv.ParseBool`: 1, t, T, TRUE, true, True (and the false forms).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("1" | "t" | "T" | "TRUE" | "true" | "True"))
    }

    pub fn number(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => {
                v.parse().map(Some).map_err(|_| ApiError::bad_request(format!("invalid {key} {v:?}: not a number")))
            }
        }
    }
}

/// What the client asked the reply to look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Object,
    Table,
}

pub fn wants_table(accept: Option<&str>) -> Shape {
    match accept {
        Some(accept) if accept.split(',').next().is_some_and(|first| first.contains("as=Table")) => Shape::Table,
        _ => Shape::Object,
    }
}

/// Reads the whole request body, capped at [`MAX_BODY`].
pub async fn read_body(body: hyper::body::Incoming) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    // A body trickled in byte by byte (slowloris) is not waited for past this.
    let collected = tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await.map_err(|_| {
        ApiError::request_timeout(format!("the request body did not arrive within {} s", BODY_TIMEOUT.as_secs()))
    })?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::too_large(format!("the request body is larger than {MAX_BODY} bytes")))
        }
        Err(e) => Err(ApiError::bad_request(format!("cannot read the request body: {e}"))),
    }
}

/// How long a request's body may take to arrive.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The deepest nesting a YAML body may have: far beyond any object's, and far below where the
/// YAML parser's time (which grows with the square of the depth) could hold up the server.
/// JSON is bounded by its parser (128 levels).
const MAX_YAML_DEPTH: usize = 1000;

/// Whether a YAML document nests deeper than `limit`, found in one pass over its bytes before
/// any parsing: flow collections (`[`, `{`) outside quoted scalars and comments, and block
/// sequences opened on one line (`- - - x`). Quotes count only where a scalar can begin.
fn yaml_nests_deeper_than(bytes: &[u8], limit: usize) -> bool {
    let mut flow = 0usize;
    let mut quote: Option<u8> = None;
    for line in bytes.split(|b| *b == b'\n') {
        if quote.is_none() {
            let mut rest = line.trim_ascii_start();
            let mut dashes = 0;
            while rest == b"-" || rest.starts_with(b"- ") {
                dashes += 1;
                rest = rest.get(1..).unwrap_or_default().trim_ascii_start();
            }
            if flow + dashes > limit {
                return true;
            }
        }
        let mut previous = b' ';
        let mut escaped = false;
        for &b in line {
            match quote {
                Some(q) => {
                    if escaped {
                        escaped = false;
                    } else if q == b'"' && b == b'\\' {
                        escaped = true;
                    } else if b == q {
                        quote = None;
                    }
                }
                None => match b {
                    b'"' | b'\'' if matches!(previous, b' ' | b'\t' | b':' | b'-' | b'[' | b'{' | b',' | b'?') => {
                        quote = Some(b)
                    }
                    b'#' if previous.is_ascii_whitespace() => break,
                    b'[' | b'{' => {
                        flow += 1;
                        if flow > limit {
                            return true;
                        }
                    }
                    b']' | b'}' => flow = flow.saturating_sub(1),
                    _ => {}
                },
            }
            previous = b;
        }
    }
    false
}

/// Decodes a JSON or YAML document into an object, with a Kubernetes-style message on error.
pub fn decode_object(bytes: &[u8], content_type: Option<&str>) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty; an object was expected"));
    }
    if content_type.is_some_and(|ct| ct.contains("protobuf")) {
        return crate::protobuf::decode(bytes);
    }
    if content_type.is_some_and(|ct| ct.contains("cbor")) {
        // Clients fall back to JSON on 415 (client-go does since 1.32).
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format ({}) - accepted media types include: application/json, application/yaml",
            content_type.unwrap_or("")
        )));
    }
    let media_type = content_type.and_then(|ct| ct.split(';').next()).map(|m| m.trim().to_ascii_lowercase());
    // As upstream: a body is JSON, YAML or protobuf. One that says nothing is read as JSON
    // (kubectl sends DeleteOptions so).
    if !matches!(
        media_type.as_deref(),
        None | Some("application/json" | "application/yaml" | "application/x-yaml" | "text/yaml")
    ) {
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format ({}) - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf",
            content_type.unwrap_or("")
        )));
    }
    let yaml = content_type.is_some_and(|ct| ct.contains("yaml"));
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if yaml && yaml_nests_deeper_than(bytes, MAX_YAML_DEPTH) {
        return Err(ApiError::bad_request(format!(
            "error converting YAML to JSON: the document nests deeper than {MAX_YAML_DEPTH} levels"
        )));
    }
    let value: Value = if first == Some(b'{') || !yaml {
        match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(json_error) if yaml => serde_yaml_ng::from_slice(bytes).map_err(|_| {
                ApiError::bad_request(format!("the body of the request was in an unknown format: {json_error}"))
            })?,
            Err(e) => {
                return Err(ApiError::bad_request(format!(
                    "the body of the request was in an unknown format - accepted media types include: \
                     application/json, application/yaml, application/vnd.kubernetes.protobuf: {e}"
                )))
            }
        }
    } else {
        serde_yaml_ng::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: yaml: {e}")))?
    };
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be an object"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_flags_parse_like_go() {
        let q = Query::parse(Some("watch=True&a=1&b=false&labelSelector=app%3Dweb"));
        assert!(q.flag("watch"));
        assert!(q.flag("a"));
        assert!(!q.flag("b"));
        assert_eq!(q.get("labelSelector"), Some("app=web"));
    }

    #[test]
    fn yaml_nested_too_deep_is_refused_before_parsing_and_ordinary_yaml_is_not() {
        let deep = |open: &str, close: &str, n: usize| {
            format!("kind: ConfigMap\ndata: {}{}\n", open.repeat(n), close.repeat(n))
        };
        assert!(yaml_nests_deeper_than(deep("[", "]", 1001).as_bytes(), 1000));
        assert!(yaml_nests_deeper_than(deep("{a: ", "}", 1001).as_bytes(), 1000));
        assert!(yaml_nests_deeper_than(format!("data:\n{}x\n", "- ".repeat(1001)).as_bytes(), 1000));
        assert!(!yaml_nests_deeper_than(deep("[", "]", 1000).as_bytes(), 1000));
        // Brackets in quoted scalars and comments are text; a quote inside a plain scalar is not one.
        let quoted = format!("a: \"{}\"\nb: '{}'\n# {}\n", "[".repeat(2000), "{".repeat(2000), "[".repeat(2000));
        assert!(!yaml_nests_deeper_than(quoted.as_bytes(), 1000));
        assert!(yaml_nests_deeper_than(format!("a: it's {}\n", "[".repeat(1001)).as_bytes(), 1000));
        let error = decode_object(deep("[", "]", 100_000).as_bytes(), Some("application/yaml")).expect_err("refused");
        assert_eq!(error.code, 400);
        assert!(error.to_string().contains("nests deeper"), "refused before the parser ran: {error}");
        let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, labels: {a: b}}\ndata:\n  k: \"[x]\"\n  list: |\n    - a\n";
        assert!(decode_object(manifest.as_bytes(), Some("application/yaml")).is_ok());
    }

    #[test]
    fn table_is_detected_from_kubectl_accept() {
        let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(wants_table(Some(accept)), Shape::Table);
        assert_eq!(wants_table(Some("application/json")), Shape::Object);
    }

    #[test]
    fn decode_accepts_json_and_yaml_and_rejects_garbage() {
        assert!(decode_object(br#"{"a":1}"#, Some("application/json")).is_ok());
        assert!(decode_object(br#"{"a":1}"#, None).is_ok(), "no Content-Type: JSON");
        for unsupported in [Some("text/plain"), Some("application/xml"), Some("*/*"), Some("multipart/form-data")] {
            assert_eq!(decode_object(br#"{"a":1}"#, unsupported).map_err(|e| e.code), Err(415), "{unsupported:?}");
        }
        assert_eq!(decode_object(b"a: 1\n", Some("application/yaml")).ok(), Some(serde_json::json!({"a": 1})));
        assert_eq!(decode_object(b"{nope", Some("application/json")).map_err(|e| e.code), Err(400));
        assert_eq!(decode_object(b"[1]", Some("application/json")).map_err(|e| e.code), Err(400));
    }
}
