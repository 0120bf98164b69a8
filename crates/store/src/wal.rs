//! The write-ahead log: every durable change is one append to a segment file, then `fdatasync`.
//!
//! Why a log in front of redb: a redb commit rewrites and fsyncs the B-tree pages on the path
//! to every changed key (about 40 KB per commit measured), while an append costs the pages it
//! touches (usually one 4 KiB page, the records being zstd-compressed). redb is brought up to
//! date in the background by checkpoints (see `writer`), whose cost is shared by every change
//! since the previous one, and where repeated writes of one object cost one page.
//!
//! The log is also the persisted change history that watches resume from (it replaced redb's
//! change-log table): segments are kept until the newer ones hold `capacity` changes.
//!
//! Layout: `DIR/{base:020}.log` is the segment being appended to; at rotation it is renamed
//! `DIR/{base:020}-{last:020}-{count}.log`, so opening the store reads only the segments not yet
//! checkpointed. `base` is the store's resourceVersion when the segment began: every change in
//! it is newer, and none between `base` and its first change exists anywhere.
//!
//! A record: `len: u32 LE`, `crc32(body): u32 LE`, `body` = zstd of `rv: u64 LE` (the store's
//! resourceVersion once the record's batch is applied) and the changes, each `rv: u64 LE`,
//! `n: u32 LE` and `n` bytes of the change (`hub::Event::encode`, sealed like the object). A torn
//! record (power cut mid-append) fails its length or CRC check: it and anything after it in the
//! last segment were never acknowledged, and are cut off at open.

use crate::StoreError;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

/// A segment is sealed and a new one begun past this size.
const SEGMENT_BYTES: u64 = 4 << 20;
/// Largest record accepted when reading (a batch is at most 256 transactions).
const MAX_RECORD: usize = 256 << 20;
const HEADER: usize = 8;

/// One durable change as logged: its resourceVersion and its encoded event.
pub(crate) type Change = (u64, Vec<u8>);

/// A record read back.
pub(crate) struct Record {
    pub(crate) rv: u64,
    pub(crate) changes: Vec<Change>,
}

#[derive(Debug, Clone)]
struct Segment {
    base: u64,
    /// Newest resourceVersion of a record in it (its base while empty).
    last: u64,
    changes: u64,
    bytes: u64,
    path: PathBuf,
}

pub(crate) struct Wal {
    dir: PathBuf,
    /// Oldest first; the last one is the active segment when `active` is open.
    segments: Vec<Segment>,
    active: Option<File>,
    /// Changes kept for watch resume.
    capacity: u64,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    let message = format!("{what} {}: {e}", path.display());
    if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
        StoreError::Full(message)
    } else {
        StoreError::Database(message)
    }
}

/// Space reserved ahead of a new segment's end, so that the records that keep the car
/// running (a few writes, the record before a run's first heartbeat) still fit on a full disk.
const RESERVE: i64 = 1 << 20;

impl Wal {
    /// Reads the log in `dir` (created at the first append): returns it with every record newer
    /// than `after`, oldest first. A torn tail of the last segment is cut off.
    pub(crate) fn open(dir: &Path, capacity: u64, after: u64) -> Result<(Wal, Vec<Record>), StoreError> {
        let mut segments = Vec::new();
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(|e| io_error("cannot list", dir, e))?;
                    if let Some(segment) = parse_name(&entry.path()) {
                        segments.push(segment);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("cannot list", dir, e)),
        }
        segments.sort_by_key(|s| s.base);
        let mut records = Vec::new();
        let count = segments.len();
        for (i, segment) in segments.iter_mut().enumerate() {
            let sealed = is_sealed(segment);
            if sealed && segment.last <= after {
                continue;
            }
            let bytes = std::fs::read(&segment.path).map_err(|e| io_error("cannot read", &segment.path, e))?;
            let (read, valid_len) = parse_records(&bytes);
            if valid_len < bytes.len() {
                if i + 1 < count {
                    return Err(StoreError::Damaged(format!(
                        "the store's log segment {} is damaged at byte {valid_len}",
                        segment.path.display()
                    )));
                }
                tracing::warn!(segment = %segment.path.display(), at = valid_len, "cutting off a torn log record (power cut during a write)");
                let file = OpenOptions::new()
                    .write(true)
                    .open(&segment.path)
                    .map_err(|e| io_error("cannot open", &segment.path, e))?;
                file.set_len(valid_len as u64).map_err(|e| io_error("cannot truncate", &segment.path, e))?;
                file.sync_all().map_err(|e| io_error("cannot sync", &segment.path, e))?;
            }
            if !sealed {
                segment.bytes = valid_len as u64;
                segment.changes = read.iter().map(|r| r.changes.len() as u64).sum();
                segment.last = read.last().map_or(segment.base, |r| r.rv);
            }
            records.extend(read.into_iter().filter(|r| r.rv > after));
        }
        Ok((Wal { dir: dir.to_path_buf(), segments, active: None, capacity: capacity.max(1) }, records))
    }

    /// Every record that can be read from the segments in `dir`, oldest first, and the
    /// segments that could not be read whole (for `recover`; writes nothing).
    pub(crate) fn salvage(dir: &Path) -> (Vec<Record>, Vec<String>) {
        let mut segments: Vec<Segment> = match std::fs::read_dir(dir) {
            Ok(entries) => entries.filter_map(|e| parse_name(&e.ok()?.path())).collect(),
            Err(_) => Vec::new(),
        };
        segments.sort_by_key(|s| s.base);
        let (mut records, mut damaged) = (Vec::new(), Vec::new());
        for segment in &segments {
            match std::fs::read(&segment.path) {
                Ok(bytes) => {
                    let (read, valid_len) = parse_records(&bytes);
                    if valid_len < bytes.len() {
                        damaged.push(format!("{} (from byte {valid_len})", segment.path.display()));
                    }
                    records.extend(read);
                }
                Err(e) => damaged.push(format!("{}: {e}", segment.path.display())),
            }
        }
        (records, damaged)
    }

    /// Appends one record and makes it durable; returns the bytes appended. `base` is the
    /// store's resourceVersion before the record, the base of a segment it may begin.
    pub(crate) fn append(&mut self, base: u64, rv: u64, changes: &[Change]) -> Result<u64, StoreError> {
        let frame = encode_record(rv, changes)?;
        // Segments are sealed by size, and by count so that retention (whole segments) stays
        // close to `capacity` changes.
        let per_segment = (self.capacity / 4).max(1);
        let full = |s: &Segment| s.bytes >= SEGMENT_BYTES || s.changes >= per_segment;
        if self.active.is_none() || self.segments.last().is_some_and(full) {
            self.rotate(base)?;
        }
        let (Some(file), Some(segment)) = (self.active.as_mut(), self.segments.last_mut()) else {
            return Err(StoreError::Database("the store's log has no open segment".into()));
        };
        let written = file.write_all(&frame).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // What reached the file is unknown: begin a new segment for the next record, and
            // cut this one back to its last good record so no half record sits in the middle.
            let _ = file.set_len(segment.bytes);
            self.active = None;
            return Err(io_error("cannot append to", &segment.path, e));
        }
        segment.bytes += frame.len() as u64;
        segment.changes += changes.len() as u64;
        segment.last = rv;
        Ok(frame.len() as u64)
    }

    /// Seals the active segment (renamed with its range) and begins a new one at `base`.
    fn rotate(&mut self, base: u64) -> Result<(), StoreError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io_error("cannot create", &self.dir, e))?;
        if let Some(segment) = self.segments.last_mut().filter(|s| !is_sealed(s)) {
            if segment.changes == 0 && segment.bytes == 0 {
                let _ = std::fs::remove_file(&segment.path);
                self.segments.pop();
            } else {
                let sealed =
                    self.dir.join(format!("{:020}-{:020}-{}.log", segment.base, segment.last, segment.changes));
                std::fs::rename(&segment.path, &sealed).map_err(|e| io_error("cannot seal", &segment.path, e))?;
                segment.path = sealed;
            }
        }
        let path = self.dir.join(format!("{base:020}.log"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error("cannot create", &path, e))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| io_error("cannot sync", &self.dir, e))?;
        {
            use std::os::fd::AsRawFd as _;
            // SAFETY: fallocate on an open descriptor; KEEP_SIZE leaves the file's length alone.
            // A file system that cannot reserve simply has no reserve.
            unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, RESERVE) };
        }
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.segments.push(Segment { base, last: base, changes: 0, bytes, path });
        self.active = Some(file);
        Ok(())
    }

    /// Bytes in segments (for the checkpoint trigger).
    pub(crate) fn bytes_after(&self, rv: u64) -> u64 {
        self.segments.iter().filter(|s| s.last > rv).map(|s| s.bytes).sum()
    }

    /// The oldest resourceVersion a watch can resume from: the base of the oldest segment the
    /// retention keeps (the newest segments holding at least `capacity` changes).
    pub(crate) fn oldest_base(&self) -> Option<u64> {
        let mut kept = 0;
        let mut oldest = None;
        for segment in self.segments.iter().rev() {
            oldest = Some(segment.base);
            kept += segment.changes;
            if kept >= self.capacity {
                break;
            }
        }
        oldest
    }

    /// Removes the segments retention no longer keeps, once all they hold is in redb
    /// (`checkpointed`).
    pub(crate) fn prune(&mut self, checkpointed: u64) {
        let Some(oldest) = self.oldest_base() else { return };
        while let Some(first) = self.segments.first() {
            if first.base >= oldest || first.last > checkpointed || self.segments.len() == 1 {
                break;
            }
            if let Err(e) = std::fs::remove_file(&first.path) {
                tracing::warn!(segment = %first.path.display(), error = %e, "cannot remove an old log segment");
                break;
            }
            self.segments.remove(0);
        }
    }

    /// A snapshot of what a reader needs to find changes after a resourceVersion.
    pub(crate) fn view(&self) -> WalView {
        WalView {
            oldest: self.oldest_base(),
            segments: self.segments.iter().map(|s| (s.base, s.last, s.path.clone())).collect(),
        }
    }
}

/// The segments as they were when a reader looked; files may be renamed or removed since, so a
/// reader that misses one reports the history as expired.
pub(crate) struct WalView {
    oldest: Option<u64>,
    segments: Vec<(u64, u64, PathBuf)>,
}

impl WalView {
    /// Changes with a resourceVersion in `(after, up_to]`, oldest first; None when the log no
    /// longer reaches back to `after`.
    pub(crate) fn changes_after(&self, after: u64, up_to: u64) -> Option<Vec<Change>> {
        let oldest = self.oldest?;
        if after < oldest {
            return None;
        }
        let mut out = Vec::new();
        for (base, last, path) in &self.segments {
            if *last <= after || *base >= up_to {
                continue;
            }
            let mut bytes = Vec::new();
            File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).ok()?;
            let (records, _) = parse_records(&bytes);
            for record in records {
                out.extend(record.changes.into_iter().filter(|(rv, _)| *rv > after && *rv <= up_to));
            }
        }
        Some(out)
    }
}

fn is_sealed(segment: &Segment) -> bool {
    segment.path.file_stem().is_some_and(|s| s.to_string_lossy().contains('-'))
}

/// `{base}.log` (active) or `{base}-{last}-{changes}.log` (sealed).
fn parse_name(path: &Path) -> Option<Segment> {
    if path.extension()? != "log" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    let mut parts = stem.split('-');
    let base: u64 = parts.next()?.parse().ok()?;
    let (last, changes) = match (parts.next(), parts.next()) {
        (Some(last), Some(changes)) => (last.parse().ok()?, changes.parse().ok()?),
        _ => (base, 0),
    };
    let bytes = std::fs::metadata(path).ok()?.len();
    Some(Segment { base, last, changes, bytes, path: path.to_path_buf() })
}

fn encode_record(rv: u64, changes: &[Change]) -> Result<Vec<u8>, StoreError> {
    let mut body = Vec::with_capacity(8 + changes.iter().map(|(_, c)| c.len() + 12).sum::<usize>());
    body.extend_from_slice(&rv.to_le_bytes());
    for (change_rv, bytes) in changes {
        let len =
            u32::try_from(bytes.len()).map_err(|_| StoreError::Database("a change is too large to log".into()))?;
        body.extend_from_slice(&change_rv.to_le_bytes());
        body.extend_from_slice(&len.to_le_bytes());
        body.extend_from_slice(bytes);
    }
    let body = zstd::bulk::compress(&body, 3).map_err(|e| StoreError::Database(format!("cannot compress: {e}")))?;
    let len = u32::try_from(body.len()).map_err(|_| StoreError::Database("a batch is too large to log".into()))?;
    let mut frame = Vec::with_capacity(HEADER + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// The records of a segment's bytes and the length of its valid prefix.
fn parse_records(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + HEADER) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let Some(body) = bytes.get(at + HEADER..at + HEADER + len) else { break };
        if len > MAX_RECORD || crc32fast::hash(body) != crc {
            break;
        }
        let Some(record) = decode_body(body) else { break };
        records.push(record);
        at += HEADER + len;
    }
    (records, at)
}

fn decode_body(compressed: &[u8]) -> Option<Record> {
    let body = zstd::bulk::decompress(compressed, MAX_RECORD).ok()?;
    let mut rest = body.as_slice();
    let rv = take_u64(&mut rest)?;
    let mut changes = Vec::new();
    while !rest.is_empty() {
        let change_rv = take_u64(&mut rest)?;
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let bytes = rest.get(4..4 + len)?.to_vec();
        rest = &rest[4 + len..];
        changes.push((change_rv, bytes));
    }
    Some(Record { rv, changes })
}

fn take_u64(rest: &mut &[u8]) -> Option<u64> {
    let value = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
    *rest = &rest[8..];
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(rv: u64) -> Change {
        (rv, format!("change {rv}").into_bytes())
    }

    #[test]
    fn records_survive_reopen_and_a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("wal");
        let (mut wal, records) = Wal::open(&log, 100, 0).expect("opens");
        assert!(records.is_empty());
        assert!(!log.exists(), "opening writes nothing");
        wal.append(0, 2, &[change(1), change(2)]).expect("appends");
        wal.append(2, 3, &[change(3)]).expect("appends");
        drop(wal);
        let segment = log.join(format!("{:020}.log", 0));
        let mut bytes = std::fs::read(&segment).expect("segment");
        let good = bytes.len();
        bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3]); // a record cut by a power cut
        std::fs::write(&segment, &bytes).expect("write");

        let (wal, records) = Wal::open(&log, 100, 0).expect("opens");
        assert_eq!(records.iter().map(|r| r.rv).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(records[0].changes, [change(1), change(2)]);
        assert_eq!(std::fs::metadata(&segment).expect("segment").len() as usize, good);
        assert_eq!(wal.segments.last().map(|s| s.last), Some(3));
        let (_, after_two) = Wal::open(&log, 100, 2).expect("opens");
        assert_eq!(after_two.len(), 1, "records already checkpointed are skipped");
    }

    #[test]
    fn retention_keeps_the_newest_changes_and_prunes_only_what_is_checkpointed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = Wal::open(dir.path(), 2, 0).expect("opens");
        for rv in 1..=3 {
            wal.append(rv - 1, rv, &[change(rv)]).expect("appends");
            wal.rotate(rv).expect("rotates"); // one change per segment
        }
        wal.append(3, 4, &[change(4)]).expect("appends");
        assert_eq!(wal.oldest_base(), Some(2), "the two newest changes are kept");
        assert_eq!(wal.view().changes_after(2, 4).expect("kept").len(), 2);
        assert!(wal.view().changes_after(1, 4).is_none(), "older history has expired");
        wal.prune(1);
        assert_eq!(wal.segments.len(), 3, "only the checkpointed segment went");
        wal.prune(4);
        assert_eq!(wal.segments.len(), 2);
        let (reopened, records) = Wal::open(dir.path(), 2, 0).expect("opens");
        assert_eq!(records.iter().map(|r| r.rv).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(reopened.oldest_base(), Some(2));
    }
}
