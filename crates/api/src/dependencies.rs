//! The `axle.dev/depends-on` annotation: explicit start-order dependencies between workloads.
//!
//! Grammar: `"<name>=<condition>[, <name>=<condition>…]"`, where name is a pod, Deployment,
//! DaemonSet or Job in the same namespace and condition is one of [`CONDITIONS`]. Admission rejects
//! unparseable values and dependency cycles (422); controllers gate pod start on the rest.

use std::collections::{BTreeMap, BTreeSet};

pub const ANNOTATION: &str = "axle.dev/depends-on";
/// The scheduling gate a pod with dependencies carries until they hold.
pub const GATE: &str = "axle.dev/dependencies";
pub const CONDITIONS: &[&str] = &["Running", "Ready", "Succeeded", "Failed"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub name: String,
    pub condition: String,
}

/// Parses the annotation value; the error names the offending entry.
pub fn parse(value: &str) -> Result<Vec<Dependency>, String> {
    let mut deps = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, condition)) = entry.split_once('=') else {
            return Err(format!("{entry:?} is not of the form <name>=<condition>"));
        };
        let (name, condition) = (name.trim(), condition.trim());
        if let Some(why) = crate::meta::dns_subdomain_error(name) {
            return Err(format!("{entry:?}: invalid name {name:?}: {why}"));
        }
        if !CONDITIONS.contains(&condition) {
            return Err(format!("{entry:?}: condition {condition:?} is not one of {}", CONDITIONS.join(", ")));
        }
        deps.push(Dependency { name: name.to_string(), condition: condition.to_string() });
    }
    Ok(deps)
}

/// Finds a cycle through `start` in the graph `edges` (name → names it depends on), returned as
/// the path `start -> … -> start`.
pub fn find_cycle(start: &str, edges: &BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        start: &str,
        edges: &BTreeMap<String, Vec<String>>,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in edges.get(node).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if visit(next, start, edges, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    let mut seen = BTreeSet::new();
    visit(start, start, edges, &mut path, &mut seen).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_lists_and_rejects_garbage() {
        let deps = parse("storage=Ready, init-db=Succeeded").expect("valid");
        assert_eq!(deps.len(), 2);
        assert_eq!(deps[1], Dependency { name: "init-db".into(), condition: "Succeeded".into() });
        assert!(parse("storage").is_err());
        assert!(parse("storage=Happy").is_err());
    }

    #[test]
    fn find_cycle_names_the_loop() {
        let mut edges = BTreeMap::new();
        edges.insert("nav".to_string(), vec!["map".to_string()]);
        edges.insert("map".to_string(), vec!["nav".to_string()]);
        edges.insert("ui".to_string(), vec!["nav".to_string()]);
        assert_eq!(find_cycle("nav", &edges), Some(vec!["nav".into(), "map".into(), "nav".into()]));
        assert_eq!(find_cycle("ui", &edges), None);
    }
}
