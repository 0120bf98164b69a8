//! `axle ecu-sim`: a simulated ECU — a DoIP entity (TCP and UDP vehicle identification), a UDS
//! server and a bootloader whose flash bank is a file — with faults to inject.
//!
//! The application's software version (DID F189) is read from the flashed image: an image
//! whose first line is `AXLE-FW <name> <version>` reports `<version>`; any other image reports
//! `unknown-<first 8 hex digits of its SHA-256>`. The version given at start describes the
//! bank's initial content. State that survives a "power cycle" (version, serial) lives next
//! to the flash file in `<flash>.json`.

use crate::link::{Link, LinkError, MAX_PAYLOAD};
use crate::{keys, EcuError};
use diag::doip::{self, Message};
use diag::uds::{self, did, nrc, routine, sid, Positive, Request, Response};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, UdpSocket};

/// What the simulated ECU is and which faults it injects.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub listen: SocketAddr,
    pub logical_address: u16,
    pub flash: PathBuf,
    pub sw_version: String,
    pub vin: String,
    pub serial: String,
    /// `maxNumberOfBlockLength` announced for downloads (counts SID and counter).
    pub max_block_length: u64,
    pub erase_delay: Duration,
    /// Close the connection after this many TransferData blocks (once).
    pub drop_after_blocks: Option<u64>,
    /// Answer these services with these NRCs (e.g. 0x27 → 0x35, invalid key).
    pub forced_nrc: HashMap<u8, u8>,
    /// The check-dependencies routine reports a bad image.
    pub corrupt_checksum: bool,
    /// Two banks, `<flash>` (A) and `<flash>.b` (B): an image is written to the inactive bank
    /// and becomes active at reset; the other bank keeps the image before.
    pub ab_banks: bool,
}

/// P2 and P2* the sim announces: 50 ms and 5 s.
const P2_MS: u16 = 50;
const P2_STAR_10MS: u16 = 500;
const MAX_KEY_ATTEMPTS: u32 = 3;
const LOCKOUT: Duration = Duration::from_secs(10);

/// What survives a reset.
#[derive(Debug, Clone)]
struct Persistent {
    version: String,
    /// With A/B banks: whether bank B is the active one.
    active_b: bool,
}

/// The ECU's state across connections.
struct Ecu {
    config: SimConfig,
    persistent: Persistent,
    session: u8,
    unlocked: bool,
    seed: Option<u32>,
    failed_keys: u32,
    locked_until: Option<Instant>,
    erased: bool,
    download: Option<Download>,
    /// Image received and checked, activated at reset.
    staged: Option<Vec<u8>>,
    verified: bool,
    blocks_received: u64,
    dropped_once: bool,
}

struct Download {
    size: usize,
    data: Vec<u8>,
    next_counter: u8,
    last_counter: Option<u8>,
    done: bool,
}

/// What a request leads to, beyond its response.
enum After {
    Nothing,
    /// Send `7F SID 78` first and the response after this delay.
    Pending(Duration),
    /// Close the connection (fault injection, or the reset's reboot).
    Drop,
}

/// Reads the version an image declares (see the module docs).
pub fn image_version(image: &[u8]) -> String {
    let first_line = image.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let text = String::from_utf8_lossy(first_line);
    let mut words = text.split_whitespace();
    if words.next() == Some("AXLE-FW") {
        if let Some(version) = words.nth(1) {
            return version.to_string();
        }
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(image);
    format!("unknown-{:02x}{:02x}{:02x}{:02x}", digest[0], digest[1], digest[2], digest[3])
}

/// Bank B of an A/B sim: `<flash>.b`.
pub fn bank_b(config: &SimConfig) -> PathBuf {
    let mut path = config.flash.clone().into_os_string();
    path.push(".b");
    path.into()
}

fn state_path(config: &SimConfig) -> PathBuf {
    let mut path = config.flash.clone().into_os_string();
    path.push(".json");
    path.into()
}

impl Ecu {
    fn new(config: SimConfig) -> std::io::Result<Ecu> {
        let state: serde_json::Value =
            std::fs::read(state_path(&config)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let version = state["version"].as_str().map(String::from).unwrap_or_else(|| config.sw_version.clone());
        if !config.flash.exists() {
            std::fs::write(&config.flash, format!("AXLE-FW sim {version}\n"))?;
        }
        Ok(Ecu {
            config,
            persistent: Persistent { version, active_b: state["active"] == "b" },
            session: 1,
            unlocked: false,
            seed: None,
            failed_keys: 0,
            locked_until: None,
            erased: false,
            download: None,
            staged: None,
            verified: false,
            blocks_received: 0,
            dropped_once: false,
        })
    }

    /// A reset or a new power cycle: default session, locked, nothing in flight.
    fn reset_volatile(&mut self) {
        self.session = 1;
        self.unlocked = false;
        self.seed = None;
        self.erased = false;
        self.download = None;
        self.verified = false;
    }

    fn negative(service: u8, code: u8) -> (Response, After) {
        (Response::Negative { sid: service, nrc: code }, After::Nothing)
    }

    fn did_data(&self, id: u16) -> Option<Vec<u8>> {
        match id {
            did::SOFTWARE_VERSION | did::SUPPLIER_SOFTWARE_VERSION => Some(self.persistent.version.as_bytes().to_vec()),
            did::SERIAL_NUMBER => Some(self.config.serial.as_bytes().to_vec()),
            did::VIN => Some(self.config.vin.as_bytes().to_vec()),
            _ => None,
        }
    }

    /// Handles one UDS request: the response bytes (None: suppressed) and what follows.
    fn handle(&mut self, bytes: &[u8]) -> (Option<Vec<u8>>, After) {
        let request = match Request::decode(bytes) {
            Ok(r) => r,
            Err(diag::DiagError::UdsRequest { sid, nrc }) => {
                return (Some(Response::Negative { sid, nrc }.encode()), After::Nothing)
            }
            Err(_) => return (None, After::Nothing),
        };
        if let Some(code) = self.config.forced_nrc.get(&request.sid()) {
            // A forced NRC on SecurityAccess applies to the key, not the seed.
            if !matches!(request, Request::SecurityAccessSeed { .. }) {
                return (Some(Response::Negative { sid: request.sid(), nrc: *code }.encode()), After::Nothing);
            }
        }
        // ReadDataByIdentifier may name several DIDs: the answer concatenates them.
        if let Request::ReadDataByIdentifier { dids } = &request {
            let mut out = vec![sid::READ_DID + 0x40];
            for id in dids {
                let Some(data) = self.did_data(*id) else {
                    return (
                        Some(Response::Negative { sid: sid::READ_DID, nrc: nrc::REQUEST_OUT_OF_RANGE }.encode()),
                        After::Nothing,
                    );
                };
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&data);
            }
            return (Some(out), After::Nothing);
        }
        let suppress = request.suppresses_positive_response();
        let (response, after) = self.respond(request);
        let body = match (&response, suppress) {
            (Response::Positive(_), true) => None,
            _ => Some(response.encode()),
        };
        (body, after)
    }

    fn respond(&mut self, request: Request) -> (Response, After) {
        let programming = self.session == 2;
        let positive = |p: Positive| (Response::Positive(p), After::Nothing);
        match request {
            Request::SessionControl { session, .. } => {
                if !(1..=3).contains(&session) {
                    return Ecu::negative(sid::SESSION_CONTROL, nrc::SUBFUNCTION_NOT_SUPPORTED);
                }
                if session != self.session {
                    self.unlocked = false;
                    self.seed = None;
                }
                self.session = session;
                positive(Positive::SessionControl { session, p2_ms: P2_MS, p2_star_10ms: P2_STAR_10MS })
            }
            Request::TesterPresent { .. } => positive(Positive::TesterPresent),
            Request::SecurityAccessSeed { level } => {
                if self.session == 1 {
                    return Ecu::negative(sid::SECURITY_ACCESS, nrc::SERVICE_NOT_SUPPORTED_IN_SESSION);
                }
                if self.locked_until.is_some_and(|t| Instant::now() < t) {
                    return Ecu::negative(sid::SECURITY_ACCESS, nrc::DELAY_NOT_EXPIRED);
                }
                if level != 1 {
                    return Ecu::negative(sid::SECURITY_ACCESS, nrc::SUBFUNCTION_NOT_SUPPORTED);
                }
                // Unlocked already: a zero seed, as ISO 14229 says.
                let seed = if self.unlocked { 0 } else { keys::fresh_seed() };
                self.seed = Some(seed);
                positive(Positive::SecurityAccess { sub_function: level, seed: seed.to_be_bytes().to_vec() })
            }
            Request::SecurityAccessKey { level, key } => {
                if let Some(code) = self.config.forced_nrc.get(&sid::SECURITY_ACCESS) {
                    return Ecu::negative(sid::SECURITY_ACCESS, *code);
                }
                let Some(seed) = self.seed.take() else {
                    return Ecu::negative(sid::SECURITY_ACCESS, nrc::REQUEST_SEQUENCE_ERROR);
                };
                if level != 2 {
                    return Ecu::negative(sid::SECURITY_ACCESS, nrc::SUBFUNCTION_NOT_SUPPORTED);
                }
                if key == keys::demo_key(seed).to_be_bytes() {
                    self.unlocked = true;
                    self.failed_keys = 0;
                    positive(Positive::SecurityAccess { sub_function: level, seed: vec![] })
                } else {
                    self.failed_keys += 1;
                    if self.failed_keys >= MAX_KEY_ATTEMPTS {
                        self.locked_until = Some(Instant::now() + LOCKOUT);
                        self.failed_keys = 0;
                        return Ecu::negative(sid::SECURITY_ACCESS, nrc::EXCEEDED_ATTEMPTS);
                    }
                    Ecu::negative(sid::SECURITY_ACCESS, nrc::INVALID_KEY)
                }
            }
            Request::CommunicationControl { control, .. } => {
                if self.session == 1 {
                    return Ecu::negative(sid::COMMUNICATION_CONTROL, nrc::SERVICE_NOT_SUPPORTED_IN_SESSION);
                }
                positive(Positive::CommunicationControl { control })
            }
            Request::ControlDtcSetting { kind, .. } => {
                if self.session == 1 {
                    return Ecu::negative(sid::CONTROL_DTC_SETTING, nrc::SERVICE_NOT_SUPPORTED_IN_SESSION);
                }
                positive(Positive::ControlDtcSetting { kind })
            }
            Request::WriteDataByIdentifier { did: id, .. } => {
                // Identification data is the bootloader's own: not writable here.
                let _ = id;
                Ecu::negative(sid::WRITE_DID, nrc::REQUEST_OUT_OF_RANGE)
            }
            Request::RoutineControl { kind, routine: id, .. } => {
                if !programming {
                    return Ecu::negative(sid::ROUTINE_CONTROL, nrc::SERVICE_NOT_SUPPORTED_IN_SESSION);
                }
                if !self.unlocked {
                    return Ecu::negative(sid::ROUTINE_CONTROL, nrc::SECURITY_ACCESS_DENIED);
                }
                if kind != 1 {
                    return Ecu::negative(sid::ROUTINE_CONTROL, nrc::SUBFUNCTION_NOT_SUPPORTED);
                }
                match id {
                    routine::ERASE_MEMORY => {
                        self.erased = true;
                        self.download = None;
                        self.staged = None;
                        self.verified = false;
                        (
                            Response::Positive(Positive::RoutineControl { kind, routine: id, status: vec![0] }),
                            After::Pending(self.config.erase_delay),
                        )
                    }
                    routine::CHECK_PROGRAMMING_DEPENDENCIES => {
                        let complete = self.staged.is_some();
                        let ok = complete && !self.config.corrupt_checksum;
                        self.verified = ok;
                        positive(Positive::RoutineControl { kind, routine: id, status: vec![if ok { 0 } else { 1 }] })
                    }
                    _ => Ecu::negative(sid::ROUTINE_CONTROL, nrc::REQUEST_OUT_OF_RANGE),
                }
            }
            Request::RequestDownload { format, size, .. } => {
                if !programming {
                    return Ecu::negative(sid::REQUEST_DOWNLOAD, nrc::SERVICE_NOT_SUPPORTED_IN_SESSION);
                }
                if !self.unlocked {
                    return Ecu::negative(sid::REQUEST_DOWNLOAD, nrc::SECURITY_ACCESS_DENIED);
                }
                if format != 0 || size == 0 || size > 64 << 20 {
                    return Ecu::negative(sid::REQUEST_DOWNLOAD, nrc::REQUEST_OUT_OF_RANGE);
                }
                if !self.erased {
                    return Ecu::negative(sid::REQUEST_DOWNLOAD, nrc::CONDITIONS_NOT_CORRECT);
                }
                self.download = Some(Download {
                    size: size as usize,
                    data: Vec::with_capacity(size as usize),
                    next_counter: 1,
                    last_counter: None,
                    done: false,
                });
                positive(Positive::RequestDownload { max_block_length: self.config.max_block_length })
            }
            Request::TransferData { counter, data } => {
                let max_data = self.config.max_block_length.saturating_sub(2) as usize;
                let Some(download) = self.download.as_mut().filter(|d| !d.done) else {
                    return Ecu::negative(sid::TRANSFER_DATA, nrc::REQUEST_SEQUENCE_ERROR);
                };
                if download.last_counter == Some(counter) {
                    // A repeat of the last block: acknowledged, not written again.
                    return positive(Positive::TransferData { counter });
                }
                if counter != download.next_counter {
                    return Ecu::negative(sid::TRANSFER_DATA, nrc::WRONG_BLOCK_SEQUENCE_COUNTER);
                }
                if data.len() > max_data || download.data.len() + data.len() > download.size {
                    return Ecu::negative(sid::TRANSFER_DATA, nrc::TRANSFER_SUSPENDED);
                }
                download.data.extend_from_slice(&data);
                download.last_counter = Some(counter);
                download.next_counter = counter.wrapping_add(1);
                self.blocks_received += 1;
                if self.config.drop_after_blocks.is_some_and(|n| self.blocks_received >= n) && !self.dropped_once {
                    self.dropped_once = true;
                    return (Response::Positive(Positive::TransferData { counter }), After::Drop);
                }
                positive(Positive::TransferData { counter })
            }
            Request::TransferExit { .. } => {
                let Some(download) = self.download.as_mut().filter(|d| !d.done) else {
                    return Ecu::negative(sid::TRANSFER_EXIT, nrc::REQUEST_SEQUENCE_ERROR);
                };
                if download.data.len() != download.size {
                    return Ecu::negative(sid::TRANSFER_EXIT, nrc::GENERAL_PROGRAMMING_FAILURE);
                }
                download.done = true;
                self.staged = Some(std::mem::take(&mut download.data));
                positive(Positive::TransferExit { parameters: vec![] })
            }
            Request::EcuReset { kind, .. } => {
                if kind != 1 && kind != 3 {
                    return Ecu::negative(sid::ECU_RESET, nrc::SUBFUNCTION_NOT_SUPPORTED);
                }
                if self.verified {
                    if let Some(image) = self.staged.take() {
                        if let Err(e) = self.activate(&image) {
                            tracing::warn!(error = %e, "cannot write the flash bank");
                            return Ecu::negative(sid::ECU_RESET, nrc::GENERAL_PROGRAMMING_FAILURE);
                        }
                    }
                }
                self.reset_volatile();
                (Response::Positive(Positive::EcuReset { kind }), After::Drop)
            }
            Request::ReadDataByIdentifier { .. } => Ecu::negative(sid::READ_DID, nrc::GENERAL_REJECT),
        }
    }

    /// Writes the verified image into the bank (atomically; with A/B banks into the inactive
    /// one, which becomes active) and takes its version.
    fn activate(&mut self, image: &[u8]) -> std::io::Result<()> {
        let bank = match (self.config.ab_banks, self.persistent.active_b) {
            (true, false) => bank_b(&self.config),
            _ => self.config.flash.clone(),
        };
        let tmp = bank.with_extension("flashing");
        std::fs::write(&tmp, image)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &bank)?;
        self.persistent.version = image_version(image);
        if self.config.ab_banks {
            self.persistent.active_b = !self.persistent.active_b;
        }
        let active = if self.persistent.active_b { "b" } else { "a" };
        let state =
            serde_json::json!({"version": self.persistent.version, "serial": self.config.serial, "active": active});
        std::fs::write(state_path(&self.config), serde_json::to_vec(&state).unwrap_or_default())?;
        tracing::info!(version = %self.persistent.version, bytes = image.len(), "new image active");
        Ok(())
    }
}

/// Runs the simulated ECU on `config.listen` (TCP and UDP) until the process ends.
pub async fn run(config: SimConfig) -> Result<(), EcuError> {
    let listen_error = |e: std::io::Error| EcuError::Io { what: format!("listen on {}", config.listen), cause: e };
    let listener = TcpListener::bind(config.listen).await.map_err(listen_error)?;
    let udp = UdpSocket::bind(listener.local_addr().map_err(listen_error)?).await.map_err(listen_error)?;
    serve(config, listener, udp).await
}

/// Runs the simulated ECU on sockets bound by the caller.
pub async fn serve(config: SimConfig, listener: TcpListener, udp: UdpSocket) -> Result<(), EcuError> {
    let flash_error = |e: std::io::Error| EcuError::Io { what: config.flash.display().to_string(), cause: e };
    let ecu = Arc::new(Mutex::new(Ecu::new(config.clone()).map_err(flash_error)?));
    let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(%address, logical_address = format!("{:#06x}", config.logical_address), "simulated ECU ready");
    let announcement = announcement(&config);
    tokio::spawn(async move {
        let mut buffer = [0u8; 1500];
        while let Ok((n, peer)) = udp.recv_from(&mut buffer).await {
            let reply = match doip::decode(&buffer[..n], MAX_PAYLOAD) {
                Ok(Some((Message::VehicleIdRequest, _))) => Some(announcement.encode(doip::VERSION_2012)),
                Ok(Some((Message::VehicleIdRequestVin { vin }, _))) if &vin == announcement_vin(&announcement) => {
                    Some(announcement.encode(doip::VERSION_2012))
                }
                Ok(Some((Message::VehicleIdRequestEid { .. }, _))) => Some(announcement.encode(doip::VERSION_2012)),
                Err(e) => e.nack_code().map(|code| Message::GenericNack { code }.encode(doip::VERSION_2012)),
                _ => None,
            };
            if let Some(reply) = reply {
                let _ = udp.send_to(&reply, peer).await;
            }
        }
    });
    // The sockets it announces (`max_sockets`) are all it serves: a further tester is closed.
    let sockets = Arc::new(tokio::sync::Semaphore::new(usize::from(MAX_SOCKETS)));
    loop {
        let (stream, peer) =
            listener.accept().await.map_err(|e| EcuError::Io { what: format!("accept on {address}"), cause: e })?;
        let Ok(socket) = sockets.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "all {MAX_SOCKETS} sockets in use; closing a new tester connection");
            drop(stream);
            continue;
        };
        let ecu = ecu.clone();
        let logical_address = config.logical_address;
        let open = sockets.clone();
        tokio::spawn(async move {
            let _socket = socket;
            let mut link = Link::new(stream);
            let open_sockets = || MAX_SOCKETS - open.available_permits() as u8;
            match serve_tester(&mut link, &ecu, logical_address, &open_sockets).await {
                Ok(()) | Err(LinkError::Closed) => {}
                Err(e) => tracing::debug!(%peer, error = %e, "tester connection ended"),
            }
            link.shutdown().await;
        });
    }
}

fn announcement(config: &SimConfig) -> Message {
    let mut vin = [b'0'; 17];
    for (slot, byte) in vin.iter_mut().zip(config.vin.bytes()) {
        *slot = byte;
    }
    let eid = [0x02, 0x00, 0x00, 0x00, (config.logical_address >> 8) as u8, config.logical_address as u8];
    Message::VehicleAnnouncement {
        vin,
        logical_address: config.logical_address,
        eid,
        gid: eid,
        further_action: 0,
        sync_status: None,
    }
}

fn announcement_vin(message: &Message) -> &[u8; 17] {
    match message {
        Message::VehicleAnnouncement { vin, .. } => vin,
        _ => &[0; 17],
    }
}

/// One tester connection: routing activation, then diagnostic messages.
/// TCP sockets a simulated ECU serves at once (DoIP's `max_sockets`).
const MAX_SOCKETS: u8 = 4;

async fn serve_tester(
    link: &mut Link,
    ecu: &Arc<Mutex<Ecu>>,
    address: u16,
    open_sockets: &(dyn Fn() -> u8 + Sync),
) -> Result<(), LinkError> {
    let mut tester: Option<u16> = None;
    loop {
        let message = match link.receive().await {
            Ok(m) => m,
            Err(LinkError::Protocol(e)) => {
                if let Some(code) = e.nack_code() {
                    link.send(&Message::GenericNack { code }).await?;
                }
                if e.closes_connection() {
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        match message {
            Message::RoutingActivationRequest { source, activation_type, .. } => {
                let code = if !(0x0E00..=0x0FFF).contains(&source) {
                    doip::activation::UNKNOWN_SOURCE_ADDRESS
                } else if !matches!(activation_type, 0x00 | 0x01 | 0xE0 | 0xE1) {
                    doip::activation::UNSUPPORTED_TYPE
                } else {
                    tester = Some(source);
                    doip::activation::SUCCESS
                };
                link.send(&Message::RoutingActivationResponse { tester: source, entity: address, code, oem: None })
                    .await?;
                if code != doip::activation::SUCCESS {
                    return Ok(());
                }
            }
            Message::AliveCheckRequest => link.send(&Message::AliveCheckResponse { source: address }).await?,
            Message::EntityStatusRequest => {
                let status = Message::EntityStatusResponse {
                    node_type: 1,
                    max_sockets: MAX_SOCKETS,
                    open_sockets: open_sockets(),
                    max_data_size: Some(MAX_PAYLOAD),
                };
                link.send(&status).await?;
            }
            Message::PowerModeRequest => link.send(&Message::PowerModeResponse { mode: 1 }).await?,
            Message::AliveCheckResponse { .. } => {}
            Message::Diagnostic { source, target, data } => {
                let previous: Vec<u8> = data.iter().take(4).copied().collect();
                if tester != Some(source) {
                    let nack = Message::DiagnosticNack {
                        source: target,
                        target: source,
                        code: doip::diagnostic_nack::INVALID_SOURCE_ADDRESS,
                        previous,
                    };
                    link.send(&nack).await?;
                    return Ok(());
                }
                if target != address {
                    let nack = Message::DiagnosticNack {
                        source: target,
                        target: source,
                        code: doip::diagnostic_nack::UNKNOWN_TARGET_ADDRESS,
                        previous,
                    };
                    link.send(&nack).await?;
                    continue;
                }
                link.send(&Message::DiagnosticAck { source: address, target: source, code: 0, previous }).await?;
                let (response, after) = ecu.lock().map(|mut e| e.handle(&data)).unwrap_or((None, After::Nothing));
                let reply = |bytes: Vec<u8>| Message::Diagnostic { source: address, target: source, data: bytes };
                match after {
                    After::Pending(delay) => {
                        let service = data.first().copied().unwrap_or(0);
                        let pending = Response::Negative { sid: service, nrc: uds::nrc::RESPONSE_PENDING }.encode();
                        link.send(&reply(pending)).await?;
                        tokio::time::sleep(delay).await;
                        if let Some(bytes) = response {
                            link.send(&reply(bytes)).await?;
                        }
                    }
                    After::Drop => {
                        if let Some(bytes) = response {
                            link.send(&reply(bytes)).await?;
                        }
                        // The reboot (or the injected fault) ends the connection.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        return Ok(());
                    }
                    After::Nothing => {
                        if let Some(bytes) = response {
                            link.send(&reply(bytes)).await?;
                        }
                    }
                }
            }
            // Anything an entity does not expect from a tester.
            _ => link.send(&Message::GenericNack { code: doip::nack::UNKNOWN_PAYLOAD_TYPE }).await?,
        }
    }
}
