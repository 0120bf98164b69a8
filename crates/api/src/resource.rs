//! Resource types and the registry that resolves request paths and kinds to them.
//!
//! Built-in kinds are static data. Custom resources get a `ResourceType` built from their
//! CustomResourceDefinition; the registry is rebuilt whenever a CRD changes, so a custom
//! resource is served as soon as its CRD is stored.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Namespaced,
    Cluster,
}

/// Which subresources a resource type serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subresources {
    pub status: bool,
    pub scale: bool,
    pub log: bool,
}

/// One served resource: `pods` in core/v1, `deployments` in apps/v1, a CRD's plural, …
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceType {
    /// `""` for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub scope: Scope,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub subresources: Subresources,
    /// Verbs for discovery; read-only virtual resources have fewer.
    pub verbs: Vec<&'static str>,
    /// For custom resources: the version's `openAPIV3Schema`, used for validation and pruning.
    pub schema: Option<Arc<Value>>,
    /// For custom resources: `additionalPrinterColumns` of the served version.
    pub printer_columns: Vec<Value>,
    /// True for types defined by a CustomResourceDefinition.
    pub custom: bool,
    /// Whether objects of this type are persisted (false for review-style resources).
    pub stored: bool,
}

const ALL_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

impl ResourceType {
    /// `v1` or `apps/v1`: the `apiVersion` field of objects of this type.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage-key prefix of this resource: `core/pods`, `apps/deployments`. It does not
    /// include the version: one object is one object whatever version it is read through.
    pub fn storage_prefix(&self) -> String {
        let group = if self.group.is_empty() { "core" } else { &self.group };
        format!("{group}/{}", self.plural)
    }

    pub fn namespaced(&self) -> bool {
        self.scope == Scope::Namespaced
    }

    /// The discovery entry (`APIResourceList.resources[]`) for this type and its subresources.
    pub fn discovery_entries(&self) -> Vec<Value> {
        let mut entry = json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced(),
            "kind": self.kind,
            "verbs": self.verbs,
        });
        if !self.short_names.is_empty() {
            entry["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            entry["categories"] = json!(self.categories);
        }
        let mut entries = vec![entry];
        let sub = |name: &str, kind: &str, verbs: &[&str]| {
            json!({"name": format!("{}/{name}", self.plural), "singularName": "",
                   "namespaced": self.namespaced(), "kind": kind, "verbs": verbs})
        };
        if self.subresources.status {
            entries.push(sub("status", &self.kind, &["get", "patch", "update"]));
        }
        if self.subresources.scale {
            let mut scale = sub("scale", "Scale", &["get", "patch", "update"]);
            scale["group"] = json!("autoscaling");
            scale["version"] = json!("v1");
            entries.push(scale);
        }
        if self.subresources.log {
            entries.push(sub("log", "Pod", &["get"]));
            // The streams (upstream lists them so, with the options kind they take).
            entries.push(sub("attach", "PodAttachOptions", &["create", "get"]));
            entries.push(sub("exec", "PodExecOptions", &["create", "get"]));
            entries.push(sub("portforward", "PodPortForwardOptions", &["create", "get"]));
        }
        if self.kind == "Pod" && self.group.is_empty() {
            entries.push(sub("binding", "Binding", &["create"]));
        }
        entries
    }
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    scope: Scope,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    status: bool,
    scale: bool,
    log: bool,
}

const NS: Scope = Scope::Namespaced;
const CL: Scope = Scope::Cluster;

#[rustfmt::skip]
const BUILTINS: &[Builtin] = &[
    Builtin { group: "", version: "v1", kind: "Namespace", plural: "namespaces", scope: CL, short_names: &["ns"], categories: &[], status: true, scale: false, log: false },
    Builtin { group: "", version: "v1", kind: "Node", plural: "nodes", scope: CL, short_names: &["no"], categories: &[], status: true, scale: false, log: false },
    Builtin { group: "", version: "v1", kind: "Pod", plural: "pods", scope: NS, short_names: &["po"], categories: &["all"], status: true, scale: false, log: true },
    Builtin { group: "", version: "v1", kind: "ConfigMap", plural: "configmaps", scope: NS, short_names: &["cm"], categories: &[], status: false, scale: false, log: false },
    Builtin { group: "", version: "v1", kind: "Secret", plural: "secrets", scope: NS, short_names: &[], categories: &[], status: false, scale: false, log: false },
    Builtin { group: "", version: "v1", kind: "Event", plural: "events", scope: NS, short_names: &["ev"], categories: &[], status: false, scale: false, log: false },
    Builtin { group: "", version: "v1", kind: "Service", plural: "services", scope: NS, short_names: &["svc"], categories: &["all"], status: true, scale: false, log: false },
    Builtin { group: "", version: "v1", kind: "ServiceAccount", plural: "serviceaccounts", scope: NS, short_names: &["sa"], categories: &[], status: false, scale: false, log: false },
    Builtin { group: "apps", version: "v1", kind: "Deployment", plural: "deployments", scope: NS, short_names: &["deploy"], categories: &["all"], status: true, scale: true, log: false },
    Builtin { group: "apps", version: "v1", kind: "ReplicaSet", plural: "replicasets", scope: NS, short_names: &["rs"], categories: &["all"], status: true, scale: true, log: false },
    Builtin { group: "apps", version: "v1", kind: "DaemonSet", plural: "daemonsets", scope: NS, short_names: &["ds"], categories: &["all"], status: true, scale: false, log: false },
    Builtin { group: "batch", version: "v1", kind: "Job", plural: "jobs", scope: NS, short_names: &[], categories: &["all"], status: true, scale: false, log: false },
    Builtin { group: "batch", version: "v1", kind: "CronJob", plural: "cronjobs", scope: NS, short_names: &["cj"], categories: &["all"], status: true, scale: false, log: false },
    Builtin { group: "coordination.k8s.io", version: "v1", kind: "Lease", plural: "leases", scope: NS, short_names: &[], categories: &[], status: false, scale: false, log: false },
    Builtin { group: "rbac.authorization.k8s.io", version: "v1", kind: "ClusterRole", plural: "clusterroles", scope: CL, short_names: &[], categories: &[], status: false, scale: false, log: false },
    Builtin { group: "rbac.authorization.k8s.io", version: "v1", kind: "ClusterRoleBinding", plural: "clusterrolebindings", scope: CL, short_names: &[], categories: &[], status: false, scale: false, log: false },
    Builtin { group: "rbac.authorization.k8s.io", version: "v1", kind: "Role", plural: "roles", scope: NS, short_names: &[], categories: &[], status: false, scale: false, log: false },
    Builtin { group: "rbac.authorization.k8s.io", version: "v1", kind: "RoleBinding", plural: "rolebindings", scope: NS, short_names: &[], categories: &[], status: false, scale: false, log: false },
    Builtin { group: "certificates.k8s.io", version: "v1", kind: "CertificateSigningRequest", plural: "certificatesigningrequests", scope: CL, short_names: &["csr"], categories: &[], status: true, scale: false, log: false },
    Builtin { group: "apiextensions.k8s.io", version: "v1", kind: "CustomResourceDefinition", plural: "customresourcedefinitions", scope: CL, short_names: &["crd", "crds"], categories: &["api-extensions"], status: true, scale: false, log: false },
];

/// The group versions this server serves besides custom ones, in discovery order.
pub const BUILTIN_GROUPS: &[(&str, &str)] = &[
    ("apps", "v1"),
    ("batch", "v1"),
    ("coordination.k8s.io", "v1"),
    ("apiextensions.k8s.io", "v1"),
    ("authorization.k8s.io", "v1"),
    ("authentication.k8s.io", "v1"),
    ("rbac.authorization.k8s.io", "v1"),
    ("certificates.k8s.io", "v1"),
];

/// Reviews: resources that are only ever created, answered at once and never stored
/// (group, version, plural, kind).
pub const REVIEWS: &[(&str, &str, &str, &str)] = &[
    ("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview"),
    ("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview"),
];

/// All resource types currently served. Cheap to clone (shared behind `Arc`).
#[derive(Debug, Clone)]
pub struct Registry {
    types: Arc<Vec<ResourceType>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::builtin()
    }
}

impl Registry {
    /// The registry of built-in types only.
    pub fn builtin() -> Registry {
        Registry { types: Arc::new(builtin_types()) }
    }

    /// Built-in types plus the types the given CRDs define (only `Established`-worthy CRDs:
    /// well-formed and not clashing with a built-in type).
    pub fn with_crds<'a>(crds: impl IntoIterator<Item = &'a Value>) -> Registry {
        let mut types = builtin_types();
        for crd in crds {
            for rt in types_from_crd(crd) {
                let clash =
                    types.iter().any(|t| t.group == rt.group && t.plural == rt.plural && t.version == rt.version);
                if !clash {
                    types.push(rt);
                }
            }
        }
        Registry { types: Arc::new(types) }
    }

    pub fn types(&self) -> &[ResourceType] {
        &self.types
    }

    /// The type served at `/apis/{group}/{version}/{plural}` (group `""` for `/api/v1`).
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types.iter().find(|t| t.group == group && t.version == version && t.plural == plural)
    }

    /// The type with `apiVersion`/`kind` (as written in a manifest).
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceType> {
        let (group, version) = split_api_version(api_version);
        self.types.iter().find(|t| t.group == group && t.version == version && t.kind == kind)
    }

    /// Versions served for a group, preferred (storage) version first.
    pub fn group_versions(&self, group: &str) -> Vec<String> {
        let mut versions: Vec<String> = Vec::new();
        for t in self.types.iter().filter(|t| t.group == group) {
            if !versions.contains(&t.version) {
                versions.push(t.version.clone());
            }
        }
        for (_, version, _, _) in REVIEWS.iter().filter(|r| r.0 == group) {
            if !versions.iter().any(|v| v == version) {
                versions.push(version.to_string());
            }
        }
        versions
    }

    /// Every non-core group, built-in groups first, then custom groups in name order.
    pub fn groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = BUILTIN_GROUPS.iter().map(|(g, _)| g.to_string()).collect();
        let mut custom: Vec<String> =
            self.types.iter().filter(|t| t.custom && !groups.contains(&t.group)).map(|t| t.group.clone()).collect();
        custom.sort();
        custom.dedup();
        groups.extend(custom);
        groups
    }

    /// Types served under one group version.
    pub fn in_group_version<'a>(&'a self, group: &'a str, version: &'a str) -> impl Iterator<Item = &'a ResourceType> {
        self.types.iter().filter(move |t| t.group == group && t.version == version)
    }
}

/// `apps/v1` → (`apps`, `v1`); `v1` → (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

fn builtin_types() -> Vec<ResourceType> {
    BUILTINS
        .iter()
        .map(|b| ResourceType {
            group: b.group.into(),
            version: b.version.into(),
            kind: b.kind.into(),
            plural: b.plural.into(),
            singular: b.kind.to_lowercase(),
            scope: b.scope,
            short_names: b.short_names.iter().map(|s| s.to_string()).collect(),
            categories: b.categories.iter().map(|s| s.to_string()).collect(),
            subresources: Subresources { status: b.status, scale: b.scale, log: b.log },
            verbs: ALL_VERBS.to_vec(),
            schema: None,
            printer_columns: Vec::new(),
            custom: false,
            stored: true,
        })
        .collect()
}

/// The resource types one CRD defines (one per served version).
pub fn types_from_crd(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let (Some(group), Some(plural), Some(kind)) =
        (spec["group"].as_str(), spec["names"]["plural"].as_str(), spec["names"]["kind"].as_str())
    else {
        return Vec::new();
    };
    if crd["metadata"]["deletionTimestamp"].is_string() {
        return Vec::new();
    }
    let scope = if spec["scope"].as_str() == Some("Cluster") { Scope::Cluster } else { Scope::Namespaced };
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
    };
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    // The storage version first, so discovery names it as preferred.
    let mut ordered: Vec<&Value> = versions.iter().filter(|v| v["storage"].as_bool() == Some(true)).collect();
    ordered.extend(versions.iter().filter(|v| v["storage"].as_bool() != Some(true)));
    ordered
        .into_iter()
        .filter(|v| v["served"].as_bool().unwrap_or(true))
        .filter_map(|v| {
            let version = v["name"].as_str()?;
            let sub = &v["subresources"];
            Some(ResourceType {
                group: group.into(),
                version: version.into(),
                kind: kind.into(),
                plural: plural.into(),
                singular: spec["names"]["singular"].as_str().map(String::from).unwrap_or_else(|| kind.to_lowercase()),
                scope,
                short_names: strings(&spec["names"]["shortNames"]),
                categories: strings(&spec["names"]["categories"]),
                subresources: Subresources {
                    status: sub.get("status").is_some(),
                    scale: sub.get("scale").is_some(),
                    log: false,
                },
                verbs: ALL_VERBS.to_vec(),
                schema: v["schema"].get("openAPIV3Schema").cloned().map(Arc::new),
                printer_columns: v["additionalPrinterColumns"].as_array().cloned().unwrap_or_default(),
                custom: true,
                stored: true,
            })
        })
        .collect()
}

/// Lowercased kinds, plurals and short names → type, for CLI resource arguments (`axle get po`).
pub fn cli_aliases(registry: &Registry) -> BTreeMap<String, &ResourceType> {
    let mut aliases = BTreeMap::new();
    for t in registry.types() {
        aliases.entry(t.plural.clone()).or_insert(t);
        aliases.entry(t.singular.clone()).or_insert(t);
        aliases.entry(t.kind.to_lowercase()).or_insert(t);
        for short in &t.short_names {
            aliases.entry(short.clone()).or_insert(t);
        }
    }
    aliases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_resolves_builtin_paths_and_kinds() {
        let registry = Registry::builtin();
        let deploy = registry.lookup("apps", "v1", "deployments").expect("deployments served");
        assert_eq!(deploy.kind, "Deployment");
        assert_eq!(deploy.storage_prefix(), "apps/deployments");
        assert_eq!(registry.by_kind("v1", "Pod").map(|t| t.plural.as_str()), Some("pods"));
        assert!(registry.lookup("", "v1", "widgets").is_none());
    }

    #[test]
    fn registry_serves_custom_resources_from_crds() {
        let crd = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                     "versions": [{"name": "v1", "served": true, "storage": true,
                                   "schema": {"openAPIV3Schema": {"type": "object"}},
                                   "subresources": {"status": {}}}]}
        });
        let registry = Registry::with_crds([&crd]);
        let widget = registry.lookup("example.com", "v1", "widgets").expect("served");
        assert!(widget.custom && widget.subresources.status && widget.schema.is_some());
        assert!(registry.groups().contains(&"example.com".to_string()));
    }
}
