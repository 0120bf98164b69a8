//! The version stamp: 64 bytes in the binary, `AXLE-STAMP:<version>;<faults>` padded with
//! NULs. Release tooling (`axle stamp`) writes a copy of a build with another version, as Go's
//! `-ldflags -X` would; the launcher and bundle tooling read it from a file without running it.
//!
//! Faults are for tests of the self-update only (`exit-at-start`, `hang-at-start`,
//! `fail-self-check`): a stamped copy that misbehaves the way a broken release would. Builds
//! carry none.

use crate::{io_error, SelfUpdateError};
use std::path::Path;

const MARKER: &[u8] = b"AXLE-STAMP:";
const STAMP_LEN: usize = 64;

/// The stamp of this build. `#[used]` and read through a volatile pointer, so the bytes stay
/// in the binary as they are and a stamped copy reports its own.
#[used]
static STAMP: [u8; STAMP_LEN] = stamp_of(env!("CARGO_PKG_VERSION"));

const fn stamp_of(version: &str) -> [u8; STAMP_LEN] {
    let mut out = [0u8; STAMP_LEN];
    let mut i = 0;
    while i < MARKER.len() {
        out[i] = MARKER[i];
        i += 1;
    }
    let v = version.as_bytes();
    let mut j = 0;
    while j < v.len() && i < STAMP_LEN {
        out[i] = v[j];
        i += 1;
        j += 1;
    }
    out
}

/// A fault a test build carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    ExitAtStart,
    HangAtStart,
    FailSelfCheck,
}

impl Fault {
    pub fn parse(name: &str) -> Option<Fault> {
        match name {
            "exit-at-start" => Some(Fault::ExitAtStart),
            "hang-at-start" => Some(Fault::HangAtStart),
            "fail-self-check" => Some(Fault::FailSelfCheck),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::ExitAtStart => "exit-at-start",
            Fault::HangAtStart => "hang-at-start",
            Fault::FailSelfCheck => "fail-self-check",
        }
    }
}

/// What a stamp says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub version: String,
    pub faults: Vec<Fault>,
}

fn parse(bytes: &[u8]) -> Option<Stamp> {
    let text = bytes.strip_prefix(MARKER)?;
    let end = text.iter().position(|b| *b == 0).unwrap_or(text.len());
    let text = std::str::from_utf8(&text[..end]).ok()?;
    let (version, faults) = text.split_once(';').unwrap_or((text, ""));
    Some(Stamp { version: version.to_string(), faults: faults.split(',').filter_map(Fault::parse).collect() })
}

/// This process's stamp.
pub fn current() -> Stamp {
    // SAFETY: STAMP is a valid, initialized static; the volatile read keeps the compiler from
    // folding the build-time bytes into the code.
    let bytes = unsafe { std::ptr::read_volatile(&STAMP) };
    parse(&bytes).unwrap_or(Stamp { version: env!("CARGO_PKG_VERSION").into(), faults: Vec::new() })
}

/// The version this process reports.
pub fn version() -> String {
    current().version
}

/// Where the stamp is: the marker followed by a version, optional faults and NUL padding to
/// the stamp's end (the marker's bytes may occur elsewhere, as a string of the code).
fn find(binary: &[u8]) -> Option<usize> {
    let is_stamp = |stamp: &[u8]| {
        let text = &stamp[MARKER.len()..];
        let end = text.iter().position(|b| *b == 0).unwrap_or(text.len());
        let allowed = |b: &u8| b.is_ascii_alphanumeric() || b".+-_;,".contains(b);
        end > 0 && text[..end].iter().all(allowed) && text[end..].iter().all(|b| *b == 0)
    };
    (0..binary.len().saturating_sub(STAMP_LEN - 1))
        .filter(|&at| binary[at..].starts_with(MARKER))
        .find(|&at| is_stamp(&binary[at..at + STAMP_LEN]))
}

/// The stamp of a binary on disk.
pub fn read(path: &Path) -> Result<Stamp, SelfUpdateError> {
    let binary = std::fs::read(path).map_err(io_error(path))?;
    let at = find(&binary)
        .ok_or_else(|| SelfUpdateError::Invalid(format!("{} carries no Axle version stamp", path.display())))?;
    parse(&binary[at..at + STAMP_LEN])
        .ok_or_else(|| SelfUpdateError::Invalid(format!("{} has an unreadable version stamp", path.display())))
}

/// Writes a copy of `binary` to `out` stamped with `version` (and `faults`), executable.
pub fn write_stamped(binary: &Path, out: &Path, version: &str, faults: &[Fault]) -> Result<(), SelfUpdateError> {
    let mut bytes = std::fs::read(binary).map_err(io_error(binary))?;
    let at = find(&bytes)
        .ok_or_else(|| SelfUpdateError::Invalid(format!("{} carries no Axle version stamp", binary.display())))?;
    let faults: Vec<&str> = faults.iter().map(|f| f.name()).collect();
    let text = if faults.is_empty() { version.to_string() } else { format!("{version};{}", faults.join(",")) };
    if version.is_empty() || version.contains(';') || MARKER.len() + text.len() > STAMP_LEN {
        return Err(SelfUpdateError::Invalid(format!("version {version:?} does not fit a stamp")));
    }
    let mut stamp = [0u8; STAMP_LEN];
    stamp[..MARKER.len()].copy_from_slice(MARKER);
    stamp[MARKER.len()..MARKER.len() + text.len()].copy_from_slice(text.as_bytes());
    bytes[at..at + STAMP_LEN].copy_from_slice(&stamp);
    std::fs::write(out, &bytes).map_err(io_error(out))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o755)).map_err(io_error(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_round_trips_through_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let binary = dir.path().join("bin");
        let mut bytes = b"\x7fELF some code AXLE-STAMP: is also a string here ".to_vec();
        bytes.extend_from_slice(&stamp_of("1.0.0"));
        bytes.extend_from_slice(b" more code");
        std::fs::write(&binary, &bytes).expect("write");
        assert_eq!(read(&binary).expect("stamp"), Stamp { version: "1.0.0".into(), faults: vec![] });
        let out = dir.path().join("v2");
        write_stamped(&binary, &out, "2.0.0", &[Fault::HangAtStart]).expect("stamp");
        assert_eq!(read(&out).expect("stamp"), Stamp { version: "2.0.0".into(), faults: vec![Fault::HangAtStart] });
        assert_eq!(std::fs::metadata(&out).expect("meta").len(), bytes.len() as u64);
        assert!(write_stamped(&binary, &out, &"9".repeat(60), &[]).is_err());
        std::fs::write(&binary, b"no stamp here").expect("write");
        assert!(read(&binary).is_err());
    }

    #[test]
    fn this_build_reports_its_package_version() {
        assert_eq!(current(), Stamp { version: env!("CARGO_PKG_VERSION").into(), faults: vec![] });
    }
}
