//! batch/v1 Jobs and CronJobs end to end, with the real kubectl (old and new) and runc: a Job
//! runs to `Complete` and `kubectl wait` sees it, failures back off and fail the Job at its
//! backoffLimit, a podFailurePolicy rule fails it at once on an exit code, a deadline stops it,
//! a finished Job with a TTL goes away with its pods, a pod waits for a Job to succeed
//! (`axle.dev/depends-on: migrate=Succeeded`), and a CronJob fires on its schedule.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::{busybox_layout, import, wait_for, Agent, Server};

fn car() -> (Server, Agent) {
    let server = Server::start();
    let agent = Agent::start(&server, "hpc-1", 1);
    let layout = busybox_layout(server.data_dir());
    import(&server, &layout, "busybox:1");
    wait_for("the node to be Ready", Duration::from_secs(20), || {
        server.kubectl_ok(&["get", "nodes", "--no-headers"]).contains(" Ready ").then_some(())
    });
    (server, agent)
}

fn job(server: &Server, name: &str) -> Value {
    serde_json::from_str(&server.kubectl_ok(&["get", "job", name, "-o", "json"])).expect("json")
}

fn condition(job: &Value, kind: &str) -> Option<Value> {
    job["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind && c["status"] == "True").cloned()
}

#[test]
fn jobs_complete_fail_and_clean_up_as_upstream_does() {
    let (server, _agent) = car();
    // The generators of old and new kubectl; `kubectl wait` for the condition.
    for release in ["1.27", "1.33"] {
        let name = format!("hello-{}", release.replace('.', "-"));
        server.kubectl_release_ok(
            release,
            &["create", "job", &name, "--image=busybox:1", "--", "sh", "-c", "echo hello from a job"],
        );
        let waited = server.kubectl_release_ok(
            release,
            &["wait", "--for=condition=Complete", &format!("job/{name}"), "--timeout=60s"],
        );
        assert!(waited.contains("condition met"), "{waited}");
        let done = job(&server, &name);
        assert_eq!((done["status"]["succeeded"].as_i64(), done["status"]["active"].as_i64()), (Some(1), Some(0)));
        assert!(done["status"]["completionTime"].is_string());
        let logs = server.kubectl_ok(&["logs", &format!("job/{name}")]);
        assert_eq!(logs.trim(), "hello from a job");
    }
    let table = server.kubectl_ok(&["get", "jobs"]);
    assert!(table.contains("STATUS") && table.contains("Complete") && table.contains("1/1"), "{table}");

    // Three completions, two at a time, a failure allowed by the backoff limit.
    server.apply_stdin(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: batch}
spec:
  completions: 3
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: work, image: "busybox:1", command: ["sh", "-c", "echo item"]}]
"#,
        &[],
    );
    server.kubectl_ok(&["wait", "--for=condition=Complete", "job/batch", "--timeout=90s"]);
    assert_eq!(job(&server, "batch")["status"]["succeeded"], 3);

    // A Job whose pods always fail: back-off, then Failed at backoffLimit.
    server.apply_stdin(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: flaky}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{name: work, image: "busybox:1", command: ["sh", "-c", "exit 3"]}]
"#,
        &[],
    );
    server.kubectl_ok(&["wait", "--for=condition=Failed", "job/flaky", "--timeout=90s"]);
    let failed = job(&server, "flaky");
    assert_eq!(condition(&failed, "Failed").expect("Failed")["reason"], "BackoffLimitExceeded");
    assert_eq!(failed["status"]["failed"], 2, "the first failure and one retry");

    // An exit code the podFailurePolicy names fails the Job at once, retries left or not.
    server.apply_stdin(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: fatal}
spec:
  backoffLimit: 6
  podFailurePolicy:
    rules:
    - action: FailJob
      onExitCodes: {containerName: work, operator: In, values: [42]}
  template:
    spec:
      restartPolicy: Never
      containers: [{name: work, image: "busybox:1", command: ["sh", "-c", "exit 42"]}]
"#,
        &[],
    );
    server.kubectl_ok(&["wait", "--for=condition=Failed", "job/fatal", "--timeout=60s"]);
    let fatal = condition(&job(&server, "fatal"), "Failed").expect("Failed");
    assert_eq!(fatal["reason"], "PodFailurePolicy");
    assert!(fatal["message"].as_str().unwrap_or("").contains("exit code 42"), "{fatal}");

    // A deadline stops a Job that runs too long, and its pod.
    server.apply_stdin(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: slow}
spec:
  activeDeadlineSeconds: 2
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers: [{name: work, image: "busybox:1", command: ["sleep", "600"]}]
"#,
        &[],
    );
    server.kubectl_ok(&["wait", "--for=condition=Failed", "job/slow", "--timeout=60s"]);
    assert_eq!(condition(&job(&server, "slow"), "Failed").expect("Failed")["reason"], "DeadlineExceeded");
    wait_for("the slow pod to go", Duration::from_secs(30), || {
        server.kubectl_ok(&["get", "pods", "-l", "job-name=slow", "-o", "name"]).trim().is_empty().then_some(())
    });

    // A restartPolicy other than Never or OnFailure is refused, as upstream does.
    let out = server.kubectl_with_stdin(
        &["create", "-f", "-"],
        Some("apiVersion: batch/v1\nkind: Job\nmetadata: {name: wrong}\nspec:\n  template:\n    spec:\n      containers: [{name: c, image: \"busybox:1\"}]\n"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("spec.template.spec.restartPolicy") && stderr.contains("Unsupported value"), "{stderr}");

    // A finished Job with a TTL is deleted, and its pods with it.
    server.apply_stdin(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: brief}
spec:
  ttlSecondsAfterFinished: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: work, image: "busybox:1", command: ["sh", "-c", "true"]}]
"#,
        &[],
    );
    wait_for("the brief Job and its pod to be gone", Duration::from_secs(60), || {
        let jobs = server.kubectl_ok(&["get", "jobs", "-o", "name"]);
        let pods = server.kubectl_ok(&["get", "pods", "-l", "job-name=brief", "-o", "name"]);
        (!jobs.contains("job.batch/brief") && pods.trim().is_empty()).then_some(())
    });
}

#[test]
fn a_pod_waits_for_a_job_and_a_cronjob_fires_on_its_schedule() {
    let (server, _agent) = car();
    server.apply_stdin(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: app
  annotations: {axle.dev/depends-on: "migrate=Succeeded"}
spec:
  containers: [{name: app, image: "busybox:1", command: ["sleep", "600"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate}
spec:
  template:
    spec:
      restartPolicy: OnFailure
      containers: [{name: migrate, image: "busybox:1", command: ["sh", "-c", "sleep 2; echo migrated"]}]
"#,
        &[],
    );
    let waiting = server.kubectl_ok(&[
        "get",
        "pod",
        "app",
        "-o",
        "jsonpath={.status.conditions[?(@.type=='PodScheduled')].message}",
    ]);
    assert!(waiting.contains("migrate=Succeeded"), "{waiting}");
    server.kubectl_ok(&["wait", "--for=condition=Complete", "job/migrate", "--timeout=60s"]);
    server.kubectl_ok(&["wait", "--for=condition=Ready", "pod/app", "--timeout=60s"]);

    // Every minute, Forbid: the first Job comes at the next full minute.
    server.apply_stdin(
        r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: "* * * * *"
  timeZone: Europe/Berlin
  concurrencyPolicy: Forbid
  successfulJobsHistoryLimit: 1
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: tick, image: "busybox:1", command: ["sh", "-c", "echo tick"]}]
"#,
        &[],
    );
    let fired = wait_for("the CronJob to fire", Duration::from_secs(90), || {
        let cronjob: Value =
            serde_json::from_str(&server.kubectl_ok(&["get", "cronjob", "tick", "-o", "json"])).ok()?;
        cronjob["status"]["lastScheduleTime"].as_str().map(String::from)
    });
    assert!(fired.ends_with(":00Z"), "scheduled on the minute: {fired}");
    let name = wait_for("its Job to complete", Duration::from_secs(60), || {
        let jobs: Value = serde_json::from_str(&server.kubectl_ok(&["get", "jobs", "-o", "json"])).ok()?;
        jobs["items"]
            .as_array()?
            .iter()
            .find(|j| {
                j["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("tick-"))
                    && condition(j, "Complete").is_some()
            })
            .and_then(|j| j["metadata"]["name"].as_str().map(String::from))
    });
    assert_eq!(server.kubectl_ok(&["logs", &format!("job/{name}")]).trim(), "tick");
    let table = server.kubectl_ok(&["get", "cronjobs"]);
    assert!(table.contains("* * * * *") && table.contains("Europe/Berlin"), "{table}");
    // A schedule or time zone that does not parse is refused.
    let out = server.kubectl_with_stdin(
        &["create", "-f", "-"],
        Some("apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: bad}\nspec:\n  schedule: \"61 * * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers: [{name: c, image: \"busybox:1\"}]\n"),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("spec.schedule"), "{}", String::from_utf8_lossy(&out.stderr));
}
