//! Seed/key for SecurityAccess: the interface for OEM algorithms and Axle's documented demo.
//!
//! The demo algorithm (used by `axle ecu-sim` and, by default, the flasher) is NOT security:
//! `key = rotate_left(seed, 7) XOR 0xA5C35A3C` over the 4-byte big-endian seed. A car's ECUs
//! use their OEM's algorithm, plugged in through [`KeyAlgorithm`].

/// Computes the key for a seed at a security level.
pub trait KeyAlgorithm: Send + Sync {
    fn key(&self, level: u8, seed: &[u8]) -> Vec<u8>;
}

/// The documented demo algorithm.
#[derive(Debug, Clone, Copy, Default)]
pub struct DemoKey;

impl KeyAlgorithm for DemoKey {
    fn key(&self, _level: u8, seed: &[u8]) -> Vec<u8> {
        let mut word = [0u8; 4];
        for (slot, byte) in word.iter_mut().rev().zip(seed.iter().rev()) {
            *slot = *byte;
        }
        demo_key(u32::from_be_bytes(word)).to_be_bytes().to_vec()
    }
}

pub fn demo_key(seed: u32) -> u32 {
    seed.rotate_left(7) ^ 0xA5C3_5A3C
}

/// A seed that differs per request (not cryptographic: the demo ECU's).
pub fn fresh_seed() -> u32 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(1);
    // Never zero: a zero seed means "already unlocked".
    (nanos.wrapping_mul(2_654_435_761) ^ std::process::id()) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_key_matches_its_documentation() {
        assert_eq!(demo_key(0x1234_5678), 0x1234_5678u32.rotate_left(7) ^ 0xA5C3_5A3C);
        assert_eq!(DemoKey.key(1, &[0x12, 0x34, 0x56, 0x78]), demo_key(0x1234_5678).to_be_bytes().to_vec());
        assert_ne!(fresh_seed(), 0);
    }
}
