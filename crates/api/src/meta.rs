//! Object metadata rules shared by every kind: names, uids, timestamps and ages.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

/// Now as RFC 3339 with second precision and `Z`, as Kubernetes writes timestamps.
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A Unix time in seconds as RFC 3339 (`deletionTimestamp` in the future for graceful deletion).
pub fn format_unix(seconds: i64) -> String {
    DateTime::<Utc>::from_timestamp(seconds, 0).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A Unix time with its fraction as RFC 3339 with microseconds (`MicroTime`).
pub fn format_unix_micros(seconds: i64, nanos: u32) -> String {
    DateTime::<Utc>::from_timestamp(seconds, nanos).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Now with microseconds, for `MicroTime` fields (Lease renewTime, Event eventTime).
pub fn now_micro_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Parses an RFC 3339 timestamp with any offset (Python clients send `+00:00`).
pub fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value).ok().map(|t| t.with_timezone(&Utc))
}

/// The time `seconds` ago as RFC 3339 with nanoseconds (`…T10:00:00.000000000Z`), the form
/// container log lines carry, so the two compare as strings.
pub fn nanos_timestamp_ago(seconds: i64) -> String {
    (Utc::now() - chrono::Duration::seconds(seconds.max(0))).to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Milliseconds elapsed since an RFC 3339 timestamp (negative if it lies in the future).
pub fn millis_since(timestamp: &str) -> Option<i64> {
    parse_time(timestamp).map(|t| (Utc::now() - t).num_milliseconds())
}

/// Why `name` is not a DNS-1123 subdomain (lowercase alphanumerics, `-`, `.`, ≤ 253), if it is not.
pub fn dns_subdomain_error(name: &str) -> Option<String> {
    if name.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    if name.split('.').all(|part| dns_label_error(part).is_none()) {
        None
    } else {
        Some(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', \
             and must start and end with an alphanumeric character (e.g. 'example.com', regex used for \
             validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .into(),
        )
    }
}

/// Why `name` is not a DNS-1123 label (lowercase alphanumerics and `-`, ≤ 63), if it is not.
pub fn dns_label_error(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let ok_inner = bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    let ok_ends =
        bytes.first().is_some_and(u8::is_ascii_alphanumeric) && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    if name.len() > 63 {
        Some("must be no more than 63 characters".into())
    } else if !ok_inner || !ok_ends {
        Some(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must \
             start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for \
             validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                .into(),
        )
    } else {
        None
    }
}

/// Why `key` is not a valid label/annotation key (`[prefix/]name`), if it is not.
pub fn qualified_name_error(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if dns_subdomain_error(prefix).is_some() {
            return Some("prefix part must be a lowercase RFC 1123 subdomain".into());
        }
    }
    let bytes = name.as_bytes();
    let ok_chars = bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let ok_ends =
        bytes.first().is_some_and(u8::is_ascii_alphanumeric) && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    if name.is_empty() || name.len() > 63 || !ok_chars || !ok_ends {
        return Some(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end \
             with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc')"
                .into(),
        );
    }
    None
}

/// Why `value` is not a valid label value, if it is not.
pub fn label_value_error(value: &str) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    let bytes = value.as_bytes();
    let ok_chars = bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let ok_ends =
        bytes.first().is_some_and(u8::is_ascii_alphanumeric) && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    if value.len() > 63 || !ok_chars || !ok_ends {
        Some("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".into())
    } else {
        None
    }
}

/// A random suffix for `generateName` (five characters, no vowels, as upstream).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes.iter().take(5).map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

/// Kubernetes' `HumanDuration` (as in `kubectl get`'s AGE column): `37s`, `5m12s`, `3h`, `2d5h`.
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    if s < 120 {
        return format!("{s}s");
    }
    let minutes = s / 60;
    if minutes < 10 {
        let rem = s % 60;
        return if rem == 0 { format!("{minutes}m") } else { format!("{minutes}m{rem}s") };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = s / 3600;
    if hours < 8 {
        let rem = (s % 3600) / 60;
        return if rem == 0 { format!("{hours}h") } else { format!("{hours}h{rem}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let rem = hours % 24;
        return if rem == 0 { format!("{}d", hours / 24) } else { format!("{}d{rem}h", hours / 24) };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = hours / 24;
        let rem = days % 365;
        return if rem == 0 { format!("{}y", days / 365) } else { format!("{}y{rem}d", days / 365) };
    }
    format!("{}y", hours / 24 / 365)
}

/// Age of an object from its `creationTimestamp` (or another timestamp field), humanised.
pub fn age(timestamp: &Value) -> String {
    match timestamp.as_str().and_then(parse_time) {
        Some(t) => human_duration((Utc::now() - t).num_seconds()),
        None => "<unknown>".into(),
    }
}

/// The machine's architecture as Go (and so Kubernetes) names it: `amd64`, `arm64`, …
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `metadata.name` of an object, or `""`.
pub fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}

/// `metadata.namespace` of an object, or `""`.
pub fn namespace_of(obj: &Value) -> &str {
    obj["metadata"]["namespace"].as_str().unwrap_or("")
}

/// `metadata.uid` of an object, or `""`.
pub fn uid_of(obj: &Value) -> &str {
    obj["metadata"]["uid"].as_str().unwrap_or("")
}

/// Names of the Secrets (`plural` = `secrets`) or ConfigMaps (`configmaps`) a pod refers to:
/// volumes, projected volume sources, `env[].valueFrom`, `envFrom` of every container, and
/// for Secrets `imagePullSecrets`. What a node may read is exactly this set of its pods.
pub fn references(pod: &Value, plural: &str) -> Vec<String> {
    let (volume_key, volume_name, key_ref, from_ref) = match plural {
        "secrets" => ("secret", "secretName", "secretKeyRef", "secretRef"),
        "configmaps" => ("configMap", "name", "configMapKeyRef", "configMapRef"),
        _ => return Vec::new(),
    };
    let spec = &pod["spec"];
    let mut names = Vec::new();
    let mut push = |name: &Value| {
        if let Some(name) = name.as_str().filter(|n| !n.is_empty()) {
            names.push(name.to_string());
        }
    };
    for volume in spec["volumes"].as_array().into_iter().flatten() {
        push(&volume[volume_key][volume_name]);
        for source in volume["projected"]["sources"].as_array().into_iter().flatten() {
            push(&source[volume_key]["name"]);
        }
    }
    let containers =
        ["initContainers", "containers"].into_iter().flat_map(|k| spec[k].as_array().into_iter().flatten());
    for container in containers {
        for env in container["env"].as_array().into_iter().flatten() {
            push(&env["valueFrom"][key_ref]["name"]);
        }
        for from in container["envFrom"].as_array().into_iter().flatten() {
            push(&from[from_ref]["name"]);
        }
    }
    if plural == "secrets" {
        for pull in spec["imagePullSecrets"].as_array().into_iter().flatten() {
            push(&pull["name"]);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_rules() {
        assert!(dns_subdomain_error("web-1.example").is_none());
        assert!(dns_subdomain_error("Web").is_some());
        assert!(dns_subdomain_error("-web").is_some());
        assert!(dns_label_error("a.b").is_some());
        assert!(qualified_name_error("app.kubernetes.io/name").is_none());
        assert!(qualified_name_error("bad key").is_some());
    }

    #[test]
    fn human_duration_matches_kubectl() {
        assert_eq!(human_duration(37), "37s");
        assert_eq!(human_duration(125), "2m5s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 120), "3h2m");
        assert_eq!(human_duration(50 * 3600), "2d2h");
    }

    #[test]
    fn parse_time_accepts_offsets() {
        assert!(parse_time("2026-11-25T02:50:49+00:00").is_some());
        assert!(parse_time("2026-11-25T02:50:49Z").is_some());
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn pod_references_cover_volumes_env_and_pull_secrets() {
        let pod = serde_json::json!({"spec": {
            "volumes": [
                {"name": "a", "secret": {"secretName": "tls"}},
                {"name": "b", "configMap": {"name": "settings"}},
                {"name": "c", "projected": {"sources": [{"secret": {"name": "token"}}, {"configMap": {"name": "ca"}}]}}
            ],
            "containers": [{"name": "x",
                "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "password", "key": "p"}}}],
                "envFrom": [{"configMapRef": {"name": "envs"}}]}],
            "imagePullSecrets": [{"name": "pull"}]
        }});
        assert_eq!(references(&pod, "secrets"), ["tls", "token", "password", "pull"]);
        assert_eq!(references(&pod, "configmaps"), ["settings", "ca", "envs"]);
        assert!(references(&pod, "services").is_empty());
    }
}
