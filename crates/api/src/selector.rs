//! Label and field selectors: the `labelSelector`/`fieldSelector` query grammar and the
//! `LabelSelector` object (`matchLabels`/`matchExpressions`) of Deployments and friends.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(pub String);

impl LabelSelector {
    /// Parses `app=web,tier!=db,env in (a,b),!legacy,track`.
    pub fn parse(text: &str) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(LabelSelector { requirements })
    }

    /// Builds a selector from a `LabelSelector` object (`{matchLabels, matchExpressions}`).
    /// A missing or null object selects nothing, as Kubernetes' `LabelSelectorAsSelector` does
    /// for nil; an empty object selects everything.
    pub fn from_object(obj: &Value) -> Result<Option<LabelSelector>, SelectorError> {
        if obj.is_null() {
            return Ok(None);
        }
        let mut requirements = Vec::new();
        if let Some(labels) = obj["matchLabels"].as_object() {
            for (k, v) in labels {
                requirements.push(LabelRequirement::Equals(k.clone(), v.as_str().unwrap_or("").to_string()));
            }
        }
        for expr in obj["matchExpressions"].as_array().into_iter().flatten() {
            let key =
                expr["key"].as_str().ok_or_else(|| SelectorError("matchExpressions[].key missing".into()))?.to_string();
            let values: Vec<String> =
                expr["values"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect();
            let req = match expr["operator"].as_str() {
                Some("In") => LabelRequirement::In(key, values),
                Some("NotIn") => LabelRequirement::NotIn(key, values),
                Some("Exists") => LabelRequirement::Exists(key),
                Some("DoesNotExist") => LabelRequirement::NotExists(key),
                other => return Err(SelectorError(format!("{other:?} is not a valid label selector operator"))),
            };
            requirements.push(req);
        }
        Ok(Some(LabelSelector { requirements }))
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.matches(&obj["metadata"]["labels"])
    }

    /// Whether a labels map (`{"app": "web"}`) satisfies every requirement.
    pub fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.requirements.iter().all(|req| match req {
            LabelRequirement::Equals(k, v) => get(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelRequirement::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            LabelRequirement::Exists(k) => get(k).is_some(),
            LabelRequirement::NotExists(k) => get(k).is_none(),
        })
    }
}

/// Splits on commas that are not inside `( … )`.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_requirement(part: &str) -> Result<LabelRequirement, SelectorError> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(LabelRequirement::NotExists(valid_key(key.trim(), part)?));
    }
    if let Some((key, value)) = part.split_once("!=") {
        return Ok(LabelRequirement::NotEquals(valid_key(key.trim(), part)?, value.trim().to_string()));
    }
    if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(LabelRequirement::Equals(valid_key(key.trim(), part)?, value.trim().to_string()));
    }
    for (word, is_in) in [(" notin ", false), (" in ", true)] {
        if let Some((key, rest)) = part.split_once(word) {
            let rest = rest.trim();
            let inner = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| SelectorError(format!("{part:?}: expected a (value, …) set")))?;
            let values: Vec<String> =
                inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
            let key = valid_key(key.trim(), part)?;
            return Ok(if is_in { LabelRequirement::In(key, values) } else { LabelRequirement::NotIn(key, values) });
        }
    }
    Ok(LabelRequirement::Exists(valid_key(part, part)?))
}

fn valid_key(key: &str, part: &str) -> Result<String, SelectorError> {
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(SelectorError(format!("{part:?}: invalid label key {key:?}")));
    }
    Ok(key.to_string())
}

/// A parsed field selector: `metadata.name=x,spec.nodeName!=y`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<(String, bool, String)>,
}

impl FieldSelector {
    pub fn parse(text: &str) -> Result<FieldSelector, SelectorError> {
        let mut requirements = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                return Err(SelectorError(format!("{part:?}: field selectors need '=', '==' or '!='")));
            };
            requirements.push((field.trim().to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value the selector requires for `field` with `=`, if any (lets the store narrow a scan).
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.requirements.iter().find(|(f, eq, _)| f == field && *eq).map(|(_, _, v)| v.as_str())
    }

    /// Evaluates against the object. Fields are dotted paths; a missing field reads as `""`.
    pub fn matches(&self, obj: &Value) -> bool {
        self.requirements.iter().all(|(field, equal, value)| {
            let actual = field_value(obj, field);
            (actual == *value) == *equal
        })
    }
}

/// The string form of a dotted field path (`spec.nodeName`), `""` when absent.
pub fn field_value(obj: &Value, path: &str) -> String {
    let mut current = obj;
    for part in path.split('.') {
        current = &current[part];
    }
    match current {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_parses_every_operator() {
        let sel = LabelSelector::parse("app=web,tier!=db,env in (prod, staging),!legacy,track").expect("parses");
        assert!(sel.matches(&json!({"app": "web", "env": "prod", "track": "x"})));
        assert!(!sel.matches(&json!({"app": "web", "env": "dev", "track": "x"})));
        assert!(!sel.matches(&json!({"app": "web", "env": "prod", "track": "x", "legacy": "1"})));
        assert!(LabelSelector::parse("env in prod").is_err());
    }

    #[test]
    fn label_selector_from_object_handles_expressions() {
        let sel = LabelSelector::from_object(&json!({"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]}))
        .expect("valid")
        .expect("present");
        assert!(sel.matches(&json!({"app": "web", "tier": "fe"})));
        assert!(!sel.matches(&json!({"app": "web", "tier": "db"})));
        assert_eq!(LabelSelector::from_object(&Value::Null), Ok(None));
    }

    #[test]
    fn field_selector_matches_nested_fields() {
        let sel = FieldSelector::parse("spec.nodeName=hpc-1,status.phase!=Failed").expect("parses");
        assert!(sel.matches(&json!({"spec": {"nodeName": "hpc-1"}, "status": {"phase": "Running"}})));
        assert!(!sel.matches(&json!({"spec": {"nodeName": "hpc-2"}})));
        assert_eq!(sel.required_value("spec.nodeName"), Some("hpc-1"));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
