//! CronJobs: a Job from `spec.jobTemplate` at every time of `spec.schedule` (standard cron
//! syntax, in `spec.timeZone` or UTC), as upstream's controller does: a missed time is made up
//! once (the newest one), unless `startingDeadlineSeconds` says it is too late;
//! `concurrencyPolicy` Allow, Forbid (skip while one runs) or Replace (delete the running ones);
//! `suspend`; finished Jobs beyond `successfulJobsHistoryLimit` / `failedJobsHistoryLimit` are
//! deleted, oldest first. A Job is named after its scheduled minute, so creating it twice
//! (a pass repeated after a crash) is refused by the API and harmless.

use crate::job;
use crate::workloads::{controller_ref, controller_uid, event, tolerate, Outcome, Snapshot};
use api::batch::Schedule;
use chrono::{DateTime, Utc};
use client::{Client, ClientError};
use serde_json::{json, Value};
use std::time::Duration;

/// Scheduled times looked at from the last one before giving up on walking (upstream: 100).
const MAX_MISSED: usize = 100;
/// The annotation a Job carries with the time it was scheduled for.
const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

pub async fn reconcile(client: &Client, snapshot: &Snapshot) -> Result<Outcome, ClientError> {
    let mut outcome = Outcome::default();
    for cronjob in &snapshot.cronjobs {
        if cronjob["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        outcome = outcome.merge(sync(client, snapshot, cronjob).await?);
    }
    Ok(outcome)
}

fn time(value: &Value) -> Option<DateTime<Utc>> {
    value.as_str().and_then(api::meta::parse_time)
}

/// The newest scheduled time in (`since`, `now`], and the next one after `now`.
fn due(
    schedule: &Schedule,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let mut latest = None;
    let mut from = since;
    for walked in 0.. {
        if walked == MAX_MISSED {
            // Long asleep (a parked car): only the newest missed time matters.
            from = from.max(now - chrono::Duration::hours(1));
        }
        match schedule.next_after(from) {
            Some(t) if t <= now => {
                latest = Some(t);
                from = t;
            }
            next => return (latest, next),
        }
    }
    (latest, None)
}

async fn sync(client: &Client, snapshot: &Snapshot, cronjob: &Value) -> Result<Outcome, ClientError> {
    let spec = &cronjob["spec"];
    let namespace = api::meta::namespace_of(cronjob);
    let name = api::meta::name_of(cronjob);
    let uid = api::meta::uid_of(cronjob);
    let jobs: Vec<&Value> = snapshot.jobs.iter().filter(|j| controller_uid(j) == Some(uid)).collect();
    let running: Vec<&Value> = jobs.iter().copied().filter(|j| job::finished(j).is_none()).collect();
    prune(client, cronjob, &jobs, "Complete", spec["successfulJobsHistoryLimit"].as_u64().unwrap_or(3)).await?;
    prune(client, cronjob, &jobs, "Failed", spec["failedJobsHistoryLimit"].as_u64().unwrap_or(1)).await?;

    let mut status = if cronjob["status"].is_object() { cronjob["status"].clone() } else { json!({}) };
    let schedule = match Schedule::parse(spec["schedule"].as_str().unwrap_or(""), spec["timeZone"].as_str()) {
        Ok(schedule) => schedule,
        Err(why) => {
            // Admission refuses such schedules; a time zone may vanish from the system later.
            tracing::warn!(cronjob = %format!("{namespace}/{name}"), %why, "cannot schedule");
            return Ok(Outcome::default());
        }
    };
    let now = Utc::now();
    let since =
        time(&status["lastScheduleTime"]).or_else(|| time(&cronjob["metadata"]["creationTimestamp"])).unwrap_or(now);
    let (latest, next) = due(&schedule, since, now);
    let mut outcome = match next {
        Some(next) => Outcome::after((next - now).to_std().unwrap_or(Duration::ZERO) + Duration::from_millis(100)),
        None => Outcome::default(),
    };
    let mut created = None;
    if let (Some(scheduled), false) = (latest, spec["suspend"] == true) {
        let late = (now - scheduled).num_seconds();
        let policy = spec["concurrencyPolicy"].as_str().unwrap_or("Allow");
        if spec["startingDeadlineSeconds"].as_i64().is_some_and(|deadline| late > deadline) {
            let message = format!("Missed scheduled time to start a job: {}", scheduled.to_rfc3339());
            event(client, cronjob, "CronJob", "Warning", "MissSchedule", &message).await;
            status["lastScheduleTime"] = json!(stamp(scheduled));
        } else if policy == "Forbid" && !running.is_empty() {
            // Looked at again when the running Job finishes (a change) or at the next time.
            outcome = outcome.merge(Outcome::after(Duration::from_secs(10)));
        } else {
            if policy == "Replace" {
                for old in &running {
                    let path = format!("/apis/batch/v1/namespaces/{namespace}/jobs/{}", api::meta::name_of(old));
                    tolerate(client.delete(&path).await)?;
                    let message = format!("Deleted job {}", api::meta::name_of(old));
                    event(client, cronjob, "CronJob", "Normal", "SuccessfulDelete", &message).await;
                }
            }
            created = create_job(client, cronjob, scheduled).await?;
            status["lastScheduleTime"] = json!(stamp(scheduled));
        }
    }
    // Replaced Jobs are on their way out.
    let replaced = spec["concurrencyPolicy"] == "Replace" && created.is_some();
    let mut active: Vec<Value> = if replaced { Vec::new() } else { running.iter().map(|j| reference(j)).collect() };
    active.extend(created.as_ref().map(reference));
    status["active"] = Value::Array(active);
    let succeeded = jobs
        .iter()
        .filter(|j| matches!(job::finished(j), Some(("Complete", _))))
        .filter_map(|j| j["status"]["completionTime"].as_str())
        .max();
    if let Some(at) = succeeded {
        status["lastSuccessfulTime"] = json!(at);
    }
    if status != cronjob["status"] {
        let path = format!("/apis/batch/v1/namespaces/{namespace}/cronjobs/{name}/status");
        tolerate(client.merge_patch(&path, &json!({"status": status})).await)?;
    }
    Ok(outcome)
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn reference(job: &Value) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"],
           "namespace": job["metadata"]["namespace"], "uid": job["metadata"]["uid"],
           "resourceVersion": job["metadata"]["resourceVersion"]})
}

/// Creates the Job of the time `scheduled` (None if it exists already).
async fn create_job(client: &Client, cronjob: &Value, scheduled: DateTime<Utc>) -> Result<Option<Value>, ClientError> {
    let namespace = api::meta::namespace_of(cronjob);
    let template = &cronjob["spec"]["jobTemplate"];
    let name = format!("{}-{}", api::meta::name_of(cronjob), scheduled.timestamp() / 60);
    let mut annotations = template["metadata"]["annotations"].as_object().cloned().unwrap_or_default();
    annotations.insert(SCHEDULED_AT.into(), json!(stamp(scheduled)));
    let body = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": template["metadata"]["labels"],
                     "annotations": annotations, "ownerReferences": controller_ref(cronjob, "CronJob")},
        "spec": template["spec"],
    });
    match client.post(&format!("/apis/batch/v1/namespaces/{namespace}/jobs"), &body).await {
        Ok(created) => {
            event(client, cronjob, "CronJob", "Normal", "SuccessfulCreate", &format!("Created job {name}")).await;
            Ok(Some(created))
        }
        Err(e) if e.code() == Some(409) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes the oldest finished Jobs of one outcome beyond `keep`.
async fn prune(client: &Client, cronjob: &Value, jobs: &[&Value], outcome: &str, keep: u64) -> Result<(), ClientError> {
    let mut ended: Vec<&Value> =
        jobs.iter().copied().filter(|j| job::finished(j).is_some_and(|(kind, _)| kind == outcome)).collect();
    ended.sort_by_key(|j| j["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_string());
    let excess = ended.len().saturating_sub(keep as usize);
    for old in ended.into_iter().take(excess) {
        let path =
            format!("/apis/batch/v1/namespaces/{}/jobs/{}", api::meta::namespace_of(old), api::meta::name_of(old));
        tolerate(client.delete(&path).await)?;
        let message = format!("Deleted job {}", api::meta::name_of(old));
        event(client, cronjob, "CronJob", "Normal", "SuccessfulDelete", &message).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        api::meta::parse_time(text).expect("a time")
    }

    #[test]
    fn the_newest_missed_time_is_due_and_the_next_one_is_waited_for() {
        let every_minute = Schedule::parse("* * * * *", None).expect("valid");
        let (latest, next) = due(&every_minute, at("2026-12-08T10:00:00Z"), at("2026-12-08T10:03:30Z"));
        assert_eq!(latest, Some(at("2026-12-08T10:03:00Z")));
        assert_eq!(next, Some(at("2026-12-08T10:04:00Z")));
        let (latest, _) = due(&every_minute, at("2026-12-08T10:03:00Z"), at("2026-12-08T10:03:30Z"));
        assert_eq!(latest, None, "nothing since the last run");
        // A car parked for a month: the walk stays short and finds the newest time.
        let (latest, _) = due(&every_minute, at("2026-11-08T10:00:00Z"), at("2026-12-08T10:03:30Z"));
        assert_eq!(latest, Some(at("2026-12-08T10:03:00Z")));
    }
}
