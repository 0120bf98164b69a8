//! PATCH: JSON patch, JSON merge patch, strategic merge patch (built-in kinds) and server-side
//! apply with per-manager field ownership (`metadata.managedFields`) and conflict detection.

use crate::admission::{prepare_create, prepare_update};
use crate::http::{decode_object, Reply};
use crate::objects::{after_write, scale_of, store_update, update_object, write, Abort, Ctx, Written};
use crate::schemas::{self, FieldValidation};
use api::meta::now_rfc3339;
use api::resource::ResourceType;
use api::{ApiError, Cause};
use patch::{BuiltinSchema, FieldSet, MergeSchema, PatchError};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

fn patch_type(content_type: Option<&str>) -> Result<PatchType, ApiError> {
    let media = content_type.unwrap_or("").split(';').next().unwrap_or("").trim();
    match media {
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
        "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchType::Apply),
        other => Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format ({other:?}) - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, \
             application/strategic-merge-patch+json"
        ))),
    }
}

fn patch_error(rt: &ResourceType, name: &str, e: PatchError) -> ApiError {
    match e {
        PatchError::TestFailed { ref path, .. } if path == "/metadata/resourceVersion" => {
            ApiError::conflict(&rt.group, &rt.plural, name)
        }
        other => ApiError::invalid(
            &rt.group,
            &rt.kind,
            name,
            vec![Cause { reason: "FieldValueInvalid", message: other.to_string(), field: String::new() }],
        ),
    }
}

pub async fn patch(ctx: &Ctx, name: &str, subresource: Option<String>, body: &[u8]) -> Result<Reply, ApiError> {
    let kind = patch_type(ctx.content_type.as_deref())?;
    if kind == PatchType::Strategic && ctx.rt.custom {
        return Err(ApiError::unsupported_media_type(
            "strategic merge patch is not supported for custom resources; use a JSON merge patch",
        ));
    }
    let document: Value = if kind == PatchType::Apply {
        decode_object(body, Some("application/yaml"))?
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?
    };
    let validation = FieldValidation::parse(ctx.query.get("fieldValidation"))?;
    if subresource.as_deref() == Some("scale") {
        return patch_scale(ctx, name, kind, document).await;
    }
    let written = if kind == PatchType::Apply {
        server_side_apply(ctx, name, subresource, document, validation).await?
    } else {
        let rt = ctx.rt.clone();
        let name_owned = name.to_string();
        update_object(ctx, name, subresource, move |old| {
            let mut new = old.clone();
            apply_patch(&rt, &name_owned, kind, &mut new, &document)?;
            schemas::check(&rt, &mut new, validation)?;
            Ok(new)
        })
        .await?
    };
    after_write(ctx);
    let status = if matches!(written, Written::Created(_)) { 201 } else { 200 };
    let obj = match &written {
        Written::Created(v) | Written::Updated(v) | Written::Terminating(v) | Written::Deleted(v) => v,
    };
    Ok(ctx.object_reply(status, obj, &[]))
}

fn apply_patch(
    rt: &ResourceType,
    name: &str,
    kind: PatchType,
    target: &mut Value,
    document: &Value,
) -> Result<(), ApiError> {
    match kind {
        PatchType::Json => patch::json_patch(target, document).map_err(|e| patch_error(rt, name, e)),
        PatchType::Merge => {
            patch::merge_patch(target, document);
            Ok(())
        }
        PatchType::Strategic => {
            let schema = BuiltinSchema::for_kind(&rt.kind).ok_or_else(|| {
                ApiError::unsupported_media_type(format!("strategic merge patch is not supported for {}", rt.kind))
            })?;
            patch::strategic_merge_patch(target, document, &schema).map_err(|e| patch_error(rt, name, e))
        }
        PatchType::Apply => Err(ApiError::internal("apply patches take the server-side apply path")),
    }
}

async fn patch_scale(ctx: &Ctx, name: &str, kind: PatchType, document: Value) -> Result<Reply, ApiError> {
    let current = crate::objects::load(ctx, name)?;
    let mut scale = scale_of(&current);
    match kind {
        PatchType::Apply => patch::merge_patch(&mut scale, &document),
        other => apply_patch(
            &ctx.rt,
            name,
            if other == PatchType::Strategic { PatchType::Merge } else { other },
            &mut scale,
            &document,
        )?,
    }
    crate::objects::update_scale(ctx, name, scale).await
}

/// The merge schema of a kind: upstream merge keys for built-in kinds; for custom resources,
/// lists are atomic (as for CRDs without list-type markers).
fn merge_schema(rt: &ResourceType) -> Option<BuiltinSchema> {
    if rt.custom {
        None
    } else {
        BuiltinSchema::for_kind(&rt.kind)
    }
}

fn managed_entries(obj: &Value) -> Vec<Value> {
    obj["metadata"]["managedFields"].as_array().cloned().unwrap_or_default()
}

fn entry_fields(entry: &Value) -> FieldSet {
    FieldSet::from_fields_v1(&entry["fieldsV1"]).unwrap_or_default()
}

fn managed_entry(manager: &str, api_version: &str, fields: &FieldSet, subresource: Option<&str>) -> Value {
    let mut entry = json!({"manager": manager, "operation": "Apply", "apiVersion": api_version,
        "time": now_rfc3339(), "fieldsType": "FieldsV1", "fieldsV1": fields.to_fields_v1()});
    if let Some(sub) = subresource {
        entry["subresource"] = json!(sub);
    }
    entry
}

async fn server_side_apply(
    ctx: &Ctx,
    name: &str,
    subresource: Option<String>,
    mut applied: Value,
    validation: FieldValidation,
) -> Result<Written, ApiError> {
    let rt = ctx.rt.clone();
    let manager = ctx.query.get("fieldManager").unwrap_or("").to_string();
    if manager.is_empty() {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "PatchOptions",
            "",
            vec![Cause {
                reason: "FieldValueRequired",
                message: "Required value: is required for apply patch".into(),
                field: "fieldManager".into(),
            }],
        ));
    }
    for field in ["apiVersion", "kind"] {
        if applied[field].as_str().is_none_or(str::is_empty) {
            return Err(ApiError::bad_request(format!("{field} must be set in an apply configuration")));
        }
    }
    if applied["kind"].as_str() != Some(rt.kind.as_str()) || applied["apiVersion"].as_str() != Some(&rt.api_version()) {
        return Err(ApiError::bad_request(format!(
            "the apply configuration is a {}/{} but the request addresses {}/{}",
            applied["apiVersion"].as_str().unwrap_or(""),
            applied["kind"].as_str().unwrap_or(""),
            rt.api_version(),
            rt.kind
        )));
    }
    if let Some(body_name) = applied["metadata"]["name"].as_str() {
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
    }
    applied["metadata"]["name"] = json!(name);
    schemas::check(&rt, &mut applied, validation)?;
    let force = ctx.query.flag("force");
    let key = ctx.key(name);
    let namespace = ctx.namespace.clone();
    let dry_run = ctx.dry_run;
    let name = name.to_string();
    let (policy, user) = (ctx.state.policy.clone(), ctx.user.clone());
    write(&ctx.state, move |txn| {
        let schema = merge_schema(&rt);
        let schema_ref: Option<&dyn MergeSchema> = schema.as_ref().map(|s| s as &dyn MergeSchema);
        let applied_set = patch::field_set(&applied, schema_ref);
        let Some(old) = txn.get(&key)? else {
            if subresource.is_some() {
                return Err(ApiError::not_found(&rt.group, &rt.plural, &name).into());
            }
            let mut obj = applied.clone();
            obj["metadata"]["managedFields"] = json!([managed_entry(&manager, &rt.api_version(), &applied_set, None)]);
            prepare_create(&rt, &mut obj, namespace.as_deref(), txn)?;
            crate::restriction::check(&policy, &user, &rt, None, &obj)?;
            if dry_run {
                return Err(Abort::DryRun(Written::Created(obj)));
            }
            return Ok(Written::Created(crate::volatile::put(txn, &key, None, obj)?));
        };
        let mut entries = managed_entries(&old);
        let sub = subresource.as_deref();
        let is_mine = |e: &Value| {
            e["manager"] == manager.as_str() && e["operation"] == "Apply" && e["subresource"].as_str() == sub
        };
        // Fields another manager also owns are kept when this manager drops them (as upstream).
        let others =
            entries.iter().filter(|e| !is_mine(e)).map(entry_fields).fold(FieldSet::default(), |all, f| all.union(&f));
        let previously_owned =
            entries.iter().find(|e| is_mine(e)).map(entry_fields).unwrap_or_default().without_shared(&others);
        let mut conflicts = Vec::new();
        for entry in entries.iter().filter(|e| !is_mine(e)) {
            let theirs = entry_fields(entry);
            for path in patch::conflicts(&applied_set, &theirs, &old, &applied) {
                conflicts.push((entry["manager"].as_str().unwrap_or("").to_string(), path));
            }
        }
        if !conflicts.is_empty() && !force {
            let causes: Vec<Cause> = conflicts
                .iter()
                .map(|(m, path)| Cause {
                    reason: "FieldManagerConflict",
                    message: format!("conflict with {m:?}"),
                    field: path.clone(),
                })
                .collect();
            let lines: Vec<String> = conflicts.iter().map(|(m, path)| format!("- {m:?}: {path}")).collect();
            let message = format!(
                "Apply failed with {} conflict{}: {}",
                conflicts.len(),
                if conflicts.len() == 1 { "" } else { "s" },
                lines.join("\n")
            );
            return Err(ApiError::conflict_with(&rt.group, &rt.plural, &name, message, causes).into());
        }
        let mut new =
            patch::apply(&old, &applied, &previously_owned, schema_ref).map_err(|e| patch_error(&rt, &name, e))?;
        // Forced fields change hands: the other managers lose them.
        for entry in entries.iter_mut().filter(|e| !is_mine(e)) {
            let theirs = entry_fields(entry).difference(&applied_set);
            entry["fieldsV1"] = theirs.to_fields_v1();
        }
        entries.retain(|e| is_mine(e) || !entry_fields(e).is_empty());
        entries.retain(|e| !is_mine(e));
        entries.push(managed_entry(&manager, &rt.api_version(), &applied_set, sub));
        new["metadata"]["managedFields"] = Value::Array(entries);
        if let Some(rv) = applied["metadata"]["resourceVersion"].as_str().filter(|rv| !rv.is_empty()) {
            if Some(rv) != old["metadata"]["resourceVersion"].as_str() {
                return Err(ApiError::conflict(&rt.group, &rt.plural, &name).into());
            }
        }
        prepare_update(&rt, &old, &mut new, sub, txn)?;
        crate::restriction::check(&policy, &user, &rt, Some(&old), &new)?;
        store_update(txn, &key, &old, new, dry_run)
    })
    .await
}
