//! The flasher: a DoIP tester that reprograms one ECU with UDS, following the flow of
//! `shared/design/ecu-uds-doip.md`: identify, prepare, programming session, unlock, erase,
//! download in blocks (maxNumberOfBlockLength honoured, the counter wrapping), verify,
//! reset, then read the version back. It waits through response-pending, keeps the session
//! alive, retries what may be retried, restarts an interrupted transfer from the erase, and
//! never reports the new version unless the ECU reads back as such.

use crate::keys::KeyAlgorithm;
use crate::link::{Link, LinkError, MAX_PAYLOAD};
use crate::EcuError;
use diag::doip::{self, Message};
use diag::uds::{did, nrc, routine, Positive, Request, Response};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Where the ECU is and how to talk to it.
#[derive(Clone)]
pub struct Target {
    pub address: SocketAddr,
    pub tester_address: u16,
    pub ecu_address: u16,
}

/// Timing and retry bounds.
#[derive(Debug, Clone)]
pub struct Timing {
    pub connect: Duration,
    pub ack: Duration,
    /// Overall cap on one request waiting through response-pending.
    pub pending_cap: Duration,
    /// How long to keep reconnecting after a reset.
    pub reboot: Duration,
    /// Transfers restarted after a broken connection.
    pub transfer_retries: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            connect: Duration::from_secs(5),
            ack: Duration::from_secs(2),
            pending_cap: Duration::from_secs(120),
            reboot: Duration::from_secs(30),
            transfer_retries: 2,
        }
    }
}

/// Progress of a flash, as the caller reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Phase(&'static str),
    Bytes { sent: u64, total: u64 },
}

/// What a successful flash measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub version_before: String,
    pub version_after: String,
    pub payload_bytes: u64,
    pub wire_bytes: u64,
    pub phases: Vec<(&'static str, Duration)>,
    pub attempts: u32,
}

/// A UDS session with one ECU over DoIP.
pub struct Session {
    link: Link,
    target: Target,
    timing: Timing,
    /// P2 and P2* of the ECU, with the client's margin (+1 s).
    p2: Duration,
    p2_star: Duration,
    last_request: Instant,
    in_default_session: bool,
}

impl Session {
    /// Connects and activates routing.
    pub async fn open(target: &Target, timing: &Timing) -> Result<Session, EcuError> {
        let stream = tokio::time::timeout(timing.connect, TcpStream::connect(target.address))
            .await
            .map_err(|_| EcuError::Timeout { what: format!("connecting to {}", target.address) })?
            .map_err(|e| EcuError::Io { what: format!("connect to {}", target.address), cause: e })?;
        let mut session = Session {
            link: Link::new(stream),
            target: target.clone(),
            timing: timing.clone(),
            p2: Duration::from_millis(50) + Duration::from_secs(1),
            p2_star: Duration::from_secs(5) + Duration::from_secs(1),
            last_request: Instant::now(),
            in_default_session: true,
        };
        session
            .link
            .send(&Message::RoutingActivationRequest { source: target.tester_address, activation_type: 0, oem: None })
            .await?;
        match session.receive_within(timing.ack).await? {
            Message::RoutingActivationResponse { code: doip::activation::SUCCESS, .. } => Ok(session),
            Message::RoutingActivationResponse { code, .. } => Err(EcuError::RoutingActivation(code)),
            other => Err(EcuError::Unexpected(format!("{other:?} instead of a routing activation response"))),
        }
    }

    async fn receive_within(&mut self, limit: Duration) -> Result<Message, EcuError> {
        loop {
            let message = tokio::time::timeout(limit, self.link.receive())
                .await
                .map_err(|_| EcuError::Timeout { what: "an answer from the ECU".into() })??;
            match message {
                // The entity checks on us: answer and keep waiting.
                Message::AliveCheckRequest => {
                    self.link.send(&Message::AliveCheckResponse { source: self.target.tester_address }).await?;
                }
                Message::GenericNack { code } => return Err(EcuError::DoipNack(code)),
                other => return Ok(other),
            }
        }
    }

    /// Keeps a non-default session alive when the tester was quiet (S3 is 5 s).
    async fn keep_alive(&mut self) -> Result<(), EcuError> {
        if !self.in_default_session && self.last_request.elapsed() >= Duration::from_secs(2) {
            self.send_uds(&Request::TesterPresent { suppress: true }).await?;
        }
        Ok(())
    }

    async fn send_uds(&mut self, request: &Request) -> Result<(), EcuError> {
        let message = Message::Diagnostic {
            source: self.target.tester_address,
            target: self.target.ecu_address,
            data: request.encode(),
        };
        self.link.send(&message).await?;
        self.last_request = Instant::now();
        match self.receive_within(self.timing.ack).await? {
            Message::DiagnosticAck { .. } => Ok(()),
            Message::DiagnosticNack { code, .. } => Err(EcuError::DiagnosticNack(code)),
            other => Err(EcuError::Unexpected(format!("{other:?} instead of a diagnostic ACK"))),
        }
    }

    /// Sends a request and returns its positive response, waiting through response-pending
    /// (0x78) and retrying busy (0x21) a few times.
    pub async fn request(&mut self, request: &Request) -> Result<Positive, EcuError> {
        self.keep_alive().await?;
        let service = request.sid();
        let mut busy_retries = 3;
        loop {
            self.send_uds(request).await?;
            if request.suppresses_positive_response() {
                return Ok(Positive::TesterPresent);
            }
            let started = Instant::now();
            let mut wait = self.p2;
            let response = loop {
                let message = self.receive_within(wait).await?;
                let Message::Diagnostic { data, .. } = message else { continue };
                match Response::decode(&data)? {
                    Response::Negative { sid, nrc: nrc::RESPONSE_PENDING } if sid == service => {
                        if started.elapsed() > self.timing.pending_cap {
                            return Err(EcuError::Timeout {
                                what: format!("service {service:#04x} (response pending)"),
                            });
                        }
                        wait = self.p2_star;
                    }
                    other => break other,
                }
            };
            match response {
                Response::Positive(Positive::SessionControl { session, p2_ms, p2_star_10ms }) => {
                    self.p2 = Duration::from_millis(u64::from(p2_ms)) + Duration::from_secs(1);
                    self.p2_star = Duration::from_millis(u64::from(p2_star_10ms) * 10) + Duration::from_secs(1);
                    self.in_default_session = session == 1;
                    return Ok(Positive::SessionControl { session, p2_ms, p2_star_10ms });
                }
                Response::Positive(p) => return Ok(p),
                Response::Negative { nrc: nrc::BUSY_REPEAT, .. } if busy_retries > 0 => {
                    busy_retries -= 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Response::Negative { sid, nrc } => return Err(EcuError::Nrc { service: sid, nrc }),
            }
        }
    }

    pub async fn read_did(&mut self, id: u16) -> Result<Vec<u8>, EcuError> {
        match self.request(&Request::ReadDataByIdentifier { dids: vec![id] }).await? {
            Positive::ReadDataByIdentifier { did, data } if did == id => Ok(data),
            other => Err(EcuError::Unexpected(format!("{other:?} for DID {id:#06x}"))),
        }
    }

    pub async fn read_text(&mut self, id: u16) -> Result<String, EcuError> {
        Ok(String::from_utf8_lossy(&self.read_did(id).await?).trim_end_matches('\0').to_string())
    }

    async fn unlock(&mut self, keys: &dyn KeyAlgorithm) -> Result<(), EcuError> {
        let Positive::SecurityAccess { seed, .. } = self.request(&Request::SecurityAccessSeed { level: 1 }).await?
        else {
            return Err(EcuError::Unexpected("no seed".into()));
        };
        if seed.iter().all(|b| *b == 0) {
            return Ok(());
        }
        // 0x35 invalid key stops here: retrying could lock the ECU out.
        self.request(&Request::SecurityAccessKey { level: 2, key: keys.key(1, &seed) }).await?;
        Ok(())
    }

    pub fn bytes_on_wire(&self) -> u64 {
        self.link.bytes_sent + self.link.bytes_received
    }
}

/// Reads identification: (software version, serial, VIN).
pub async fn identify(target: &Target, timing: &Timing) -> Result<(String, String, String), EcuError> {
    let mut session = Session::open(target, timing).await?;
    let version = session.read_text(did::SOFTWARE_VERSION).await?;
    let serial = session.read_text(did::SERIAL_NUMBER).await.unwrap_or_default();
    let vin = session.read_text(did::VIN).await.unwrap_or_default();
    Ok((version, serial, vin))
}

/// Flashes `image`; `expected_version` is what the ECU must read back afterwards (None: any
/// version different from before counts only if the ECU reports it; the read-back is returned).
pub async fn flash(
    target: &Target,
    timing: &Timing,
    keys: &dyn KeyAlgorithm,
    image: &[u8],
    expected_version: Option<&str>,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Report, EcuError> {
    let mut report = Report::default();
    let mut phase_started = Instant::now();
    let mut phase = |report: &mut Report, name: &'static str, progress: &mut (dyn FnMut(Progress) + Send)| {
        progress(Progress::Phase(name));
        let now = Instant::now();
        if let Some(last) = report.phases.last_mut() {
            last.1 = now - phase_started;
        }
        report.phases.push((name, Duration::ZERO));
        phase_started = now;
    };
    phase(&mut report, "identify", progress);
    let mut session = Session::open(target, timing).await?;
    report.version_before = session.read_text(did::SOFTWARE_VERSION).await?;
    if expected_version.is_some_and(|v| v == report.version_before) {
        report.version_after = report.version_before.clone();
        return Ok(report);
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        report.attempts = attempt;
        match program(&mut session, keys, image, &mut report, &mut phase, progress).await {
            Ok(()) => break,
            Err(e) if attempt <= timing.transfer_retries && e.is_transient() => {
                tracing::info!(error = %e, attempt, "transfer interrupted; starting it again from the erase");
                report.wire_bytes += session.bytes_on_wire();
                session = reconnect(target, timing).await?;
            }
            Err(e) => {
                best_effort_restore(&mut session).await;
                return Err(e);
            }
        }
    }
    report.wire_bytes += session.bytes_on_wire();
    phase(&mut report, "activate", progress);
    // The reset reboots the ECU: its answer may be the last thing on this connection.
    let _ = session.request(&Request::EcuReset { kind: 1, suppress: false }).await;
    drop(session);
    let mut session = reconnect(target, timing).await?;
    phase(&mut report, "read back", progress);
    report.version_after = session.read_text(did::SOFTWARE_VERSION).await?;
    report.wire_bytes += session.bytes_on_wire();
    phase(&mut report, "done", progress);
    report.phases.pop();
    if let Some(expected) = expected_version {
        if report.version_after != expected {
            return Err(EcuError::VersionMismatch {
                expected: expected.to_string(),
                actual: report.version_after.clone(),
            });
        }
    }
    Ok(report)
}

type PhaseFn<'a> = dyn FnMut(&mut Report, &'static str, &mut (dyn FnMut(Progress) + Send)) + Send + 'a;

/// Prepare, programming session, unlock, erase, download, verify.
async fn program(
    session: &mut Session,
    keys: &dyn KeyAlgorithm,
    image: &[u8],
    report: &mut Report,
    phase: &mut PhaseFn<'_>,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<(), EcuError> {
    phase(report, "prepare", progress);
    session.request(&Request::SessionControl { session: 3, suppress: false }).await?;
    // DTC setting and communication control are courtesies to the rest of the car; an ECU
    // that does not offer them is still flashed.
    optional(session.request(&Request::ControlDtcSetting { kind: 2, suppress: false }).await)?;
    optional(session.request(&Request::CommunicationControl { control: 3, communication: 1, suppress: false }).await)?;
    session.request(&Request::SessionControl { session: 2, suppress: false }).await?;
    phase(report, "unlock", progress);
    session.unlock(keys).await?;
    phase(report, "erase", progress);
    session.request(&Request::RoutineControl { kind: 1, routine: routine::ERASE_MEMORY, options: vec![] }).await?;
    phase(report, "download", progress);
    let download =
        Request::RequestDownload { format: 0, address: 0, size: image.len() as u64, address_length: 4, size_length: 4 };
    let Positive::RequestDownload { max_block_length } = session.request(&download).await? else {
        return Err(EcuError::Unexpected("no maxNumberOfBlockLength".into()));
    };
    // maxNumberOfBlockLength counts SID and counter; DoIP carries 4 address bytes per message.
    let chunk = (max_block_length.min(u64::from(MAX_PAYLOAD) - 4).saturating_sub(2)).max(1) as usize;
    let mut counter: u8 = 1;
    let mut sent = 0u64;
    for block in image.chunks(chunk) {
        match session.request(&Request::TransferData { counter, data: block.to_vec() }).await? {
            Positive::TransferData { counter: echoed } if echoed == counter => {}
            other => return Err(EcuError::Unexpected(format!("{other:?} for block {counter}"))),
        }
        counter = counter.wrapping_add(1);
        sent += block.len() as u64;
        progress(Progress::Bytes { sent, total: image.len() as u64 });
    }
    session.request(&Request::TransferExit { parameters: vec![] }).await?;
    report.payload_bytes = sent;
    phase(report, "verify", progress);
    match session
        .request(&Request::RoutineControl {
            kind: 1,
            routine: routine::CHECK_PROGRAMMING_DEPENDENCIES,
            options: vec![],
        })
        .await?
    {
        Positive::RoutineControl { status, .. } if status.first().copied().unwrap_or(0) == 0 => Ok(()),
        Positive::RoutineControl { status, .. } => {
            Err(EcuError::ImageRejected(status.first().copied().unwrap_or(0xFF)))
        }
        other => Err(EcuError::Unexpected(format!("{other:?} for the dependency check"))),
    }
}

/// A request the ECU may not support (serviceNotSupported, subFunctionNotSupported, or not in
/// this session): skipped then; any other failure stands.
fn optional(result: Result<Positive, EcuError>) -> Result<(), EcuError> {
    match result {
        Ok(_) => Ok(()),
        Err(EcuError::Nrc { service, nrc }) if matches!(nrc, 0x11 | 0x12 | 0x7E | 0x7F) => {
            tracing::debug!(service, nrc, "the ECU does not offer this service; going on without it");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Reconnects (the ECU may be rebooting) until the reboot allowance is used up.
async fn reconnect(target: &Target, timing: &Timing) -> Result<Session, EcuError> {
    let deadline = Instant::now() + timing.reboot;
    let mut delay = Duration::from_millis(50);
    loop {
        match Session::open(target, timing).await {
            Ok(session) => return Ok(session),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// After a failure: communication and DTCs back on, default session (best effort).
async fn best_effort_restore(session: &mut Session) {
    let _ = session.request(&Request::CommunicationControl { control: 0, communication: 1, suppress: false }).await;
    let _ = session.request(&Request::ControlDtcSetting { kind: 1, suppress: false }).await;
    let _ = session.request(&Request::SessionControl { session: 1, suppress: false }).await;
}

impl From<LinkError> for EcuError {
    fn from(e: LinkError) -> EcuError {
        match e {
            LinkError::Closed => EcuError::ConnectionLost,
            LinkError::Io(cause) => EcuError::Io { what: "the DoIP connection".into(), cause },
            LinkError::Protocol(e) => EcuError::Protocol(e),
        }
    }
}
