//! Jobs: run pods of the template until `completions` succeeded, `parallelism` at a time, and
//! end with the `Complete` or `Failed` condition that `kubectl wait` waits for.
//!
//! As upstream: failed pods count against `backoffLimit`, with `restartPolicy: OnFailure` the
//! restarts of containers count too; a new pod after a failure waits 10 s, doubling to 6 min;
//! `activeDeadlineSeconds` fails the Job (`DeadlineExceeded`) and stops its pods;
//! `podFailurePolicy` rules on exit codes fail the Job at once (`FailJob`), ignore the failure
//! (`Ignore`) or count it (`Count`); `ttlSecondsAfterFinished` deletes the finished Job and,
//! through owner references, its pods; `suspend` stops the pods and creates none. A Job's pods
//! are placed statically, as every pod.

use crate::workloads::{condition, event, is_active, is_ready, tolerate, Outcome, Snapshot};
use client::{Client, ClientError};
use serde_json::{json, Value};
use std::time::Duration;

const FIRST_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(360);

pub async fn reconcile(client: &Client, snapshot: &Snapshot) -> Result<Outcome, ClientError> {
    let mut outcome = Outcome::default();
    for job in &snapshot.jobs {
        if job["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        outcome = outcome.merge(sync(client, snapshot, job).await?);
    }
    Ok(outcome)
}

/// Whether the Job has ended, and when: `Complete` or `Failed`.
pub fn finished(job: &Value) -> Option<(&'static str, Option<&str>)> {
    ["Complete", "Failed"].into_iter().find_map(|kind| {
        let c = condition(job, kind).filter(|c| c["status"] == "True")?;
        Some((kind, c["lastTransitionTime"].as_str()))
    })
}

fn path(job: &Value) -> String {
    format!("/apis/batch/v1/namespaces/{}/jobs/{}", api::meta::namespace_of(job), api::meta::name_of(job))
}

/// Seconds since an RFC 3339 time (0 if unparseable).
fn seconds_since(time: Option<&str>) -> i64 {
    time.and_then(api::meta::millis_since).map_or(0, |ms| ms / 1000)
}

/// What the pods say about the Job.
struct Tally<'a> {
    active: Vec<&'a Value>,
    succeeded: i64,
    /// Failures that count against `backoffLimit` (pods, and restarts under OnFailure).
    failed: i64,
    /// The end of the newest failure, for the back-off.
    last_failure: Option<String>,
    /// A failure a `FailJob` rule of `podFailurePolicy` matched: the reason to fail now.
    fail_job: Option<String>,
}

fn tally<'a>(job: &Value, pods: &[&'a Value]) -> Tally<'a> {
    let mut t = Tally { active: Vec::new(), succeeded: 0, failed: 0, last_failure: None, fail_job: None };
    for pod in pods {
        match pod["status"]["phase"].as_str() {
            Some("Succeeded") => t.succeeded += 1,
            Some("Failed") => match failure_action(job, pod) {
                (Action::Ignore, _) => {}
                (Action::FailJob, why) => {
                    t.fail_job.get_or_insert(why);
                    t.failed += 1;
                }
                (Action::Count, _) => {
                    t.failed += 1;
                    let ended = last_finish(pod);
                    if ended > t.last_failure {
                        t.last_failure = ended;
                    }
                }
            },
            _ if is_active(pod) => {
                t.active.push(pod);
                if job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure" {
                    t.failed += restarts(pod);
                }
            }
            _ => {}
        }
    }
    t
}

fn restarts(pod: &Value) -> i64 {
    pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["restartCount"].as_i64().unwrap_or(0))
        .sum()
}

fn last_finish(pod: &Value) -> Option<String> {
    pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["state"]["terminated"]["finishedAt"].as_str().map(String::from))
        .max()
}

#[derive(Debug, PartialEq)]
enum Action {
    FailJob,
    Ignore,
    Count,
}

/// What `podFailurePolicy` says of a failed pod: the action of the first rule whose
/// `onExitCodes` match one of its containers' exit codes (Count when none does), and why.
fn failure_action(job: &Value, pod: &Value) -> (Action, String) {
    let statuses: Vec<&Value> = pod["status"]["containerStatuses"].as_array().into_iter().flatten().collect();
    for (index, rule) in job["spec"]["podFailurePolicy"]["rules"].as_array().into_iter().flatten().enumerate() {
        let on = &rule["onExitCodes"];
        if !on.is_object() {
            continue;
        }
        let values: Vec<i64> = on["values"].as_array().into_iter().flatten().filter_map(Value::as_i64).collect();
        let matched = statuses.iter().find_map(|status| {
            if on["containerName"].as_str().is_some_and(|name| status["name"] != name) {
                return None;
            }
            let code = status["state"]["terminated"]["exitCode"].as_i64()?;
            let hit = match on["operator"].as_str() {
                Some("In") => values.contains(&code),
                Some("NotIn") => code != 0 && !values.contains(&code),
                _ => false,
            };
            hit.then(|| (status["name"].as_str().unwrap_or("").to_string(), code))
        });
        if let Some((container, code)) = matched {
            let action = match rule["action"].as_str() {
                Some("FailJob") => Action::FailJob,
                Some("Ignore") => Action::Ignore,
                _ => Action::Count,
            };
            let why = format!(
                "Container {container} for pod {}/{} failed with exit code {code} matching {:?} rule at index {index}",
                api::meta::namespace_of(pod),
                api::meta::name_of(pod),
                rule["action"].as_str().unwrap_or("Count"),
            );
            return (action, why);
        }
    }
    (Action::Count, String::new())
}

async fn sync(client: &Client, snapshot: &Snapshot, job: &Value) -> Result<Outcome, ClientError> {
    let spec = &job["spec"];
    if let Some((_, ended)) = finished(job) {
        return expire(client, job, ended).await;
    }
    let pods = snapshot.pods_of(api::meta::uid_of(job));
    let t = tally(job, &pods);
    let mut status = job["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    let start = status["startTime"].as_str().map(String::from).unwrap_or_else(api::meta::now_rfc3339);
    status["startTime"] = json!(start);
    let mut outcome = Outcome::default();

    let backoff_limit = spec["backoffLimit"].as_i64().unwrap_or(6);
    let failure = if let Some(why) = &t.fail_job {
        Some(("PodFailurePolicy", why.clone()))
    } else if t.failed > backoff_limit {
        Some(("BackoffLimitExceeded", "Job has reached the specified backoff limit".to_string()))
    } else {
        match spec["activeDeadlineSeconds"].as_i64() {
            Some(deadline) if seconds_since(Some(&start)) >= deadline => {
                Some(("DeadlineExceeded", "Job was active longer than specified deadline".to_string()))
            }
            Some(deadline) => {
                let left = (deadline - seconds_since(Some(&start))).max(1) as u64;
                outcome = outcome.merge(Outcome::after(Duration::from_secs(left)));
                None
            }
            None => None,
        }
    };
    let completions = spec["completions"].as_i64();
    let parallelism = spec["parallelism"].as_i64().unwrap_or(1).max(0);
    let complete = match completions {
        Some(n) => t.succeeded >= n,
        // A work queue: done once one pod succeeded and none runs.
        None => t.succeeded > 0 && t.active.is_empty(),
    };
    let now = api::meta::now_rfc3339();
    let mut active = t.active.len() as i64;
    if let Some((reason, message)) = failure {
        stop_pods(client, job, &t.active).await?;
        active = 0;
        status["conditions"] = with_condition(&status, "Failed", reason, &message, &now);
        event(client, job, "Job", "Warning", reason, &message).await;
    } else if complete {
        stop_pods(client, job, &t.active).await?;
        active = 0;
        status["completionTime"] = json!(now);
        status["conditions"] = with_condition(&status, "Complete", "", "", &now);
        event(client, job, "Job", "Normal", "Completed", "Job completed").await;
    } else if spec["suspend"] == true {
        stop_pods(client, job, &t.active).await?;
        active = 0;
    } else {
        let remaining = completions.map_or(parallelism, |n| (n - t.succeeded).min(parallelism));
        let wanted = (remaining - active).max(0);
        if wanted > 0 {
            match backoff_left(t.failed, t.last_failure.as_deref()) {
                Some(wait) => outcome = outcome.merge(Outcome::after(wait)),
                None => {
                    let mut placed: Vec<Value> = Vec::new();
                    for _ in 0..wanted {
                        let peers: Vec<&Value> = pods.iter().copied().chain(placed.iter()).collect();
                        let node = crate::replicaset::create_pod(client, snapshot, job, "Job", &peers).await?;
                        placed.push(json!({"spec": {"nodeName": node}}));
                    }
                    active += wanted;
                }
            }
        }
    }
    status["active"] = json!(active);
    status["succeeded"] = json!(t.succeeded);
    status["failed"] = json!(t.failed);
    status["ready"] = json!(t.active.iter().filter(|p| is_ready(p)).count());
    if status != job["status"] {
        tolerate(client.merge_patch(&format!("{}/status", path(job)), &json!({"status": status})).await)?;
    }
    Ok(outcome)
}

/// The wait before a new pod after `failed` failures, the newest ended at `last` (None: go).
fn backoff_left(failed: i64, last: Option<&str>) -> Option<Duration> {
    if failed == 0 {
        return None;
    }
    let exponent = (failed - 1).clamp(0, 16) as u32;
    let backoff = FIRST_BACKOFF.saturating_mul(2u32.saturating_pow(exponent)).min(MAX_BACKOFF);
    let waited = Duration::from_secs(seconds_since(last).max(0) as u64);
    (last.is_some() && waited < backoff).then(|| backoff - waited)
}

/// The Job's conditions with `kind` set True (kept as they are otherwise).
fn with_condition(status: &Value, kind: &str, reason: &str, message: &str, now: &str) -> Value {
    let mut conditions: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    conditions.retain(|c| c["type"] != kind);
    let mut new = json!({"type": kind, "status": "True", "lastProbeTime": now, "lastTransitionTime": now});
    if !reason.is_empty() {
        new["reason"] = json!(reason);
        new["message"] = json!(message);
    }
    conditions.push(new);
    Value::Array(conditions)
}

async fn stop_pods(client: &Client, job: &Value, pods: &[&Value]) -> Result<(), ClientError> {
    for pod in pods {
        let path = format!("/api/v1/namespaces/{}/pods/{}", api::meta::namespace_of(pod), api::meta::name_of(pod));
        tolerate(client.delete(&path).await)?;
        let message = format!("Deleted pod: {}", api::meta::name_of(pod));
        event(client, job, "Job", "Normal", "SuccessfulDelete", &message).await;
    }
    Ok(())
}

/// A finished Job with `ttlSecondsAfterFinished` is deleted once that has passed (its pods go
/// with it).
async fn expire(client: &Client, job: &Value, ended: Option<&str>) -> Result<Outcome, ClientError> {
    let Some(ttl) = job["spec"]["ttlSecondsAfterFinished"].as_i64() else { return Ok(Outcome::default()) };
    let ended = job["status"]["completionTime"].as_str().or(ended);
    let left = ttl - seconds_since(ended);
    if left > 0 {
        return Ok(Outcome::after(Duration::from_secs(left as u64)));
    }
    // The server's default propagation is Background: the pods follow.
    tolerate(client.delete(&path(job)).await)?;
    Ok(Outcome::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed_pod(container: &str, code: i64) -> Value {
        json!({"metadata": {"name": "p", "namespace": "car"}, "status": {"phase": "Failed", "containerStatuses": [
            {"name": container, "state": {"terminated": {"exitCode": code, "finishedAt": "2026-12-08T10:00:00Z"}}}]}})
    }

    #[test]
    fn pod_failure_policy_rules_match_exit_codes_in_order() {
        let job = json!({"spec": {"podFailurePolicy": {"rules": [
            {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [42]}},
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "NotIn", "values": [1, 2]}},
        ]}}});
        assert_eq!(failure_action(&job, &failed_pod("main", 42)).0, Action::Ignore);
        let (action, why) = failure_action(&job, &failed_pod("main", 3));
        assert_eq!(action, Action::FailJob);
        assert!(why.contains("exit code 3") && why.contains("index 1"), "{why}");
        assert_eq!(failure_action(&job, &failed_pod("main", 2)).0, Action::Count);
        assert_eq!(failure_action(&job, &failed_pod("side", 3)).0, Action::Count, "another container");
    }

    #[test]
    fn the_back_off_doubles_from_ten_seconds_to_six_minutes() {
        let just_now = api::meta::now_rfc3339();
        let left = |failed| backoff_left(failed, Some(&just_now)).map(|d| d.as_secs());
        assert_eq!(backoff_left(0, None), None);
        assert!(left(1).is_some_and(|s| (9..=10).contains(&s)));
        assert!(left(3).is_some_and(|s| (39..=40).contains(&s)));
        assert!(left(10).is_some_and(|s| (359..=360).contains(&s)));
        assert_eq!(backoff_left(1, Some("2020-01-01T00:00:00Z")), None, "waited long enough");
    }
}
