//! DoIP (ISO 13400-2): the generic header and the payloads a tester and an entity exchange.
//! All fields big-endian. Framing is strictly by the header's length, capped by the caller.

use crate::DiagError;

pub const HEADER_LEN: usize = 8;
/// ISO 13400-2:2012.
pub const VERSION_2012: u8 = 0x02;
/// ISO 13400-2:2019.
pub const VERSION_2019: u8 = 0x03;
/// Only in vehicle identification requests.
pub const VERSION_DEFAULT: u8 = 0xFF;
/// The TCP and UDP port of DoIP.
pub const PORT: u16 = 13400;

/// Payload types.
pub mod types {
    pub const GENERIC_NACK: u16 = 0x0000;
    pub const VEHICLE_ID_REQUEST: u16 = 0x0001;
    pub const VEHICLE_ID_REQUEST_EID: u16 = 0x0002;
    pub const VEHICLE_ID_REQUEST_VIN: u16 = 0x0003;
    pub const VEHICLE_ANNOUNCEMENT: u16 = 0x0004;
    pub const ROUTING_ACTIVATION_REQUEST: u16 = 0x0005;
    pub const ROUTING_ACTIVATION_RESPONSE: u16 = 0x0006;
    pub const ALIVE_CHECK_REQUEST: u16 = 0x0007;
    pub const ALIVE_CHECK_RESPONSE: u16 = 0x0008;
    pub const ENTITY_STATUS_REQUEST: u16 = 0x4001;
    pub const ENTITY_STATUS_RESPONSE: u16 = 0x4002;
    pub const POWER_MODE_REQUEST: u16 = 0x4003;
    pub const POWER_MODE_RESPONSE: u16 = 0x4004;
    pub const DIAGNOSTIC_MESSAGE: u16 = 0x8001;
    pub const DIAGNOSTIC_ACK: u16 = 0x8002;
    pub const DIAGNOSTIC_NACK: u16 = 0x8003;
}

/// Generic NACK codes (what the receiver of a bad header answers).
pub mod nack {
    pub const INCORRECT_PATTERN: u8 = 0x00;
    pub const UNKNOWN_PAYLOAD_TYPE: u8 = 0x01;
    pub const MESSAGE_TOO_LARGE: u8 = 0x02;
    pub const OUT_OF_MEMORY: u8 = 0x03;
    pub const INVALID_PAYLOAD_LENGTH: u8 = 0x04;
}

/// Routing activation response codes.
pub mod activation {
    pub const UNKNOWN_SOURCE_ADDRESS: u8 = 0x00;
    pub const NO_FREE_SOCKET: u8 = 0x01;
    pub const SOURCE_ADDRESS_MISMATCH: u8 = 0x02;
    pub const SOURCE_ADDRESS_ACTIVE_ELSEWHERE: u8 = 0x03;
    pub const UNSUPPORTED_TYPE: u8 = 0x06;
    pub const SUCCESS: u8 = 0x10;
}

/// Diagnostic message NACK codes.
pub mod diagnostic_nack {
    pub const INVALID_SOURCE_ADDRESS: u8 = 0x02;
    pub const UNKNOWN_TARGET_ADDRESS: u8 = 0x03;
    pub const MESSAGE_TOO_LARGE: u8 = 0x04;
    pub const TARGET_UNREACHABLE: u8 = 0x06;
}

/// One DoIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    GenericNack {
        code: u8,
    },
    VehicleIdRequest,
    VehicleIdRequestEid {
        eid: [u8; 6],
    },
    VehicleIdRequestVin {
        vin: [u8; 17],
    },
    VehicleAnnouncement {
        vin: [u8; 17],
        logical_address: u16,
        eid: [u8; 6],
        gid: [u8; 6],
        further_action: u8,
        sync_status: Option<u8>,
    },
    RoutingActivationRequest {
        source: u16,
        activation_type: u8,
        oem: Option<[u8; 4]>,
    },
    RoutingActivationResponse {
        tester: u16,
        entity: u16,
        code: u8,
        oem: Option<[u8; 4]>,
    },
    AliveCheckRequest,
    AliveCheckResponse {
        source: u16,
    },
    EntityStatusRequest,
    EntityStatusResponse {
        node_type: u8,
        max_sockets: u8,
        open_sockets: u8,
        max_data_size: Option<u32>,
    },
    PowerModeRequest,
    PowerModeResponse {
        mode: u8,
    },
    Diagnostic {
        source: u16,
        target: u16,
        data: Vec<u8>,
    },
    DiagnosticAck {
        source: u16,
        target: u16,
        code: u8,
        previous: Vec<u8>,
    },
    DiagnosticNack {
        source: u16,
        target: u16,
        code: u8,
        previous: Vec<u8>,
    },
}

impl Message {
    pub fn payload_type(&self) -> u16 {
        use types::*;
        match self {
            Message::GenericNack { .. } => GENERIC_NACK,
            Message::VehicleIdRequest => VEHICLE_ID_REQUEST,
            Message::VehicleIdRequestEid { .. } => VEHICLE_ID_REQUEST_EID,
            Message::VehicleIdRequestVin { .. } => VEHICLE_ID_REQUEST_VIN,
            Message::VehicleAnnouncement { .. } => VEHICLE_ANNOUNCEMENT,
            Message::RoutingActivationRequest { .. } => ROUTING_ACTIVATION_REQUEST,
            Message::RoutingActivationResponse { .. } => ROUTING_ACTIVATION_RESPONSE,
            Message::AliveCheckRequest => ALIVE_CHECK_REQUEST,
            Message::AliveCheckResponse { .. } => ALIVE_CHECK_RESPONSE,
            Message::EntityStatusRequest => ENTITY_STATUS_REQUEST,
            Message::EntityStatusResponse { .. } => ENTITY_STATUS_RESPONSE,
            Message::PowerModeRequest => POWER_MODE_REQUEST,
            Message::PowerModeResponse { .. } => POWER_MODE_RESPONSE,
            Message::Diagnostic { .. } => DIAGNOSTIC_MESSAGE,
            Message::DiagnosticAck { .. } => DIAGNOSTIC_ACK,
            Message::DiagnosticNack { .. } => DIAGNOSTIC_NACK,
        }
    }

    fn payload(&self) -> Vec<u8> {
        let mut p = Vec::new();
        match self {
            Message::GenericNack { code } => p.push(*code),
            Message::VehicleIdRequest
            | Message::AliveCheckRequest
            | Message::EntityStatusRequest
            | Message::PowerModeRequest => {}
            Message::VehicleIdRequestEid { eid } => p.extend_from_slice(eid),
            Message::VehicleIdRequestVin { vin } => p.extend_from_slice(vin),
            Message::VehicleAnnouncement { vin, logical_address, eid, gid, further_action, sync_status } => {
                p.extend_from_slice(vin);
                p.extend_from_slice(&logical_address.to_be_bytes());
                p.extend_from_slice(eid);
                p.extend_from_slice(gid);
                p.push(*further_action);
                p.extend(sync_status);
            }
            Message::RoutingActivationRequest { source, activation_type, oem } => {
                p.extend_from_slice(&source.to_be_bytes());
                p.push(*activation_type);
                p.extend_from_slice(&[0; 4]);
                p.extend(oem.iter().flatten());
            }
            Message::RoutingActivationResponse { tester, entity, code, oem } => {
                p.extend_from_slice(&tester.to_be_bytes());
                p.extend_from_slice(&entity.to_be_bytes());
                p.push(*code);
                p.extend_from_slice(&[0; 4]);
                p.extend(oem.iter().flatten());
            }
            Message::AliveCheckResponse { source } => p.extend_from_slice(&source.to_be_bytes()),
            Message::EntityStatusResponse { node_type, max_sockets, open_sockets, max_data_size } => {
                p.extend_from_slice(&[*node_type, *max_sockets, *open_sockets]);
                if let Some(size) = max_data_size {
                    p.extend_from_slice(&size.to_be_bytes());
                }
            }
            Message::PowerModeResponse { mode } => p.push(*mode),
            Message::Diagnostic { source, target, data } => {
                p.extend_from_slice(&source.to_be_bytes());
                p.extend_from_slice(&target.to_be_bytes());
                p.extend_from_slice(data);
            }
            Message::DiagnosticAck { source, target, code, previous }
            | Message::DiagnosticNack { source, target, code, previous } => {
                p.extend_from_slice(&source.to_be_bytes());
                p.extend_from_slice(&target.to_be_bytes());
                p.push(*code);
                p.extend_from_slice(previous);
            }
        }
        p
    }

    /// The message on the wire with protocol `version` (vehicle identification requests may
    /// use [`VERSION_DEFAULT`]).
    pub fn encode(&self, version: u8) -> Vec<u8> {
        let payload = self.payload();
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.push(version);
        out.push(!version);
        out.extend_from_slice(&self.payload_type().to_be_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub payload_type: u16,
    pub length: u32,
}

/// Reads a header from the first 8 bytes; `max_payload` caps the length a receiver accepts.
pub fn decode_header(bytes: &[u8], max_payload: u32) -> Result<Option<Header>, DiagError> {
    if bytes.len() < HEADER_LEN {
        return Ok(None);
    }
    let (version, inverse) = (bytes[0], bytes[1]);
    if inverse != !version || !matches!(version, 0x01..=0x04 | VERSION_DEFAULT) {
        return Err(DiagError::DoipPattern { version, inverse });
    }
    let payload_type = u16::from_be_bytes([bytes[2], bytes[3]]);
    let length = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if length > max_payload {
        return Err(DiagError::DoipTooLarge { length, max: max_payload });
    }
    Ok(Some(Header { version, payload_type, length }))
}

/// Decodes one message from the start of `bytes`: `Ok(None)` while incomplete, else the
/// message and how many bytes it took. Errors map to the generic NACK code to answer with
/// ([`DiagError::nack_code`]).
pub fn decode(bytes: &[u8], max_payload: u32) -> Result<Option<(Message, usize)>, DiagError> {
    let Some(header) = decode_header(bytes, max_payload)? else { return Ok(None) };
    let total = HEADER_LEN + header.length as usize;
    if bytes.len() < total {
        return Ok(None);
    }
    let message = decode_payload(header.payload_type, &bytes[HEADER_LEN..total])?;
    Ok(Some((message, total)))
}

fn u16_at(p: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([p[at], p[at + 1]])
}

fn array<const N: usize>(p: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&p[at..at + N]);
    a
}

/// Decodes a payload of a known type; the length must be one the type allows.
pub fn decode_payload(payload_type: u16, p: &[u8]) -> Result<Message, DiagError> {
    use types::*;
    let bad_length = || DiagError::DoipLength { payload_type, length: p.len() };
    let need = |ok: bool| if ok { Ok(()) } else { Err(bad_length()) };
    Ok(match payload_type {
        GENERIC_NACK => {
            need(p.len() == 1)?;
            Message::GenericNack { code: p[0] }
        }
        VEHICLE_ID_REQUEST => {
            need(p.is_empty())?;
            Message::VehicleIdRequest
        }
        VEHICLE_ID_REQUEST_EID => {
            need(p.len() == 6)?;
            Message::VehicleIdRequestEid { eid: array(p, 0) }
        }
        VEHICLE_ID_REQUEST_VIN => {
            need(p.len() == 17)?;
            Message::VehicleIdRequestVin { vin: array(p, 0) }
        }
        VEHICLE_ANNOUNCEMENT => {
            need(p.len() == 32 || p.len() == 33)?;
            Message::VehicleAnnouncement {
                vin: array(p, 0),
                logical_address: u16_at(p, 17),
                eid: array(p, 19),
                gid: array(p, 25),
                further_action: p[31],
                sync_status: p.get(32).copied(),
            }
        }
        ROUTING_ACTIVATION_REQUEST => {
            need(p.len() == 7 || p.len() == 11)?;
            Message::RoutingActivationRequest {
                source: u16_at(p, 0),
                activation_type: p[2],
                oem: (p.len() == 11).then(|| array(p, 7)),
            }
        }
        ROUTING_ACTIVATION_RESPONSE => {
            need(p.len() == 9 || p.len() == 13)?;
            Message::RoutingActivationResponse {
                tester: u16_at(p, 0),
                entity: u16_at(p, 2),
                code: p[4],
                oem: (p.len() == 13).then(|| array(p, 9)),
            }
        }
        ALIVE_CHECK_REQUEST => {
            need(p.is_empty())?;
            Message::AliveCheckRequest
        }
        ALIVE_CHECK_RESPONSE => {
            need(p.len() == 2)?;
            Message::AliveCheckResponse { source: u16_at(p, 0) }
        }
        ENTITY_STATUS_REQUEST => {
            need(p.is_empty())?;
            Message::EntityStatusRequest
        }
        ENTITY_STATUS_RESPONSE => {
            need(p.len() == 3 || p.len() == 7)?;
            Message::EntityStatusResponse {
                node_type: p[0],
                max_sockets: p[1],
                open_sockets: p[2],
                max_data_size: (p.len() == 7).then(|| u32::from_be_bytes(array(p, 3))),
            }
        }
        POWER_MODE_REQUEST => {
            need(p.is_empty())?;
            Message::PowerModeRequest
        }
        POWER_MODE_RESPONSE => {
            need(p.len() == 1)?;
            Message::PowerModeResponse { mode: p[0] }
        }
        DIAGNOSTIC_MESSAGE => {
            // At least one UDS byte after the addresses.
            need(p.len() >= 5)?;
            Message::Diagnostic { source: u16_at(p, 0), target: u16_at(p, 2), data: p[4..].to_vec() }
        }
        DIAGNOSTIC_ACK | DIAGNOSTIC_NACK => {
            need(p.len() >= 5)?;
            let (source, target, code, previous) = (u16_at(p, 0), u16_at(p, 2), p[4], p[5..].to_vec());
            if payload_type == DIAGNOSTIC_ACK {
                Message::DiagnosticAck { source, target, code, previous }
            } else {
                Message::DiagnosticNack { source, target, code, previous }
            }
        }
        other => return Err(DiagError::DoipUnknownType(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    }

    #[test]
    fn captured_exchanges_round_trip() {
        // From the design's captures (Wireshark-checked).
        let request = hex("02fd0005 00000007 0e80 00 00000000");
        let (message, used) = decode(&request, 4096).expect("valid").expect("complete");
        assert_eq!(used, request.len());
        assert_eq!(message, Message::RoutingActivationRequest { source: 0x0E80, activation_type: 0, oem: None });
        assert_eq!(message.encode(VERSION_2012), request);
        let response = hex("02fd0006 00000009 0e80 00e0 10 00000000");
        let (message, _) = decode(&response, 4096).expect("valid").expect("complete");
        assert_eq!(
            message,
            Message::RoutingActivationResponse { tester: 0x0E80, entity: 0x00E0, code: 0x10, oem: None }
        );
        let read = hex("02fd8001 00000007 0e80 00e0 22f189");
        let (message, _) = decode(&read, 4096).expect("valid").expect("complete");
        assert_eq!(message, Message::Diagnostic { source: 0x0E80, target: 0x00E0, data: vec![0x22, 0xF1, 0x89] });
        let ack = Message::DiagnosticAck { source: 0x00E0, target: 0x0E80, code: 0, previous: vec![0x22, 0xF1, 0x89] };
        assert_eq!(ack.encode(VERSION_2012), hex("02fd8002 00000008 00e0 0e80 00 22f189"));
    }

    #[test]
    fn framing_waits_for_whole_messages_and_refuses_bad_headers() {
        let frame = Message::AliveCheckResponse { source: 0x0E80 }.encode(VERSION_2019);
        assert_eq!(decode(&frame[..5], 4096).expect("valid so far"), None);
        assert_eq!(decode(&frame[..9], 4096).expect("valid so far"), None);
        assert!(decode(&frame, 4096).expect("valid").is_some());
        let bad_inverse = hex("02fc0008 00000002 0e80");
        assert_eq!(decode(&bad_inverse, 4096).err().map(|e| e.nack_code()), Some(Some(nack::INCORRECT_PATTERN)));
        let unknown = hex("02fd7777 00000000");
        assert_eq!(decode(&unknown, 4096).err().map(|e| e.nack_code()), Some(Some(nack::UNKNOWN_PAYLOAD_TYPE)));
        let huge = hex("02fd8001 ffffffff");
        assert_eq!(decode(&huge, 4096).err().map(|e| e.nack_code()), Some(Some(nack::MESSAGE_TOO_LARGE)));
        let short_diag = hex("02fd8001 00000003 0e8000");
        assert_eq!(decode(&short_diag, 4096).err().map(|e| e.nack_code()), Some(Some(nack::INVALID_PAYLOAD_LENGTH)));
    }

    #[test]
    fn every_message_round_trips() {
        let messages = vec![
            Message::GenericNack { code: 4 },
            Message::VehicleIdRequest,
            Message::VehicleIdRequestEid { eid: [1; 6] },
            Message::VehicleIdRequestVin { vin: *b"WAXLE000000000001" },
            Message::VehicleAnnouncement {
                vin: *b"WAXLE000000000001",
                logical_address: 0xE0,
                eid: [2; 6],
                gid: [3; 6],
                further_action: 0,
                sync_status: Some(0),
            },
            Message::RoutingActivationRequest { source: 0x0E80, activation_type: 0xE0, oem: Some([9; 4]) },
            Message::RoutingActivationResponse { tester: 0x0E80, entity: 0xE0, code: 0x10, oem: None },
            Message::AliveCheckRequest,
            Message::AliveCheckResponse { source: 0x0E80 },
            Message::EntityStatusRequest,
            Message::EntityStatusResponse { node_type: 0, max_sockets: 4, open_sockets: 1, max_data_size: Some(4096) },
            Message::PowerModeRequest,
            Message::PowerModeResponse { mode: 1 },
            Message::Diagnostic { source: 1, target: 2, data: vec![0x3E, 0x00] },
            Message::DiagnosticNack { source: 2, target: 1, code: 3, previous: vec![] },
        ];
        for m in messages {
            let wire = m.encode(VERSION_2012);
            assert_eq!(decode(&wire, 4096).expect("valid").map(|(m, _)| m), Some(m));
        }
    }
}
