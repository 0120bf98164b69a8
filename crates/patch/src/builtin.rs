//! The merge strategies of the built-in kinds Axle serves, copied from the
//! `patchStrategy`/`patchMergeKey` struct tags of upstream's k8s.io/api types.
//!
//! Upstream derives these from Go struct tags; Axle has no Go types, so the table lives here.
//! Only kinds listed in [`BuiltinSchema::for_kind`] have one: custom resources have no
//! strategic merge schema, which is why the API server refuses strategic merge patches for
//! them with 415 (as upstream does). A list not named here is atomic ([`ListStrategy::Replace`]),
//! upstream's default — e.g. `tolerations`, `args`, `command`, `readinessGates`, `taints`.

use crate::strategic::{ListStrategy, MergeSchema};

/// Upstream's merge keys for one built-in kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinSchema {
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pod,
    /// Deployment, ReplicaSet, DaemonSet: a pod template at `spec.template`.
    Workload(&'static str),
    Service,
    Node,
    Namespace,
    ServiceAccount,
    /// Kinds whose only merging lists are in `metadata` (ConfigMap, Secret, Event, Lease,
    /// CustomResourceDefinition).
    MetadataOnly(&'static str),
}

impl BuiltinSchema {
    /// The schema of a built-in kind (`"Pod"`, `"Deployment"`, …; case-sensitive, as `kind`
    /// is); `None` for any other kind, custom resources included.
    pub fn for_kind(kind: &str) -> Option<BuiltinSchema> {
        let kind = match kind {
            "Pod" => Kind::Pod,
            "Deployment" => Kind::Workload("Deployment"),
            "ReplicaSet" => Kind::Workload("ReplicaSet"),
            "DaemonSet" => Kind::Workload("DaemonSet"),
            "Service" => Kind::Service,
            "Node" => Kind::Node,
            "Namespace" => Kind::Namespace,
            "ServiceAccount" => Kind::ServiceAccount,
            "ConfigMap" => Kind::MetadataOnly("ConfigMap"),
            "Secret" => Kind::MetadataOnly("Secret"),
            "Event" => Kind::MetadataOnly("Event"),
            "Lease" => Kind::MetadataOnly("Lease"),
            "CustomResourceDefinition" => Kind::MetadataOnly("CustomResourceDefinition"),
            _ => return None,
        };
        Some(BuiltinSchema { kind })
    }

    /// The kind this schema describes.
    pub fn kind(&self) -> &'static str {
        match self.kind {
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::Node => "Node",
            Kind::Namespace => "Namespace",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Workload(kind) | Kind::MetadataOnly(kind) => kind,
        }
    }
}

impl MergeSchema for BuiltinSchema {
    fn list_strategy(&self, path: &[&str]) -> ListStrategy {
        use ListStrategy::*;
        if let Some(rest) = path.strip_prefix(&["metadata"]) {
            return object_meta(rest);
        }
        match (self.kind, path) {
            (Kind::Pod, ["spec", rest @ ..]) => pod_spec(rest),
            (Kind::Pod, ["status", rest @ ..]) => pod_status(rest),
            (Kind::Workload(_), ["spec", "template", "metadata", rest @ ..]) => object_meta(rest),
            (Kind::Workload(_), ["spec", "template", "spec", rest @ ..]) => pod_spec(rest),
            (Kind::Workload(_), ["status", "conditions"]) => MergeByKey("type"),
            (Kind::Service, ["spec", "ports"]) => MergeByKey("port"),
            (Kind::Service, ["status", "conditions"]) => MergeByKey("type"),
            (Kind::Node, ["spec", "podCIDRs"]) => MergePrimitives,
            (Kind::Node, ["status", "addresses" | "conditions"]) => MergeByKey("type"),
            (Kind::Namespace, ["status", "conditions"]) => MergeByKey("type"),
            (Kind::ServiceAccount, ["secrets"]) => MergeByKey("name"),
            _ => Replace,
        }
    }
}

/// `ObjectMeta`, at the root and in pod templates.
fn object_meta(rest: &[&str]) -> ListStrategy {
    match rest {
        ["finalizers"] => ListStrategy::MergePrimitives,
        ["ownerReferences"] => ListStrategy::MergeByKey("uid"),
        _ => ListStrategy::Replace,
    }
}

/// `PodSpec`, at `spec` of a Pod and `spec.template.spec` of a workload.
fn pod_spec(rest: &[&str]) -> ListStrategy {
    use ListStrategy::*;
    match rest {
        ["containers" | "initContainers" | "ephemeralContainers"] => MergeByKey("name"),
        ["containers" | "initContainers" | "ephemeralContainers", field] => match *field {
            "env" => MergeByKey("name"),
            "ports" => MergeByKey("containerPort"),
            "volumeMounts" => MergeByKey("mountPath"),
            "volumeDevices" => MergeByKey("devicePath"),
            _ => Replace,
        },
        ["volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates"] => MergeByKey("name"),
        ["hostAliases"] => MergeByKey("ip"),
        ["topologySpreadConstraints"] => MergeByKey("topologyKey"),
        _ => Replace,
    }
}

/// `PodStatus`.
fn pod_status(rest: &[&str]) -> ListStrategy {
    use ListStrategy::*;
    match rest {
        ["conditions"] => MergeByKey("type"),
        ["podIPs" | "hostIPs"] => MergeByKey("ip"),
        ["resourceClaimStatuses"] => MergeByKey("name"),
        _ => Replace,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ListStrategy::*;

    fn strategy(kind: &str, path: &str) -> ListStrategy {
        let schema = BuiltinSchema::for_kind(kind).expect("built-in kind");
        let path: Vec<&str> = path.split('.').collect();
        schema.list_strategy(&path)
    }

    #[test]
    fn builtin_schema_uses_upstream_merge_keys() {
        let cases = [
            ("Pod", "spec.containers", MergeByKey("name")),
            ("Pod", "spec.initContainers", MergeByKey("name")),
            ("Pod", "spec.ephemeralContainers", MergeByKey("name")),
            ("Pod", "spec.containers.env", MergeByKey("name")),
            ("Pod", "spec.initContainers.ports", MergeByKey("containerPort")),
            ("Pod", "spec.containers.volumeMounts", MergeByKey("mountPath")),
            ("Pod", "spec.containers.volumeDevices", MergeByKey("devicePath")),
            ("Pod", "spec.volumes", MergeByKey("name")),
            ("Pod", "spec.imagePullSecrets", MergeByKey("name")),
            ("Pod", "spec.hostAliases", MergeByKey("ip")),
            ("Pod", "spec.topologySpreadConstraints", MergeByKey("topologyKey")),
            ("Pod", "spec.schedulingGates", MergeByKey("name")),
            ("Pod", "spec.resourceClaims", MergeByKey("name")),
            ("Pod", "spec.tolerations", Replace),
            ("Pod", "spec.readinessGates", Replace),
            ("Pod", "spec.containers.args", Replace),
            ("Pod", "spec.containers.envFrom", Replace),
            ("Pod", "spec.containers.resizePolicy", Replace),
            ("Pod", "status.conditions", MergeByKey("type")),
            ("Pod", "status.podIPs", MergeByKey("ip")),
            ("Pod", "status.hostIPs", MergeByKey("ip")),
            ("Pod", "status.containerStatuses", Replace),
            ("Pod", "metadata.finalizers", MergePrimitives),
            ("Pod", "metadata.ownerReferences", MergeByKey("uid")),
            ("Pod", "metadata.managedFields", Replace),
            ("Deployment", "spec.template.spec.containers", MergeByKey("name")),
            ("Deployment", "spec.template.spec.containers.env", MergeByKey("name")),
            ("Deployment", "spec.template.metadata.finalizers", MergePrimitives),
            ("Deployment", "spec.containers", Replace),
            ("Deployment", "spec.selector.matchExpressions", Replace),
            ("Deployment", "status.conditions", MergeByKey("type")),
            ("ReplicaSet", "spec.template.spec.volumes", MergeByKey("name")),
            ("ReplicaSet", "status.conditions", MergeByKey("type")),
            ("DaemonSet", "spec.template.spec.initContainers.volumeMounts", MergeByKey("mountPath")),
            ("DaemonSet", "metadata.ownerReferences", MergeByKey("uid")),
            ("Service", "spec.ports", MergeByKey("port")),
            ("Service", "spec.externalIPs", Replace),
            ("Service", "status.conditions", MergeByKey("type")),
            ("Node", "status.addresses", MergeByKey("type")),
            ("Node", "status.conditions", MergeByKey("type")),
            ("Node", "spec.podCIDRs", MergePrimitives),
            ("Node", "spec.taints", Replace),
            ("Namespace", "status.conditions", MergeByKey("type")),
            ("Namespace", "spec.finalizers", Replace),
            ("Namespace", "metadata.finalizers", MergePrimitives),
            ("ServiceAccount", "secrets", MergeByKey("name")),
            ("ServiceAccount", "imagePullSecrets", Replace),
            ("ConfigMap", "metadata.finalizers", MergePrimitives),
            ("Secret", "metadata.ownerReferences", MergeByKey("uid")),
            ("CustomResourceDefinition", "spec.versions", Replace),
        ];
        for (kind, path, expected) in cases {
            assert_eq!(strategy(kind, path), expected, "{kind} {path}");
        }
    }

    #[test]
    fn builtin_schema_refuses_unknown_kinds() {
        for kind in ["Widget", "pod", "", "Car"] {
            assert_eq!(BuiltinSchema::for_kind(kind), None, "{kind:?}");
        }
        for kind in
            ["Pod", "Deployment", "ReplicaSet", "DaemonSet", "Service", "ConfigMap", "Secret", "Node", "Namespace"]
        {
            assert_eq!(BuiltinSchema::for_kind(kind).map(|s| s.kind()), Some(kind));
        }
    }
}
