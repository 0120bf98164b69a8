//! Role-based access control as `rbac.authorization.k8s.io/v1` defines it: who a request comes
//! from, what it asks to do, and whether the rules of the roles bound to that user allow it.
//! Pure: the caller reads the bindings and roles from wherever they are stored.

use serde_json::Value;

/// Group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";
/// Group of requests without credentials.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// Members are allowed everything, whatever the bindings say (as in Kubernetes).
pub const MASTERS: &str = "system:masters";
/// Group of the nodes' identities (`system:node:NAME`).
pub const NODES: &str = "system:nodes";
pub const NODE_USER_PREFIX: &str = "system:node:";
/// Group of holders of the bootstrap token (they may only ask for a node certificate).
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn new(name: impl Into<String>, groups: impl IntoIterator<Item = impl Into<String>>) -> User {
        let mut groups: Vec<String> = groups.into_iter().map(Into::into).collect();
        if !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.to_string());
        }
        User { name: name.into(), groups }
    }

    pub fn anonymous() -> User {
        User { name: "system:anonymous".into(), groups: vec![UNAUTHENTICATED.into()] }
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The node this user is, for node identities (`system:node:NAME` in `system:nodes`).
    pub fn node_name(&self) -> Option<&str> {
        self.name.strip_prefix(NODE_USER_PREFIX).filter(|_| self.in_group(NODES))
    }

    /// `(namespace, name)` of a ServiceAccount identity.
    fn service_account(&self) -> Option<(&str, &str)> {
        self.name.strip_prefix(SERVICE_ACCOUNT_PREFIX)?.split_once(':')
    }
}

/// What a request asks to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attributes {
    Resource { verb: String, group: String, resource: String, subresource: String, namespace: String, name: String },
    NonResource { verb: String, path: String },
}

impl Attributes {
    pub fn verb(&self) -> &str {
        match self {
            Attributes::Resource { verb, .. } | Attributes::NonResource { verb, .. } => verb,
        }
    }

    /// Kubernetes' wording of a denial, which kubectl prints as is.
    pub fn forbidden_message(&self, user: &User) -> String {
        match self {
            Attributes::Resource { verb, group, resource, subresource, namespace, name } => {
                let what = if subresource.is_empty() { resource.clone() } else { format!("{resource}/{subresource}") };
                let named = if name.is_empty() { String::new() } else { format!(" \"{name}\"") };
                let scope = if namespace.is_empty() {
                    "at the cluster scope".to_string()
                } else {
                    format!("in the namespace \"{namespace}\"")
                };
                format!(
                    "{what}{named} is forbidden: User \"{}\" cannot {verb} resource \"{what}\" in API group \"{group}\" {scope}",
                    user.name
                )
            }
            Attributes::NonResource { verb, path } => {
                format!("forbidden: User \"{}\" cannot {verb} path \"{path}\"", user.name)
            }
        }
    }
}

/// Whether one PolicyRule allows the request.
pub fn rule_allows(rule: &Value, attributes: &Attributes) -> bool {
    let listed = |field: &str, value: &str| {
        rule[field].as_array().into_iter().flatten().filter_map(Value::as_str).any(|v| v == "*" || v == value)
    };
    if !listed("verbs", attributes.verb()) {
        return false;
    }
    match attributes {
        Attributes::Resource { group, resource, subresource, name, .. } => {
            let resource_listed =
                rule["resources"].as_array().into_iter().flatten().filter_map(Value::as_str).any(|r| {
                    if subresource.is_empty() {
                        r == "*" || r == resource
                    } else {
                        r == "*"
                            || *r == format!("{resource}/{subresource}")
                            || *r == format!("{resource}/*")
                            || *r == format!("*/{subresource}")
                    }
                });
            let names = rule["resourceNames"].as_array().filter(|n| !n.is_empty());
            let name_listed = names.is_none_or(|n| n.iter().any(|v| v.as_str() == Some(name.as_str())));
            listed("apiGroups", group) && resource_listed && name_listed
        }
        Attributes::NonResource { path, .. } => {
            rule["nonResourceURLs"].as_array().into_iter().flatten().filter_map(Value::as_str).any(|url| {
                match url.strip_suffix('*') {
                    Some(prefix) => path.starts_with(prefix),
                    None => url == path,
                }
            })
        }
    }
}

/// Whether a (Cluster)RoleBinding names the user among its subjects.
pub fn binding_names(binding: &Value, user: &User) -> bool {
    binding["subjects"].as_array().into_iter().flatten().any(|subject| {
        let name = subject["name"].as_str().unwrap_or("");
        match subject["kind"].as_str() {
            Some("User") => name == user.name,
            Some("Group") => user.in_group(name),
            Some("ServiceAccount") => {
                let namespace = subject["namespace"].as_str().unwrap_or("");
                user.service_account() == Some((namespace, name))
            }
            _ => false,
        }
    })
}

/// The role a binding refers to: (`Role` or `ClusterRole`, name).
pub fn role_ref(binding: &Value) -> Option<(&str, &str)> {
    let kind = binding["roleRef"]["kind"].as_str()?;
    let name = binding["roleRef"]["name"].as_str()?;
    (binding["roleRef"]["apiGroup"].as_str() == Some("rbac.authorization.k8s.io")).then_some((kind, name))
}

/// Whether any rule of a role allows the request.
pub fn role_allows(role: &Value, attributes: &Attributes) -> bool {
    role["rules"].as_array().into_iter().flatten().any(|rule| rule_allows(rule, attributes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resource(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes::Resource {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: "default".into(),
            name: name.into(),
        }
    }

    #[test]
    fn rules_match_verbs_groups_resources_and_names() {
        let rule = json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"]});
        assert!(rule_allows(&rule, &resource("get", "", "pods", "", "a")));
        assert!(rule_allows(&rule, &resource("get", "", "pods", "log", "a")));
        assert!(!rule_allows(&rule, &resource("get", "", "pods", "status", "a")));
        assert!(!rule_allows(&rule, &resource("create", "", "pods", "", "")));
        assert!(!rule_allows(&rule, &resource("get", "apps", "pods", "", "a")));
        let named = json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "resourceNames": ["only"]});
        assert!(named.get("resourceNames").is_some());
        assert!(rule_allows(&named, &resource("delete", "apps", "deployments", "", "only")));
        assert!(!rule_allows(&named, &resource("delete", "apps", "deployments", "", "other")));
        let subresources = json!({"verbs": ["update"], "apiGroups": ["*"], "resources": ["*/status"]});
        assert!(rule_allows(&subresources, &resource("update", "apps", "deployments", "status", "x")));
        assert!(!rule_allows(&subresources, &resource("update", "apps", "deployments", "", "x")));
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_prefix() {
        let rule = json!({"verbs": ["get"], "nonResourceURLs": ["/version", "/apis/*"]});
        let get = |path: &str| Attributes::NonResource { verb: "get".into(), path: path.into() };
        assert!(rule_allows(&rule, &get("/version")));
        assert!(rule_allows(&rule, &get("/apis/apps/v1")));
        assert!(!rule_allows(&rule, &get("/version/x")));
        assert!(!rule_allows(&rule, &resource("get", "", "version", "", "")));
    }

    #[test]
    fn bindings_name_users_groups_and_service_accounts() {
        let binding = json!({"subjects": [
            {"kind": "User", "name": "alice"},
            {"kind": "Group", "name": "axle:viewers"},
            {"kind": "ServiceAccount", "name": "ota", "namespace": "updates"}
        ]});
        assert!(binding_names(&binding, &User::new("alice", Vec::<String>::new())));
        assert!(binding_names(&binding, &User::new("bob", ["axle:viewers"])));
        assert!(binding_names(&binding, &User::new("system:serviceaccount:updates:ota", Vec::<String>::new())));
        assert!(!binding_names(&binding, &User::new("system:serviceaccount:other:ota", Vec::<String>::new())));
        assert!(!binding_names(&binding, &User::anonymous()));
    }

    #[test]
    fn node_identity_needs_the_nodes_group() {
        assert_eq!(User::new("system:node:hpc-1", [NODES]).node_name(), Some("hpc-1"));
        assert_eq!(User::new("system:node:hpc-1", Vec::<String>::new()).node_name(), None);
    }

    #[test]
    fn denial_message_reads_as_kubernetes_writes_it() {
        let user = User::new("viewer", ["axle:viewers"]);
        let message = resource("create", "apps", "deployments", "", "").forbidden_message(&user);
        assert_eq!(
            message,
            "deployments is forbidden: User \"viewer\" cannot create resource \"deployments\" in API group \"apps\" in the namespace \"default\""
        );
    }
}
