//! Delta codecs, versioned by name; a builder tries them all and keeps the smallest (see
//! `bundles.md`: bsdiff wins on executables and tars of them, zstd with the base as reference
//! prefix on firmware-like data).
//!
//! - `zstd-patch/1`: a zstd frame compressed with the base as its reference prefix (long
//!   distance matching, a window covering base and target).
//! - `bsdiff/1`: bsdiff's control, difference and extra streams (computed by `qbsdiff`), each
//!   compressed with zstd instead of bzip2 — smaller than bsdiff's own format, and applied here
//!   by a streaming patcher that holds only the base in memory.
//!
//! Payloads are hashed and checked against signed metadata before they are decoded, and every
//! decoded target against its signed hash, so a codec never sees unauthenticated input; the
//! patcher still refuses out-of-range controls rather than trusting them.

use std::io::{Read, Write};

pub const CODECS: &[&str] = &["zstd-patch/1", "bsdiff/1"];
const ZSTD_LEVEL: i32 = 19;
/// Above this (base + target) bsdiff's suffix array costs too much memory to try.
const BSDIFF_MAX_INPUT: usize = 512 << 20;
const BSDIFF_MAGIC: &[u8; 4] = b"AXD1";

fn invalid(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string())
}

/// Encodes `new` against `old`; `None` when the codec does not apply to inputs of this size.
pub fn encode(codec: &str, old: &[u8], new: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
    match codec {
        "zstd-patch/1" => {
            // The target's signed hash checks the result: no frame checksum. Level 22 finds
            // a few more matches on some inputs; the decoder is the same.
            let mut best: Option<Vec<u8>> = None;
            for level in [ZSTD_LEVEL, 22] {
                let mut patch = Vec::new();
                let mut encoder = zstd::stream::write::Encoder::with_ref_prefix(&mut patch, level, old)?;
                let window = ((old.len() + new.len()).max(1 << 20) as f64).log2().ceil() as u32;
                encoder.window_log(window.clamp(20, 30))?;
                encoder.long_distance_matching(true)?;
                encoder.include_checksum(false)?;
                encoder.write_all(new)?;
                encoder.finish()?;
                if best.as_ref().is_none_or(|b| patch.len() < b.len()) {
                    best = Some(patch);
                }
            }
            Ok(best)
        }
        "bsdiff/1" if old.len() + new.len() <= BSDIFF_MAX_INPUT => bsdiff(old, new).map(Some),
        _ => Ok(None),
    }
}

/// Decodes a patch against `old` into `out`; returns the bytes written.
pub fn decode(codec: &str, old: &[u8], patch: impl Read, out: &mut impl Write) -> std::io::Result<u64> {
    match codec {
        "zstd-patch/1" => {
            let mut decoder = zstd::stream::read::Decoder::with_ref_prefix(std::io::BufReader::new(patch), old)?;
            decoder.window_log_max(31)?;
            std::io::copy(&mut decoder, out)
        }
        "bsdiff/1" => bspatch(old, patch, out),
        other => Err(invalid(&format!("unknown delta codec {other}"))),
    }
}

/// How one bsdiff stream is stored: whichever is smallest for it (bzip2's block sorting wins
/// on some extra streams, zstd on most, tiny streams are smallest as they are).
#[derive(Clone, Copy)]
enum Packing {
    Stored = 0,
    Zstd = 1,
    Bzip2 = 2,
}

fn pack_stream(raw: &[u8]) -> std::io::Result<(Packing, Vec<u8>)> {
    let mut zstd_encoder = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)?;
    zstd_encoder.long_distance_matching(true)?;
    zstd_encoder.write_all(raw)?;
    let mut bzip2_encoder = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
    bzip2_encoder.write_all(raw)?;
    let candidates = [(Packing::Zstd, zstd_encoder.finish()?), (Packing::Bzip2, bzip2_encoder.finish()?)];
    let mut best = (Packing::Stored, raw.to_vec());
    for (packing, bytes) in candidates {
        if bytes.len() < best.1.len() {
            best = (packing, bytes);
        }
    }
    Ok(best)
}

fn unpack_stream<'a>(packing: u8, bytes: &'a [u8]) -> std::io::Result<Box<dyn Read + 'a>> {
    Ok(match packing {
        0 => Box::new(bytes),
        1 => Box::new(zstd::stream::read::Decoder::with_buffer(bytes)?),
        2 => Box::new(bzip2::read::BzDecoder::new(bytes)),
        _ => return Err(invalid("unknown stream packing")),
    })
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn get_varint(input: &mut impl Read) -> std::io::Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8; 1];
        input.read_exact(&mut byte)?;
        value |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(invalid("a varint longer than 64 bits"))
}

/// bsdiff's three streams out of qbsdiff's BSDIFF40 output, each repacked: `AXD1`, the
/// target length, then per stream its packing (a byte) and length (varints), then the streams.
fn bsdiff(old: &[u8], new: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut classic = Vec::new();
    qbsdiff::Bsdiff::new(old, new)
        .parallel_scheme(qbsdiff::ParallelScheme::Never)
        .compare(std::io::Cursor::new(&mut classic))?;
    if classic.len() < 32 || &classic[..8] != b"BSDIFF40" {
        return Err(invalid("qbsdiff wrote no BSDIFF40 patch"));
    }
    let field = |at: usize| u64::from_le_bytes(classic[at..at + 8].try_into().unwrap_or([0; 8])) as usize;
    let (control_len, diff_len) = (field(8), field(16));
    let streams = [
        classic.get(32..32 + control_len),
        classic.get(32 + control_len..32 + control_len + diff_len),
        classic.get(32 + control_len + diff_len..),
    ];
    let mut patch = BSDIFF_MAGIC.to_vec();
    put_varint(&mut patch, new.len() as u64);
    let mut bodies = Vec::new();
    for stream in streams {
        let stream = stream.ok_or_else(|| invalid("a BSDIFF40 stream runs past the patch"))?;
        let mut raw = Vec::new();
        bzip2::read::BzDecoder::new(stream).read_to_end(&mut raw)?;
        let (packing, body) = pack_stream(&raw)?;
        patch.push(packing as u8);
        put_varint(&mut patch, body.len() as u64);
        bodies.push(body);
    }
    for body in bodies {
        patch.extend(body);
    }
    Ok(patch)
}

/// bsdiff's signed 64-bit integers: magnitude with the sign in the top bit.
fn offtin(bytes: [u8; 8]) -> i64 {
    let raw = u64::from_le_bytes(bytes);
    let magnitude = (raw & !(1 << 63)) as i64;
    if raw & (1 << 63) != 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// Applies a `bsdiff/1` patch: for each control (add, copy, seek) the next `add` bytes are
/// the base's plus the difference stream's, the next `copy` come from the extra stream, then
/// the base position moves by `seek`. Streams in, streams out.
fn bspatch(old: &[u8], mut patch: impl Read, out: &mut impl Write) -> std::io::Result<u64> {
    let mut magic = [0u8; 4];
    patch.read_exact(&mut magic)?;
    if &magic != BSDIFF_MAGIC {
        return Err(invalid("not a bsdiff/1 patch"));
    }
    let new_len = get_varint(&mut patch)?;
    let mut layout = [(0u8, 0u64); 3];
    for entry in &mut layout {
        let mut packing = [0u8; 1];
        patch.read_exact(&mut packing)?;
        *entry = (packing[0], get_varint(&mut patch)?);
    }
    let mut bodies = Vec::new();
    patch.read_to_end(&mut bodies)?;
    let mut streams = Vec::new();
    let mut at = 0usize;
    for (packing, length) in layout {
        let end = usize::try_from(length).ok().and_then(|l| at.checked_add(l)).filter(|&e| e <= bodies.len());
        let end = end.ok_or_else(|| invalid("a stream runs past the patch"))?;
        streams.push(unpack_stream(packing, &bodies[at..end])?);
        at = end;
    }
    let mut streams = streams.into_iter();
    let (Some(mut control_stream), Some(mut diff), Some(mut extra)) = (streams.next(), streams.next(), streams.next())
    else {
        return Err(invalid("a bsdiff/1 patch has three streams"));
    };
    let mut controls = Vec::new();
    control_stream.read_to_end(&mut controls)?;
    let mut buffer = vec![0u8; 64 * 1024];
    let (mut old_pos, mut written) = (0i64, 0u64);
    for control in controls.chunks(24) {
        let number = |i: usize| offtin(control.get(i * 8..i * 8 + 8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]));
        if control.len() != 24 {
            return Err(invalid("a truncated control"));
        }
        let (add, copy, seek) = (number(0), number(1), number(2));
        if add < 0 || copy < 0 || written + add as u64 + copy as u64 > new_len {
            return Err(invalid("a control beyond the target"));
        }
        let mut left = add as u64;
        while left > 0 {
            let n = left.min(buffer.len() as u64) as usize;
            diff.read_exact(&mut buffer[..n])?;
            for (i, byte) in buffer[..n].iter_mut().enumerate() {
                let at = old_pos + i as i64;
                if at >= 0 && (at as usize) < old.len() {
                    *byte = byte.wrapping_add(old[at as usize]);
                }
            }
            out.write_all(&buffer[..n])?;
            old_pos += n as i64;
            left -= n as u64;
        }
        let mut extra_part = (&mut extra).take(copy as u64);
        if std::io::copy(&mut extra_part, out)? != copy as u64 {
            return Err(invalid("the extra stream ended early"));
        }
        written += add as u64 + copy as u64;
        old_pos = old_pos.checked_add(seek).ok_or_else(|| invalid("a seek out of range"))?;
    }
    if written != new_len {
        return Err(invalid("the controls do not produce the whole target"));
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips_and_bsdiff_beats_its_classic_format() {
        let table = |shift: u32| -> Vec<u8> { (0..50_000u32).flat_map(|i| (i * 7 + shift).to_le_bytes()).collect() };
        let (old, mut new) = (table(0), table(3));
        new.splice(100_000..100_000, vec![0x90; 999]);
        new.truncate(150_000);
        for codec in CODECS {
            let patch = encode(codec, &old, &new).expect("encodes").expect("applies to this size");
            let mut rebuilt = Vec::new();
            decode(codec, &old, &patch[..], &mut rebuilt).expect("decodes");
            assert!(rebuilt == new, "{codec} round trip");
        }
        let mut classic = Vec::new();
        qbsdiff::Bsdiff::new(&old, &new).compare(std::io::Cursor::new(&mut classic)).expect("bsdiff");
        let ours = encode("bsdiff/1", &old, &new).expect("encodes").expect("some");
        assert!(ours.len() < classic.len(), "ours {} vs BSDIFF40 {}", ours.len(), classic.len());
        let mut tampered = ours.clone();
        tampered[4] ^= 0x7f;
        assert!(decode("bsdiff/1", &old, &tampered[..], &mut Vec::new()).is_err(), "a wrong target length is refused");
    }
}
