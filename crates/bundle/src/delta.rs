//! Delta codecs, versioned by name; a builder tries them all and keeps the smallest (see
//! `bundles.md`: bsdiff wins on executables and tars of them, zstd with the base as reference
//! prefix on firmware-like data).
//!
//! - `zstd-patch/1`: a zstd frame compressed with the base as its reference prefix (long
//!   distance matching, a window covering base and target).
//! - `bsdiff/1`: bsdiff's control, difference and extra streams (computed by `qbsdiff`), each
//!   stored, zstd- or bzip2-compressed, whichever is smallest, the differences optionally
//!   rewritten as literal adds — smaller than bsdiff's own format on binaries and on firmware,
//!   and applied here by a streaming patcher that holds only the base in memory.
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

/// How hard encoders work: the smallest bundle, or one made in seconds (a quick zstd level,
/// and no bsdiff, whose suffix sort dominates on large targets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Effort {
    #[default]
    Best,
    Fast,
}

impl Effort {
    /// The zstd level of full payloads.
    pub fn zstd_level(self) -> i32 {
        match self {
            Effort::Best => ZSTD_LEVEL,
            Effort::Fast => 3,
        }
    }
}

/// Encodes `new` against `old`; `None` when the codec does not apply to inputs of this size
/// (or this effort).
pub fn encode(codec: &str, old: &[u8], new: &[u8], effort: Effort) -> std::io::Result<Option<Vec<u8>>> {
    match codec {
        "zstd-patch/1" => {
            // The target's signed hash checks the result: no frame checksum. Level 22 finds
            // a few more matches on some inputs; the decoder is the same.
            let levels: &[i32] = match effort {
                Effort::Best => &[ZSTD_LEVEL, 22],
                Effort::Fast => &[3],
            };
            let mut best: Option<Vec<u8>> = None;
            for &level in levels {
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
        "bsdiff/1" if effort == Effort::Best && old.len() + new.len() <= BSDIFF_MAX_INPUT => bsdiff(old, new).map(Some),
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
    let mut raws = Vec::new();
    for stream in streams {
        let stream = stream.ok_or_else(|| invalid("a BSDIFF40 stream runs past the patch"))?;
        let mut raw = Vec::new();
        bzip2::read::BzDecoder::new(stream).read_to_end(&mut raw)?;
        raws.push(raw);
    }
    let mut patch = BSDIFF_MAGIC.to_vec();
    put_varint(&mut patch, new.len() as u64);
    let mut bodies = Vec::new();
    for (index, raw) in raws.iter().enumerate() {
        let (packing, mut body) = pack_stream(raw)?;
        let mut tag = packing as u8;
        if index == 1 {
            let (literal_packing, literal_body) = pack_stream(&literal_adds(old, &raws[0], raw))?;
            if literal_body.len() < body.len() {
                (tag, body) = (literal_packing as u8 | LITERAL_ADDS, literal_body);
            }
        }
        patch.push(tag);
        put_varint(&mut patch, body.len() as u64);
        bodies.push(body);
    }
    for body in bodies {
        patch.extend(body);
    }
    Ok(patch)
}

/// Set on the packing of the second stream when it holds literal adds (see [`Adds`]).
const LITERAL_ADDS: u8 = 0x80;

/// The base byte under position `at` (bsdiff reads outside the base as zero).
fn base_at(old: &[u8], at: i64) -> u8 {
    usize::try_from(at).ok().and_then(|i| old.get(i)).copied().unwrap_or(0)
}

/// bsdiff's `add` bytes rewritten as literals: (bytes equal to the base, then bytes of the
/// target) pairs as varints, each followed by its target bytes. Where an edit writes new
/// values over unrelated base bytes (firmware), these compress far better than differences.
fn literal_adds(old: &[u8], controls: &[u8], diff: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut same, mut run) = (0u64, Vec::new());
    let (mut old_pos, mut diff_at) = (0i64, 0usize);
    for control in controls.chunks_exact(24) {
        let number = |i: usize| offtin(control[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        let (add, seek) = (number(0), number(2));
        for i in 0..add.max(0) {
            let Some(&difference) = diff.get(diff_at) else { break };
            diff_at += 1;
            if difference == 0 {
                if !run.is_empty() {
                    put_varint(&mut out, same);
                    put_varint(&mut out, run.len() as u64);
                    out.append(&mut run);
                    same = 0;
                }
                same += 1;
            } else {
                run.push(base_at(old, old_pos + i).wrapping_add(difference));
            }
        }
        old_pos = old_pos.saturating_add(add).saturating_add(seek);
    }
    if same > 0 || !run.is_empty() {
        put_varint(&mut out, same);
        put_varint(&mut out, run.len() as u64);
        out.append(&mut run);
    }
    out
}

/// Where the bytes of bsdiff's `add` ranges come from: differences to the base (bsdiff's own
/// form), or literal adds.
enum Adds<'a> {
    Differences(Box<dyn Read + 'a>),
    Literals { source: std::io::BufReader<Box<dyn Read + 'a>>, same: u64, literal: u64 },
}

impl Adds<'_> {
    /// Fills `buffer` with the target's bytes for the base position `old_pos` onwards.
    fn fill(&mut self, old: &[u8], old_pos: i64, buffer: &mut [u8]) -> std::io::Result<()> {
        match self {
            Adds::Differences(diff) => {
                diff.read_exact(buffer)?;
                for (i, byte) in buffer.iter_mut().enumerate() {
                    *byte = byte.wrapping_add(base_at(old, old_pos + i as i64));
                }
            }
            Adds::Literals { source, same, literal } => {
                for (i, byte) in buffer.iter_mut().enumerate() {
                    while *same == 0 && *literal == 0 {
                        *same = get_varint(source)?;
                        *literal = get_varint(source)?;
                    }
                    if *same > 0 {
                        *byte = base_at(old, old_pos + i as i64);
                        *same -= 1;
                    } else {
                        let mut one = [0u8; 1];
                        source.read_exact(&mut one)?;
                        *byte = one[0];
                        *literal -= 1;
                    }
                }
            }
        }
        Ok(())
    }
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

/// Applies a `bsdiff/1` patch: for each control (add, copy, seek) the next `add` bytes come
/// from the base and the adds stream, the next `copy` from the extra stream, then the base
/// position moves by `seek`. Streams in, streams out.
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
        streams.push((packing & LITERAL_ADDS != 0, unpack_stream(packing & !LITERAL_ADDS, &bodies[at..end])?));
        at = end;
    }
    let mut streams = streams.into_iter();
    let (Some((_, mut control_stream)), Some((literal, adds)), Some((_, mut extra))) =
        (streams.next(), streams.next(), streams.next())
    else {
        return Err(invalid("a bsdiff/1 patch has three streams"));
    };
    let mut adds = if literal {
        Adds::Literals { source: std::io::BufReader::new(adds), same: 0, literal: 0 }
    } else {
        Adds::Differences(adds)
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
            adds.fill(old, old_pos, &mut buffer[..n])?;
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
            let patch = encode(codec, &old, &new, Effort::Best).expect("encodes").expect("applies to this size");
            let mut rebuilt = Vec::new();
            decode(codec, &old, &patch[..], &mut rebuilt).expect("decodes");
            assert!(rebuilt == new, "{codec} round trip");
        }
        let mut classic = Vec::new();
        qbsdiff::Bsdiff::new(&old, &new).compare(std::io::Cursor::new(&mut classic)).expect("bsdiff");
        let ours = encode("bsdiff/1", &old, &new, Effort::Best).expect("encodes").expect("some");
        assert!(ours.len() < classic.len(), "ours {} vs BSDIFF40 {}", ours.len(), classic.len());
        // Firmware-like: random bytes overwritten with new values here and there.
        let firmware: Vec<u8> =
            (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ (i >> 11) as u8).collect();
        let mut edited = firmware.clone();
        for k in 0..10usize {
            edited[k * 29_000..k * 29_000 + 16].copy_from_slice(&[k as u8; 16]);
        }
        let patch = encode("bsdiff/1", &firmware, &edited, Effort::Best).expect("encodes").expect("some");
        let mut at = BSDIFF_MAGIC.len();
        get_varint(&mut &patch[at..]).expect("length");
        at += 3; // 300,000 as a varint
        at += 1;
        at += patch[at..].iter().position(|b| b & 0x80 == 0).expect("varint end") + 1;
        assert!(patch[at] & LITERAL_ADDS != 0, "edits over unrelated bytes travel as literal adds");
        let mut rebuilt = Vec::new();
        decode("bsdiff/1", &firmware, &patch[..], &mut rebuilt).expect("decodes");
        assert!(rebuilt == edited, "literal adds round trip");
        let mut tampered = ours.clone();
        tampered[4] ^= 0x7f;
        assert!(decode("bsdiff/1", &old, &tampered[..], &mut Vec::new()).is_err(), "a wrong target length is refused");
    }
}
