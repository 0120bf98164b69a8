//! What a long-running Axle process gives back once it has started: heap pages freed by
//! start-up, and the pages of code and read-only data (its own and its shared libraries')
//! that only start-up touched.
//!
//! The kernel maps an executable's file pages as they are first run, and 64 KiB around each
//! fault ("fault-around"), so a start that walks through configuration parsing, certificate
//! generation and schema loading leaves most of the binary mapped and counted in the process's
//! PSS although the serving paths never run those pages again. Unmapping them is safe: they
//! are private, clean and unmodified, the kernel may drop them under memory pressure at any
//! time anyway, and a page that runs again is mapped back from the page cache (a minor fault).
//! The linker places the serving code together (`text-order.txt`, see
//! `tools/text-order/README.md`) so that what does run again maps back compactly.

use std::io;

/// How long the start-up work goes on after a process is ready (the controllers' first passes
/// over what is stored, the content store's garbage collection, an agent's registration): a
/// car's computer finishes it in well under a second.
const START_SETTLES: std::time::Duration = std::time::Duration::from_secs(3);

/// Releases start-up memory now, and again once the start-up work still under way is over
/// (needs a tokio runtime).
pub fn release_startup_memory_now_and_once_settled() {
    release_startup_memory();
    tokio::spawn(async {
        tokio::time::sleep(START_SETTLES).await;
        release_startup_memory();
    });
}

/// Returns freed heap to the system and unmaps the start-up pages of code; best effort.
fn release_startup_memory() {
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe { libc::malloc_trim(0) };
    match release_file_pages() {
        Ok(kib) => tracing::debug!(kib, "released the start-up pages of code"),
        Err(e) => tracing::debug!(error = %e, "cannot release the start-up pages of code"),
    }
}

/// One mapping of `/proc/self/smaps`: its address range, permissions, file and how much of it
/// is mapped and how much is private anonymous memory (pages copied on write, which the file
/// does not hold).
#[derive(Debug, PartialEq)]
struct Mapping<'a> {
    start: usize,
    end: usize,
    perms: &'a str,
    path: &'a str,
    resident_kib: u64,
    anonymous_kib: u64,
}

/// Unmaps the pages of the read-only file mappings (code and constants of the executable
/// and its shared libraries) that hold nothing but the files' bytes. Writable mappings and
/// read-only ones holding copied pages (relocated data made read-only after start) are never
/// touched. Returns how much was mapped.
fn release_file_pages() -> io::Result<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released_kib = 0;
    for mapping in mappings(&smaps).filter(releasable) {
        // SAFETY: the range is a private, read-only mapping of a file with no anonymous
        // (copied) pages: dropping its page-table entries loses nothing, the next access maps
        // the same file bytes back in.
        let released = unsafe {
            libc::madvise(mapping.start as *mut libc::c_void, mapping.end - mapping.start, libc::MADV_DONTNEED)
        };
        if released != 0 {
            return Err(io::Error::last_os_error());
        }
        released_kib += mapping.resident_kib;
    }
    Ok(released_kib)
}

fn releasable(mapping: &Mapping<'_>) -> bool {
    let regular_file = mapping.path.starts_with('/') && !mapping.path.starts_with("/dev/");
    regular_file && matches!(mapping.perms, "r-xp" | "r--p") && mapping.anonymous_kib == 0
}

/// The mappings of an smaps text; a header line starts each (`start-end perms offset dev inode
/// path`), `Key: value kB` lines follow.
fn mappings(smaps: &str) -> impl Iterator<Item = Mapping<'_>> {
    let mut lines = smaps.lines().peekable();
    std::iter::from_fn(move || loop {
        let header = lines.next()?;
        let Some(mut mapping) = mapping_header(header) else { continue };
        while let Some(field) = lines.peek().filter(|l| mapping_header(l).is_none()) {
            if let Some(kib) = field.strip_prefix("Rss:") {
                mapping.resident_kib = kib_value(kib).unwrap_or(0);
            } else if let Some(kib) = field.strip_prefix("Anonymous:") {
                // Unreadable counts as copied pages: such a mapping is left alone.
                mapping.anonymous_kib = kib_value(kib).unwrap_or(u64::MAX);
            }
            lines.next();
        }
        return Some(mapping);
    })
}

fn kib_value(field: &str) -> Option<u64> {
    field.trim().trim_end_matches("kB").trim().parse().ok()
}

fn mapping_header(line: &str) -> Option<Mapping<'_>> {
    let mut fields = line.splitn(6, ' ');
    let (start, end) = fields.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = fields.next()?;
    let (_offset, _device, _inode) = (fields.next()?, fields.next()?, fields.next()?);
    let path = fields.next().unwrap_or("").trim_start();
    Some(Mapping { start, end, perms, path, resident_kib: 0, anonymous_kib: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
5581a0000000-5581a0100000 r--p 00000000 fd:01 1234                       /usr/bin/axle (deleted)
Size:               1024 kB
Anonymous:             0 kB
5581a0100000-5581a0600000 r-xp 00100000 fd:01 1234                       /usr/bin/axle (deleted)
Size:               5120 kB
Rss:                4800 kB
Anonymous:             0 kB
5581a0600000-5581a0640000 r--p 00600000 fd:01 1234                       /usr/bin/axle (deleted)
Size:                256 kB
Anonymous:           256 kB
5581a0640000-5581a0650000 rw-p 00640000 fd:01 1234                       /usr/bin/axle (deleted)
Anonymous:            12 kB
7f0000000000-7f0000021000 rw-p 00000000 00:00 0
Anonymous:           132 kB
7f0000100000-7f0000200000 r-xp 00000000 fd:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f0000300000-7f0000301000 r--p 00000000 00:06 5                          /dev/dri/card0
Anonymous:             0 kB
7f0000400000-7f0000401000 r--p 00000000 fd:01 77                         /usr/lib/x86_64-linux-gnu/libm.so.6
Rss:                   ? kB
Anonymous:             ? kB
";

    #[test]
    fn only_the_clean_read_only_file_mappings_are_released() {
        let released: Vec<_> = mappings(SMAPS).filter(releasable).map(|m| (m.start, m.perms)).collect();
        assert_eq!(released, vec![(0x5581a0000000, "r--p"), (0x5581a0100000, "r-xp"), (0x7f0000100000, "r-xp")]);
    }

    #[test]
    fn every_mapping_is_read_with_its_anonymous_size() {
        let all: Vec<_> = mappings(SMAPS).map(|m| (m.perms, m.path, m.resident_kib, m.anonymous_kib)).collect();
        assert_eq!(all.len(), 8);
        assert_eq!(all[7], ("r--p", "/usr/lib/x86_64-linux-gnu/libm.so.6", 0, u64::MAX), "unreadable: left alone");
        assert_eq!(all[1], ("r-xp", "/usr/bin/axle (deleted)", 4800, 0));
        assert_eq!(all[2], ("r--p", "/usr/bin/axle (deleted)", 0, 256));
        assert_eq!(all[4], ("rw-p", "", 0, 132));
    }

    /// KiB mapped in this process's releasable mappings now.
    fn releasable_resident_kib() -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
        mappings(&smaps).filter(releasable).map(|m| m.resident_kib).sum()
    }

    #[test]
    fn releasing_unmaps_the_code_pages_and_the_process_runs_on() {
        let before = releasable_resident_kib();
        let released = release_file_pages().expect("released");
        let after = releasable_resident_kib();
        assert!(released >= before && before > 0, "released {released} KiB of {before} KiB mapped");
        // What runs again maps back in: this test, the smaps reader, the harness.
        assert!(after < before, "{after} KiB mapped again of {before} KiB");
    }
}
