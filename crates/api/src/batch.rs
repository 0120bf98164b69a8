//! `batch/v1` Jobs and CronJobs: what the API decides about them (generated selectors,
//! defaults, validation) and the cron schedules both the API and the CronJob controller read.

use crate::error::Cause;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};

/// The labels a Job's pods carry, pointing back at it (upstream's names, old and new).
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
const LEGACY_CONTROLLER_UID: &str = "controller-uid";
const LEGACY_JOB_NAME: &str = "job-name";

/// Gives a new Job (not `manualSelector`) upstream's generated selector, and its pod template
/// the labels the selector matches.
pub fn generate_selector(job: &mut Value) {
    if job["spec"]["manualSelector"] == true {
        return;
    }
    let uid = job["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let name = job["metadata"]["name"].as_str().unwrap_or("").to_string();
    let Some(spec) = job["spec"].as_object_mut() else { return };
    spec.insert("selector".into(), json!({"matchLabels": {CONTROLLER_UID: uid}}));
    let template = spec.entry("template").or_insert_with(|| json!({}));
    if !template["metadata"].is_object() {
        template["metadata"] = json!({});
    }
    if !template["metadata"]["labels"].is_object() {
        template["metadata"]["labels"] = json!({});
    }
    let labels = &mut template["metadata"]["labels"];
    for (key, value) in
        [(CONTROLLER_UID, &uid), (LEGACY_CONTROLLER_UID, &uid), (JOB_NAME, &name), (LEGACY_JOB_NAME, &name)]
    {
        labels[key] = json!(value);
    }
}

/// A Job spec's defaults (also a CronJob's job template's).
pub fn default_job_spec(spec: &mut Value) {
    let Some(s) = spec.as_object_mut() else { return };
    if s.get("completions").is_none_or(Value::is_null) && s.get("parallelism").is_none_or(Value::is_null) {
        s.insert("completions".into(), json!(1));
    }
    for (field, value) in [
        ("parallelism", json!(1)),
        ("backoffLimit", json!(6)),
        ("completionMode", json!("NonIndexed")),
        ("suspend", json!(false)),
        ("podReplacementPolicy", json!("TerminatingOrFailed")),
    ] {
        if s.get(field).is_none_or(Value::is_null) {
            s.insert(field.into(), value);
        }
    }
}

/// Checks of a Job spec at `path` (`spec`, or `spec.jobTemplate.spec`).
pub fn validate_job_spec(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    for field in ["parallelism", "completions", "backoffLimit"] {
        if let Some(value) = spec.get(field).filter(|v| !v.is_null()) {
            if value.as_i64().is_none_or(|n| n < 0) {
                causes.push(Cause::invalid(format!("{path}.{field}"), value, "must be greater than or equal to 0"));
            }
        }
    }
    if let Some(value) = spec.get("activeDeadlineSeconds").filter(|v| !v.is_null()) {
        if value.as_i64().is_none_or(|n| n <= 0) {
            causes.push(Cause::invalid(format!("{path}.activeDeadlineSeconds"), value, "must be greater than 0"));
        }
    }
    if let Some(mode) = spec.get("completionMode").filter(|v| !v.is_null()) {
        if mode.as_str() != Some("NonIndexed") {
            causes.push(Cause::unsupported(format!("{path}.completionMode"), mode, &["NonIndexed"]));
        }
    }
    let policy = &spec["template"]["spec"]["restartPolicy"];
    if !matches!(policy.as_str(), Some("Never" | "OnFailure")) {
        causes.push(Cause::unsupported(format!("{path}.template.spec.restartPolicy"), policy, &["OnFailure", "Never"]));
    }
    for (i, rule) in spec["podFailurePolicy"]["rules"].as_array().into_iter().flatten().enumerate() {
        let at = format!("{path}.podFailurePolicy.rules[{i}]");
        let action = &rule["action"];
        if !matches!(action.as_str(), Some("FailJob" | "Ignore" | "Count")) {
            causes.push(Cause::unsupported(format!("{at}.action"), action, &["Count", "FailJob", "Ignore"]));
        }
        let operator = &rule["onExitCodes"]["operator"];
        if rule["onExitCodes"].is_object() && !matches!(operator.as_str(), Some("In" | "NotIn")) {
            causes.push(Cause::unsupported(format!("{at}.onExitCodes.operator"), operator, &["In", "NotIn"]));
        }
    }
    crate::validation::validate_pod_spec(&spec["template"]["spec"], &format!("{path}.template.spec"), causes);
}

/// A CronJob's checks: its schedule, time zone, policy and job template.
pub fn validate_cron_job(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    match spec["schedule"].as_str() {
        None => causes.push(Cause::required("spec.schedule")),
        Some(schedule) => {
            if let Err(why) = Schedule::parse(schedule, spec["timeZone"].as_str()) {
                let field = if why.contains("time zone") { "spec.timeZone" } else { "spec.schedule" };
                causes.push(Cause::invalid(field, &spec[field.trim_start_matches("spec.")], why));
            }
        }
    }
    let policy = &spec["concurrencyPolicy"];
    if !policy.is_null() && !matches!(policy.as_str(), Some("Allow" | "Forbid" | "Replace")) {
        causes.push(Cause::unsupported("spec.concurrencyPolicy", policy, &["Allow", "Forbid", "Replace"]));
    }
    validate_job_spec(&spec["jobTemplate"]["spec"], "spec.jobTemplate.spec", causes);
}

/// A cron schedule (`*/5 * * * *`, `@hourly`) in a time zone (an IANA name from the system's
/// time zone database; UTC when none is given).
#[derive(Debug)]
pub struct Schedule {
    cron: croner::Cron,
    zone: Option<tzfile::ArcTz>,
}

impl Schedule {
    pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<Schedule, String> {
        if schedule.contains("TZ=") {
            return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .build()
            .parse(schedule)
            .map_err(|e| format!("unparseable schedule {schedule:?}: {e}"))?;
        let zone = match time_zone.filter(|z| !z.is_empty() && *z != "UTC" && *z != "Etc/UTC") {
            None => None,
            Some(name) if name.contains("..") || name.starts_with('/') => {
                return Err(format!("unknown time zone {name:?}"));
            }
            Some(name) => Some(tzfile::ArcTz::named(name).map_err(|e| format!("unknown time zone {name:?}: {e}"))?),
        };
        Ok(Schedule { cron, zone })
    }

    /// The first scheduled time after `after` (None if the schedule never fires again).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        fn next<Tz: TimeZone>(cron: &croner::Cron, from: DateTime<Tz>) -> Option<DateTime<Utc>> {
            cron.find_next_occurrence(&from, false).ok().map(|t| t.with_timezone(&Utc))
        }
        match &self.zone {
            Some(zone) => next(&self.cron, after.with_timezone(zone)),
            None => next(&self.cron, after),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_and_fire_in_their_time_zone() {
        let every_five = Schedule::parse("*/5 * * * *", None).expect("valid");
        let t = DateTime::parse_from_rfc3339("2026-12-08T10:02:30Z").expect("time").with_timezone(&Utc);
        assert_eq!(every_five.next_after(t).expect("next").to_rfc3339(), "2026-12-08T10:05:00+00:00");
        let hourly = Schedule::parse("@hourly", None).expect("valid");
        assert_eq!(hourly.next_after(t).expect("next").to_rfc3339(), "2026-12-08T11:00:00+00:00");
        // 09:00 in Berlin is 08:00 UTC in winter.
        let berlin = Schedule::parse("0 9 * * *", Some("Europe/Berlin")).expect("valid");
        assert_eq!(berlin.next_after(t).expect("next").to_rfc3339(), "2026-12-09T08:00:00+00:00");
        assert!(Schedule::parse("61 * * * *", None).is_err());
        assert!(Schedule::parse("* * * * *", Some("Mars/Olympus")).expect_err("unknown").contains("time zone"));
        assert!(Schedule::parse("CRON_TZ=UTC * * * * *", None).is_err());
    }

    #[test]
    fn a_new_job_gets_a_selector_on_its_uid_and_defaults() {
        let mut job = json!({"metadata": {"name": "migrate", "uid": "u-1"},
                             "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": []}}}});
        generate_selector(&mut job);
        default_job_spec(&mut job["spec"]);
        assert_eq!(job["spec"]["selector"]["matchLabels"][CONTROLLER_UID], "u-1");
        assert_eq!(job["spec"]["template"]["metadata"]["labels"][JOB_NAME], "migrate");
        assert_eq!(job["spec"]["completions"], 1);
        assert_eq!(job["spec"]["backoffLimit"], 6);
        let mut causes = Vec::new();
        validate_job_spec(&json!({"template": {"spec": {"restartPolicy": "Always"}}}), "spec", &mut causes);
        assert!(causes.iter().any(|c| c.field == "spec.template.spec.restartPolicy"));
    }
}
