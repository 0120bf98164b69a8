//! Kubernetes strategic merge patch, as upstream's apimachinery `strategicpatch` applies it.
//!
//! A JSON merge patch replaces lists wholesale, which would make `kubectl apply` of one changed
//! container drop the pod's other containers. A strategic merge patch asks a [`MergeSchema`]
//! how each list merges: element by element on a merge key (containers by `name`), as a set of
//! scalars (finalizers), or atomically. On top of that the patch may carry directives:
//!
//! - `null` deletes a field;
//! - `$patch: replace` (map, or an element of a list) replaces instead of merging,
//!   `$patch: delete` deletes a map or, inside a keyed list, the element with that key,
//!   `$patch: merge` is the default; any other value is an error;
//! - `$setElementOrder/<list>` gives the order of the resulting list (the patch list must agree
//!   with it); items the order does not name keep their place relative to the live list;
//! - `$retainKeys` drops every field of the map it sits in that it does not name;
//! - `$deleteFromPrimitiveList/<list>` removes scalars from a set-like list.
//!
//! Ordering follows upstream's algorithm: patch items take the order of the patch (or of
//! `$setElementOrder`), items only the server has keep their relative order, and the two are
//! interleaved where the live list orders them; new items go before server-only items the live
//! list cannot place. No directive key survives into the result.

use crate::PatchError;
use serde_json::{Map, Value};

/// How a list field merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// The patch's list replaces the whole list (upstream's default, "atomic" lists).
    Replace,
    /// Object elements merge by the named key field (`patchStrategy:"merge"` with
    /// `patchMergeKey`).
    MergeByKey(&'static str),
    /// A set-like list of scalars: union without duplicates (e.g. `metadata.finalizers`).
    MergePrimitives,
}

/// The merge strategy of list fields, by their path of field names from the object root
/// (list indices are not part of the path): `["spec", "containers", "env"]`.
pub trait MergeSchema {
    fn list_strategy(&self, path: &[&str]) -> ListStrategy;
}

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder";
const DELETE_PRIMITIVES: &str = "$deleteFromPrimitiveList";

/// Applies a strategic merge patch (a JSON object) to `target`, atomically: on error the target
/// is left as it was. A target that is not an object is patched as if it were `{}`.
pub fn strategic_merge_patch(target: &mut Value, patch: &Value, schema: &dyn MergeSchema) -> Result<(), PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::invalid(".", "a strategic merge patch must be a JSON object"));
    };
    let original = target.as_object().cloned().unwrap_or_default();
    let mut ctx = Ctx { schema, path: Vec::new() };
    let merged = match merge_map(&mut ctx, original, patch)? {
        MapOutcome::Keep(map) => map,
        MapOutcome::Delete => Map::new(),
    };
    *target = Value::Object(merged);
    Ok(())
}

/// Where the merge is: the schema and the field names from the root (for strategies and
/// error messages).
struct Ctx<'s> {
    schema: &'s dyn MergeSchema,
    path: Vec<String>,
}

impl Ctx<'_> {
    fn strategy(&self) -> ListStrategy {
        let names: Vec<&str> = self.path.iter().map(String::as_str).collect();
        self.schema.list_strategy(&names)
    }

    fn display(&self) -> String {
        if self.path.is_empty() {
            ".".to_string()
        } else {
            self.path.iter().map(|name| format!(".{name}")).collect()
        }
    }

    fn child_display(&self, name: &str) -> String {
        let mut path = self.display();
        if path == "." {
            path.clear();
        }
        format!("{path}.{name}")
    }

    fn within<R>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        self.path.push(name.to_string());
        let result = f(self);
        self.path.pop();
        result
    }

    fn invalid(&self, reason: impl Into<String>) -> PatchError {
        PatchError::invalid(self.display(), reason)
    }
}

/// What a patched map turned into: a map, or nothing (`$patch: delete`).
enum MapOutcome {
    Keep(Map<String, Value>),
    Delete,
}

/// The keys of a patch map, sorted into directives and fields.
enum PatchKey<'a> {
    Field(&'a str),
    Patch,
    RetainKeys,
    SetOrder(&'a str),
    DeletePrimitives(&'a str),
}

fn classify<'a>(ctx: &Ctx, key: &'a str) -> Result<PatchKey<'a>, PatchError> {
    let parallel = |prefix: &str| -> Result<Option<&'a str>, PatchError> {
        match key.strip_prefix(prefix) {
            None => Ok(None),
            Some(rest) => match rest.strip_prefix('/') {
                Some(field) if !field.is_empty() => Ok(Some(field)),
                _ => Err(ctx.invalid(format!("directive {key:?} must have the form {prefix}/<field>"))),
            },
        }
    };
    Ok(match key {
        PATCH => PatchKey::Patch,
        RETAIN_KEYS => PatchKey::RetainKeys,
        _ => {
            if let Some(field) = parallel(SET_ORDER)? {
                PatchKey::SetOrder(field)
            } else if let Some(field) = parallel(DELETE_PRIMITIVES)? {
                PatchKey::DeletePrimitives(field)
            } else {
                PatchKey::Field(key)
            }
        }
    })
}

/// Merges `patch` into `original` (the map at `ctx.path`), honouring a `$patch` directive.
fn merge_map(
    ctx: &mut Ctx,
    original: Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<MapOutcome, PatchError> {
    match patch.get(PATCH) {
        None => merge_map_fields(ctx, original, patch).map(MapOutcome::Keep),
        Some(Value::String(d)) if d == "merge" => merge_map_fields(ctx, original, patch).map(MapOutcome::Keep),
        Some(Value::String(d)) if d == "replace" => merge_map_fields(ctx, Map::new(), patch).map(MapOutcome::Keep),
        Some(Value::String(d)) if d == "delete" => Ok(MapOutcome::Delete),
        Some(other) => Err(unknown_directive(ctx, other)),
    }
}

fn unknown_directive(ctx: &Ctx, directive: &Value) -> PatchError {
    let directive = directive.as_str().map_or_else(|| directive.to_string(), str::to_string);
    PatchError::UnknownDirective { path: ctx.display(), directive }
}

/// The value a patch gives a field the original does not have (or has with another type):
/// the patch merged into nothing, so that its directives are carried out and never copied.
/// `None` means the field ends up absent (`$patch: delete`, or `null`).
fn fresh(ctx: &mut Ctx, patch: &Value) -> Result<Option<Value>, PatchError> {
    Ok(match patch {
        Value::Null => None,
        Value::Object(map) => match merge_map(ctx, Map::new(), map)? {
            MapOutcome::Keep(map) => Some(Value::Object(map)),
            MapOutcome::Delete => None,
        },
        Value::Array(items) => Some(Value::Array(merge_list(ctx, Vec::new(), items)?)),
        scalar => Some(scalar.clone()),
    })
}

fn merge_map_fields(
    ctx: &mut Ctx,
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Map<String, Value>, PatchError> {
    let mut keys = Vec::with_capacity(patch.len());
    for (key, value) in patch {
        keys.push((classify(ctx, key)?, value));
    }

    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let Some(retain) = retain.as_array() else {
            return Err(ctx.invalid("$retainKeys must be a list of field names"));
        };
        for (key, value) in &keys {
            if let PatchKey::Field(name) = key {
                if !value.is_null() && !retain.iter().any(|r| r.as_str() == Some(name)) {
                    return Err(ctx.invalid(format!("field {name:?} is in the patch but not in $retainKeys")));
                }
            }
        }
        original.retain(|name, _| retain.iter().any(|r| r.as_str() == Some(name.as_str())));
    }

    // `$setElementOrder/<list>` merges its list together with the ordering, so the plain
    // field of the same name is skipped below (unless the patch deletes it with `null`).
    let mut ordered: Vec<&str> = Vec::new();
    for (key, value) in &keys {
        if let PatchKey::SetOrder(field) = key {
            let patch_list = patch.get(*field);
            if patch_list.is_some_and(Value::is_null) {
                continue;
            }
            ctx.within(field, |ctx| merge_ordered_list(ctx, &mut original, field, value, patch_list))?;
            ordered.push(*field);
        }
    }

    for (key, value) in &keys {
        match key {
            PatchKey::Patch | PatchKey::RetainKeys | PatchKey::SetOrder(_) => {}
            PatchKey::DeletePrimitives(field) => {
                let Some(remove) = value.as_array() else {
                    return Err(PatchError::invalid(
                        ctx.child_display(field),
                        "$deleteFromPrimitiveList must be a list of values",
                    ));
                };
                if let Some(Value::Array(list)) = original.get_mut(*field) {
                    list.retain(|item| !remove.contains(item));
                }
            }
            PatchKey::Field(name) if ordered.contains(name) => {}
            PatchKey::Field(name) => {
                if value.is_null() {
                    original.remove(*name);
                    continue;
                }
                let current = original.remove(*name);
                let merged = ctx.within(name, |ctx| merge_value(ctx, current, value))?;
                if let Some(merged) = merged {
                    original.insert(name.to_string(), merged);
                }
            }
        }
    }
    Ok(original)
}

/// Merges a patch value into the current value of a field (absent when `None`).
fn merge_value(ctx: &mut Ctx, current: Option<Value>, patch: &Value) -> Result<Option<Value>, PatchError> {
    match (current, patch) {
        (Some(Value::Object(map)), Value::Object(patch_map)) => Ok(match merge_map(ctx, map, patch_map)? {
            MapOutcome::Keep(map) => Some(Value::Object(map)),
            MapOutcome::Delete => None,
        }),
        (Some(Value::Array(list)), Value::Array(items)) => Ok(Some(Value::Array(merge_list(ctx, list, items)?))),
        (_, patch) => fresh(ctx, patch),
    }
}

/// What the elements of a list are, across the live list and the patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elements {
    Empty,
    Maps,
    Scalars,
}

fn element_kind(ctx: &Ctx, lists: [&[Value]; 2]) -> Result<Elements, PatchError> {
    let mut kind = Elements::Empty;
    for item in lists.into_iter().flatten() {
        let this = match item {
            Value::Object(_) => Elements::Maps,
            Value::Array(_) => return Err(ctx.invalid("lists of lists cannot be merged")),
            _ => Elements::Scalars,
        };
        if kind != Elements::Empty && kind != this {
            return Err(ctx.invalid("list elements are not all of one type"));
        }
        kind = this;
    }
    Ok(kind)
}

/// Merges a patch list into the live list at `ctx.path`, as its strategy says.
fn merge_list(ctx: &mut Ctx, original: Vec<Value>, patch: &[Value]) -> Result<Vec<Value>, PatchError> {
    match ctx.strategy() {
        ListStrategy::Replace => replace_list(ctx, patch),
        ListStrategy::MergePrimitives => match element_kind(ctx, [&original, patch])? {
            Elements::Maps => Err(ctx.invalid("a list of objects cannot be merged as a set of values")),
            _ => Ok(merge_scalars(original, patch)),
        },
        ListStrategy::MergeByKey(key) => match element_kind(ctx, [&original, patch])? {
            Elements::Maps => merge_keyed(ctx, original, patch, key),
            _ => Ok(merge_scalars(original, patch)),
        },
    }
}

/// An atomic list takes the patch's elements; elements carrying `$patch` are markers, not data.
fn replace_list(ctx: &mut Ctx, patch: &[Value]) -> Result<Vec<Value>, PatchError> {
    let mut out = Vec::with_capacity(patch.len());
    for item in patch {
        if let Value::Object(map) = item {
            if map.contains_key(PATCH) {
                continue;
            }
        }
        if item.is_null() {
            out.push(Value::Null);
        } else if let Some(value) = fresh(ctx, item)? {
            out.push(value);
        }
    }
    Ok(out)
}

/// A set-like list: the union, without duplicates, ordered as upstream orders it.
fn merge_scalars(original: Vec<Value>, patch: &[Value]) -> Vec<Value> {
    let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
    for item in original.iter().chain(patch) {
        if !merged.contains(item) {
            merged.push(item.clone());
        }
    }
    let identity = |v: &Value| Some(v.clone());
    normalize_order(merged, patch, &original, identity)
}

fn merge_key_of(item: &Value, key: &str) -> Option<Value> {
    item.get(key).cloned()
}

fn merge_keyed(ctx: &mut Ctx, mut original: Vec<Value>, patch: &[Value], key: &str) -> Result<Vec<Value>, PatchError> {
    let missing_key = |ctx: &Ctx| PatchError::MissingMergeKey { path: ctx.display(), key: key.to_string() };
    let mut plain: Vec<&Map<String, Value>> = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Value::Object(map) = item else { continue };
        match map.get(PATCH) {
            None => plain.push(map),
            Some(Value::String(d)) if d == "merge" => plain.push(map),
            Some(Value::String(d)) if d == "replace" => replace = true,
            Some(Value::String(d)) if d == "delete" => {
                let Some(value) = map.get(key) else { return Err(missing_key(ctx)) };
                original.retain(|e| e.get(key) != Some(value));
            }
            Some(other) => return Err(unknown_directive(ctx, other)),
        }
    }
    if replace {
        let mut out = Vec::with_capacity(plain.len());
        for map in plain {
            if let MapOutcome::Keep(map) = merge_map(ctx, Map::new(), map)? {
                out.push(Value::Object(map));
            }
        }
        return Ok(out);
    }

    let mut merged = original.clone();
    let mut patch_keys = Vec::with_capacity(plain.len());
    for map in plain {
        let Some(value) = map.get(key) else { return Err(missing_key(ctx)) };
        patch_keys.push(Value::Object(Map::from_iter([(key.to_string(), value.clone())])));
        match merged.iter().position(|e| e.get(key) == Some(value)) {
            Some(i) => {
                let current = match std::mem::take(&mut merged[i]) {
                    Value::Object(current) => current,
                    _ => Map::new(),
                };
                match merge_map(ctx, current, map)? {
                    MapOutcome::Keep(map) => merged[i] = Value::Object(map),
                    MapOutcome::Delete => {
                        merged.remove(i);
                    }
                }
            }
            None => {
                if let MapOutcome::Keep(map) = merge_map(ctx, Map::new(), map)? {
                    merged.push(Value::Object(map));
                }
            }
        }
    }
    Ok(normalize_order(merged, &patch_keys, &original, |v| merge_key_of(v, key)))
}

/// Upstream's `normalizeElementOrder`: the items `order` names, in its order, interleaved with
/// the other items (in their current order) where the `server` list orders the two; an item
/// the server list cannot place goes first.
fn normalize_order(
    merged: Vec<Value>,
    order: &[Value],
    server: &[Value],
    identity: impl Fn(&Value) -> Option<Value>,
) -> Vec<Value> {
    let order_ids: Vec<Option<Value>> = order.iter().map(&identity).collect();
    let server_ids: Vec<Option<Value>> = server.iter().map(&identity).collect();
    let index_in = |ids: &[Option<Value>], id: &Option<Value>| {
        id.as_ref().and_then(|id| ids.iter().position(|x| x.as_ref() == Some(id)))
    };

    let mut named: Vec<(usize, Option<usize>, Value)> = Vec::new();
    let mut others: Vec<(Option<usize>, Value)> = Vec::new();
    for item in merged {
        let id = identity(&item);
        let server_index = index_in(&server_ids, &id);
        match index_in(&order_ids, &id) {
            Some(position) => named.push((position, server_index, item)),
            None => others.push((server_index, item)),
        }
    }
    named.sort_by_key(|(position, _, _)| *position);

    let mut out = Vec::with_capacity(named.len() + others.len());
    let mut named = named.into_iter().map(|(_, s, v)| (s, v)).peekable();
    let mut others = others.into_iter().peekable();
    loop {
        let take_other = match (others.peek(), named.peek()) {
            (Some((Some(o), _)), Some((Some(n), _))) => o < n,
            (Some(_), Some(_)) => false,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_other { others.next() } else { named.next() };
        if let Some((_, item)) = next {
            out.push(item);
        }
    }
    out
}

/// `$setElementOrder/<field>`: merges the field's patch list (if any) and orders the result.
fn merge_ordered_list(
    ctx: &mut Ctx,
    original: &mut Map<String, Value>,
    field: &str,
    order: &Value,
    patch_list: Option<&Value>,
) -> Result<(), PatchError> {
    let Some(order) = order.as_array() else {
        return Err(ctx.invalid("$setElementOrder must be a list"));
    };
    let patch_list = match patch_list {
        None => None,
        Some(Value::Array(items)) => Some(items.as_slice()),
        Some(_) => return Err(ctx.invalid("$setElementOrder names a field whose patch value is not a list")),
    };
    let current = match original.remove(field) {
        Some(Value::Array(items)) => Some(items),
        Some(other) => {
            if patch_list.is_none() {
                // Nothing to merge and nothing to order: leave the field alone.
                original.insert(field.to_string(), other);
                return Ok(());
            }
            None
        }
        None => None,
    };
    let strategy = ctx.strategy();
    let key = match strategy {
        ListStrategy::MergeByKey(key) => Some(key),
        _ => None,
    };
    let keyed = key.is_some()
        && element_kind(ctx, [current.as_deref().unwrap_or_default(), patch_list.unwrap_or_default()])?
            == Elements::Maps;
    let identity = |v: &Value| match key {
        Some(key) if keyed => merge_key_of(v, key),
        _ => Some(v.clone()),
    };
    if keyed {
        if let Some(key) = key {
            if order.iter().any(|entry| entry.get(key).is_none()) {
                return Err(PatchError::MissingMergeKey { path: ctx.display(), key: key.to_string() });
            }
        }
    }
    if let Some(items) = patch_list {
        check_order_agrees(ctx, items, order, &identity)?;
    }
    let server = current.clone().unwrap_or_default();
    let merged = match (current, patch_list) {
        (Some(current), Some(items)) => merge_list(ctx, current, items)?,
        (Some(current), None) => current,
        (None, Some(items)) => merge_list(ctx, Vec::new(), items)?,
        (None, None) => return Ok(()),
    };
    original.insert(field.to_string(), Value::Array(normalize_order(merged, order, &server, identity)));
    Ok(())
}

/// Upstream's `validatePatchWithSetOrderList`: the patch list's items (deletions aside) must
/// appear in `$setElementOrder`, in the same relative order.
fn check_order_agrees(
    ctx: &Ctx,
    items: &[Value],
    order: &[Value],
    identity: &impl Fn(&Value) -> Option<Value>,
) -> Result<(), PatchError> {
    // Items without an identity (no merge key) are reported by the merge itself.
    let mut remaining = items.iter().filter(|item| item.get(PATCH).is_none()).filter_map(identity).peekable();
    for entry in order {
        let entry = identity(entry);
        if remaining.peek().is_some_and(|next| Some(next) == entry.as_ref()) {
            remaining.next();
        }
    }
    if remaining.peek().is_some() {
        return Err(ctx.invalid("the order of the patch list does not match its $setElementOrder list"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BuiltinSchema;
    use serde_json::json;

    /// The schema of upstream's strategic merge patch test fixtures.
    struct Fixtures;

    impl MergeSchema for Fixtures {
        fn list_strategy(&self, path: &[&str]) -> ListStrategy {
            match path.last() {
                Some(&"mergingList") => ListStrategy::MergeByKey("name"),
                Some(&"mergingIntList") => ListStrategy::MergePrimitives,
                _ => ListStrategy::Replace,
            }
        }
    }

    fn fixture(current: Value, patch: Value) -> Value {
        let mut target = current;
        strategic_merge_patch(&mut target, &patch, &Fixtures).expect("patch applies");
        target
    }

    fn schema(kind: &str) -> BuiltinSchema {
        BuiltinSchema::for_kind(kind).expect("built-in kind")
    }

    fn patched(kind: &str, mut target: Value, patch: Value) -> Value {
        strategic_merge_patch(&mut target, &patch, &schema(kind)).expect("patch applies");
        assert!(!contains_directive(&target), "directive left in {target}");
        target
    }

    fn contains_directive(value: &Value) -> bool {
        match value {
            Value::Object(map) => map.iter().any(|(k, v)| {
                k == PATCH
                    || k == RETAIN_KEYS
                    || k.starts_with(SET_ORDER)
                    || k.starts_with(DELETE_PRIMITIVES)
                    || contains_directive(v)
            }),
            Value::Array(items) => items.iter().any(contains_directive),
            _ => false,
        }
    }

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let pod = json!({"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}});
        let patch = json!({"spec": {"containers": [{"name": "b", "image": "b:2"}]}});
        let pod = patched("Pod", pod, patch);
        assert_eq!(pod["spec"]["containers"], json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}]));
    }

    #[test]
    fn strategic_merge_new_element_goes_before_unplaceable_server_items() {
        // Without $setElementOrder upstream puts a new element before server-only elements.
        let pod = json!({"spec": {"containers": [{"name": "a"}]}});
        let pod = patched("Pod", pod, json!({"spec": {"containers": [{"name": "c", "image": "c:1"}]}}));
        assert_eq!(pod["spec"]["containers"], json!([{"name": "c", "image": "c:1"}, {"name": "a"}]));
    }

    #[test]
    fn strategic_merge_merges_nested_lists_by_their_own_keys() {
        let pod = json!({"spec": {"containers": [{"name": "web",
            "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 80, "name": "http"}],
            "volumeMounts": [{"mountPath": "/data", "name": "data"}], "args": ["--a"]}]}});
        let patch = json!({"spec": {"containers": [{"name": "web",
            "env": [{"name": "A", "value": "2"}], "ports": [{"containerPort": 80, "protocol": "TCP"}],
            "volumeMounts": [{"mountPath": "/data", "readOnly": true}], "args": ["--b"]}]}});
        let pod = patched("Pod", pod, patch);
        let web = &pod["spec"]["containers"][0];
        assert_eq!(web["env"], json!([{"name": "A", "value": "2"}]));
        assert_eq!(web["ports"], json!([{"containerPort": 80, "name": "http", "protocol": "TCP"}]));
        assert_eq!(web["volumeMounts"], json!([{"mountPath": "/data", "name": "data", "readOnly": true}]));
        assert_eq!(web["args"], json!(["--b"]), "args is an atomic list");
    }

    #[test]
    fn strategic_merge_null_deletes() {
        let deploy = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"paused": true}});
        let deploy =
            patched("Deployment", deploy, json!({"metadata": {"labels": {"a": null}}, "spec": {"paused": null}}));
        assert_eq!(deploy, json!({"metadata": {"labels": {"b": "2"}}, "spec": {}}));
    }

    #[test]
    fn strategic_merge_delete_directive_removes_element_by_key() {
        let pod = json!({"spec": {"volumes": [{"name": "a", "emptyDir": {}}, {"name": "b", "emptyDir": {}}]}});
        let pod = patched("Pod", pod, json!({"spec": {"volumes": [{"name": "a", "$patch": "delete"}]}}));
        assert_eq!(pod["spec"]["volumes"], json!([{"name": "b", "emptyDir": {}}]));
    }

    #[test]
    fn strategic_merge_delete_directive_removes_map() {
        let deploy = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let deploy =
            patched("Deployment", deploy, json!({"spec": {"strategy": {"rollingUpdate": {"$patch": "delete"}}}}));
        assert_eq!(deploy["spec"]["strategy"], json!({"type": "RollingUpdate"}));
        let whole = patched("Deployment", json!({"spec": {"replicas": 1}}), json!({"$patch": "delete"}));
        assert_eq!(whole, json!({}));
    }

    #[test]
    fn strategic_merge_replace_directive_replaces_map() {
        let pod = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let pod = patched("Pod", pod, json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}}));
        assert_eq!(pod["metadata"]["labels"], json!({"c": "3"}));
    }

    #[test]
    fn strategic_merge_replace_directive_replaces_list() {
        let pod = json!({"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b"}]}});
        let patch = json!({"spec": {"containers": [{"name": "c", "image": "c:1"}, {"$patch": "replace"}]}});
        let pod = patched("Pod", pod, patch);
        assert_eq!(pod["spec"]["containers"], json!([{"name": "c", "image": "c:1"}]));
    }

    #[test]
    fn strategic_merge_replace_strategy_lists_are_replaced_wholesale() {
        let pod = json!({"spec": {"tolerations": [{"key": "a", "operator": "Exists"}]}});
        let pod = patched("Pod", pod, json!({"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}}));
        assert_eq!(pod["spec"]["tolerations"], json!([{"key": "b", "operator": "Exists"}]));
    }

    #[test]
    fn strategic_merge_set_element_order_reorders() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}});
        let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}],
                                    "containers": [{"name": "b", "$patch": "delete"}]}});
        let pod = patched("Pod", pod, patch);
        assert_eq!(pod["spec"]["containers"], json!([{"name": "c"}, {"name": "a"}]));
    }

    #[test]
    fn strategic_merge_set_element_order_keeps_server_only_items_in_place() {
        // A sidecar the server added stays where the live list had it, relative to the rest.
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "sidecar"}, {"name": "b"}]}});
        let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}, {"name": "new"}],
                                    "containers": [{"name": "new"}]}});
        let pod = patched("Pod", pod, patch);
        let names: Vec<&str> =
            pod["spec"]["containers"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
        assert_eq!(names, ["sidecar", "b", "a", "new"]);
    }

    #[test]
    fn strategic_merge_set_element_order_nested_in_new_and_existing_elements() {
        let pod = json!({"spec": {"containers": [{"name": "a", "env": [{"name": "X"}, {"name": "Y"}]}]}});
        let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
        "containers": [
            {"name": "a", "$setElementOrder/env": [{"name": "Y"}, {"name": "X"}]},
            {"name": "b", "$setElementOrder/env": [{"name": "P"}], "env": [{"name": "P", "value": "1"}]}
        ]}});
        let pod = patched("Pod", pod, patch);
        assert_eq!(
            pod["spec"]["containers"],
            json!([{"name": "a", "env": [{"name": "Y"}, {"name": "X"}]}, {"name": "b", "env": [{"name": "P", "value": "1"}]}])
        );
    }

    #[test]
    fn strategic_merge_null_deletes_even_with_set_element_order() {
        let pod = json!({"metadata": {"finalizers": ["a"]}, "spec": {"containers": [{"name": "a"}]}});
        let pod = patched("Pod", pod, json!({"metadata": {"$setElementOrder/finalizers": ["a"], "finalizers": null}}));
        assert_eq!(pod["metadata"], json!({}));
    }

    #[test]
    fn strategic_merge_set_element_order_rejects_contradicting_patch_list() {
        let mut pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                                    "containers": [{"name": "b", "image": "x"}, {"name": "a", "image": "y"}]}});
        let err = strategic_merge_patch(&mut pod, &patch, &schema("Pod")).expect_err("contradiction");
        assert!(err.to_string().contains(".spec.containers"), "{err}");
    }

    /// Upstream fixtures (ThreeWay patch applied to Current gives Result).
    #[test]
    fn strategic_merge_matches_upstream_ordering_fixtures() {
        // "add an item in a list and preserve order"
        assert_eq!(
            fixture(
                json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}]}),
                json!({"$setElementOrder/mergingList": [{"name": 3}, {"name": 1}, {"name": 2}],
                       "mergingList": [{"name": 3, "value": 3}]})
            ),
            json!({"mergingList": [{"name": 3, "value": 3}, {"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}]})
        );
        // "nested patch merge with empty list"
        assert_eq!(
            fixture(
                json!({"name": "hi", "mergingList": [{"name": "hello2"}]}),
                json!({"$setElementOrder/mergingList": [{"name": "hello"}, {"name": "doesntexist"}],
                       "mergingList": [{"name": "hello"}]})
            ),
            json!({"name": "hi", "mergingList": [{"name": "hello"}, {"name": "hello2"}]})
        );
        // "$setElementOrder contains item that is not present in the list to be merged"
        assert_eq!(
            fixture(
                json!({"mergingList": [{"name": 1}, {"name": 3}]}),
                json!({"$setElementOrder/mergingList": [{"name": 3}, {"name": 2}, {"name": 1}],
                       "mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]})
            ),
            json!({"mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]})
        );
        // "preserve the order from the patch in a merging int list"
        assert_eq!(
            fixture(json!({"mergingIntList": [1, 2, 3]}), json!({"mergingIntList": [3, 1]})),
            json!({"mergingIntList": [2, 3, 1]})
        );
        // "delete items in lists of scalars" and reordering with a deletion
        assert_eq!(
            fixture(
                json!({"mergingIntList": [1, 2, 3]}),
                json!({"$setElementOrder/mergingIntList": [2, 1], "$deleteFromPrimitiveList/mergingIntList": [3]})
            ),
            json!({"mergingIntList": [2, 1]})
        );
        // "$setElementOrder contains item that is not present in the int list to be merged"
        assert_eq!(
            fixture(json!({"mergingIntList": [1, 3]}), json!({"$setElementOrder/mergingIntList": [3, 2, 1]})),
            json!({"mergingIntList": [3, 1]})
        );
    }

    #[test]
    fn strategic_merge_retain_keys_drops_unlisted_fields() {
        // `kubectl apply` switching a Deployment from RollingUpdate to Recreate.
        let deploy = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}}}});
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": null, "type": "Recreate"}}});
        let deploy = patched("Deployment", deploy, patch);
        assert_eq!(deploy["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn strategic_merge_retain_keys_rejects_fields_it_does_not_list() {
        let mut deploy = json!({"spec": {"strategy": {}}});
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 1}}}});
        assert!(matches!(
            strategic_merge_patch(&mut deploy, &patch, &schema("Deployment")),
            Err(PatchError::Invalid { .. })
        ));
    }

    #[test]
    fn strategic_merge_delete_from_primitive_list_removes_finalizers() {
        let pod = json!({"metadata": {"finalizers": ["a", "b", "c"]}});
        let pod = patched("Pod", pod, json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "c"]}}));
        assert_eq!(pod["metadata"]["finalizers"], json!(["a"]));
    }

    #[test]
    fn strategic_merge_primitive_lists_union_without_duplicates() {
        let pod = json!({"metadata": {"finalizers": ["a", "b"]}});
        let pod = patched("Pod", pod, json!({"metadata": {"finalizers": ["b", "c", "c"]}}));
        assert_eq!(pod["metadata"]["finalizers"], json!(["a", "b", "c"]));
    }

    #[test]
    fn strategic_merge_keyed_metadata_and_status_lists() {
        let node = json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "x"}]},
                          "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                                     "conditions": [{"type": "Ready", "status": "False"}]}});
        let patch = json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "y"}]},
                           "status": {"addresses": [{"type": "Hostname", "address": "car"}],
                                      "conditions": [{"type": "Ready", "status": "True"}]}});
        let node = patched("Node", node, patch);
        assert_eq!(node["metadata"]["ownerReferences"].as_array().map(Vec::len), Some(2));
        assert_eq!(node["status"]["addresses"].as_array().map(Vec::len), Some(2));
        assert_eq!(node["status"]["conditions"], json!([{"type": "Ready", "status": "True"}]));
    }

    #[test]
    fn strategic_merge_service_ports_merge_by_port() {
        let svc = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}});
        let svc = patched("Service", svc, json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}));
        assert_eq!(svc["spec"]["ports"], json!([{"port": 80, "targetPort": 9090}, {"port": 443}]));
    }

    #[test]
    fn strategic_merge_directives_never_remain_in_output() {
        // New fields and elements carry directives too; they must be carried out, not copied.
        let pod = json!({"spec": {"containers": [{"name": "a"}]}});
        let patch = json!({"metadata": {"labels": {"$patch": "replace", "x": "1"}, "finalizers": ["f"],
                                        "$deleteFromPrimitiveList/finalizers": ["g"]},
                           "spec": {
                               "volumes": [{"name": "gone", "$patch": "delete"}, {"name": "v", "emptyDir": {"medium": null}}],
                               "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                               "containers": [{"name": "b", "$setElementOrder/env": [{"name": "E"}],
                                               "env": [{"name": "E", "value": "1"}],
                                               "resources": {"$retainKeys": ["limits"], "limits": {"cpu": "1"}}}],
                               "affinity": {"$patch": "delete"}}});
        let pod = patched("Pod", pod, patch);
        assert_eq!(pod["metadata"], json!({"labels": {"x": "1"}, "finalizers": ["f"]}));
        assert_eq!(pod["spec"]["volumes"], json!([{"name": "v", "emptyDir": {}}]));
        assert_eq!(pod["spec"]["containers"][1]["env"], json!([{"name": "E", "value": "1"}]));
        assert!(pod["spec"].get("affinity").is_none());
    }

    #[test]
    fn strategic_merge_unknown_patch_directive_is_error() {
        let mut pod = json!({"spec": {"containers": [{"name": "a"}]}});
        let err = strategic_merge_patch(&mut pod, &json!({"spec": {"$patch": "explode"}}), &schema("Pod"));
        assert_eq!(err, Err(PatchError::UnknownDirective { path: ".spec".into(), directive: "explode".into() }));
        let err = strategic_merge_patch(
            &mut pod,
            &json!({"spec": {"containers": [{"name": "a", "$patch": "shred"}]}}),
            &schema("Pod"),
        );
        assert_eq!(
            err,
            Err(PatchError::UnknownDirective { path: ".spec.containers".into(), directive: "shred".into() })
        );
        let err = strategic_merge_patch(&mut pod, &json!({"$setElementOrder": []}), &schema("Pod"));
        assert!(matches!(err, Err(PatchError::Invalid { .. })));
    }

    #[test]
    fn strategic_merge_missing_merge_key_is_error() {
        let mut pod = json!({"spec": {"containers": [{"name": "a"}]}});
        let err = strategic_merge_patch(&mut pod, &json!({"spec": {"containers": [{"image": "x"}]}}), &schema("Pod"));
        assert_eq!(err, Err(PatchError::MissingMergeKey { path: ".spec.containers".into(), key: "name".into() }));
        assert_eq!(
            err.map_err(|e| e.to_string()),
            Err("an element of the list at '.spec.containers' has no merge key \"name\"".to_string())
        );
    }

    #[test]
    fn strategic_merge_is_atomic_on_error() {
        let original = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"containers": [{"name": "a"}]}});
        let mut pod = original.clone();
        let patch = json!({"metadata": {"labels": {"a": "2"}}, "spec": {"containers": [{"image": "x"}]}});
        assert!(strategic_merge_patch(&mut pod, &patch, &schema("Pod")).is_err());
        assert_eq!(pod, original);
    }

    #[test]
    fn strategic_merge_rejects_malformed_lists_and_patches() {
        let mut pod = json!({"spec": {"containers": [{"name": "a"}]}, "metadata": {"finalizers": ["a"]}});
        for patch in [
            json!([1]),
            json!({"spec": {"containers": [["nested"]]}}),
            json!({"spec": {"containers": ["a", {"name": "b"}]}}),
            json!({"metadata": {"finalizers": [{"name": "x"}]}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
            json!({"metadata": {"$retainKeys": "name"}}),
            json!({"spec": {"$setElementOrder/containers": {"name": "a"}}}),
            json!({"spec": {"$setElementOrder/containers": [{"image": "a"}]}}),
        ] {
            assert!(strategic_merge_patch(&mut pod, &patch, &schema("Pod")).is_err(), "{patch}");
        }
    }

    #[test]
    fn strategic_merge_type_mismatch_takes_patch_value() {
        let pod = json!({"spec": {"nodeSelector": "oops", "containers": {"not": "a list"}}});
        let pod = patched("Pod", pod, json!({"spec": {"nodeSelector": {"a": "b"}, "containers": [{"name": "c"}]}}));
        assert_eq!(pod["spec"], json!({"nodeSelector": {"a": "b"}, "containers": [{"name": "c"}]}));
    }

    /// The body `kubectl apply` (client-side) sends to update a Deployment whose image changed,
    /// which gained an env var and lost a label.
    #[test]
    fn strategic_merge_kubectl_apply_update_shape() {
        let last = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"annotations":{},"name":"web","namespace":"default"},"spec":{"replicas":3}}"#;
        let deploy = json!({
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "x"},
                         "annotations": {"deployment.kubernetes.io/revision": "1",
                                         "kubectl.kubernetes.io/last-applied-configuration": "{}\n"}},
            "spec": {"replicas": 1, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "web", "image": "busybox:1.36", "env": [{"name": "A", "value": "1"}],
                 "terminationMessagePath": "/dev/termination-log"},
                {"name": "log", "image": "busybox:1.36"}]}}}
        });
        let patch = json!({
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": format!("{last}\n")},
                         "labels": {"tier": null}},
            "spec": {"replicas": 3, "template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "log"}],
                "containers": [{"$setElementOrder/env": [{"name": "A"}, {"name": "B"}],
                                "env": [{"name": "B", "value": "2"}], "image": "busybox:1.37", "name": "web"}]}}}
        });
        let deploy = patched("Deployment", deploy, patch);
        assert_eq!(deploy["spec"]["replicas"], 3);
        assert_eq!(deploy["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(deploy["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "1");
        assert_eq!(
            deploy["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
            format!("{last}\n")
        );
        let containers = &deploy["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "busybox:1.37");
        assert_eq!(containers[0]["terminationMessagePath"], "/dev/termination-log", "defaults survive");
        assert_eq!(containers[0]["env"], json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]));
        assert_eq!(containers[1], json!({"name": "log", "image": "busybox:1.36"}));
    }

    /// The body `kubectl apply` sends when a container was removed from the manifest.
    #[test]
    fn strategic_merge_kubectl_apply_removes_container() {
        let deploy = json!({"spec": {"template": {"spec": {"containers": [{"name": "web"}, {"name": "log"}]}}}});
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}],
            "containers": [{"$patch": "delete", "name": "log"}]}}}});
        let deploy = patched("Deployment", deploy, patch);
        assert_eq!(deploy["spec"]["template"]["spec"]["containers"], json!([{"name": "web"}]));
    }

    /// The body `kubectl rollout restart deployment/web` sends.
    #[test]
    fn strategic_merge_rollout_restart_adds_annotation() {
        let deploy = json!({"spec": {"template": {"metadata": {"labels": {"app": "web"}},
                                                  "spec": {"containers": [{"name": "web"}]}}}});
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}}}});
        let deploy = patched("Deployment", deploy, patch);
        assert_eq!(
            deploy["spec"]["template"]["metadata"],
            json!({"labels": {"app": "web"}, "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}})
        );
        assert_eq!(deploy["spec"]["template"]["spec"]["containers"], json!([{"name": "web"}]));
    }

    #[test]
    fn strategic_merge_patch_must_be_an_object() {
        let mut pod = json!({});
        assert!(matches!(
            strategic_merge_patch(&mut pod, &json!([1]), &schema("Pod")),
            Err(PatchError::Invalid { .. })
        ));
        let mut not_object = json!(null);
        strategic_merge_patch(&mut not_object, &json!({"a": 1}), &schema("Pod")).expect("patches {}");
        assert_eq!(not_object, json!({"a": 1}));
    }
}
