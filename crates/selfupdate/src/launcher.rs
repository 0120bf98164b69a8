//! `axle launch [--data-dir DIR] -- ARGS…`: runs `axle ARGS…` from the active slot, or from
//! the slot on trial, and decides between them.
//!
//! A trial start counts against the trial's attempts before it begins (so a power cut during
//! a trial counts too). The trial process checks itself and reports (`trial-<slot>.json`);
//! healthy → the launcher commits (the slot becomes active; the process keeps running).
//! The trial process exiting, reporting unhealthy, or staying silent past the deadline (it is
//! killed) → a failed attempt; after the last one the launcher records why, clears the trial
//! and starts the active slot again. A child that exits with [`RESTART`] is started again
//! (that is how a running version hands over to a trial). SIGTERM and SIGINT are passed on.

use crate::slots::{CheckResult, Slot, Slots, TrialOutcome};
use crate::SelfUpdateError;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// The exit code with which a slot asks to be started again (EX_TEMPFAIL).
pub const RESTART: i32 = 75;
/// The exit code of a trial that failed its self-check (EX_CONFIG).
pub const SELF_CHECK_FAILED: i32 = 78;

/// The environment a launched process finds: its slot, and whether it is on trial.
pub const ENV_SLOT: &str = "AXLE_SLOT";
pub const ENV_TRIAL: &str = "AXLE_TRIAL";
/// The data directory holding the slots.
pub const ENV_SLOTS_DIR: &str = "AXLE_SLOTS_DATA_DIR";

const POLL: Duration = Duration::from_millis(100);

/// The signal received (0: none), to pass on to the child.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    RECEIVED.store(signal, Ordering::SeqCst);
}

pub struct Launch {
    pub data_dir: PathBuf,
    pub args: Vec<OsString>,
    /// The binary that runs the launcher: it fills slot A on first use.
    pub running: PathBuf,
    pub version: String,
}

/// Runs until the child ends for good; returns the exit code to end with.
pub fn run(launch: &Launch) -> Result<i32, SelfUpdateError> {
    // SAFETY: the handler only stores into an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let slots = Slots::new(&launch.data_dir);
    slots.ensure(&launch.running, &launch.version)?;
    loop {
        let mut record = slots.load()?.ok_or_else(|| SelfUpdateError::Invalid("the boot record is gone".into()))?;
        let Some(mut trial) = record.trial.clone() else {
            let child = start(launch, &slots, record.active, false)?;
            match supervise(child)? {
                RESTART => continue,
                code => return Ok(code),
            }
        };
        if trial.attempts >= trial.max_attempts {
            tracing::warn!(version = %trial.version, reason = %trial.last_failure, "the new version failed its trial; back to the previous one");
            record.last_trial = Some(outcome(&trial, false, &trial.last_failure));
            record.trial = None;
            slots.save(&record)?;
            continue;
        }
        trial.attempts += 1;
        record.trial = Some(trial.clone());
        slots.save(&record)?;
        slots.clear_check(trial.slot)?;
        tracing::info!(version = %trial.version, attempt = trial.attempts, of = trial.max_attempts, "starting the new version on trial");
        let mut child = start(launch, &slots, trial.slot, true)?;
        match watch_trial(&mut child, &slots, trial.slot, Duration::from_secs(trial.deadline_seconds))? {
            TrialEnd::Healthy => {
                record.active = trial.slot;
                record.active_version = trial.version.clone();
                record.trial = None;
                record.last_trial = Some(outcome(&trial, true, "healthy"));
                slots.save(&record)?;
                tracing::info!(version = %trial.version, "the new version is healthy: committed");
                match supervise(child)? {
                    RESTART => continue,
                    code => return Ok(code),
                }
            }
            TrialEnd::Failed(why) => {
                tracing::warn!(version = %trial.version, attempt = trial.attempts, %why, "the trial start failed");
                trial.last_failure = why;
                record.trial = Some(trial);
                slots.save(&record)?;
            }
            TrialEnd::Stopped(code) => return Ok(code),
        }
    }
}

fn outcome(trial: &crate::slots::Trial, committed: bool, reason: &str) -> TrialOutcome {
    TrialOutcome {
        slot: trial.slot,
        version: trial.version.clone(),
        campaign: trial.campaign.clone(),
        committed,
        reason: reason.to_string(),
        at: now(),
    }
}

fn now() -> String {
    let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{seconds}")
}

fn start(launch: &Launch, slots: &Slots, slot: Slot, trial: bool) -> Result<Child, SelfUpdateError> {
    let binary = slots.binary(slot);
    let mut command = Command::new(&binary);
    command.args(&launch.args).env(ENV_SLOT, slot.name()).env(ENV_SLOTS_DIR, &launch.data_dir);
    if trial {
        command.env(ENV_TRIAL, "1");
    } else {
        command.env_remove(ENV_TRIAL);
    }
    command.spawn().map_err(crate::io_error(&binary))
}

enum TrialEnd {
    Healthy,
    Failed(String),
    /// The launcher was told to stop (the trial counts as attempted).
    Stopped(i32),
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".into(),
    }
}

fn watch_trial(child: &mut Child, slots: &Slots, slot: Slot, deadline: Duration) -> Result<TrialEnd, SelfUpdateError> {
    let started = Instant::now();
    loop {
        if let Some(code) = pass_on_signal(child)? {
            return Ok(TrialEnd::Stopped(code));
        }
        if let Some(status) = child.try_wait().map_err(|e| SelfUpdateError::Invalid(e.to_string()))? {
            let why = match slots.check(slot) {
                Some(CheckResult { healthy: false, reason }) => format!("failed its self-check: {reason}"),
                _ => format!("{} during its trial", describe(status)),
            };
            return Ok(TrialEnd::Failed(why));
        }
        match slots.check(slot) {
            Some(CheckResult { healthy: true, .. }) => return Ok(TrialEnd::Healthy),
            Some(CheckResult { healthy: false, reason }) => {
                kill(child);
                return Ok(TrialEnd::Failed(format!("failed its self-check: {reason}")));
            }
            None => {}
        }
        if started.elapsed() >= deadline {
            kill(child);
            return Ok(TrialEnd::Failed(format!("did not report healthy within {} s", deadline.as_secs())));
        }
        std::thread::sleep(POLL);
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Passes a received SIGTERM/SIGINT on and waits for the child: then its exit code.
fn pass_on_signal(child: &mut Child) -> Result<Option<i32>, SelfUpdateError> {
    let signal = RECEIVED.swap(0, Ordering::SeqCst);
    if signal == 0 {
        return Ok(None);
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, signal) };
    let status = child.wait().map_err(|e| SelfUpdateError::Invalid(e.to_string()))?;
    Ok(Some(status.code().unwrap_or(128 + signal)))
}

/// Waits for a committed or active child to end: its exit code (128 + signal if killed).
fn supervise(mut child: Child) -> Result<i32, SelfUpdateError> {
    use std::os::unix::process::ExitStatusExt as _;
    loop {
        if let Some(code) = pass_on_signal(&mut child)? {
            return Ok(code);
        }
        if let Some(status) = child.try_wait().map_err(|e| SelfUpdateError::Invalid(e.to_string()))? {
            return Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)));
        }
        std::thread::sleep(POLL);
    }
}

/// For the running process: which slot it was started from, if a launcher started it.
pub fn launched() -> Option<(Slots, Slot, bool)> {
    let slot = Slot::parse(&std::env::var(ENV_SLOT).ok()?)?;
    let dir = std::env::var_os(ENV_SLOTS_DIR)?;
    let trial = std::env::var(ENV_TRIAL).is_ok_and(|v| v == "1");
    Some((Slots::new(std::path::Path::new(&dir)), slot, trial))
}
