//! Authorization: whether the authenticated user may do what the request asks. Members of
//! `system:masters` may do everything; node identities are decided by the node authorizer
//! (a node touches only its own Node, Lease and pods, and reads only the Secrets and
//! ConfigMaps its pods use); everyone else by RBAC — the ClusterRoleBindings, and the
//! RoleBindings of the request's namespace, read from the store at request time.
//!
//! The default roles and bindings are created at first start (and recreated if deleted; edits
//! are kept): upstream's user-facing roles `cluster-admin` (bound to `system:masters` and
//! `axle:admins`), `admin`, `edit` and `view` (aggregated from the `system:aggregate-to-*`
//! roles and any role labelled to join them, see `aggregation`); Axle's `viewer` and
//! `update-service` for `axle:viewers` and `axle:update-services`; and the system roles
//! (discovery for every authenticated user, health and version for everyone, certificate
//! requests for the bootstrap token).

use crate::http::Query;
use crate::routes::Route;
use crate::State;
use api::rbac::{self, Attributes, User};
use api::ApiError;
use hyper::Method;
use serde_json::{json, Value};

const RBAC: &str = "rbac.authorization.k8s.io";

/// The attributes of a request, as RBAC rules match them (even `/version` goes through the
/// rules, which allow it to everyone).
pub fn attributes(route: &Route, method: &Method, path: &str, query: &Query) -> Attributes {
    match route {
        Route::Resource(target) => {
            let verb = match *method {
                // Streams are `create` whichever method their upgrade uses (WebSockets GET).
                _ if matches!(target.subresource.as_deref(), Some("exec" | "attach" | "portforward")) => "create",
                Method::GET | Method::HEAD if query.flag("watch") => "watch",
                Method::GET | Method::HEAD if target.name.is_none() => "list",
                Method::GET | Method::HEAD => "get",
                Method::POST => "create",
                Method::PUT => "update",
                Method::PATCH => "patch",
                Method::DELETE if target.name.is_none() => "deletecollection",
                Method::DELETE => "delete",
                _ => "unknown",
            };
            Attributes::Resource {
                verb: verb.into(),
                group: target.group.clone(),
                resource: target.plural.clone(),
                subresource: target.subresource.clone().unwrap_or_default(),
                namespace: target.namespace.clone().unwrap_or_default(),
                name: target.name.clone().unwrap_or_default(),
            }
        }
        _ => {
            let verb = match *method {
                Method::HEAD => "get".to_string(),
                ref other => other.as_str().to_ascii_lowercase(),
            };
            Attributes::NonResource { verb, path: path.to_string() }
        }
    }
}

/// Why a request is denied.
pub fn authorize(state: &State, user: &User, attributes: &Attributes) -> Result<(), String> {
    if user.in_group(rbac::MASTERS) {
        return Ok(());
    }
    let allowed = match user.node_name() {
        Some(node) => node_allows(state, node, attributes),
        None => rbac_allows(state, user, attributes),
    };
    if allowed {
        Ok(())
    } else {
        Err(attributes.forbidden_message(user))
    }
}

fn rbac_allows(state: &State, user: &User, attributes: &Attributes) -> bool {
    let list = |prefix: String| state.store.list(&prefix, None, 0, &|_| true).map(|p| p.items).unwrap_or_default();
    let get = |key: String| state.store.get(&key).ok().flatten();
    let role_allows = |binding: &Value, namespace: &str| match rbac::role_ref(binding) {
        Some(("ClusterRole", name)) => get(store::key(&format!("{RBAC}/clusterroles"), "", name))
            .is_some_and(|r| rbac::role_allows(&r, attributes)),
        Some(("Role", name)) if !namespace.is_empty() => get(store::key(&format!("{RBAC}/roles"), namespace, name))
            .is_some_and(|r| rbac::role_allows(&r, attributes)),
        _ => false,
    };
    let cluster_wide = list(format!("{RBAC}/clusterrolebindings/"))
        .iter()
        .any(|binding| rbac::binding_names(binding, user) && role_allows(binding, ""));
    if cluster_wide {
        return true;
    }
    match attributes {
        Attributes::Resource { namespace, .. } if !namespace.is_empty() => {
            list(format!("{RBAC}/rolebindings/{namespace}/"))
                .iter()
                .any(|binding| rbac::binding_names(binding, user) && role_allows(binding, namespace))
        }
        _ => false,
    }
}

/// The user a request acts as: `Impersonate-User`/`Impersonate-Group` (kubectl `--as`,
/// `--as-group`) when the authenticated user may impersonate them, else the user itself.
pub fn impersonate(state: &State, user: User, headers: &hyper::HeaderMap) -> Result<User, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(String::from).collect()
    };
    let Some(as_user) = values("impersonate-user").into_iter().next() else {
        return Ok(user);
    };
    let groups = values("impersonate-group");
    let asks = std::iter::once(("users", as_user.clone())).chain(groups.iter().map(|g| ("groups", g.clone())));
    for (resource, name) in asks {
        let attributes = Attributes::Resource {
            verb: "impersonate".into(),
            group: String::new(),
            resource: resource.into(),
            subresource: String::new(),
            namespace: String::new(),
            name,
        };
        authorize(state, &user, &attributes).map_err(ApiError::forbidden)?;
    }
    Ok(User::new(as_user, groups))
}

/// What a node's identity may do (Kubernetes' Node authorizer and NodeRestriction, for the
/// requests an agent or the ECU gateway makes).
fn node_allows(state: &State, node: &str, attributes: &Attributes) -> bool {
    let (verb, group, resource, subresource, namespace, name) = match attributes {
        Attributes::NonResource { verb, path } => {
            let discovery = ["/api", "/apis", "/version", "/healthz", "/readyz", "/livez", "/openapi"]
                .iter()
                .any(|p| path == p || path.starts_with(&format!("{p}/")));
            // Pulls from the car's registry (images, firmware, Axle's own binary).
            let registry_read = path.starts_with("/v2/") || path == "/v2";
            return verb == "get" && (discovery || registry_read);
        }
        Attributes::Resource { verb, group, resource, subresource, namespace, name } => {
            (verb.as_str(), group.as_str(), resource.as_str(), subresource.as_str(), namespace.as_str(), name.as_str())
        }
    };
    let reading = matches!(verb, "get" | "list" | "watch");
    let pod_is_ours = || {
        state
            .store
            .get(&store::key("core/pods", namespace, name))
            .ok()
            .flatten()
            .is_some_and(|pod| pod["spec"]["nodeName"].as_str() == Some(node))
    };
    match (group, resource) {
        ("", "nodes") => match verb {
            "get" | "list" | "watch" => true,
            "update" | "patch" => name == node,
            _ => false,
        },
        ("coordination.k8s.io", "leases") => {
            namespace == "kube-node-lease" && name == node && matches!(verb, "get" | "create" | "update" | "patch")
        }
        ("", "pods") => match (verb, subresource) {
            (_, "" | "status") if reading => true,
            ("update" | "patch", "status") | ("delete", "") => pod_is_ours(),
            _ => false,
        },
        ("", "secrets" | "configmaps") => verb == "get" && used_by_pod_on(state, node, resource, namespace, name),
        ("", "events") => matches!(verb, "create" | "patch" | "update" | "get"),
        ("certificates.k8s.io", "certificatesigningrequests") => matches!(verb, "create" | "get" | "list" | "watch"),
        ("axle.dev", "campaigns") => reading || (subresource == "status" && verb == "patch"),
        ("", "services" | "namespaces") | ("apps", _) => reading && subresource.is_empty(),
        _ => false,
    }
}

/// Whether a pod bound to `node` refers to the Secret or ConfigMap (volumes, projected
/// sources, env, envFrom, image pull secrets).
fn used_by_pod_on(state: &State, node: &str, resource: &str, namespace: &str, name: &str) -> bool {
    let pods = state
        .store
        .list(&format!("core/pods/{namespace}/"), None, 0, &|pod| pod["spec"]["nodeName"].as_str() == Some(node))
        .map(|page| page.items)
        .unwrap_or_default();
    pods.iter().any(|pod| api::meta::references(pod, resource).iter().any(|n| n == name))
}

/// The answer to a SelfSubjectAccessReview: the review with `status` filled in.
pub fn review(state: &State, user: &User, mut review: Value) -> Result<Value, ApiError> {
    let spec = &review["spec"];
    let attributes = if let Some(resource) = spec.get("resourceAttributes").filter(|v| v.is_object()) {
        let field = |f: &str| resource[f].as_str().unwrap_or("").to_string();
        Attributes::Resource {
            verb: field("verb"),
            group: field("group"),
            resource: field("resource"),
            subresource: field("subresource"),
            namespace: field("namespace"),
            name: field("name"),
        }
    } else if let Some(non_resource) = spec.get("nonResourceAttributes").filter(|v| v.is_object()) {
        Attributes::NonResource {
            verb: non_resource["verb"].as_str().unwrap_or("").to_string(),
            path: non_resource["path"].as_str().unwrap_or("").to_string(),
        }
    } else {
        return Err(ApiError::bad_request(
            "spec.resourceAttributes or spec.nonResourceAttributes must be set in a SelfSubjectAccessReview",
        ));
    };
    review["status"] = match authorize(state, user, &attributes) {
        Ok(()) => json!({"allowed": true, "reason": "allowed by the roles bound to the user"}),
        Err(_) => json!({"allowed": false}),
    };
    Ok(review)
}

/// The answer to a SelfSubjectReview (`kubectl auth whoami`): who the API takes the caller for.
pub fn who_am_i(user: &User, version: &str) -> Value {
    json!({
        "kind": "SelfSubjectReview",
        "apiVersion": format!("authentication.k8s.io/{version}"),
        "metadata": {"creationTimestamp": null},
        "status": {"userInfo": {"username": user.name, "groups": user.groups}},
    })
}

fn policy(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

fn urls(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": urls})
}

const READ: &[&str] = &["get", "list", "watch"];
const DISCOVERY_URLS: &[&str] = &["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*"];
const PUBLIC_URLS: &[&str] =
    &["/version", "/version/", "/healthz", "/healthz/*", "/readyz", "/readyz/*", "/livez", "/livez/*"];

/// A default ClusterRole: its name, its rules, the subjects (kind, name) its binding of the same
/// name grants it to (none: no binding), and how it takes part in aggregation.
struct DefaultRole {
    name: &'static str,
    rules: Vec<Value>,
    subjects: Vec<(&'static str, &'static str)>,
    /// Joins the aggregated role of this name (`rbac.authorization.k8s.io/aggregate-to-NAME`).
    joins: Option<&'static str>,
    /// Is aggregated from the roles that join it.
    aggregated: bool,
}

impl DefaultRole {
    fn new(name: &'static str, rules: Vec<Value>, subjects: Vec<(&'static str, &'static str)>) -> DefaultRole {
        DefaultRole { name, rules, subjects, joins: None, aggregated: false }
    }

    fn joining(mut self, role: &'static str) -> DefaultRole {
        self.joins = Some(role);
        self
    }

    fn aggregated(mut self) -> DefaultRole {
        self.aggregated = true;
        self
    }
}

/// The label a ClusterRole carries to join the aggregated role `name`.
fn aggregate_to(name: &str) -> String {
    format!("rbac.authorization.k8s.io/aggregate-to-{name}")
}

const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

fn defaults() -> Vec<DefaultRole> {
    vec![
        DefaultRole::new(
            "cluster-admin",
            vec![policy(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
            vec![("Group", rbac::MASTERS)],
        ),
        DefaultRole::new("admin", Vec::new(), Vec::new()).aggregated(),
        DefaultRole::new("edit", Vec::new(), Vec::new()).aggregated().joining("admin"),
        DefaultRole::new("view", Vec::new(), Vec::new()).aggregated().joining("edit"),
        DefaultRole::new(
            "system:aggregate-to-admin",
            vec![
                policy(&["create"], &["authorization.k8s.io"], &["localsubjectaccessreviews"]),
                policy(&[WRITE, READ].concat(), &[RBAC], &["rolebindings", "roles"]),
            ],
            Vec::new(),
        )
        .joining("admin"),
        DefaultRole::new(
            "system:aggregate-to-edit",
            vec![
                policy(&["impersonate"], &[""], &["serviceaccounts"]),
                policy(
                    &[WRITE, READ].concat(),
                    &[""],
                    &["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"],
                ),
                policy(&["create"], &[""], &["pods/eviction", "serviceaccounts/token"]),
                policy(
                    &[WRITE, READ].concat(),
                    &[""],
                    &[
                        "configmaps",
                        "events",
                        "persistentvolumeclaims",
                        "secrets",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                    ],
                ),
                policy(
                    WRITE,
                    &["apps"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/scale",
                        "statefulsets",
                        "statefulsets/scale",
                    ],
                ),
                policy(WRITE, &["batch"], &["cronjobs", "jobs"]),
                policy(WRITE, &["coordination.k8s.io"], &["leases"]),
            ],
            Vec::new(),
        )
        .joining("edit"),
        DefaultRole::new(
            "system:aggregate-to-view",
            vec![
                policy(
                    READ,
                    &[""],
                    &[
                        "configmaps",
                        "endpoints",
                        "events",
                        "namespaces",
                        "namespaces/status",
                        "persistentvolumeclaims",
                        "pods",
                        "pods/log",
                        "pods/status",
                        "serviceaccounts",
                        "services",
                        "services/status",
                    ],
                ),
                policy(
                    READ,
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                    ],
                ),
                policy(READ, &["batch"], &["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
                policy(READ, &["coordination.k8s.io"], &["leases"]),
            ],
            Vec::new(),
        )
        .joining("view"),
        // Axle's own kinds (bundles, campaigns, the inventory) are part of what a viewer sees.
        DefaultRole::new("axle:aggregate-to-view", vec![policy(READ, &["axle.dev"], &["*"])], Vec::new())
            .joining("view"),
        DefaultRole::new(
            "axle:admins",
            vec![policy(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
            vec![("Group", "axle:admins")],
        ),
        DefaultRole::new(
            "viewer",
            vec![
                // Everything but Secrets, as Kubernetes' `view`.
                policy(
                    READ,
                    &[""],
                    &[
                        "pods",
                        "pods/log",
                        "pods/status",
                        "nodes",
                        "nodes/status",
                        "namespaces",
                        "configmaps",
                        "services",
                        "serviceaccounts",
                        "events",
                    ],
                ),
                policy(
                    READ,
                    &["apps", "batch", "coordination.k8s.io", "apiextensions.k8s.io", "metrics.k8s.io", "axle.dev"],
                    &["*"],
                ),
                policy(READ, &[RBAC], &["*"]),
                urls(&["get"], &["/metrics", "/v2/*"]),
            ],
            vec![("Group", "axle:viewers")],
        ),
        DefaultRole::new(
            "update-service",
            vec![policy(
                &["create", "get", "list", "watch"],
                &["axle.dev"],
                &["bundles", "bundles/upload", "bundles/status", "campaigns", "campaigns/status"],
            )],
            vec![("Group", "axle:update-services")],
        ),
        DefaultRole::new(
            "system:node-bootstrapper",
            vec![policy(
                &["create", "get", "list", "watch"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            )],
            vec![("Group", rbac::BOOTSTRAPPERS)],
        ),
        DefaultRole::new(
            "system:basic-user",
            vec![
                policy(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                policy(&["create"], &["authentication.k8s.io"], &["selfsubjectreviews"]),
            ],
            vec![("Group", rbac::AUTHENTICATED)],
        ),
        DefaultRole::new(
            "system:discovery",
            vec![urls(&["get"], DISCOVERY_URLS)],
            vec![("Group", rbac::AUTHENTICATED)],
        ),
        DefaultRole::new(
            "system:public-info-viewer",
            vec![urls(&["get"], PUBLIC_URLS)],
            vec![("Group", rbac::AUTHENTICATED), ("Group", rbac::UNAUTHENTICATED)],
        ),
    ]
}

/// Paths anyone may read without credentials (anonymous requests elsewhere get 401).
pub fn is_public(path: &str) -> bool {
    let public = Attributes::NonResource { verb: "get".into(), path: path.to_string() };
    rbac::rule_allows(&urls(&["get"], PUBLIC_URLS), &public)
}

/// Creates the default roles and bindings that do not exist.
pub async fn ensure_default_roles(state: &State) -> Result<(), ApiError> {
    let annotations = json!({"rbac.authorization.kubernetes.io/autoupdate": "true"});
    let labels = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    let mut roles = Vec::new();
    let mut bindings = Vec::new();
    for role in defaults() {
        let mut role_labels = labels.clone();
        if let Some(joins) = role.joins {
            role_labels[aggregate_to(joins)] = json!("true");
        }
        let mut object = json!({"metadata": {"name": role.name, "labels": role_labels, "annotations": annotations},
                                "rules": role.rules});
        if role.aggregated {
            object["aggregationRule"] =
                json!({"clusterRoleSelectors": [{"matchLabels": {aggregate_to(role.name): "true"}}]});
        }
        roles.push(object);
        if role.subjects.is_empty() {
            continue;
        }
        let subjects: Vec<Value> = role
            .subjects
            .iter()
            .map(|(kind, subject)| json!({"kind": kind, "apiGroup": RBAC, "name": subject}))
            .collect();
        bindings.push(json!({
            "metadata": {"name": role.name, "labels": labels, "annotations": annotations},
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role.name},
            "subjects": subjects,
        }));
    }
    crate::lifecycle::ensure_exist(state, RBAC, "clusterroles", roles).await?;
    crate::lifecycle::ensure_exist(state, RBAC, "clusterrolebindings", bindings).await?;
    crate::aggregation::aggregate(state).await
}
