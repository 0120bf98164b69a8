//! Vehicle diagnostics as bytes: DoIP (ISO 13400-2) and UDS (ISO 14229-1), the protocols that
//! reprogram and identify an ECU. Sans-I/O: this crate turns bytes into typed messages and back,
//! and never reads a socket, sleeps or allocates more than the message it decodes — the flasher,
//! the simulated ECU and the fuzzers drive it. Every decoder returns a typed error on bad bytes
//! and never panics (see `fuzz/`).
//!
//! Byte layouts: `shared/design/ecu-uds-doip.md`, checked against Wireshark's dissector and the
//! captures quoted in the tests.

pub mod doip;
pub mod uds;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiagError {
    #[error("DoIP header with version {version:#04x} and inverse {inverse:#04x} (incorrect pattern)")]
    DoipPattern { version: u8, inverse: u8 },
    #[error("DoIP payload type {0:#06x} is unknown")]
    DoipUnknownType(u16),
    #[error("DoIP payload of {length} bytes exceeds the limit of {max}")]
    DoipTooLarge { length: u32, max: u32 },
    #[error("DoIP payload type {payload_type:#06x} cannot be {length} bytes long")]
    DoipLength { payload_type: u16, length: usize },
    #[error("empty UDS message")]
    UdsEmpty,
    #[error("UDS request {sid:#04x} refused with NRC {nrc:#04x} ({})", uds::nrc::name(*nrc))]
    UdsRequest { sid: u8, nrc: u8 },
    #[error("UDS response {sid:#04x}: {why}")]
    UdsResponse { sid: u8, why: &'static str },
}

impl DiagError {
    /// The DoIP generic NACK code a receiver answers this error with, if it is a header or
    /// payload error (ISO 13400-2 table 17).
    pub fn nack_code(&self) -> Option<u8> {
        match self {
            DiagError::DoipPattern { .. } => Some(doip::nack::INCORRECT_PATTERN),
            DiagError::DoipUnknownType(_) => Some(doip::nack::UNKNOWN_PAYLOAD_TYPE),
            DiagError::DoipTooLarge { .. } => Some(doip::nack::MESSAGE_TOO_LARGE),
            DiagError::DoipLength { .. } => Some(doip::nack::INVALID_PAYLOAD_LENGTH),
            _ => None,
        }
    }

    /// Whether the connection must be closed after the NACK (pattern and length errors).
    pub fn closes_connection(&self) -> bool {
        matches!(self, DiagError::DoipPattern { .. } | DiagError::DoipLength { .. })
    }
}

#[cfg(test)]
mod tests {
    /// The fuzz targets' properties over a few hundred thousand pseudo-random inputs (the
    /// fuzzers in `fuzz/` search further): no panic, decode ∘ encode is the identity.
    #[test]
    fn random_bytes_never_panic_and_decoded_messages_survive_encoding() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut decoded = 0;
        for _ in 0..200_000 {
            let length = (next() % 24) as usize;
            let mut bytes: Vec<u8> = (0..length).map(|_| next() as u8).collect();
            // Bias towards valid headers so the payload decoders run too.
            if next() % 2 == 0 && bytes.len() >= 8 {
                bytes[0] = 0x02;
                bytes[1] = 0xFD;
                bytes[2] = [0x00, 0x40, 0x80][(next() % 3) as usize];
                bytes[3] = (next() % 9) as u8;
                let payload = (bytes.len() - 8) as u32;
                bytes[4..8].copy_from_slice(&payload.to_be_bytes());
            }
            if let Ok(Some((message, _))) = crate::doip::decode(&bytes, 4096) {
                decoded += 1;
                let again = crate::doip::decode(&message.encode(bytes[0]), 4096);
                assert_eq!(again.ok().flatten().map(|(m, _)| m), Some(message), "{bytes:02x?}");
            }
            if let Ok(request) = crate::uds::Request::decode(&bytes) {
                assert_eq!(crate::uds::Request::decode(&request.encode()).ok(), Some(request), "{bytes:02x?}");
            }
            if let Ok(response) = crate::uds::Response::decode(&bytes) {
                assert_eq!(crate::uds::Response::decode(&response.encode()).ok(), Some(response), "{bytes:02x?}");
            }
        }
        assert!(decoded > 1000, "the generator reaches the payload decoders ({decoded})");
    }
}
