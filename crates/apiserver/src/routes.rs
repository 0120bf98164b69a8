//! Request paths → what they address. Pure string work, independent of the registry: whether
//! a named resource exists is decided by the handler.

/// What a request path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Version,
    Health,
    /// Prometheus metrics.
    Metrics,
    CoreVersions,
    Groups,
    Group(String),
    ResourceList {
        group: String,
        version: String,
    },
    OpenApiV2,
    OpenApiV3Index,
    OpenApiV3 {
        path: String,
    },
    Resource(ResourcePath),
    /// The car's own image registry (OCI distribution API): the path after `/v2`.
    Registry(String),
    NotFound,
}

/// `/api/v1/namespaces/ns/pods/name/status` and friends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub plural: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The path after `nodes/{name}/proxy/`: what is asked of the node's agent.
    pub proxy_path: Option<String>,
}

pub fn parse(path: &str) -> Route {
    if let Some(rest) = path.strip_prefix("/v2").filter(|r| r.is_empty() || r.starts_with('/')) {
        return Route::Registry(rest.to_string());
    }
    let trimmed = path.trim_end_matches('/');
    let segments: Vec<&str> = trimmed.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["version"] => Route::Version,
        ["metrics"] => Route::Metrics,
        ["healthz" | "readyz" | "livez", ..] => Route::Health,
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::Groups,
        ["apis", group] => Route::Group(group.to_string()),
        ["api", version] => Route::ResourceList { group: String::new(), version: version.to_string() },
        ["apis", group, version] => Route::ResourceList { group: group.to_string(), version: version.to_string() },
        ["openapi", "v2"] | ["swagger.json"] => Route::OpenApiV2,
        ["openapi", "v3"] => Route::OpenApiV3Index,
        ["openapi", "v3", rest @ ..] => Route::OpenApiV3 { path: rest.join("/") },
        ["api", version, rest @ ..] => resource(String::new(), version, rest),
        ["apis", group, version, rest @ ..] => resource(group.to_string(), version, rest),
        _ => Route::NotFound,
    }
}

fn resource(group: String, version: &str, rest: &[&str]) -> Route {
    if let (true, ["nodes", name, "proxy", path @ ..]) = (group.is_empty(), rest) {
        return Route::Resource(ResourcePath {
            group,
            version: version.to_string(),
            namespace: None,
            plural: "nodes".into(),
            name: Some(name.to_string()),
            subresource: Some("proxy".into()),
            proxy_path: Some(path.join("/")),
        });
    }
    let owned = |s: &&str| s.to_string();
    let (namespace, plural, name, subresource) = match rest {
        // Namespaces' own subresources: /api/v1/namespaces/{name}/status|finalize.
        ["namespaces", name, sub @ ("status" | "finalize")] if group.is_empty() => {
            (None, "namespaces", Some(name.to_string()), Some(sub.to_string()))
        }
        ["namespaces", ns, plural, tail @ ..] => {
            (Some(ns.to_string()), *plural, tail.first().map(owned), tail.get(1).map(owned))
        }
        [plural, tail @ ..] => (None, *plural, tail.first().map(owned), tail.get(1).map(owned)),
        [] => return Route::NotFound,
    };
    let too_deep = match rest {
        ["namespaces", _, _, tail @ ..] if namespace.is_some() => tail.len() > 2,
        [_, tail @ ..] => tail.len() > 2,
        _ => false,
    };
    if too_deep {
        return Route::NotFound;
    }
    Route::Resource(ResourcePath {
        group,
        version: version.to_string(),
        namespace,
        plural: plural.to_string(),
        name,
        subresource,
        proxy_path: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(path: &str) -> ResourcePath {
        match parse(path) {
            Route::Resource(r) => r,
            other => panic!("{path} parsed as {other:?}"),
        }
    }

    #[test]
    fn parse_resource_paths() {
        let r = res("/api/v1/namespaces/default/pods/nav/log");
        assert_eq!(
            (r.namespace.as_deref(), r.plural.as_str(), r.name.as_deref(), r.subresource.as_deref()),
            (Some("default"), "pods", Some("nav"), Some("log"))
        );
        let r = res("/apis/apps/v1/deployments");
        assert_eq!((r.group.as_str(), r.namespace, r.plural.as_str()), ("apps", None, "deployments"));
        let r = res("/api/v1/namespaces/kube-system");
        assert_eq!((r.plural.as_str(), r.name.as_deref(), r.namespace), ("namespaces", Some("kube-system"), None));
        let r = res("/api/v1/namespaces/kube-system/status");
        assert_eq!((r.plural.as_str(), r.subresource.as_deref()), ("namespaces", Some("status")));
        let r = res("/api/v1/nodes/hpc-1/proxy/metrics");
        assert_eq!((r.name.as_deref(), r.subresource.as_deref()), (Some("hpc-1"), Some("proxy")));
        assert_eq!(r.proxy_path.as_deref(), Some("metrics"));
        let r = res("/api/v1/namespaces/default/configmaps");
        assert_eq!((r.plural.as_str(), r.name), ("configmaps", None));
    }

    #[test]
    fn parse_discovery_paths() {
        assert_eq!(parse("/version/"), Route::Version);
        assert_eq!(parse("/apis/apps"), Route::Group("apps".into()));
        assert_eq!(parse("/api/v1"), Route::ResourceList { group: String::new(), version: "v1".into() });
        assert_eq!(parse("/openapi/v3/apis/apps/v1"), Route::OpenApiV3 { path: "apis/apps/v1".into() });
        assert_eq!(parse("/nothing/here"), Route::NotFound);
        assert_eq!(parse("/api/v1/namespaces/a/pods/b/c/d"), Route::NotFound);
    }
}
