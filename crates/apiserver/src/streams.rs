//! Streaming subresources of pods (`exec`, `attach`, `portforward`), passed through to the node's agent as the API
//! server passes them to the kubelet: the request is authorized here (RBAC `create` on
//! `pods/exec`, `pods/attach` or `pods/portforward`, whichever method the upgrade uses), then its upgrade headers go to the agent
//! over the authenticated channel; the agent answers the upgrade (it computes the WebSocket
//! accept key from the client's), and from then on the server copies bytes both ways. The
//! agent trusts only the server, so no client reaches a node's processes but through here.

use crate::http::{Body, Reply};
use crate::objects::Ctx;
use api::ApiError;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt as _;

/// The headers of an upgrade that go to the agent, and those of its answer that come back.
const UPGRADE_HEADERS: &[&str] = &[
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];
const ANSWER_HEADERS: &[&str] =
    &["upgrade", "connection", "sec-websocket-accept", "sec-websocket-protocol", "x-stream-protocol-version"];

/// `pods/exec`, `pods/attach` and `pods/portforward`: checked here, answered by the pod's agent.
pub async fn pass_to_agent(
    ctx: &Ctx,
    name: &str,
    subresource: &str,
    mut req: Request<Incoming>,
) -> Result<Reply, ApiError> {
    let pod = crate::objects::load(ctx, name)?;
    let (doing, what) = match subresource {
        "exec" => ("exec into", "containers to exec into"),
        "attach" => ("attach to", "containers to attach to"),
        _ => ("forward a port of", "ports to forward"),
    };
    if pod["spec"]["runtimeClassName"] == "ecu" {
        return Err(ApiError::bad_request(format!(
            "pod {name:?} runs on an ECU: an ECU runs its firmware, not processes, so there is nothing to {doing}"
        )));
    }
    if let Some(phase @ ("Succeeded" | "Failed")) = pod["status"]["phase"].as_str() {
        return Err(ApiError::bad_request(format!(
            "cannot {doing} a container in a completed pod; current phase is {phase}"
        )));
    }
    let node = crate::objects::node_of(ctx, &pod, what)?;
    // Every value of a header (clients offer protocols in several `X-Stream-Protocol-Version`s).
    let header = |name: &str| {
        let values: Vec<&str> = req.headers().get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
        (!values.is_empty()).then(|| values.join(", "))
    };
    if header("upgrade").is_none() {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let forwarded: Vec<(&str, String)> =
        UPGRADE_HEADERS.iter().filter_map(|name| header(name).map(|value| (*name, value))).collect();
    let namespace = ctx.namespace.as_deref().unwrap_or("");
    let query = req.uri().query().unwrap_or("");
    let path = match subresource {
        "exec" | "attach" => {
            format!("/{subresource}/{namespace}/{name}/{}?{query}", crate::objects::chosen_container(ctx, &pod)?)
        }
        _ => format!("/portForward/{namespace}/{name}?{query}"),
    };
    let mut agent = crate::agents::request_with(&ctx.state, &node, &path, &forwarded).await?;
    let (head, early) = crate::agents::read_whole_head(&mut agent, api::meta::name_of(&node)).await?;
    if !head.lines().next().is_some_and(|status| status.contains(" 101 ")) {
        return Err(crate::agents::refusal(agent, early).await);
    }
    let mut reply = Reply::new(Body::Full(None));
    *reply.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
    for line in head.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else { continue };
        let name = name.trim().to_ascii_lowercase();
        if let (true, Ok(value)) = (ANSWER_HEADERS.contains(&name.as_str()), value.trim().parse()) {
            if let Ok(name) = hyper::header::HeaderName::from_bytes(name.as_bytes()) {
                reply.headers_mut().insert(name, value);
            }
        }
    }
    let upgraded = hyper::upgrade::on(&mut req);
    let who = format!("{namespace}/{name} {subresource}");
    tokio::spawn(async move {
        let client = match upgraded.await {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(stream = %who, error = %e, "the client's upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        // What the agent sent right after its answer belongs to the stream.
        if !early.is_empty() && client.write_all(&early).await.is_err() {
            return;
        }
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut agent).await {
            tracing::debug!(stream = %who, error = %e, "stream ended");
        }
    });
    Ok(reply)
}
