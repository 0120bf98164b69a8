//! UDS (ISO 14229-1): the requests and responses of reprogramming and inventory. A positive
//! response is the request's SID + 0x40; a negative one is `7F SID NRC`.

use crate::DiagError;

/// Service identifiers.
pub mod sid {
    pub const SESSION_CONTROL: u8 = 0x10;
    pub const ECU_RESET: u8 = 0x11;
    pub const READ_DID: u8 = 0x22;
    pub const SECURITY_ACCESS: u8 = 0x27;
    pub const COMMUNICATION_CONTROL: u8 = 0x28;
    pub const WRITE_DID: u8 = 0x2E;
    pub const ROUTINE_CONTROL: u8 = 0x31;
    pub const REQUEST_DOWNLOAD: u8 = 0x34;
    pub const TRANSFER_DATA: u8 = 0x36;
    pub const TRANSFER_EXIT: u8 = 0x37;
    pub const TESTER_PRESENT: u8 = 0x3E;
    pub const CONTROL_DTC_SETTING: u8 = 0x85;
    pub const NEGATIVE_RESPONSE: u8 = 0x7F;
}

/// Negative response codes.
pub mod nrc {
    pub const GENERAL_REJECT: u8 = 0x10;
    pub const SERVICE_NOT_SUPPORTED: u8 = 0x11;
    pub const SUBFUNCTION_NOT_SUPPORTED: u8 = 0x12;
    pub const INCORRECT_LENGTH: u8 = 0x13;
    pub const BUSY_REPEAT: u8 = 0x21;
    pub const CONDITIONS_NOT_CORRECT: u8 = 0x22;
    pub const REQUEST_SEQUENCE_ERROR: u8 = 0x24;
    pub const REQUEST_OUT_OF_RANGE: u8 = 0x31;
    pub const SECURITY_ACCESS_DENIED: u8 = 0x33;
    pub const INVALID_KEY: u8 = 0x35;
    pub const EXCEEDED_ATTEMPTS: u8 = 0x36;
    pub const DELAY_NOT_EXPIRED: u8 = 0x37;
    pub const UPLOAD_DOWNLOAD_NOT_ACCEPTED: u8 = 0x70;
    pub const TRANSFER_SUSPENDED: u8 = 0x71;
    pub const GENERAL_PROGRAMMING_FAILURE: u8 = 0x72;
    pub const WRONG_BLOCK_SEQUENCE_COUNTER: u8 = 0x73;
    pub const RESPONSE_PENDING: u8 = 0x78;
    pub const SUBFUNCTION_NOT_SUPPORTED_IN_SESSION: u8 = 0x7E;
    pub const SERVICE_NOT_SUPPORTED_IN_SESSION: u8 = 0x7F;

    /// A short name for messages and status reasons.
    pub fn name(code: u8) -> &'static str {
        match code {
            GENERAL_REJECT => "generalReject",
            SERVICE_NOT_SUPPORTED => "serviceNotSupported",
            SUBFUNCTION_NOT_SUPPORTED => "subFunctionNotSupported",
            INCORRECT_LENGTH => "incorrectMessageLengthOrInvalidFormat",
            BUSY_REPEAT => "busyRepeatRequest",
            CONDITIONS_NOT_CORRECT => "conditionsNotCorrect",
            REQUEST_SEQUENCE_ERROR => "requestSequenceError",
            REQUEST_OUT_OF_RANGE => "requestOutOfRange",
            SECURITY_ACCESS_DENIED => "securityAccessDenied",
            INVALID_KEY => "invalidKey",
            EXCEEDED_ATTEMPTS => "exceededNumberOfAttempts",
            DELAY_NOT_EXPIRED => "requiredTimeDelayNotExpired",
            UPLOAD_DOWNLOAD_NOT_ACCEPTED => "uploadDownloadNotAccepted",
            TRANSFER_SUSPENDED => "transferDataSuspended",
            GENERAL_PROGRAMMING_FAILURE => "generalProgrammingFailure",
            WRONG_BLOCK_SEQUENCE_COUNTER => "wrongBlockSequenceCounter",
            RESPONSE_PENDING => "requestCorrectlyReceivedResponsePending",
            SUBFUNCTION_NOT_SUPPORTED_IN_SESSION => "subFunctionNotSupportedInActiveSession",
            SERVICE_NOT_SUPPORTED_IN_SESSION => "serviceNotSupportedInActiveSession",
            _ => "unknown",
        }
    }
}

/// Well-known data identifiers.
pub mod did {
    pub const SOFTWARE_VERSION: u16 = 0xF189;
    pub const SERIAL_NUMBER: u16 = 0xF18C;
    pub const VIN: u16 = 0xF190;
    pub const SUPPLIER_SOFTWARE_VERSION: u16 = 0xF195;
}

/// Routine identifiers of reprogramming.
pub mod routine {
    pub const ERASE_MEMORY: u16 = 0xFF00;
    pub const CHECK_PROGRAMMING_DEPENDENCIES: u16 = 0xFF01;
}

/// Bit 7 of a sub-function: no positive response wanted.
pub const SUPPRESS_POSITIVE_RESPONSE: u8 = 0x80;

/// A request from a tester.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    SessionControl { session: u8, suppress: bool },
    EcuReset { kind: u8, suppress: bool },
    ReadDataByIdentifier { dids: Vec<u16> },
    SecurityAccessSeed { level: u8 },
    SecurityAccessKey { level: u8, key: Vec<u8> },
    CommunicationControl { control: u8, communication: u8, suppress: bool },
    WriteDataByIdentifier { did: u16, data: Vec<u8> },
    RoutineControl { kind: u8, routine: u16, options: Vec<u8> },
    RequestDownload { format: u8, address: u64, size: u64, address_length: u8, size_length: u8 },
    TransferData { counter: u8, data: Vec<u8> },
    TransferExit { parameters: Vec<u8> },
    TesterPresent { suppress: bool },
    ControlDtcSetting { kind: u8, suppress: bool },
}

/// A positive response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Positive {
    SessionControl {
        session: u8,
        p2_ms: u16,
        p2_star_10ms: u16,
    },
    EcuReset {
        kind: u8,
    },
    ReadDataByIdentifier {
        did: u16,
        data: Vec<u8>,
    },
    SecurityAccess {
        sub_function: u8,
        seed: Vec<u8>,
    },
    CommunicationControl {
        control: u8,
    },
    WriteDataByIdentifier {
        did: u16,
    },
    RoutineControl {
        kind: u8,
        routine: u16,
        status: Vec<u8>,
    },
    /// `maxNumberOfBlockLength`: counts the SID and the counter of a TransferData request.
    RequestDownload {
        max_block_length: u64,
    },
    TransferData {
        counter: u8,
    },
    TransferExit {
        parameters: Vec<u8>,
    },
    TesterPresent,
    ControlDtcSetting {
        kind: u8,
    },
}

/// A response: positive, or `7F SID NRC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Positive(Positive),
    Negative { sid: u8, nrc: u8 },
}

fn sub(value: u8, suppress: bool) -> u8 {
    if suppress {
        value | SUPPRESS_POSITIVE_RESPONSE
    } else {
        value
    }
}

/// Big-endian bytes of `value` in `length` bytes (1..=8).
fn be(value: u64, length: u8) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    bytes[8 - length as usize..].to_vec()
}

fn be_read(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

impl Request {
    pub fn sid(&self) -> u8 {
        match self {
            Request::SessionControl { .. } => sid::SESSION_CONTROL,
            Request::EcuReset { .. } => sid::ECU_RESET,
            Request::ReadDataByIdentifier { .. } => sid::READ_DID,
            Request::SecurityAccessSeed { .. } | Request::SecurityAccessKey { .. } => sid::SECURITY_ACCESS,
            Request::CommunicationControl { .. } => sid::COMMUNICATION_CONTROL,
            Request::WriteDataByIdentifier { .. } => sid::WRITE_DID,
            Request::RoutineControl { .. } => sid::ROUTINE_CONTROL,
            Request::RequestDownload { .. } => sid::REQUEST_DOWNLOAD,
            Request::TransferData { .. } => sid::TRANSFER_DATA,
            Request::TransferExit { .. } => sid::TRANSFER_EXIT,
            Request::TesterPresent { .. } => sid::TESTER_PRESENT,
            Request::ControlDtcSetting { .. } => sid::CONTROL_DTC_SETTING,
        }
    }

    /// Whether the tester asked for no positive response.
    pub fn suppresses_positive_response(&self) -> bool {
        matches!(
            self,
            Request::SessionControl { suppress: true, .. }
                | Request::EcuReset { suppress: true, .. }
                | Request::CommunicationControl { suppress: true, .. }
                | Request::TesterPresent { suppress: true }
                | Request::ControlDtcSetting { suppress: true, .. }
        )
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.sid()];
        match self {
            Request::SessionControl { session, suppress } => out.push(sub(*session, *suppress)),
            Request::EcuReset { kind, suppress } => out.push(sub(*kind, *suppress)),
            Request::ReadDataByIdentifier { dids } => dids.iter().for_each(|d| out.extend_from_slice(&d.to_be_bytes())),
            Request::SecurityAccessSeed { level } => out.push(*level),
            Request::SecurityAccessKey { level, key } => {
                out.push(*level);
                out.extend_from_slice(key);
            }
            Request::CommunicationControl { control, communication, suppress } => {
                out.push(sub(*control, *suppress));
                out.push(*communication);
            }
            Request::WriteDataByIdentifier { did, data } => {
                out.extend_from_slice(&did.to_be_bytes());
                out.extend_from_slice(data);
            }
            Request::RoutineControl { kind, routine, options } => {
                out.push(*kind);
                out.extend_from_slice(&routine.to_be_bytes());
                out.extend_from_slice(options);
            }
            Request::RequestDownload { format, address, size, address_length, size_length } => {
                out.push(*format);
                out.push((size_length << 4) | address_length);
                out.extend(be(*address, *address_length));
                out.extend(be(*size, *size_length));
            }
            Request::TransferData { counter, data } => {
                out.push(*counter);
                out.extend_from_slice(data);
            }
            Request::TransferExit { parameters } => out.extend_from_slice(parameters),
            Request::TesterPresent { suppress } => out.push(sub(0, *suppress)),
            Request::ControlDtcSetting { kind, suppress } => out.push(sub(*kind, *suppress)),
        }
        out
    }

    /// Decodes a request. Errors carry the NRC an ECU answers with.
    pub fn decode(bytes: &[u8]) -> Result<Request, DiagError> {
        let (&service, rest) = bytes.split_first().ok_or(DiagError::UdsEmpty)?;
        let bad = |nrc: u8| DiagError::UdsRequest { sid: service, nrc };
        let length = |ok: bool| if ok { Ok(()) } else { Err(bad(nrc::INCORRECT_LENGTH)) };
        let first = rest.first().copied().unwrap_or(0);
        let (value, suppress) = (first & !SUPPRESS_POSITIVE_RESPONSE, first & SUPPRESS_POSITIVE_RESPONSE != 0);
        Ok(match service {
            sid::SESSION_CONTROL => {
                length(rest.len() == 1)?;
                Request::SessionControl { session: value, suppress }
            }
            sid::ECU_RESET => {
                length(rest.len() == 1)?;
                Request::EcuReset { kind: value, suppress }
            }
            sid::READ_DID => {
                length(!rest.is_empty() && rest.len() % 2 == 0)?;
                Request::ReadDataByIdentifier {
                    dids: rest.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect(),
                }
            }
            sid::SECURITY_ACCESS => {
                length(!rest.is_empty())?;
                if first % 2 == 1 {
                    Request::SecurityAccessSeed { level: first }
                } else {
                    length(rest.len() > 1)?;
                    Request::SecurityAccessKey { level: first, key: rest[1..].to_vec() }
                }
            }
            sid::COMMUNICATION_CONTROL => {
                length(rest.len() == 2)?;
                Request::CommunicationControl { control: value, communication: rest[1], suppress }
            }
            sid::WRITE_DID => {
                length(rest.len() > 2)?;
                Request::WriteDataByIdentifier { did: u16::from_be_bytes([rest[0], rest[1]]), data: rest[2..].to_vec() }
            }
            sid::ROUTINE_CONTROL => {
                length(rest.len() >= 3)?;
                Request::RoutineControl {
                    kind: first,
                    routine: u16::from_be_bytes([rest[1], rest[2]]),
                    options: rest[3..].to_vec(),
                }
            }
            sid::REQUEST_DOWNLOAD => {
                length(rest.len() >= 2)?;
                let (address_length, size_length) = (rest[1] & 0x0F, rest[1] >> 4);
                if !(1..=8).contains(&address_length) || !(1..=8).contains(&size_length) {
                    return Err(bad(nrc::REQUEST_OUT_OF_RANGE));
                }
                length(rest.len() == 2 + address_length as usize + size_length as usize)?;
                let address = be_read(&rest[2..2 + address_length as usize]);
                let size = be_read(&rest[2 + address_length as usize..]);
                Request::RequestDownload { format: rest[0], address, size, address_length, size_length }
            }
            sid::TRANSFER_DATA => {
                length(!rest.is_empty())?;
                Request::TransferData { counter: first, data: rest[1..].to_vec() }
            }
            sid::TRANSFER_EXIT => Request::TransferExit { parameters: rest.to_vec() },
            sid::TESTER_PRESENT => {
                length(rest.len() == 1)?;
                if value != 0 {
                    return Err(bad(nrc::SUBFUNCTION_NOT_SUPPORTED));
                }
                Request::TesterPresent { suppress }
            }
            sid::CONTROL_DTC_SETTING => {
                length(!rest.is_empty())?;
                Request::ControlDtcSetting { kind: value, suppress }
            }
            _ => return Err(bad(nrc::SERVICE_NOT_SUPPORTED)),
        })
    }
}

impl Response {
    pub fn encode(&self) -> Vec<u8> {
        let positive = match self {
            Response::Negative { sid, nrc } => return vec![sid::NEGATIVE_RESPONSE, *sid, *nrc],
            Response::Positive(positive) => positive,
        };
        let mut out = Vec::new();
        match positive {
            Positive::SessionControl { session, p2_ms, p2_star_10ms } => {
                out.extend([sid::SESSION_CONTROL + 0x40, *session]);
                out.extend_from_slice(&p2_ms.to_be_bytes());
                out.extend_from_slice(&p2_star_10ms.to_be_bytes());
            }
            Positive::EcuReset { kind } => out.extend([sid::ECU_RESET + 0x40, *kind]),
            Positive::ReadDataByIdentifier { did, data } => {
                out.push(sid::READ_DID + 0x40);
                out.extend_from_slice(&did.to_be_bytes());
                out.extend_from_slice(data);
            }
            Positive::SecurityAccess { sub_function, seed } => {
                out.extend([sid::SECURITY_ACCESS + 0x40, *sub_function]);
                out.extend_from_slice(seed);
            }
            Positive::CommunicationControl { control } => out.extend([sid::COMMUNICATION_CONTROL + 0x40, *control]),
            Positive::WriteDataByIdentifier { did } => {
                out.push(sid::WRITE_DID + 0x40);
                out.extend_from_slice(&did.to_be_bytes());
            }
            Positive::RoutineControl { kind, routine, status } => {
                out.extend([sid::ROUTINE_CONTROL + 0x40, *kind]);
                out.extend_from_slice(&routine.to_be_bytes());
                out.extend_from_slice(status);
            }
            Positive::RequestDownload { max_block_length } => {
                // The smallest length field that holds the value.
                let length = (1..=8u8).find(|n| *n == 8 || *max_block_length < (1u64 << (8 * n))).unwrap_or(8);
                out.extend([sid::REQUEST_DOWNLOAD + 0x40, length << 4]);
                out.extend(be(*max_block_length, length));
            }
            Positive::TransferData { counter } => out.extend([sid::TRANSFER_DATA + 0x40, *counter]),
            Positive::TransferExit { parameters } => {
                out.push(sid::TRANSFER_EXIT + 0x40);
                out.extend_from_slice(parameters);
            }
            Positive::TesterPresent => out.extend([sid::TESTER_PRESENT + 0x40, 0]),
            Positive::ControlDtcSetting { kind } => out.extend([sid::CONTROL_DTC_SETTING + 0x40, *kind]),
        }
        out
    }

    /// Decodes a response (a ReadDataByIdentifier response is taken as one DID).
    pub fn decode(bytes: &[u8]) -> Result<Response, DiagError> {
        let (&first, rest) = bytes.split_first().ok_or(DiagError::UdsEmpty)?;
        let short = || DiagError::UdsResponse { sid: first, why: "too short" };
        if first == sid::NEGATIVE_RESPONSE {
            return match rest {
                [sid, nrc] => Ok(Response::Negative { sid: *sid, nrc: *nrc }),
                _ => Err(DiagError::UdsResponse { sid: first, why: "a negative response is 3 bytes" }),
            };
        }
        let need = |n: usize| if rest.len() >= n { Ok(()) } else { Err(short()) };
        let positive = match first.wrapping_sub(0x40) {
            sid::SESSION_CONTROL => {
                need(5)?;
                Positive::SessionControl {
                    session: rest[0],
                    p2_ms: u16::from_be_bytes([rest[1], rest[2]]),
                    p2_star_10ms: u16::from_be_bytes([rest[3], rest[4]]),
                }
            }
            sid::ECU_RESET => {
                need(1)?;
                Positive::EcuReset { kind: rest[0] }
            }
            sid::READ_DID => {
                need(2)?;
                Positive::ReadDataByIdentifier { did: u16::from_be_bytes([rest[0], rest[1]]), data: rest[2..].to_vec() }
            }
            sid::SECURITY_ACCESS => {
                need(1)?;
                Positive::SecurityAccess { sub_function: rest[0], seed: rest[1..].to_vec() }
            }
            sid::COMMUNICATION_CONTROL => {
                need(1)?;
                Positive::CommunicationControl { control: rest[0] }
            }
            sid::WRITE_DID => {
                need(2)?;
                Positive::WriteDataByIdentifier { did: u16::from_be_bytes([rest[0], rest[1]]) }
            }
            sid::ROUTINE_CONTROL => {
                need(3)?;
                Positive::RoutineControl {
                    kind: rest[0],
                    routine: u16::from_be_bytes([rest[1], rest[2]]),
                    status: rest[3..].to_vec(),
                }
            }
            sid::REQUEST_DOWNLOAD => {
                need(1)?;
                let length = (rest[0] >> 4) as usize;
                if !(1..=8).contains(&length) || rest.len() != 1 + length {
                    return Err(DiagError::UdsResponse { sid: first, why: "bad lengthFormatIdentifier" });
                }
                Positive::RequestDownload { max_block_length: be_read(&rest[1..]) }
            }
            sid::TRANSFER_DATA => {
                need(1)?;
                Positive::TransferData { counter: rest[0] }
            }
            sid::TRANSFER_EXIT => Positive::TransferExit { parameters: rest.to_vec() },
            sid::TESTER_PRESENT => Positive::TesterPresent,
            sid::CONTROL_DTC_SETTING => {
                need(1)?;
                Positive::ControlDtcSetting { kind: rest[0] }
            }
            _ => return Err(DiagError::UdsResponse { sid: first, why: "not a response to a supported service" }),
        };
        Ok(Response::Positive(positive))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_match_the_documented_bytes() {
        let cases: Vec<(Request, Vec<u8>)> = vec![
            (Request::SessionControl { session: 2, suppress: false }, vec![0x10, 0x02]),
            (Request::ReadDataByIdentifier { dids: vec![did::SOFTWARE_VERSION] }, vec![0x22, 0xF1, 0x89]),
            (Request::SecurityAccessSeed { level: 1 }, vec![0x27, 0x01]),
            (Request::SecurityAccessKey { level: 2, key: vec![1, 2, 3, 4] }, vec![0x27, 0x02, 1, 2, 3, 4]),
            (Request::CommunicationControl { control: 3, communication: 1, suppress: false }, vec![0x28, 0x03, 0x01]),
            (Request::ControlDtcSetting { kind: 2, suppress: false }, vec![0x85, 0x02]),
            (
                Request::RoutineControl { kind: 1, routine: routine::ERASE_MEMORY, options: vec![] },
                vec![0x31, 0x01, 0xFF, 0x00],
            ),
            (
                Request::RequestDownload {
                    format: 0,
                    address: 0x1000,
                    size: 0x2_0000,
                    address_length: 4,
                    size_length: 4,
                },
                vec![0x34, 0x00, 0x44, 0, 0, 0x10, 0, 0, 2, 0, 0],
            ),
            (Request::TransferData { counter: 0xFF, data: vec![9; 3] }, vec![0x36, 0xFF, 9, 9, 9]),
            (Request::TransferExit { parameters: vec![] }, vec![0x37]),
            (Request::EcuReset { kind: 1, suppress: false }, vec![0x11, 0x01]),
            (Request::TesterPresent { suppress: true }, vec![0x3E, 0x80]),
        ];
        for (request, bytes) in cases {
            assert_eq!(request.encode(), bytes, "{request:?}");
            assert_eq!(Request::decode(&bytes).expect("valid"), request);
        }
    }

    #[test]
    fn responses_round_trip() {
        let cases = vec![
            Response::Positive(Positive::SessionControl { session: 3, p2_ms: 50, p2_star_10ms: 500 }),
            Response::Positive(Positive::ReadDataByIdentifier { did: 0xF189, data: b"APP-1.0.0".to_vec() }),
            Response::Positive(Positive::SecurityAccess { sub_function: 1, seed: vec![1, 2, 3, 4] }),
            Response::Positive(Positive::RequestDownload { max_block_length: 0x0FFA }),
            Response::Positive(Positive::TransferData { counter: 0 }),
            Response::Positive(Positive::RoutineControl { kind: 1, routine: 0xFF01, status: vec![0] }),
            Response::Negative { sid: 0x27, nrc: nrc::INVALID_KEY },
        ];
        for response in cases {
            assert_eq!(Response::decode(&response.encode()).expect("valid"), response);
        }
        assert_eq!(
            Response::Positive(Positive::SessionControl { session: 2, p2_ms: 0x32, p2_star_10ms: 0x1F4 }).encode(),
            vec![0x50, 0x02, 0x00, 0x32, 0x01, 0xF4]
        );
        assert_eq!(
            Response::Positive(Positive::RequestDownload { max_block_length: 0x0FFA }).encode(),
            vec![0x74, 0x20, 0x0F, 0xFA]
        );
    }

    #[test]
    fn bad_requests_carry_the_nrc_an_ecu_answers() {
        let nrc_of = |bytes: &[u8]| match Request::decode(bytes) {
            Err(DiagError::UdsRequest { nrc, .. }) => Some(nrc),
            _ => None,
        };
        assert_eq!(nrc_of(&[0x10]), Some(nrc::INCORRECT_LENGTH));
        assert_eq!(nrc_of(&[0x22, 0xF1]), Some(nrc::INCORRECT_LENGTH));
        assert_eq!(nrc_of(&[0x34, 0x00, 0x99]), Some(nrc::REQUEST_OUT_OF_RANGE));
        assert_eq!(nrc_of(&[0xBA]), Some(nrc::SERVICE_NOT_SUPPORTED));
        assert!(matches!(Request::decode(&[]), Err(DiagError::UdsEmpty)));
        assert!(Response::decode(&[0x7F, 0x22]).is_err());
    }
}
