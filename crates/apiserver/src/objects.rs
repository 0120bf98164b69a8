//! The resource endpoints: get, list, create, update, patch, delete and deletecollection of
//! every served resource, plus the `status` and `scale` subresources.
//!
//! Every write runs as one store transaction (read, admit, write), so optimistic concurrency
//! and the cross-object checks of admission see one consistent state, and the reply is sent
//! only after the change is durable.

use crate::admission::{prepare_create, prepare_update, store_error};
use crate::http::{bytes_reply, decode_object, error_reply, json_reply, read_body, wants_table, Query, Reply, Shape};
use crate::routes::ResourcePath;
use crate::schemas::{self, FieldValidation};
use crate::State;
use api::meta::{name_of, now_rfc3339};
use api::rbac::User;
use api::resource::ResourceType;
use api::selector::{FieldSelector, LabelSelector};
use api::ApiError;
use base64::Engine as _;
use hyper::body::Incoming;
use hyper::{Method, Request};
use serde_json::{json, Value};
use std::sync::Arc;
use store::Txn;

/// Why a transaction ends without committing: an error, or a dry run that must not persist.
pub enum Abort<T> {
    Api(ApiError),
    DryRun(T),
}

impl<T> From<ApiError> for Abort<T> {
    fn from(e: ApiError) -> Self {
        Abort::Api(e)
    }
}

impl<T> From<store::StoreError> for Abort<T> {
    fn from(e: store::StoreError) -> Self {
        Abort::Api(store_error(e))
    }
}

/// Runs a write transaction; a dry run's result is returned as if it had been written.
pub async fn write<T, F>(state: &State, f: F) -> Result<T, ApiError>
where
    F: FnOnce(&mut Txn<'_>) -> Result<T, Abort<T>> + Send + 'static,
    T: Send + 'static,
{
    match state.store.transact(f).await {
        Err(e) => Err(store_error(e)),
        Ok(Ok(value)) | Ok(Err(Abort::DryRun(value))) => Ok(value),
        Ok(Err(Abort::Api(e))) => Err(e),
    }
}

/// What a write did to the stored object.
pub enum Written {
    Created(Value),
    Updated(Value),
    /// Deletion started (finalizers or graceful termination pending); the object remains.
    Terminating(Value),
    Deleted(Value),
}

impl Written {
    fn object(&self) -> &Value {
        match self {
            Written::Created(v) | Written::Updated(v) | Written::Terminating(v) | Written::Deleted(v) => v,
        }
    }
}

/// Request facts every handler needs.
pub struct Ctx {
    pub state: Arc<State>,
    /// Who asks (after impersonation).
    pub user: User,
    pub rt: ResourceType,
    pub namespace: Option<String>,
    pub query: Query,
    pub shape: Shape,
    pub content_type: Option<String>,
    pub dry_run: bool,
}

impl Ctx {
    pub fn key(&self, name: &str) -> String {
        store::key(&self.rt.storage_prefix(), self.namespace.as_deref().unwrap_or(""), name)
    }

    /// The key prefix of a collection: one namespace, or all of them.
    pub fn prefix(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{ns}/", self.rt.storage_prefix()),
            None => format!("{}/", self.rt.storage_prefix()),
        }
    }

    /// Replies with one object, as a Table when kubectl asked for one.
    pub fn object_reply(&self, status: u16, obj: &Value, warnings: &[String]) -> Reply {
        let body = match self.shape {
            Shape::Table => {
                table(&self.rt, vec![obj.clone()], &self.query, obj["metadata"]["resourceVersion"].clone(), None)
            }
            Shape::Object => obj.clone(),
        };
        let mut reply = json_reply(status, &body);
        // A bounded number of warnings, the rest counted (upstream bounds them too).
        let shown = warnings.len().min(MAX_WARNINGS);
        let more = (warnings.len() > shown).then(|| format!("{} more warnings", warnings.len() - shown));
        for warning in warnings[..shown].iter().chain(more.as_ref()) {
            let escaped = warning.replace('"', "\\\"");
            if let Ok(value) = hyper::header::HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
                reply.headers_mut().append("Warning", value);
            }
        }
        reply
    }
}

/// The most `Warning` headers one reply carries.
const MAX_WARNINGS: usize = 50;

pub async fn handle(state: Arc<State>, req: Request<Incoming>, target: ResourcePath, query: Query) -> Reply {
    match route(state, req, target, query).await {
        Ok(reply) => reply,
        Err(e) => error_reply(&e),
    }
}

async fn route(
    state: Arc<State>,
    req: Request<Incoming>,
    target: ResourcePath,
    query: Query,
) -> Result<Reply, ApiError> {
    let user = req.extensions().get::<User>().cloned().unwrap_or_else(User::anonymous);
    if req.method() == Method::POST
        && api::resource::REVIEWS.iter().any(|r| r.0 == target.group && r.2 == target.plural)
    {
        let content_type =
            req.headers().get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(String::from);
        let review = decode_object(&read_body(req.into_body()).await?, content_type.as_deref())?;
        let answered = match target.plural.as_str() {
            "selfsubjectreviews" => crate::authz::who_am_i(&user, &target.version),
            _ => crate::authz::review(&state, &user, review)?,
        };
        return Ok(json_reply(201, &answered));
    }
    let registry = state.registry();
    let rt = registry.lookup(&target.group, &target.version, &target.plural).cloned().ok_or_else(ApiError::no_route)?;
    if target.namespace.is_some() && !rt.namespaced() {
        return Err(ApiError::no_route());
    }
    let header =
        |name: hyper::header::HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok()).map(String::from);
    let accept = header(hyper::header::ACCEPT);
    let content_type = header(hyper::header::CONTENT_TYPE);
    let ctx = Ctx {
        state: state.clone(),
        user: user.clone(),
        namespace: target.namespace.clone(),
        shape: wants_table(accept.as_deref()),
        content_type,
        dry_run: query.get("dryRun").is_some_and(|v| v == "All"),
        query,
        rt,
    };
    let method = req.method().clone();
    let name = target.name.clone();
    let sub = target.subresource.as_deref();
    if let Some(sub) = sub {
        let served = match sub {
            "status" => ctx.rt.subresources.status,
            "scale" => ctx.rt.subresources.scale,
            "log" => ctx.rt.subresources.log,
            "binding" => ctx.rt.kind == "Pod",
            "finalize" => ctx.rt.kind == "Namespace",
            "upload" => ctx.rt.group == "axle.dev" && ctx.rt.plural == "bundles",
            "token" => ctx.rt.group.is_empty() && ctx.rt.plural == "serviceaccounts",
            "proxy" => ctx.rt.kind == "Node",
            "exec" | "attach" | "portforward" => ctx.rt.kind == "Pod" && !ctx.rt.custom,
            _ => false,
        };
        if !served {
            return Err(ApiError::no_route());
        }
    }
    if ctx.rt.namespaced() && ctx.namespace.is_none() && (name.is_some() || method == Method::POST) {
        return Err(ApiError::no_route());
    }
    match (method, name, sub) {
        (_, Some(name), Some("upload")) => crate::uploads::handle(&ctx, &name, req).await,
        (Method::GET, None, None) if ctx.query.flag("watch") => crate::watch::serve(ctx).await,
        (Method::GET, None, None) => list(&ctx),
        (Method::GET, Some(name), None | Some("status")) => get(&ctx, &name),
        (Method::GET, Some(name), Some("scale")) => {
            let obj = load(&ctx, &name)?;
            Ok(json_reply(200, &scale_of(&obj)))
        }
        (Method::GET, Some(name), Some("log")) => pod_log(&ctx, &name).await,
        (Method::GET | Method::POST, Some(name), Some(sub @ ("exec" | "attach" | "portforward"))) => {
            crate::streams::pass_to_agent(&ctx, &name, sub, req).await
        }
        (Method::GET, Some(name), Some("proxy")) => node_proxy(&ctx, &name, target.proxy_path.as_deref()).await,
        (Method::POST, None, None) => create(&ctx, &user, req.into_body()).await,
        (Method::POST, Some(name), Some("token")) => {
            let request = decode_object(&read_body(req.into_body()).await?, ctx.content_type.as_deref())?;
            token_request(&ctx, &name, &request)
        }
        (Method::POST, Some(name), Some("binding")) => {
            let binding = decode_object(&read_body(req.into_body()).await?, ctx.content_type.as_deref())?;
            bind(&ctx, &name, binding).await
        }
        (Method::PUT, Some(name), None | Some("status") | Some("finalize")) => {
            let sub = sub.filter(|s| *s == "status").map(String::from);
            update(&ctx, &name, sub, req.into_body()).await
        }
        (Method::PUT, Some(name), Some("scale")) => {
            let scale = decode_object(&read_body(req.into_body()).await?, ctx.content_type.as_deref())?;
            update_scale(&ctx, &name, scale).await
        }
        (Method::PATCH, Some(name), sub) => {
            let body = read_body(req.into_body()).await?;
            crate::apply::patch(&ctx, &name, sub.map(String::from), &body).await
        }
        (Method::DELETE, Some(name), None) => {
            let body = read_body(req.into_body()).await?;
            delete(&ctx, &name, &body).await
        }
        (Method::DELETE, None, None) => {
            let body = read_body(req.into_body()).await?;
            delete_collection(&ctx, &body).await
        }
        (method, _, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        ))),
    }
}

pub fn load(ctx: &Ctx, name: &str) -> Result<Value, ApiError> {
    ctx.state
        .store
        .get(&ctx.key(name))
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found(&ctx.rt.group, &ctx.rt.plural, name))
}

fn get(ctx: &Ctx, name: &str) -> Result<Reply, ApiError> {
    let obj = load(ctx, name)?;
    Ok(ctx.object_reply(200, &obj, &[]))
}

/// The selectors of a list or watch request.
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn from_query(query: &Query) -> Result<Selectors, ApiError> {
        let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("unable to parse labelSelector: {e}")))?;
        let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("unable to parse fieldSelector: {e}")))?;
        Ok(Selectors { labels, fields })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches(obj)
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
}

fn encode_continue(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

fn decode_continue(token: &str, prefix: &str) -> Result<String, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|key| key.starts_with(prefix))
        .ok_or_else(|| ApiError::bad_request("invalid continue token"))
}

fn list(ctx: &Ctx) -> Result<Reply, ApiError> {
    let selectors = Selectors::from_query(&ctx.query)?;
    let limit = ctx.query.number("limit")?.unwrap_or(0).max(0) as usize;
    let prefix = ctx.prefix();
    let start_after =
        ctx.query.get("continue").filter(|c| !c.is_empty()).map(|t| decode_continue(t, &prefix)).transpose()?;
    if ctx.shape == Shape::Object && selectors.is_empty() {
        // The common case: the stored documents go out as they are, unparsed.
        let page = ctx.state.store.list_raw(&prefix, start_after.as_deref(), limit).map_err(store_error)?;
        let token = page.continue_after.as_deref().map(encode_continue);
        return Ok(raw_list_reply(&ctx.rt, page.resource_version, token, &page.items));
    }
    let page = ctx
        .state
        .store
        .list(&prefix, start_after.as_deref(), limit, &|obj| selectors.matches(obj))
        .map_err(store_error)?;
    let rv = json!(page.resource_version.to_string());
    let token = page.continue_after.as_deref().map(encode_continue);
    let body = match ctx.shape {
        Shape::Table => table(&ctx.rt, page.items, &ctx.query, rv, token),
        Shape::Object => {
            let mut list = serde_json::Map::new();
            list.insert("kind".into(), json!(format!("{}List", ctx.rt.kind)));
            list.insert("apiVersion".into(), json!(ctx.rt.api_version()));
            list.insert("metadata".into(), list_metadata(rv, token));
            list.insert("items".into(), Value::Array(page.items));
            Value::Object(list)
        }
    };
    Ok(json_reply(200, &body))
}

fn list_metadata(rv: Value, token: Option<String>) -> Value {
    let mut metadata = json!({"resourceVersion": rv});
    if let Some(token) = token {
        metadata["continue"] = json!(token);
    }
    metadata
}

/// A `…List` reply assembled from stored JSON documents without parsing them.
fn raw_list_reply(rt: &ResourceType, rv: u64, token: Option<String>, items: &[Vec<u8>]) -> Reply {
    let head = json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(),
                      "metadata": list_metadata(json!(rv.to_string()), token)});
    let mut body = serde_json::to_vec(&head).unwrap_or_default();
    body.pop(); // the closing brace; "items" follows
    body.extend_from_slice(b",\"items\":[");
    let total: usize = items.iter().map(|i| i.len() + 1).sum();
    body.reserve(total + 2);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"]}");
    crate::http::bytes_reply(200, "application/json", body)
}

/// A `meta.k8s.io/v1 Table` of objects.
pub fn table(rt: &ResourceType, items: Vec<Value>, query: &Query, rv: Value, token: Option<String>) -> Value {
    let include = query.get("includeObject").unwrap_or("Metadata");
    let rows: Vec<Value> = items.into_iter().map(|obj| api::table::row(rt, obj, include)).collect();
    // Built with a map, not `json!`, which would deep-copy the rows.
    let mut table = serde_json::Map::new();
    table.insert("kind".into(), json!("Table"));
    table.insert("apiVersion".into(), json!("meta.k8s.io/v1"));
    table.insert("metadata".into(), list_metadata(rv, token));
    table.insert("columnDefinitions".into(), Value::Array(api::table::columns(rt)));
    table.insert("rows".into(), Value::Array(rows));
    Value::Object(table)
}

fn check_body_identity(ctx: &Ctx, obj: &Value) -> Result<(), ApiError> {
    if let Some(kind) = obj["kind"].as_str() {
        if kind != ctx.rt.kind {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                ctx.rt.kind
            )));
        }
    }
    if let Some(api_version) = obj["apiVersion"].as_str() {
        if api_version != ctx.rt.api_version() {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({api_version}) does not match the expected API version ({})",
                ctx.rt.api_version()
            )));
        }
    }
    if let (Some(body_ns), Some(path_ns)) = (obj["metadata"]["namespace"].as_str(), ctx.namespace.as_deref()) {
        if !body_ns.is_empty() && body_ns != path_ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    Ok(())
}

/// Decodes a request object and runs the schema checks that need no stored state.
/// Bodies past this are parsed on a blocking thread: the API goes on serving meanwhile.
const PARSE_ASIDE: usize = 256 << 10;

async fn decode_for_write(ctx: &Ctx, body: bytes::Bytes) -> Result<(Value, Vec<String>), ApiError> {
    let mut obj = if body.len() > PARSE_ASIDE {
        let content_type = ctx.content_type.clone();
        tokio::task::spawn_blocking(move || decode_object(&body, content_type.as_deref()))
            .await
            .map_err(|e| ApiError::internal(format!("parsing the body failed: {e}")))??
    } else {
        decode_object(&body, ctx.content_type.as_deref())?
    };
    check_body_identity(ctx, &obj)?;
    let validation = FieldValidation::parse(ctx.query.get("fieldValidation"))?;
    let warnings = schemas::check(&ctx.rt, &mut obj, validation)?;
    Ok((obj, warnings))
}

async fn create(ctx: &Ctx, user: &User, body: Incoming) -> Result<Reply, ApiError> {
    let body = read_body(body).await?;
    let (mut obj, warnings) = decode_for_write(ctx, body).await?;
    // A node's certificate request is signed as it is created (the server is the signer).
    let signed = match (&ctx.state.security, ctx.rt.kind.as_str()) {
        (Some(security), "CertificateSigningRequest") if !ctx.rt.custom => {
            crate::certificates::sign_at_creation(&ctx.state, security, user, &mut obj)?
        }
        _ => None,
    };
    let (status, rejoined) = match signed {
        Some(signed) => (Some(signed.status), signed.rejoined),
        None => (None, None),
    };
    let written = create_object(ctx, obj, status).await?;
    if let Some(node) = rejoined {
        crate::bootstrap::consume_approval(&ctx.state, &node).await;
    }
    after_write(ctx);
    Ok(ctx.object_reply(201, written.object(), &warnings))
}

/// `serviceaccounts/NAME/token`: a TokenRequest answered with a token for the account.
fn token_request(ctx: &Ctx, name: &str, request: &Value) -> Result<Reply, ApiError> {
    let security = ctx.state.security.as_ref().ok_or_else(|| {
        ApiError::bad_request("this server runs without authentication (--insecure-http) and issues no tokens")
    })?;
    let account = load(ctx, name)?;
    Ok(json_reply(201, &crate::certificates::token_request(security, &account, request)?))
}

/// Admits and stores a new object (also the create path of server-side apply); a server-set
/// `status` replaces whatever the body had.
pub async fn create_object(ctx: &Ctx, mut obj: Value, status: Option<Value>) -> Result<Written, ApiError> {
    let rt = ctx.rt.clone();
    let namespace = ctx.namespace.clone();
    let dry_run = ctx.dry_run;
    let (policy, user) = (ctx.state.policy.clone(), ctx.user.clone());
    write(&ctx.state, move |txn| {
        prepare_create(&rt, &mut obj, namespace.as_deref(), txn)?;
        if let Some(status) = status {
            obj["status"] = status;
        }
        crate::restriction::check(&policy, &user, &rt, None, &obj)?;
        let key = store::key(&rt.storage_prefix(), namespace.as_deref().unwrap_or(""), name_of(&obj));
        if txn.get(&key)?.is_some() {
            return Err(ApiError::already_exists(&rt.group, &rt.plural, name_of(&obj)).into());
        }
        if dry_run {
            return Err(Abort::DryRun(Written::Created(obj)));
        }
        Ok(Written::Created(crate::volatile::put(txn, &key, None, obj)?))
    })
    .await
}

/// Called after any committed write: CRD changes change what the server serves, ClusterRole
/// changes what the aggregated roles hold.
pub fn after_write(ctx: &Ctx) {
    if ctx.rt.custom || ctx.dry_run {
        return;
    }
    match ctx.rt.kind.as_str() {
        "CustomResourceDefinition" => {
            if let Err(e) = ctx.state.refresh_registry() {
                tracing::error!(error = %e, "cannot refresh the served resource types");
            }
        }
        "ClusterRole" => crate::aggregation::after_cluster_role_change(&ctx.state),
        _ => {}
    }
}

/// What `nodes/{name}/proxy/` passes on to a node's agent: its metrics and usage summary.
const PROXIED: &[&str] = &["metrics", "stats/summary"];

/// `nodes/{name}/proxy/{path}`: the answer of the node's agent to `GET /{path}`, for the
/// paths in [`PROXIED`] (as `kubectl get --raw /api/v1/nodes/NODE/proxy/metrics` expects).
async fn node_proxy(ctx: &Ctx, name: &str, path: Option<&str>) -> Result<Reply, ApiError> {
    let path = path.unwrap_or("");
    if !PROXIED.contains(&path) {
        return Err(ApiError::not_found("", "nodes/proxy", path));
    }
    let node = load(ctx, name)?;
    let body = crate::agents::get(&ctx.state, &node, &format!("/{path}"), std::time::Duration::from_secs(30)).await?;
    let content_type = if path == "metrics" { "text/plain; version=0.0.4; charset=utf-8" } else { "application/json" };
    Ok(crate::http::bytes_reply(200, content_type, body))
}

/// `pods/{name}/binding`: places an unbound pod on a node (what a scheduler does; Axle's
/// placement controller for pods without `nodeName`). A pod is bound once.
async fn bind(ctx: &Ctx, name: &str, binding: Value) -> Result<Reply, ApiError> {
    let node = binding["target"]["name"].as_str().filter(|n| !n.is_empty()).map(String::from);
    let node =
        node.ok_or_else(|| ApiError::invalid("", "Binding", name, vec![api::error::Cause::required("target.name")]))?;
    let pod = name.to_string();
    update_object(ctx, name, None, move |old| match old["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        Some(bound) => Err(ApiError::conflict_with(
            "",
            "pods",
            &pod,
            format!("pod {pod} is already assigned to node \"{bound}\""),
            Vec::new(),
        )),
        None => {
            let mut new = old.clone();
            new["spec"]["nodeName"] = Value::String(node);
            Ok(new)
        }
    })
    .await?;
    after_write(ctx);
    Ok(json_reply(
        201,
        &serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

async fn update(ctx: &Ctx, name: &str, subresource: Option<String>, body: Incoming) -> Result<Reply, ApiError> {
    let body = read_body(body).await?;
    let (obj, warnings) = decode_for_write(ctx, body).await?;
    let written = update_object(ctx, name, subresource, move |_old| Ok(obj)).await?;
    after_write(ctx);
    Ok(ctx.object_reply(200, written.object(), &warnings))
}

/// The common update path of PUT, PATCH, status and scale: read the stored object, compute the
/// new one, enforce the resourceVersion precondition, admit and store it.
pub async fn update_object<F>(
    ctx: &Ctx,
    name: &str,
    subresource: Option<String>,
    compute: F,
) -> Result<Written, ApiError>
where
    F: FnOnce(&Value) -> Result<Value, ApiError> + Send + 'static,
{
    let rt = ctx.rt.clone();
    let key = ctx.key(name);
    let name = name.to_string();
    let dry_run = ctx.dry_run;
    let (policy, user) = (ctx.state.policy.clone(), ctx.user.clone());
    write(&ctx.state, move |txn| {
        let old = txn.get(&key)?.ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, &name))?;
        let mut new = compute(&old)?;
        if let Some(rv) = new["metadata"]["resourceVersion"].as_str().filter(|rv| !rv.is_empty()) {
            if Some(rv) != old["metadata"]["resourceVersion"].as_str() {
                return Err(ApiError::conflict(&rt.group, &rt.plural, &name).into());
            }
        }
        prepare_update(&rt, &old, &mut new, subresource.as_deref(), txn)?;
        crate::restriction::check(&policy, &user, &rt, Some(&old), &new)?;
        store_update(txn, &key, &old, new, dry_run)
    })
    .await
}

/// Stores an admitted update: finalizes a terminating object whose last finalizer went,
/// skips no-op writes (no new resourceVersion), else writes.
pub fn store_update(
    txn: &mut Txn<'_>,
    key: &str,
    old: &Value,
    mut new: Value,
    dry_run: bool,
) -> Result<Written, Abort<Written>> {
    let finalized = new["metadata"]["deletionTimestamp"].is_string()
        && new["metadata"]["finalizers"].as_array().is_none_or(Vec::is_empty)
        && !is_graceful_pod_termination(&new);
    if finalized {
        if dry_run {
            return Err(Abort::DryRun(Written::Deleted(new)));
        }
        let deleted = txn.delete(key)?.unwrap_or(new);
        return Ok(Written::Deleted(deleted));
    }
    new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
    if &new == old {
        return Ok(Written::Updated(new));
    }
    if dry_run {
        return Err(Abort::DryRun(Written::Updated(new)));
    }
    Ok(Written::Updated(crate::volatile::put(txn, key, Some(old), new)?))
}

/// A pod that is terminating gracefully stays until its agent confirms it stopped.
fn is_graceful_pod_termination(obj: &Value) -> bool {
    obj["kind"] == "Pod" && obj["metadata"]["deletionGracePeriodSeconds"].as_i64().is_some_and(|g| g > 0)
}

/// The `autoscaling/v1 Scale` view of a Deployment or ReplicaSet.
pub fn scale_of(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
                     "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"]},
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0),
                   "selector": api::table::selector_string(&obj["spec"]["selector"]).replace("<none>", "")},
    })
}

pub async fn update_scale(ctx: &Ctx, name: &str, scale: Value) -> Result<Reply, ApiError> {
    let replicas = scale["spec"]["replicas"]
        .as_i64()
        .ok_or_else(|| ApiError::invalid("autoscaling", "Scale", name, vec![api::Cause::required("spec.replicas")]))?;
    let rv = scale["metadata"]["resourceVersion"].clone();
    let written = update_object(ctx, name, None, move |old| {
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(replicas);
        new["metadata"]["resourceVersion"] =
            if rv.is_string() { rv } else { old["metadata"]["resourceVersion"].clone() };
        Ok(new)
    })
    .await?;
    Ok(json_reply(200, &scale_of(written.object())))
}

/// `pods/NAME/log`: fetched from the agent of the pod's node (its log endpoint is published in
/// the Node's `daemonEndpoints`) and streamed back as text, also with `follow`.
/// The container a `container` parameter names (or the pod's only one).
pub fn chosen_container(ctx: &Ctx, pod: &Value) -> Result<String, ApiError> {
    let name = name_of(pod);
    let containers: Vec<&str> = ["initContainers", "containers"]
        .iter()
        .flat_map(|k| pod["spec"][*k].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect();
    match ctx.query.get("container") {
        Some(c) if containers.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}"))),
        None if containers.len() == 1 => Ok(containers[0].to_string()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            containers.join(" ")
        ))),
    }
}

/// The Node the pod is bound to: where a log, exec or port-forward request goes. `what` says
/// what the caller wants, for the error of a pod not bound yet.
pub fn node_of(ctx: &Ctx, pod: &Value, what: &str) -> Result<Value, ApiError> {
    let name = name_of(pod);
    let node_name = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()).ok_or_else(|| {
        ApiError::bad_request(format!("pod {name:?} is not bound to a node yet, so it has no {what}"))
    })?;
    let node = ctx
        .state
        .store
        .get(&store::key("core/nodes", "", node_name))
        .map_err(store_error)?
        .ok_or_else(|| ApiError::bad_request(format!("node {node_name:?} of pod {name:?} is not registered")))?;
    Ok(node)
}

async fn pod_log(ctx: &Ctx, name: &str) -> Result<Reply, ApiError> {
    use tokio::io::AsyncReadExt;
    let pod = load(ctx, name)?;
    let container = chosen_container(ctx, &pod)?;
    let node = node_of(ctx, &pod, "logs")?;
    let node_name = api::meta::name_of(&node);
    let mut query: Vec<String> = Vec::new();
    for key in ["tailLines", "timestamps", "follow", "sinceSeconds", "previous"] {
        if let Some(v) = ctx.query.get(key) {
            query.push(format!("{key}={v}"));
        }
    }
    let namespace = ctx.namespace.as_deref().unwrap_or("");
    let path = format!("/containerLogs/{namespace}/{name}/{container}?{}", query.join("&"));
    let mut stream = crate::agents::request(&ctx.state, &node, &path).await?;
    let (status_line, first) = crate::agents::read_head(&mut stream, node_name).await?;
    if !status_line.contains(" 200 ") {
        return Err(crate::agents::refusal(stream, first).await);
    }
    let mut buf = vec![0u8; 16 * 1024];
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    tokio::spawn(async move {
        if !first.is_empty() && tx.send(bytes::Bytes::from(first)).await.is_err() {
            return;
        }
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send(bytes::Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(crate::http::stream_reply("text/plain", rx))
}

/// `DeleteOptions` from the body and the query.
struct DeleteOptions {
    propagation: String,
    grace_seconds: Option<i64>,
    precondition_uid: Option<String>,
    precondition_rv: Option<String>,
}

impl DeleteOptions {
    fn parse(query: &Query, body: &[u8]) -> Result<DeleteOptions, ApiError> {
        let opts = if body.iter().all(u8::is_ascii_whitespace) { json!({}) } else { decode_object(body, None)? };
        let propagation =
            opts["propagationPolicy"].as_str().or(query.get("propagationPolicy")).unwrap_or("Background").to_string();
        if !matches!(propagation.as_str(), "Background" | "Foreground" | "Orphan") {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy {propagation:?} is not one of Background, Foreground, Orphan"
            )));
        }
        let grace_seconds = match opts["gracePeriodSeconds"].as_i64() {
            Some(g) => Some(g),
            None => query.number("gracePeriodSeconds")?,
        };
        Ok(DeleteOptions {
            propagation,
            grace_seconds,
            precondition_uid: opts["preconditions"]["uid"].as_str().map(String::from),
            precondition_rv: opts["preconditions"]["resourceVersion"].as_str().map(String::from),
        })
    }
}

async fn delete(ctx: &Ctx, name: &str, body: &[u8]) -> Result<Reply, ApiError> {
    let options = DeleteOptions::parse(&ctx.query, body)?;
    let rt = ctx.rt.clone();
    let key = ctx.key(name);
    let name_owned = name.to_string();
    let dry_run = ctx.dry_run;
    let written = write(&ctx.state, move |txn| delete_in_txn(txn, &rt, &key, &name_owned, &options, dry_run)).await?;
    after_write(ctx);
    Ok(delete_reply(ctx, &written))
}

/// Kinds whose immediate deletion answers with the deleted object, as upstream's registries
/// with `ReturnDeletedObject` do (typed clients, e.g. Python's, parse the reply as the kind).
const RETURN_DELETED_OBJECT: &[&str] = &["Pod", "Service", "ServiceAccount"];

fn delete_reply(ctx: &Ctx, written: &Written) -> Reply {
    let obj = written.object();
    match written {
        _ if ctx.rt.group.is_empty() && RETURN_DELETED_OBJECT.contains(&ctx.rt.kind.as_str()) => json_reply(200, obj),
        Written::Deleted(_) => bytes_reply(
            200,
            "application/json",
            api::error::success_status_json(&ctx.rt.group, &ctx.rt.plural, name_of(obj), api::meta::uid_of(obj)),
        ),
        // Deletion waits for finalizers or a grace period: the object as it is now.
        _ => json_reply(202, obj),
    }
}

fn delete_in_txn(
    txn: &mut Txn<'_>,
    rt: &ResourceType,
    key: &str,
    name: &str,
    options: &DeleteOptions,
    dry_run: bool,
) -> Result<Written, Abort<Written>> {
    let mut obj = txn.get(key)?.ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
    let meta = &obj["metadata"];
    if let Some(uid) = &options.precondition_uid {
        if meta["uid"].as_str() != Some(uid) {
            return Err(ApiError::conflict_with(
                &rt.group,
                &rt.plural,
                name,
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta["uid"].as_str().unwrap_or("")
                ),
                Vec::new(),
            )
            .into());
        }
    }
    if let Some(rv) = &options.precondition_rv {
        if meta["resourceVersion"].as_str() != Some(rv) {
            return Err(ApiError::conflict(&rt.group, &rt.plural, name).into());
        }
    }
    let has_finalizers = meta["finalizers"].as_array().is_some_and(|f| !f.is_empty());
    let is_pod = rt.kind == "Pod" && !rt.custom;
    let bound_node =
        if is_pod { obj["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()).map(String::from) } else { None };
    let phase_done = matches!(obj["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
    let grace =
        options.grace_seconds.unwrap_or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64().unwrap_or(30));
    // A bound pod whose node is registered terminates gracefully: its agent stops it and then
    // deletes it with grace 0. Without a registered node nobody would ever finish the deletion.
    let node_exists = match &bound_node {
        Some(node) => txn.get(&store::key("core/nodes", "", node))?.is_some(),
        None => false,
    };
    let graceful_pod = is_pod && node_exists && !phase_done && grace > 0;
    let already_terminating = meta["deletionTimestamp"].is_string();
    if already_terminating {
        let shortened = is_pod && options.grace_seconds == Some(0);
        if !has_finalizers && shortened {
            return finish_delete(txn, rt, key, obj, options, dry_run);
        }
        return Ok(Written::Terminating(obj));
    }
    if rt.kind == "Namespace" && !rt.custom {
        obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        obj["status"] = json!({"phase": "Terminating"});
        if dry_run {
            return Err(Abort::DryRun(Written::Terminating(obj)));
        }
        return Ok(Written::Terminating(txn.put(key, obj)?));
    }
    if has_finalizers || graceful_pod {
        let when = chrono_after(if graceful_pod { grace } else { 0 });
        obj["metadata"]["deletionTimestamp"] = json!(when);
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(if graceful_pod { grace } else { 0 });
        if dry_run {
            return Err(Abort::DryRun(Written::Terminating(obj)));
        }
        return Ok(Written::Terminating(txn.put(key, obj)?));
    }
    finish_delete(txn, rt, key, obj, options, dry_run)
}

fn finish_delete(
    txn: &mut Txn<'_>,
    rt: &ResourceType,
    key: &str,
    obj: Value,
    options: &DeleteOptions,
    dry_run: bool,
) -> Result<Written, Abort<Written>> {
    if dry_run {
        return Err(Abort::DryRun(Written::Deleted(obj)));
    }
    if options.propagation == "Orphan" {
        crate::lifecycle::orphan_dependents(txn, api::meta::uid_of(&obj))?;
    }
    if rt.kind == "CustomResourceDefinition" && !rt.custom {
        crate::lifecycle::delete_custom_resources(txn, &obj)?;
    }
    let deleted = txn.delete(key)?.unwrap_or(obj);
    Ok(Written::Deleted(deleted))
}

/// Deletes an object on the server's own behalf (garbage collection, namespace termination),
/// with default options: background propagation, the pod's own grace period.
pub fn delete_for_lifecycle(
    txn: &mut Txn<'_>,
    rt: &ResourceType,
    key: &str,
    name: &str,
) -> Result<Written, Abort<Written>> {
    let options = DeleteOptions {
        propagation: "Background".into(),
        grace_seconds: None,
        precondition_uid: None,
        precondition_rv: None,
    };
    delete_in_txn(txn, rt, key, name, &options, false)
}

/// RFC 3339 timestamp `seconds` from now.
fn chrono_after(seconds: i64) -> String {
    let when = std::time::SystemTime::now() + std::time::Duration::from_secs(seconds.max(0) as u64);
    let secs = when.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    api::meta::format_unix(secs)
}

async fn delete_collection(ctx: &Ctx, body: &[u8]) -> Result<Reply, ApiError> {
    let options = DeleteOptions::parse(&ctx.query, body)?;
    let selectors = Selectors::from_query(&ctx.query)?;
    let keys: Vec<(String, String)> = ctx
        .state
        .store
        .list(&ctx.prefix(), None, 0, &|obj| selectors.matches(obj))
        .map_err(store_error)?
        .items
        .iter()
        .map(|obj| (ctx.key_in(obj), name_of(obj).to_string()))
        .collect();
    let rt = ctx.rt.clone();
    let dry_run = ctx.dry_run;
    let items = write(&ctx.state, move |txn| {
        let mut items = Vec::new();
        for (key, name) in &keys {
            match delete_in_txn(txn, &rt, key, name, &options, dry_run) {
                Ok(w) | Err(Abort::DryRun(w)) => items.push(w.object().clone()),
                // Deleted meanwhile by someone else: nothing left to do for it.
                Err(Abort::Api(e)) if e.code == 404 => {}
                Err(Abort::Api(e)) => return Err(Abort::Api(e)),
            }
        }
        Ok::<Vec<Value>, Abort<Vec<Value>>>(items)
    })
    .await?;
    after_write(ctx);
    Ok(json_reply(
        200,
        &json!({"kind": format!("{}List", ctx.rt.kind), "apiVersion": ctx.rt.api_version(),
                "metadata": {"resourceVersion": ctx.state.store.resource_version().to_string()}, "items": items}),
    ))
}

impl Ctx {
    /// The key of a listed object (its own namespace, for cluster-wide lists).
    fn key_in(&self, obj: &Value) -> String {
        store::key(&self.rt.storage_prefix(), api::meta::namespace_of(obj), name_of(obj))
    }
}
