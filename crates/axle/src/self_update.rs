//! Axle replacing itself, at the command line: `axle launch` (the A/B launcher), `axle
//! version` and `axle selfupdate status` (which slot runs what), `axle stamp` (release
//! tooling: a copy of a build that reports another version), and the self-check a server on
//! trial runs before the launcher commits it.

use anyhow::Context as _;
use selfupdate::launcher;
use selfupdate::slots::CheckResult;
use selfupdate::stamp::{self, Fault};
use selfupdate::{Slot, Slots};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

#[derive(clap::Args)]
pub struct LaunchArgs {
    /// Where the slots and the boot record live (`DATA_DIR/selfupdate`); the same data
    /// directory as the server's. [default: as `axle server`]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The command to run from the slot, e.g. `-- server --data-dir /var/lib/axle`.
    #[arg(last = true, required = true)]
    args: Vec<OsString>,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// The data directory holding the slots. [default: as `axle server`]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// `json` for the boot record as it is.
    #[arg(short, long)]
    output: Option<String>,
}

#[derive(clap::Subcommand)]
pub enum SelfUpdateCommand {
    /// The slots, what each holds, the version on trial and how the last trial ended.
    Status(StatusArgs),
}

#[derive(clap::Args)]
pub struct StampArgs {
    /// The Axle binary to copy.
    binary: PathBuf,
    /// The version the copy reports.
    #[arg(long = "set-version")]
    version: String,
    /// Test builds only: a fault the copy shows (exit-at-start, hang-at-start, fail-self-check).
    #[arg(long = "fault")]
    faults: Vec<String>,
    #[arg(short, long)]
    output: PathBuf,
}

/// `axle launch`: returns the exit code of what ran.
pub fn launch(args: LaunchArgs, default_data_dir: PathBuf) -> anyhow::Result<i32> {
    let data_dir = args.data_dir.unwrap_or(default_data_dir);
    let running = std::env::current_exe().context("cannot tell which binary runs")?;
    let launch = launcher::Launch { data_dir, args: args.args, running, version: stamp::version() };
    Ok(launcher::run(&launch)?)
}

pub fn stamp(args: StampArgs) -> anyhow::Result<()> {
    let faults = args
        .faults
        .iter()
        .map(|f| {
            Fault::parse(f)
                .with_context(|| format!("unknown fault {f:?} (exit-at-start, hang-at-start, fail-self-check)"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    stamp::write_stamped(&args.binary, &args.output, &args.version, &faults)?;
    println!("{}: axle {}", args.output.display(), args.version);
    Ok(())
}

/// `axle version`: this binary's version and, when there are, the slots of `data_dir` (else
/// of the launcher that started this process, else of the default data directory).
pub fn version(data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    println!("axle {}", stamp::version());
    let (slots, running) = match (data_dir, launcher::launched()) {
        (Some(dir), _) => (Slots::new(&dir), None),
        (None, Some((slots, slot, _))) => (slots, Some(slot)),
        (None, None) => (Slots::new(&crate::default_data_dir()), None),
    };
    if let Some(record) = slots.load()? {
        print_slots(&slots, &record, running);
    }
    Ok(())
}

pub fn status(args: StatusArgs, default_data_dir: PathBuf) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or(default_data_dir);
    let slots = Slots::new(&data_dir);
    let record = slots.load()?.with_context(|| {
        format!("no slots in {}: Axle was never started there by `axle launch`", slots.dir().display())
    })?;
    if args.output.as_deref() == Some("json") {
        println!("{}", serde_json::to_string_pretty(&record)?);
        return Ok(());
    }
    print_slots(&slots, &record, launcher::launched().map(|(_, slot, _)| slot));
    Ok(())
}

fn print_slots(slots: &Slots, record: &selfupdate::BootRecord, running: Option<Slot>) {
    for slot in [Slot::A, Slot::B] {
        let version = stamp::read(&slots.binary(slot)).map(|s| s.version).unwrap_or_else(|_| "-".into());
        let mut marks = Vec::new();
        if record.active == slot {
            marks.push("active");
        }
        if record.trial.as_ref().is_some_and(|t| t.slot == slot) {
            marks.push("trial");
        }
        if running == Some(slot) {
            marks.push("running");
        }
        println!("slot {}: {version} {}", slot.name(), marks.join(", "));
    }
    if let Some(trial) = &record.trial {
        println!(
            "trial: {} in slot {}, attempt {} of {}, {} s each{}",
            trial.version,
            trial.slot.name(),
            trial.attempts,
            trial.max_attempts,
            trial.deadline_seconds,
            if trial.last_failure.is_empty() { String::new() } else { format!("; last start {}", trial.last_failure) }
        );
    }
    if let Some(last) = &record.last_trial {
        let verdict = if last.committed { "committed".to_string() } else { format!("fell back: it {}", last.reason) };
        println!("last trial: {} (campaign {}): {verdict}", last.version, last.campaign);
    }
}

/// What a test build stamped with a start fault does before anything else.
pub fn apply_start_faults() {
    let faults = stamp::current().faults;
    if faults.contains(&Fault::ExitAtStart) {
        eprintln!("axle: this build is stamped to exit at start (a self-update test build)");
        std::process::exit(1);
    }
    if faults.contains(&Fault::HangAtStart) {
        eprintln!("axle: this build is stamped to hang at start (a self-update test build)");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// A server on trial checks itself and reports to its launcher: its stamp is the version
/// on trial, the API answers through a client, and the agents that were connected before the
/// hand-over have renewed their leases since this process started (within the trial's
/// deadline). An unhealthy result ends the process.
pub async fn self_check(slots: Slots, slot: Slot, kubeconfig: PathBuf, started: SystemTime) {
    let result = match check(&slots, &kubeconfig, started).await {
        Ok(()) => CheckResult { healthy: true, reason: String::new() },
        Err(why) => CheckResult { healthy: false, reason: why },
    };
    if let Err(e) = slots.report_check(slot, &result) {
        tracing::error!(error = %e, "cannot report the self-check");
    }
    if result.healthy {
        tracing::info!("self-check passed; the launcher commits this version");
    } else {
        tracing::error!(reason = %result.reason, "self-check failed");
        std::process::exit(launcher::SELF_CHECK_FAILED);
    }
}

async fn check(slots: &Slots, kubeconfig: &Path, started: SystemTime) -> Result<(), String> {
    if stamp::current().faults.contains(&Fault::FailSelfCheck) {
        return Err("this build is stamped to fail its self-check".into());
    }
    let record = slots.load().map_err(|e| e.to_string())?.ok_or("the boot record is gone")?;
    let trial = record.trial.ok_or("no trial in the boot record")?;
    let version = stamp::version();
    if version != trial.version {
        return Err(format!("this binary reports version {version}, the update declared {}", trial.version));
    }
    let config = client::Config::from_kubeconfig(kubeconfig).map_err(|e| e.to_string())?;
    let client = client::Client::new(config);
    client.get("/version").await.map_err(|e| format!("the API does not answer: {e}"))?;
    // Agents reconnect: every agent node that counts as Ready renews its lease after our start.
    let deadline = std::time::Instant::now() + Duration::from_secs(trial.deadline_seconds.saturating_sub(2).max(1));
    loop {
        let silent = silent_agents(&client, started).await.map_err(|e| format!("cannot list nodes: {e}"))?;
        if silent.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!("agents did not reconnect: {}", silent.join(", ")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Ready agent nodes whose lease was last renewed before `since`.
async fn silent_agents(client: &client::Client, since: SystemTime) -> Result<Vec<String>, client::ClientError> {
    let since = since.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let leases = client.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases").await?;
    let mut silent = Vec::new();
    for name in controllers::updates::ready_agent_nodes(client).await? {
        let lease = leases["items"].as_array().into_iter().flatten().find(|l| api::meta::name_of(l) == name);
        let renewed = lease.and_then(|l| l["spec"]["renewTime"].as_str()).and_then(api::meta::parse_time);
        if renewed.is_none_or(|t| t.timestamp() < since) {
            silent.push(name);
        }
    }
    Ok(silent)
}
