//! One pod on this node: starts its containers through the runtime its `runtimeClassName`
//! names, restarts them by its `restartPolicy` with exponential back-off, reports the pod's
//! status, and on deletion stops them gracefully and removes what the pod left.

use crate::containers::PodContext;
use crate::images::ImageCache;
use crate::probes::{Probe, Probes};
use crate::stats::{PodStats, Stats};
use client::Client;
use runtime::{Container, ContainerSpec, Exit};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Kubernetes' crash back-off: 10 s doubling to 5 min.
const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// How long a container that failed its liveness probe gets to stop.
const UNHEALTHY_GRACE: Duration = Duration::from_secs(5);

pub struct Supervisor {
    client: Arc<Client>,
    pod: Value,
    data_dir: PathBuf,
    log_dir: PathBuf,
    node_ip: String,
    images: Arc<ImageCache>,
    stats: PodStats,
    /// When this agent started the pod (its `status.startTime` unless the pod already has one).
    started_at: String,
}

/// Condition type → (status, when it last changed).
type Transitions = std::collections::BTreeMap<&'static str, (bool, String)>;

pub struct SupervisorHandle {
    pod: watch::Sender<Value>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SupervisorHandle {
    /// Hands a newer version of the pod to its supervisor (e.g. deletion requested).
    pub fn update(&self, pod: Value) {
        self.pod.send_replace(pod);
    }

    /// Stops the pod's containers (the pod was removed from this node).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    pub async fn stop_and_wait(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// What one container is doing, as the pod status reports it.
#[derive(Debug, Clone, PartialEq)]
enum State {
    Waiting {
        reason: String,
        message: String,
    },
    /// `ready`: the readiness (and startup) probes passed, or there are none.
    Running {
        started_at: String,
        container_id: String,
        ready: bool,
    },
    Terminated {
        exit: Exit,
        reason: String,
        started_at: String,
        finished_at: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct ContainerStatus {
    state: State,
    last: Option<State>,
    restarts: u32,
    /// `repository@sha256:…` of the image it runs (empty for process containers).
    image_id: String,
}

impl Supervisor {
    pub fn new(
        client: Arc<Client>,
        pod: Value,
        dirs: (PathBuf, PathBuf),
        node_ip: String,
        images: Arc<ImageCache>,
        stats: Arc<Stats>,
    ) -> Supervisor {
        let stats = PodStats::new(stats, &pod);
        let (data_dir, log_dir) = dirs;
        Supervisor { client, pod, data_dir, log_dir, node_ip, images, stats, started_at: api::meta::now_rfc3339() }
    }

    fn context(&self) -> PodContext {
        PodContext {
            client: self.client.clone(),
            pod: self.pod.clone(),
            data_dir: self.data_dir.clone(),
            log_dir: self.log_dir.clone(),
        }
    }

    /// Removes what the pod left on the node: its directory and its logs.
    fn remove_pod_files(&self) {
        let context = self.context();
        let _ = std::fs::remove_dir_all(context.pod_dir());
        let _ = std::fs::remove_dir_all(context.pod_log_dir());
    }

    pub fn spawn(self) -> SupervisorHandle {
        let (pod_tx, pod_rx) = watch::channel(self.pod.clone());
        let (stop_tx, stop_rx) = watch::channel(false);
        let stats = self.stats.clone();
        let task = tokio::spawn(async move {
            self.run(pod_rx, stop_rx).await;
            stats.forget();
        });
        SupervisorHandle { pod: pod_tx, stop: stop_tx, task }
    }

    fn status_path(&self) -> String {
        format!(
            "/api/v1/namespaces/{}/pods/{}",
            self.pod["metadata"]["namespace"].as_str().unwrap_or(""),
            self.pod["metadata"]["name"].as_str().unwrap_or("")
        )
    }

    async fn run(self, mut pod_rx: watch::Receiver<Value>, mut stop_rx: watch::Receiver<bool>) {
        let name = format!(
            "{}/{}",
            self.pod["metadata"]["namespace"].as_str().unwrap_or(""),
            self.pod["metadata"]["name"].as_str().unwrap_or("")
        );
        let init_containers: Vec<Value> = self.pod["spec"]["initContainers"].as_array().cloned().unwrap_or_default();
        let containers: Vec<Value> = self.pod["spec"]["containers"].as_array().cloned().unwrap_or_default();
        let runtime = self.pod["spec"]["runtimeClassName"].as_str().unwrap_or("runc").to_string();
        // One status per container, init containers first.
        let first_wait = if init_containers.is_empty() { "ContainerCreating" } else { "PodInitializing" };
        let mut statuses: Vec<ContainerStatus> = init_containers
            .iter()
            .map(|_| "ContainerCreating")
            .chain(containers.iter().map(|_| first_wait))
            .map(|reason| ContainerStatus {
                state: waiting(reason, ""),
                last: None,
                restarts: 0,
                image_id: String::new(),
            })
            .collect();
        let (events_tx, mut events_rx) = mpsc::channel::<(usize, ContainerStatus)>(32);
        let (halt_tx, halt_rx) = watch::channel::<Option<Duration>>(None);
        let mut runners = Vec::new();
        match runtime.as_str() {
            "process" | "runc" | "crun" => {
                let policy = self.pod["spec"]["restartPolicy"].as_str().unwrap_or("Always").to_string();
                let probes = containers.iter().map(|c| Probes::of(c, &self.node_ip)).collect();
                let workload = Workload {
                    init_containers: init_containers.clone(),
                    containers: containers.clone(),
                    probes,
                    policy,
                    pod: name.clone(),
                    runtime: runtime.clone(),
                    stats: self.stats.clone(),
                };
                let prepared =
                    prepare_and_run(self.context(), self.images.clone(), workload, events_tx.clone(), halt_rx.clone());
                runners.push(tokio::spawn(prepared));
            }
            other => {
                for s in &mut statuses {
                    s.state = waiting(
                        "RuntimeClassNotFound",
                        &format!("runtimeClassName {other:?} is not one of runc, crun, process"),
                    );
                }
            }
        }
        drop(events_tx);
        tracing::info!(pod = %name, %runtime, "pod started on this node");
        let mut last_written: Option<Value> = None;
        let mut transitions = Transitions::new();
        let mut terminating = false;
        loop {
            let status = self.pod_status(&init_containers, &containers, &statuses, &mut transitions);
            if last_written.as_ref() != Some(&status) {
                match self
                    .client
                    .merge_patch(&format!("{}/status", self.status_path()), &json!({"status": status}))
                    .await
                {
                    Ok(_) => last_written = Some(status),
                    Err(e) if e.is_not_found() => break,
                    Err(e) => tracing::debug!(pod = %name, error = %e, "cannot report pod status yet"),
                }
            }
            let deleting = pod_rx.borrow().get("metadata").and_then(|m| m.get("deletionTimestamp")).is_some();
            if deleting && !terminating {
                terminating = true;
                let grace = grace_period(&pod_rx.borrow());
                // Dependents deleted along with this pod stop first (within the grace period).
                let started = std::time::Instant::now();
                wait_for_dependents(&self.client, &self.pod, grace).await;
                let grace = grace.saturating_sub(started.elapsed());
                tracing::info!(pod = %name, grace_seconds = grace.as_secs(), "pod deleted; stopping its containers");
                for (i, status) in statuses.iter().enumerate() {
                    if matches!(status.state, State::Running { .. }) {
                        let message =
                            format!("Stopping container {}", container_name(&init_containers, &containers, i));
                        self.event("Normal", "Killing", message);
                    }
                }
                let _ = halt_tx.send(Some(grace));
            }
            if terminating && runners.iter().all(|r| r.is_finished()) {
                // Drain the final states, then let the API server forget the pod.
                while let Ok((i, s)) = events_rx.try_recv() {
                    statuses[i] = s;
                }
                self.remove_pod_files();
                match self.client.delete(&format!("{}?gracePeriodSeconds=0", self.status_path())).await {
                    Ok(_) => tracing::info!(pod = %name, "pod stopped and removed"),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => tracing::warn!(pod = %name, error = %e, "cannot confirm the pod's deletion; retrying"),
                }
                break;
            }
            tokio::select! {
                event = events_rx.recv(), if !runners.is_empty() => {
                    if let Some((i, s)) = event {
                        let container = container_name(&init_containers, &containers, i);
                        if let Some((event_type, reason, message)) = container_event(container, &statuses[i], &s) {
                            self.event(event_type, reason, message);
                        }
                        statuses[i] = s;
                    }
                }
                changed = pod_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    // Someone else changed what the pod's status says (the node lifecycle
                    // controller while this node was cut off): report the truth again.
                    let seen = pod_rx.borrow()["status"]["conditions"].clone();
                    if last_written.as_ref().is_some_and(|w| w["conditions"] != seen) {
                        last_written = None;
                    }
                }
                _ = stop_rx.changed() => {
                    let _ = halt_tx.send(Some(grace_period(&pod_rx.borrow())));
                    for runner in runners {
                        let _ = runner.await;
                    }
                    self.remove_pod_files();
                    return;
                }
                // Retry a status write that failed (server unreachable).
                _ = tokio::time::sleep(Duration::from_secs(10)), if last_written.is_none() => {}
            }
        }
        // The pod is gone from the API (deleted at once, as terminal pods are): stop what may
        // still run and remove what it left.
        let _ = halt_tx.send(Some(Duration::ZERO));
        for runner in runners {
            let _ = runner.await;
        }
        self.remove_pod_files();
    }

    /// Records an Event about the pod, in the background: a slow or absent server must not
    /// hold up the pod's supervision.
    fn event(&self, event_type: &'static str, reason: &'static str, message: String) {
        let (client, pod) = (self.client.clone(), self.pod.clone());
        tokio::spawn(async move {
            client::events::record(&client, "axle-agent", &pod, "Pod", event_type, reason, &message).await;
        });
    }

    /// The pod status for the containers' states. `transitions` remembers when each condition
    /// last changed, so an unchanged pod yields an identical status and causes no write.
    fn pod_status(
        &self,
        init_containers: &[Value],
        containers: &[Value],
        statuses: &[ContainerStatus],
        transitions: &mut Transitions,
    ) -> Value {
        let now = api::meta::now_rfc3339();
        let (init_statuses, statuses) = statuses.split_at(init_containers.len().min(statuses.len()));
        let succeeded = |s: &ContainerStatus| matches!(&s.state, State::Terminated { exit, .. } if exit.code == 0);
        let policy = self.pod["spec"]["restartPolicy"].as_str().unwrap_or("Always");
        let initialized = init_statuses.iter().all(succeeded);
        let init_failed = policy == "Never"
            && init_statuses.iter().any(|s| matches!(s.state, State::Terminated { .. }) && !succeeded(s));
        let ready = initialized
            && !statuses.is_empty()
            && statuses.iter().all(|s| matches!(s.state, State::Running { ready: true, .. }));
        let all_done = statuses.iter().all(|s| matches!(s.state, State::Terminated { .. }));
        let phase = if init_failed {
            "Failed"
        } else if !initialized {
            "Pending"
        } else if all_done && policy != "Always" {
            if statuses.iter().all(succeeded) {
                "Succeeded"
            } else {
                "Failed"
            }
        } else if statuses.iter().any(|s| s.restarts > 0 || !matches!(s.state, State::Waiting { .. })) {
            "Running"
        } else {
            "Pending"
        };
        let mut condition = |kind: &'static str, ok: bool| {
            let (status, since) = transitions.entry(kind).or_insert_with(|| (ok, now.clone()));
            if *status != ok {
                (*status, *since) = (ok, now.clone());
            }
            json!({"type": kind, "status": if ok { "True" } else { "False" }, "lastTransitionTime": since})
        };
        let conditions = vec![
            condition("PodScheduled", true),
            condition("Initialized", initialized),
            condition("ContainersReady", ready),
            condition("Ready", ready),
        ];
        let container_statuses = |specs: &[Value], statuses: &[ContainerStatus], init: bool| -> Vec<Value> {
            specs
                .iter()
                .zip(statuses)
                .map(|(c, s)| {
                    let running = matches!(s.state, State::Running { .. });
                    let mut status = json!({
                        "name": c["name"], "image": c["image"], "imageID": s.image_id,
                        "ready": if init { succeeded(s) } else { matches!(s.state, State::Running { ready: true, .. }) },
                        "started": running,
                        "restartCount": s.restarts,
                        "state": state_json(&s.state),
                        "lastState": s.last.as_ref().map(state_json).unwrap_or_else(|| json!({})),
                    });
                    if let State::Running { container_id, .. } = &s.state {
                        status["containerID"] = json!(container_id);
                    }
                    status
                })
                .collect()
        };
        let mut status = json!({
            "phase": phase,
            "hostIP": self.node_ip,
            "podIP": self.node_ip,
            "podIPs": [{"ip": self.node_ip}],
            "hostIPs": [{"ip": self.node_ip}],
            "startTime": self.pod["status"]["startTime"].as_str().map(String::from).unwrap_or_else(|| self.started_at.clone()),
            "conditions": conditions,
            "containerStatuses": container_statuses(containers, statuses, false),
        });
        if !init_containers.is_empty() {
            status["initContainerStatuses"] = json!(container_statuses(init_containers, init_statuses, true));
        }
        status
    }
}

/// Waits (at most `limit`) while pods that depend on this one are being deleted too but still
/// run: deleting a set of workloads stops dependents before what they depend on. A pod is
/// depended on by its own name and by the name of its Deployment or DaemonSet.
async fn wait_for_dependents(client: &Client, pod: &Value, limit: Duration) {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let mut names = vec![pod["metadata"]["name"].as_str().unwrap_or("").to_string()];
    for owner in pod["metadata"]["ownerReferences"].as_array().into_iter().flatten() {
        match owner["kind"].as_str() {
            Some("DaemonSet") => names.extend(owner["name"].as_str().map(String::from)),
            // `<deployment>-<pod-template-hash>`: read off the name, since a cascading
            // deletion may already have removed the ReplicaSet itself.
            Some("ReplicaSet") => {
                let hash = pod["metadata"]["labels"]["pod-template-hash"].as_str().unwrap_or("");
                let deployment = owner["name"].as_str().and_then(|n| n.strip_suffix(&format!("-{hash}")));
                names.extend(deployment.filter(|_| !hash.is_empty()).map(String::from));
            }
            _ => {}
        }
    }
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let Ok(pods) = client.get(&format!("/api/v1/namespaces/{namespace}/pods")).await else { return };
        let waiting_on: Vec<String> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_string() && p["status"]["phase"] == "Running")
            .filter(|p| {
                let wanted = p["metadata"]["annotations"][api::dependencies::ANNOTATION].as_str().unwrap_or("");
                api::dependencies::parse(wanted).is_ok_and(|deps| deps.iter().any(|d| names.contains(&d.name)))
            })
            .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
            .collect();
        if waiting_on.is_empty() || tokio::time::Instant::now() >= deadline {
            return;
        }
        tracing::info!(pod = %names[0], dependents = ?waiting_on, "waiting for dependents to stop first");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A pod's containers and how to run them.
struct Workload {
    init_containers: Vec<Value>,
    containers: Vec<Value>,
    probes: Vec<Probes>,
    policy: String,
    /// `namespace/name`, for logs and messages.
    pod: String,
    runtime: String,
    stats: PodStats,
}

/// Where a container's runner reports, and what tells it to stop.
#[derive(Clone)]
struct Channels {
    pod: String,
    stats: PodStats,
    events: mpsc::Sender<(usize, ContainerStatus)>,
    halt: watch::Receiver<Option<Duration>>,
}

/// Why a pod cannot start yet, for one container (`Some(index)`) or all of them.
struct NotReady {
    container: Option<usize>,
    reason: &'static str,
    message: String,
}

/// Prepares the pod (images, volumes, container specs), retrying with back-off while that
/// fails (an image not pushed yet, a ConfigMap not created yet), then runs it.
async fn prepare_and_run(
    ctx: PodContext,
    images: Arc<ImageCache>,
    workload: Workload,
    events: mpsc::Sender<(usize, ContainerStatus)>,
    mut halt: watch::Receiver<Option<Duration>>,
) {
    let total = workload.init_containers.len() + workload.containers.len();
    let mut failures: u32 = 0;
    loop {
        match prepare(&ctx, &images, &workload).await {
            Ok(prepared) => {
                let channels = Channels { pod: workload.pod.clone(), stats: workload.stats.clone(), events, halt };
                return run_workload(prepared, workload, channels).await;
            }
            Err(not_ready) => {
                let delay = BACKOFF_BASE.saturating_mul(1 << failures.min(5)).min(BACKOFF_CAP);
                tracing::info!(pod = %workload.pod, reason = not_ready.reason, message = %not_ready.message, retry_seconds = delay.as_secs(), "pod cannot start yet");
                let indexes: Vec<usize> = match not_ready.container {
                    Some(i) => vec![i],
                    None => (0..total).collect(),
                };
                for &i in &indexes {
                    let state = waiting(not_ready.reason, &not_ready.message);
                    let status = ContainerStatus { state, last: None, restarts: 0, image_id: String::new() };
                    let _ = events.send((i, status)).await;
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = halted(&mut halt) => return,
                }
                if not_ready.reason == "ErrImagePull" {
                    for &i in &indexes {
                        let message = format!("Back-off pulling image: {}", not_ready.message);
                        let status = ContainerStatus {
                            state: waiting("ImagePullBackOff", &message),
                            last: None,
                            restarts: 0,
                            image_id: String::new(),
                        };
                        let _ = events.send((i, status)).await;
                    }
                }
                failures += 1;
            }
        }
    }
}

/// Everything the runners need: specs and image ids of init containers, then containers.
struct Prepared {
    init_specs: Vec<(ContainerSpec, String)>,
    specs: Vec<(ContainerSpec, String)>,
}

async fn prepare(ctx: &PodContext, images: &ImageCache, workload: &Workload) -> Result<Prepared, NotReady> {
    let all = workload.init_containers.iter().chain(&workload.containers);
    let mut pulled = HashMap::new();
    if workload.runtime != "process" {
        if !runtime_installed(&workload.runtime) {
            return Err(NotReady {
                container: None,
                reason: "RuntimeUnavailable",
                message: format!("the {} runtime is not installed on this node", workload.runtime),
            });
        }
        for (index, c) in all.enumerate() {
            let image = c["image"].as_str().unwrap_or("");
            if pulled.contains_key(image) {
                continue;
            }
            let image_ok = images.ensure(image).await.map_err(|e| NotReady {
                container: Some(index),
                reason: e.reason,
                message: e.message,
            })?;
            pulled.insert(image.to_string(), image_ok);
        }
    }
    let config_error = |message: String| NotReady { container: None, reason: "CreateContainerConfigError", message };
    let volumes = ctx.volumes().await.map_err(config_error)?;
    let init_specs =
        ctx.resolve(&workload.init_containers, &volumes, &pulled, &workload.runtime).await.map_err(config_error)?;
    let specs = ctx.resolve(&workload.containers, &volumes, &pulled, &workload.runtime).await.map_err(config_error)?;
    let image_id =
        |c: &Value| c["image"].as_str().and_then(|i| pulled.get(i)).map(|p| p.image_id.clone()).unwrap_or_default();
    Ok(Prepared {
        init_specs: init_specs.into_iter().zip(workload.init_containers.iter().map(image_id)).collect(),
        specs: specs.into_iter().zip(workload.containers.iter().map(image_id)).collect(),
    })
}

/// Whether the runtime binary is on PATH (or given as a path).
fn runtime_installed(binary: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(binary).is_file())
}

/// Runs the pod's init containers one after the other (each must succeed; a failed one is
/// retried unless the pod's policy is Never), then its containers side by side.
async fn run_workload(prepared: Prepared, workload: Workload, channels: Channels) {
    let policy = workload.policy;
    let init_policy = if policy == "Never" { "Never" } else { "OnFailure" };
    let offset = prepared.init_specs.len();
    for (index, (spec, image_id)) in prepared.init_specs.into_iter().enumerate() {
        let outcome =
            run_container(index, spec, image_id, Probes::default(), init_policy.to_string(), channels.clone()).await;
        if !matches!(outcome, Some(exit) if exit.code == 0) {
            return;
        }
    }
    let runners: Vec<_> = prepared
        .specs
        .into_iter()
        .zip(workload.probes)
        .enumerate()
        .map(|(i, ((spec, image_id), probes))| {
            tokio::spawn(run_container(offset + i, spec, image_id, probes, policy.clone(), channels.clone()))
        })
        .collect();
    for runner in runners {
        let _ = runner.await;
    }
}

/// The name of the container at `index` (init containers first).
fn container_name<'a>(init_containers: &'a [Value], containers: &'a [Value], index: usize) -> &'a str {
    init_containers.iter().chain(containers).nth(index).and_then(|c| c["name"].as_str()).unwrap_or("")
}

/// The Event for a container's change of state, as the kubelet records them: (type, reason,
/// message). Messages carry no changing figures, so repeats aggregate into one Event's count.
fn container_event(
    name: &str,
    before: &ContainerStatus,
    after: &ContainerStatus,
) -> Option<(&'static str, &'static str, String)> {
    let same_waiting = |reason: &str| matches!(&before.state, State::Waiting { reason: r, .. } if r == reason);
    match (&before.state, &after.state) {
        (State::Running { .. }, State::Running { .. }) => None,
        (_, State::Running { .. }) => Some(("Normal", "Started", format!("Started container {name}"))),
        (State::Running { .. }, State::Terminated { exit, reason, .. }) if exit.code != 0 => {
            Some(("Warning", "Failed", format!("Container {name} exited with code {} ({reason})", exit.code)))
        }
        (_, State::Waiting { reason, .. }) if same_waiting(reason) => None,
        (_, State::Waiting { reason, .. }) if reason == "CrashLoopBackOff" => {
            Some(("Warning", "BackOff", format!("Back-off restarting failed container {name}")))
        }
        (_, State::Waiting { reason, .. }) if reason == "ImagePullBackOff" => {
            Some(("Normal", "BackOff", format!("Back-off pulling image of container {name}")))
        }
        (_, State::Waiting { reason, message })
            if matches!(
                reason.as_str(),
                "ErrImagePull" | "RunContainerError" | "CreateContainerConfigError" | "RuntimeUnavailable"
            ) =>
        {
            Some(("Warning", "Failed", format!("Error: {reason}: {message}")))
        }
        _ => None,
    }
}

fn waiting(reason: &str, message: &str) -> State {
    State::Waiting { reason: reason.into(), message: message.into() }
}

fn state_json(state: &State) -> Value {
    match state {
        State::Waiting { reason, message } => json!({"waiting": {"reason": reason, "message": message}}),
        State::Running { started_at, .. } => json!({"running": {"startedAt": started_at}}),
        State::Terminated { exit, reason, started_at, finished_at } => {
            let mut t =
                json!({"exitCode": exit.code, "reason": reason, "startedAt": started_at, "finishedAt": finished_at});
            if let Some(sig) = exit.signal {
                t["signal"] = json!(sig);
            }
            json!({"terminated": t})
        }
    }
}

fn grace_period(pod: &Value) -> Duration {
    let seconds = pod["metadata"]["deletionGracePeriodSeconds"]
        .as_i64()
        .or(pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30);
    Duration::from_secs(seconds.max(0) as u64)
}

/// Runs one container: start, wait, restart by policy with back-off, until the policy says it
/// is done (its last exit is returned) or the supervisor halts it (None).
async fn run_container(
    index: usize,
    spec: ContainerSpec,
    image_id: String,
    probes: Probes,
    policy: String,
    channels: Channels,
) -> Option<Exit> {
    let Channels { pod, stats, events, mut halt } = channels;
    let mut status = ContainerStatus { state: waiting("ContainerCreating", ""), last: None, restarts: 0, image_id };
    let log_dir = spec.log_path.parent().map(PathBuf::from).unwrap_or_default();
    loop {
        let started_at = api::meta::now_rfc3339();
        // Each start logs to its own file (`kubectl logs --previous` reads the one before);
        // older starts are removed.
        let mut attempt = spec.clone();
        attempt.log_path = log_dir.join(format!("{}.log", status.restarts));
        if let Some(stale) = status.restarts.checked_sub(2) {
            for suffix in ["log", "log.1", "exited"] {
                let _ = std::fs::remove_file(log_dir.join(format!("{stale}.{suffix}")));
            }
        }
        let exit = match Container::start(&attempt).await {
            Err(e) => {
                status.state = waiting("RunContainerError", &e.to_string());
                let _ = events.send((index, status.clone())).await;
                Exit { code: 128, signal: None, oom_killed: false }
            }
            Ok(mut container) => {
                let running = crate::stats::Running {
                    usage: container.usage_source(),
                    exec: container.exec_target(),
                    attach: container.attach_target(),
                };
                stats.started(&spec.name, running, status.restarts);
                let unprobed = probes.readiness.is_none() && probes.startup.is_none();
                status.state = State::Running {
                    started_at: started_at.clone(),
                    container_id: container.container_id(),
                    ready: unprobed,
                };
                let _ = events.send((index, status.clone())).await;
                let (probe_tx, mut probe_rx) = mpsc::channel(4);
                let prober = tokio::spawn(watch_probes(
                    probes.clone(),
                    attempt.env.clone(),
                    attempt.working_dir.clone(),
                    probe_tx,
                ));
                let mut probing = true;
                let halted = loop {
                    tokio::select! {
                        exit = container.wait() => break Err(exit),
                        _ = halted(&mut halt) => break Ok(()),
                        verdict = probe_rx.recv(), if probing => match verdict {
                            Some(Verdict::Ready(ready)) => {
                                if let State::Running { ready: r, .. } = &mut status.state {
                                    *r = ready;
                                }
                                let _ = events.send((index, status.clone())).await;
                            }
                            Some(Verdict::Unhealthy(why)) => {
                                tracing::info!(%pod, container = %spec.name, %why, "container is unhealthy; restarting it");
                                break Err(container.stop(UNHEALTHY_GRACE).await);
                            }
                            None => probing = false,
                        },
                    }
                };
                prober.abort();
                let exit = match halted {
                    Err(exit) => exit,
                    Ok(()) => {
                        let grace = (*halt.borrow()).unwrap_or_default();
                        container.stop(grace).await
                    }
                };
                stats.ended(&spec.name);
                // Marks this start's log as one of an ended container (see `logs::log_files`).
                let _ = std::fs::write(log_dir.join(format!("{}.exited", status.restarts)), b"");
                status.state = State::Terminated {
                    exit,
                    reason: exit.reason().into(),
                    started_at,
                    finished_at: api::meta::now_rfc3339(),
                };
                let _ = events.send((index, status.clone())).await;
                if halt.borrow().is_some() {
                    return None;
                }
                exit
            }
        };
        let restart = match policy.as_str() {
            "Never" => false,
            "OnFailure" => exit.code != 0,
            _ => true,
        };
        if !restart {
            return Some(exit);
        }
        let delay = BACKOFF_BASE.saturating_mul(1 << status.restarts.min(5)).min(BACKOFF_CAP);
        tracing::info!(%pod, container = %spec.name, exit_code = exit.code, delay_seconds = delay.as_secs(), "container exited; restarting after back-off");
        status.last = Some(status.state.clone());
        status.restarts += 1;
        status.state = waiting(
            "CrashLoopBackOff",
            &format!("back-off {}s restarting failed container={} pod={pod}", delay.as_secs(), spec.name),
        );
        let _ = events.send((index, status.clone())).await;
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = halted(&mut halt) => return None,
        }
    }
}

/// Resolves once the supervisor asks the container to stop (the guard of the watch value is
/// released inside, so the future stays `Send`).
async fn halted(halt: &mut watch::Receiver<Option<Duration>>) {
    let _ = halt.wait_for(Option::is_some).await;
}

/// What the probes concluded.
enum Verdict {
    Ready(bool),
    Unhealthy(String),
}

/// Runs a container's probes: the startup probe first, then liveness and readiness side by
/// side. Ends when there is nothing (left) to probe.
async fn watch_probes(
    probes: Probes,
    env: Vec<(String, String)>,
    cwd: Option<PathBuf>,
    verdicts: mpsc::Sender<Verdict>,
) {
    let cwd = cwd.as_deref();
    if let Some(startup) = &probes.startup {
        if !passes_within_threshold(startup, &env, cwd).await {
            let _ = verdicts.send(Verdict::Unhealthy("startup probe failed".into())).await;
            return;
        }
        if probes.readiness.is_none() {
            let _ = verdicts.send(Verdict::Ready(true)).await;
        }
    }
    let liveness = async {
        let Some(probe) = &probes.liveness else { return };
        tokio::time::sleep(probe.initial_delay).await;
        let mut failures = 0;
        loop {
            failures = if probe.check(&env, cwd).await { 0 } else { failures + 1 };
            if failures >= probe.failure_threshold {
                let _ = verdicts.send(Verdict::Unhealthy(format!("liveness probe failed {failures} times"))).await;
                return;
            }
            tokio::time::sleep(probe.period).await;
        }
    };
    let readiness = async {
        let Some(probe) = &probes.readiness else { return };
        tokio::time::sleep(probe.initial_delay).await;
        let (mut ready, mut successes, mut failures) = (false, 0, 0);
        loop {
            if probe.check(&env, cwd).await {
                (successes, failures) = (successes + 1, 0);
            } else {
                (successes, failures) = (0, failures + 1);
            }
            let verdict = if !ready && successes >= probe.success_threshold {
                Some(true)
            } else if ready && failures >= probe.failure_threshold {
                Some(false)
            } else {
                None
            };
            if let Some(now_ready) = verdict {
                ready = now_ready;
                if verdicts.send(Verdict::Ready(ready)).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(probe.period).await;
        }
    };
    tokio::join!(liveness, readiness);
}

/// Whether a (startup) probe succeeds before failing `failureThreshold` times in a row.
async fn passes_within_threshold(probe: &Probe, env: &[(String, String)], cwd: Option<&std::path::Path>) -> bool {
    tokio::time::sleep(probe.initial_delay).await;
    for _ in 0..probe.failure_threshold {
        if probe.check(env, cwd).await {
            return true;
        }
        tokio::time::sleep(probe.period).await;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_period_prefers_the_deletion_grace() {
        assert_eq!(
            grace_period(
                &json!({"metadata": {"deletionGracePeriodSeconds": 2}, "spec": {"terminationGracePeriodSeconds": 30}})
            ),
            Duration::from_secs(2)
        );
        assert_eq!(grace_period(&json!({"spec": {}})), Duration::from_secs(30));
    }
}
