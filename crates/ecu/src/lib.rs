//! ECUs over DoIP and UDS, with I/O: the [`flasher`] (a tester that reprograms one ECU through
//! the whole flow and reads its version back), the simulated ECU of `axle ecu-sim` ([`sim`]),
//! and the seed/key interface ([`keys`]). The bytes themselves are the `diag` crate's.

pub mod flasher;
pub mod keys;
mod link;
pub mod sim;

pub use link::MAX_PAYLOAD;

#[derive(Debug, thiserror::Error)]
pub enum EcuError {
    #[error("{what}: {cause}")]
    Io { what: String, cause: std::io::Error },
    #[error("timed out waiting for {what}")]
    Timeout { what: String },
    #[error("the ECU closed the connection")]
    ConnectionLost,
    #[error("routing activation refused with code {0:#04x}")]
    RoutingActivation(u8),
    #[error("the DoIP entity answered with generic NACK {0:#04x}")]
    DoipNack(u8),
    #[error("the diagnostic message was refused with DoIP NACK {0:#04x}")]
    DiagnosticNack(u8),
    #[error("service {service:#04x} refused: NRC {nrc:#04x} ({})", diag::uds::nrc::name(*nrc))]
    Nrc { service: u8, nrc: u8 },
    #[error("the ECU rejected the image (check programming dependencies status {0:#04x})")]
    ImageRejected(u8),
    #[error("the ECU reports version {actual:?} after flashing, expected {expected:?}")]
    VersionMismatch { expected: String, actual: String },
    #[error("protocol error: {0}")]
    Protocol(#[from] diag::DiagError),
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

impl EcuError {
    /// Failures a restarted transfer may overcome (a dropped link, a suspended transfer), as
    /// opposed to answers that would only repeat (invalid key, out of range).
    pub fn is_transient(&self) -> bool {
        use diag::uds::nrc;
        match self {
            EcuError::ConnectionLost | EcuError::Io { .. } | EcuError::Timeout { .. } => true,
            EcuError::Nrc { nrc, .. } => matches!(
                *nrc,
                nrc::TRANSFER_SUSPENDED
                    | nrc::WRONG_BLOCK_SEQUENCE_COUNTER
                    | nrc::REQUEST_SEQUENCE_ERROR
                    | nrc::GENERAL_PROGRAMMING_FAILURE
            ),
            _ => false,
        }
    }

    /// A short reason for a Pod status (`InvalidKey`, `Timeout`, …).
    pub fn reason(&self) -> String {
        match self {
            EcuError::Nrc { nrc, .. } => {
                let name = diag::uds::nrc::name(*nrc);
                let mut chars = name.chars();
                chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
            }
            EcuError::Timeout { .. } => "Timeout".into(),
            EcuError::ConnectionLost | EcuError::Io { .. } => "ConnectionLost".into(),
            EcuError::VersionMismatch { .. } => "VersionMismatch".into(),
            EcuError::ImageRejected(_) => "ImageRejected".into(),
            _ => "FlashFailed".into(),
        }
    }
}
