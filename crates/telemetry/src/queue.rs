//! The offline buffer: a bounded queue of export batches on disk, for the days a car has no
//! link.
//!
//! Batches (one compressed OTLP request each) are appended to segment files
//! (`<seq>.seg`, about an eighth of the limit each) with one write and one `fdatasync` per
//! batch, so the flash sees few, whole writes. When a new batch would take the queue past its
//! limit, the oldest segments are dropped first and their undelivered records counted. The
//! delivery cursor (`cursor`: segment and offset) is replaced atomically after each delivered
//! batch; a segment whose batches are all delivered is deleted.
//!
//! Record: `len u32 | signal u8 | count u32 | crc32 u32 | body`, little-endian. A record torn
//! by a power cut fails its length or checksum and ends its segment there.
//!
//! Delivery is at least once: after a power cut between a delivery and the cursor's
//! replacement, that one batch is sent again.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const HEADER: u64 = 13;
const MIN_SEGMENT: u64 = 4096;

#[derive(Debug, thiserror::Error)]
#[error("telemetry buffer {path}: {source}")]
pub struct QueueError {
    path: PathBuf,
    source: std::io::Error,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> QueueError + '_ {
    move |source| QueueError { path: path.to_path_buf(), source }
}

/// What a batch carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    Logs,
    Metrics,
}

impl Signal {
    fn byte(self) -> u8 {
        match self {
            Signal::Logs => 1,
            Signal::Metrics => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Signal> {
        match b {
            1 => Some(Signal::Logs),
            2 => Some(Signal::Metrics),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Signal::Logs => "logs",
            Signal::Metrics => "metrics",
        }
    }
}

/// One export request, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub signal: Signal,
    /// Log records or metric data points inside.
    pub count: u32,
    /// The request body (gzip-compressed protobuf).
    pub body: Vec<u8>,
}

/// A record's place in its segment.
#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: u64,
    len: u64,
    signal: Signal,
    count: u32,
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    size: u64,
    entries: VecDeque<Entry>,
}

pub struct DiskQueue {
    dir: PathBuf,
    limit: u64,
    segment_target: u64,
    /// Oldest first; the last one takes appends. Delivered entries are popped from the front.
    segments: VecDeque<Segment>,
    /// The number of the next segment: always past the cursor's, so a new segment never
    /// inherits the cursor's offset.
    next_seq: u64,
}

impl DiskQueue {
    /// Opens (or creates) the queue in `dir`, holding at most `limit` bytes on disk.
    pub fn open(dir: &Path, limit: u64) -> Result<DiskQueue, QueueError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let mut seqs: Vec<u64> = std::fs::read_dir(dir)
            .map_err(io_error(dir))?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
            .collect();
        seqs.sort_unstable();
        let (cursor_seq, cursor_offset) = read_cursor(&dir.join("cursor"));
        let mut segments = VecDeque::new();
        for seq in seqs {
            let path = segment_path(dir, seq);
            if seq < cursor_seq {
                // Delivered before a crash could delete it.
                std::fs::remove_file(&path).map_err(io_error(&path))?;
                continue;
            }
            let (valid, mut entries) = scan(&path)?;
            let size = std::fs::metadata(&path).map_err(io_error(&path))?.len();
            if valid < size {
                // A torn tail: cut it so appends follow whole records.
                tracing::info!(path = %path.display(), kept = valid, size, "telemetry buffer: cutting a torn record");
                OpenOptions::new().write(true).open(&path).and_then(|f| f.set_len(valid)).map_err(io_error(&path))?;
            }
            if seq == cursor_seq {
                entries.retain(|e| e.offset >= cursor_offset);
            }
            segments.push_back(Segment { seq, size: valid, entries });
        }
        let segment_target = (limit / 8).max(MIN_SEGMENT);
        let next_seq = segments.back().map_or(cursor_seq, |s| s.seq).max(cursor_seq) + 1;
        Ok(DiskQueue { dir: dir.to_path_buf(), limit, segment_target, segments, next_seq })
    }

    pub fn is_empty(&self) -> bool {
        self.segments.iter().all(|s| s.entries.is_empty())
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    /// Undelivered batches.
    pub fn len(&self) -> usize {
        self.segments.iter().map(|s| s.entries.len()).sum()
    }

    /// Appends a batch, durably. To stay within the limit the oldest segments go first; what
    /// was dropped undelivered (by signal: records or data points) is returned.
    pub fn push(&mut self, batch: &Batch) -> Result<Vec<(Signal, u64)>, QueueError> {
        let record = HEADER + batch.body.len() as u64;
        let mut dropped = Vec::new();
        if record > self.limit {
            dropped.push((batch.signal, u64::from(batch.count)));
            return Ok(dropped);
        }
        while self.bytes() + record > self.limit {
            let Some(oldest) = self.segments.pop_front() else { break };
            for e in &oldest.entries {
                dropped.push((e.signal, u64::from(e.count)));
            }
            let path = segment_path(&self.dir, oldest.seq);
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        }
        let needs_new = self.segments.back().is_none_or(|s| s.size + record > self.segment_target && s.size > 0);
        if needs_new {
            let seq = self.next_seq;
            self.next_seq += 1;
            let path = segment_path(&self.dir, seq);
            File::create(&path).map_err(io_error(&path))?;
            File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io_error(&self.dir))?;
            self.segments.push_back(Segment { seq, size: 0, entries: VecDeque::new() });
        }
        let Some(segment) = self.segments.back_mut() else { return Ok(dropped) };
        let path = segment_path(&self.dir, segment.seq);
        let mut bytes = Vec::with_capacity(record as usize);
        bytes.extend_from_slice(&(batch.body.len() as u32).to_le_bytes());
        bytes.push(batch.signal.byte());
        bytes.extend_from_slice(&batch.count.to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&batch.body).to_le_bytes());
        bytes.extend_from_slice(&batch.body);
        let mut file = OpenOptions::new().append(true).open(&path).map_err(io_error(&path))?;
        crate::wear::measured("telemetry-buffer", bytes.len() as u64, || {
            file.write_all(&bytes).and_then(|()| file.sync_data())
        })
        .map_err(io_error(&path))?;
        segment.entries.push_back(Entry {
            offset: segment.size,
            len: batch.body.len() as u64,
            signal: batch.signal,
            count: batch.count,
        });
        segment.size += record;
        Ok(dropped)
    }

    /// The oldest undelivered batch.
    pub fn front(&self) -> Result<Option<Batch>, QueueError> {
        let Some(segment) = self.segments.iter().find(|s| !s.entries.is_empty()) else { return Ok(None) };
        let Some(entry) = segment.entries.front() else { return Ok(None) };
        let path = segment_path(&self.dir, segment.seq);
        let mut file = File::open(&path).map_err(io_error(&path))?;
        file.seek(SeekFrom::Start(entry.offset + HEADER)).map_err(io_error(&path))?;
        let mut body = vec![0u8; entry.len as usize];
        file.read_exact(&mut body).map_err(io_error(&path))?;
        Ok(Some(Batch { signal: entry.signal, count: entry.count, body }))
    }

    /// Marks the oldest batch delivered.
    pub fn pop(&mut self) -> Result<(), QueueError> {
        while self.segments.front().is_some_and(|s| s.entries.is_empty()) && self.segments.len() > 1 {
            self.remove_front()?;
        }
        let Some(segment) = self.segments.front_mut() else { return Ok(()) };
        let Some(entry) = segment.entries.pop_front() else { return Ok(()) };
        let (seq, next) = (segment.seq, entry.offset + HEADER + entry.len);
        if segment.entries.is_empty() && self.segments.len() > 1 {
            self.remove_front()?;
            let next_seq = self.segments.front().map_or(seq + 1, |s| s.seq);
            return self.write_cursor(next_seq, 0);
        }
        self.write_cursor(seq, next)
    }

    fn remove_front(&mut self) -> Result<(), QueueError> {
        if let Some(segment) = self.segments.pop_front() {
            let path = segment_path(&self.dir, segment.seq);
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        }
        Ok(())
    }

    fn write_cursor(&self, seq: u64, offset: u64) -> Result<(), QueueError> {
        let path = self.dir.join("cursor");
        let tmp = self.dir.join("cursor.tmp");
        let cursor = format!("{seq} {offset}\n");
        crate::wear::measured("telemetry-buffer", cursor.len() as u64, || std::fs::write(&tmp, &cursor))
            .map_err(io_error(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_error(&path))
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.seg"))
}

fn read_cursor(path: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().unwrap_or(0));
    (fields.next().unwrap_or(0), fields.next().unwrap_or(0))
}

/// The whole records of a segment: (bytes they span, their entries).
fn scan(path: &Path) -> Result<(u64, VecDeque<Entry>), QueueError> {
    let data = std::fs::read(path).map_err(io_error(path))?;
    let mut entries = VecDeque::new();
    let mut at = 0usize;
    while data.len() >= at + HEADER as usize {
        let word = |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
        let len = word(at) as usize;
        let Some(signal) = Signal::from_byte(data[at + 4]) else { break };
        let count = word(at + 5);
        let crc = word(at + 9);
        let body_start = at + HEADER as usize;
        let Some(body) = data.get(body_start..body_start + len) else { break };
        if crc32fast::hash(body) != crc {
            break;
        }
        entries.push_back(Entry { offset: at as u64, len: len as u64, signal, count });
        at = body_start + len;
    }
    Ok((at as u64, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: u32, size: usize) -> Batch {
        Batch { signal: Signal::Logs, count: n, body: vec![n as u8; size] }
    }

    fn drain(queue: &mut DiskQueue) -> Vec<u32> {
        let mut out = Vec::new();
        while let Some(b) = queue.front().expect("front") {
            out.push(b.count);
            queue.pop().expect("pop");
        }
        out
    }

    #[test]
    fn batches_come_back_in_order_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut queue = DiskQueue::open(dir.path(), 1 << 20).expect("open");
        for n in 1..=50 {
            assert!(queue.push(&batch(n, 3000)).expect("push").is_empty());
        }
        assert!(queue.bytes() > 0);
        for _ in 0..10 {
            queue.pop().expect("pop");
        }
        drop(queue);
        let mut queue = DiskQueue::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(queue.len(), 40);
        assert_eq!(drain(&mut queue), (11..=50).collect::<Vec<_>>());
        assert!(queue.is_empty());
        // Delivered segments are gone from disk.
        let files = std::fs::read_dir(dir.path()).expect("dir").filter_map(Result::ok).count();
        assert!(files <= 3, "{files} files left");
    }

    #[test]
    fn the_oldest_go_first_beyond_the_limit_and_are_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limit = 64 * 1024;
        let mut queue = DiskQueue::open(dir.path(), limit).expect("open");
        let mut dropped = 0;
        for n in 1..=100 {
            dropped += queue.push(&batch(n, 1000)).expect("push").iter().map(|(_, c)| c).sum::<u64>();
            assert!(queue.bytes() <= limit);
        }
        let kept = drain(&mut queue);
        // What is kept is the newest, contiguous; what went is counted exactly.
        assert_eq!(kept.last(), Some(&100));
        assert_eq!(kept, (kept[0]..=100).collect::<Vec<_>>());
        let kept_sum: u64 = kept.iter().map(|&n| u64::from(n)).sum();
        assert_eq!(dropped + kept_sum, (1..=100u64).sum::<u64>());
        // A batch bigger than the whole buffer is dropped at once.
        assert_eq!(queue.push(&batch(7, 100_000)).expect("push"), vec![(Signal::Logs, 7)]);
    }

    #[test]
    fn a_torn_tail_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut queue = DiskQueue::open(dir.path(), 1 << 20).expect("open");
        queue.push(&batch(1, 100)).expect("push");
        queue.push(&batch(2, 100)).expect("push");
        drop(queue);
        let segment = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .find(|e| e.path().extension().is_some_and(|x| x == "seg"))
            .expect("segment")
            .path();
        let mut bytes = std::fs::read(&segment).expect("read");
        bytes.truncate(bytes.len() - 30);
        std::fs::write(&segment, &bytes).expect("write");
        let mut queue = DiskQueue::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(queue.len(), 1);
        queue.push(&batch(3, 100)).expect("push");
        assert_eq!(drain(&mut queue), vec![1, 3]);
    }
}
