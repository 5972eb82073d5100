//! Job output storage: one append-only file per job under `<data_dir>/logs/`, records framed as
//! `[stream u8][attempt u32 LE][len u32 LE][bytes]`. Readers address the log by byte offset;
//! followers long-poll on a per-job notification. Output is capped per attempt (the agent caps
//! too; this is the node's own bound against a misbehaving agent).
//!
//! Logs are not journaled: they are written to the page cache as they arrive and are best effort
//! across a node crash, while control-plane state is durable.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hodei_runtime::JobId;
use tokio::sync::Notify;

use crate::wire::{LogChunk, LogRecord, LogStream};

const RECORD_HEADER: usize = 9;
/// Most log files kept open for appending at once (least recently used are closed).
pub const OPEN_FILES_MAX: usize = 256;

struct Open {
    file: File,
    len: u64,
    attempt: u32,
    attempt_bytes: u64,
    truncated: bool,
    last_use: u64,
}

/// The log store.
pub struct LogStore {
    dir: PathBuf,
    cap_bytes: u64,
    open: Mutex<(HashMap<JobId, Open>, u64)>,
    notify: Mutex<HashMap<JobId, Arc<Notify>>>,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("dir", &self.dir).finish()
    }
}

fn stream_byte(s: LogStream) -> u8 {
    match s {
        LogStream::Stdout => 1,
        LogStream::Stderr => 2,
        LogStream::System => 3,
    }
}

fn byte_stream(b: u8) -> Option<LogStream> {
    match b {
        1 => Some(LogStream::Stdout),
        2 => Some(LogStream::Stderr),
        3 => Some(LogStream::System),
        _ => None,
    }
}

impl LogStore {
    /// Opens (creates) the log directory.
    pub fn open(dir: &Path, cap_bytes: u64) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(dir)?;
        Ok(Arc::new(Self {
            dir: dir.to_path_buf(),
            cap_bytes,
            open: Mutex::new((HashMap::new(), 0)),
            notify: Mutex::new(HashMap::new()),
        }))
    }

    fn path(&self, job: JobId) -> PathBuf {
        self.dir.join(format!("{}.log", job.0))
    }

    /// The notification followers of `job` wait on.
    pub fn notifier(&self, job: JobId) -> Arc<Notify> {
        self.notify
            .lock()
            .expect("log notify lock")
            .entry(job)
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// Wakes followers of `job` (new output, or the job finished).
    pub fn wake(&self, job: JobId) {
        if let Some(n) = self.notify.lock().expect("log notify lock").get(&job) {
            n.notify_waiters();
        }
    }

    /// Appends output of `attempt`. Output beyond the per-attempt cap is dropped; the first drop
    /// writes a System record saying so.
    pub fn append(
        &self,
        job: JobId,
        attempt: u32,
        stream: LogStream,
        data: &[u8],
    ) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        {
            let mut guard = self.open.lock().expect("log lock");
            let (files, clock) = &mut *guard;
            *clock += 1;
            let now = *clock;
            if !files.contains_key(&job) {
                if files.len() >= OPEN_FILES_MAX
                    && let Some(oldest) = files
                        .iter()
                        .min_by_key(|(_, o)| o.last_use)
                        .map(|(k, _)| *k)
                {
                    files.remove(&oldest);
                }
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .read(true)
                    .open(self.path(job))?;
                let len = file.metadata()?.len();
                files.insert(
                    job,
                    Open {
                        file,
                        len,
                        attempt,
                        attempt_bytes: 0,
                        truncated: false,
                        last_use: now,
                    },
                );
            }
            let o = files.get_mut(&job).expect("inserted above");
            o.last_use = now;
            if o.attempt != attempt {
                o.attempt = attempt;
                o.attempt_bytes = 0;
                o.truncated = false;
            }
            if o.truncated {
                return Ok(());
            }
            let room = self.cap_bytes.saturating_sub(o.attempt_bytes) as usize;
            let (take, marker) = if data.len() <= room {
                (data, None)
            } else {
                (
                    &data[..room],
                    Some(format!(
                        "\n[hodei: log truncated at {} bytes]\n",
                        self.cap_bytes
                    )),
                )
            };
            let mut buf = Vec::with_capacity(2 * RECORD_HEADER + take.len() + 64);
            if !take.is_empty() {
                encode_record(&mut buf, attempt, stream, take);
            }
            if let Some(m) = &marker {
                encode_record(&mut buf, attempt, LogStream::System, m.as_bytes());
                o.truncated = true;
            }
            o.file.write_all(&buf)?;
            o.len += buf.len() as u64;
            o.attempt_bytes += take.len() as u64;
        }
        self.wake(job);
        Ok(())
    }

    /// Appends a System note (e.g. an attempt boundary).
    pub fn note(&self, job: JobId, attempt: u32, text: &str) -> std::io::Result<()> {
        let mut guard = self.open.lock().expect("log lock");
        let (files, _) = &mut *guard;
        let mut buf = Vec::new();
        encode_record(&mut buf, attempt, LogStream::System, text.as_bytes());
        if let Some(o) = files.get_mut(&job) {
            o.file.write_all(&buf)?;
            o.len += buf.len() as u64;
        } else {
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(job))?;
            f.write_all(&buf)?;
        }
        drop(guard);
        self.wake(job);
        Ok(())
    }

    /// Closes the job's file (the job finished); readers still read it.
    pub fn close(&self, job: JobId) {
        self.open.lock().expect("log lock").0.remove(&job);
        self.wake(job);
        self.notify.lock().expect("log notify lock").remove(&job);
    }

    /// Deletes the job's log (retention).
    pub fn delete(&self, job: JobId) {
        self.open.lock().expect("log lock").0.remove(&job);
        self.notify.lock().expect("log notify lock").remove(&job);
        let _ = std::fs::remove_file(self.path(job));
    }

    /// Reads whole records from `offset`, at most `max_bytes` of data (at least one record if
    /// any is there). Returns the records and the offset after them.
    pub fn read(
        &self,
        job: JobId,
        offset: u64,
        max_bytes: u32,
    ) -> std::io::Result<(Vec<LogRecord>, u64)> {
        let mut f = match File::open(self.path(job)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], offset)),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        if offset >= len {
            return Ok((vec![], offset));
        }
        f.seek(SeekFrom::Start(offset))?;
        let want = ((max_bytes as u64) + 64 * RECORD_HEADER as u64).min(len - offset) as usize;
        let mut buf = vec![0u8; want];
        f.read_exact(&mut buf)?;
        let mut records = Vec::new();
        let mut pos = 0usize;
        let mut data_bytes = 0u64;
        while pos + RECORD_HEADER <= buf.len() {
            let stream = byte_stream(buf[pos]).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("corrupt log record at offset {}", offset + pos as u64),
                )
            })?;
            let attempt = u32::from_le_bytes(buf[pos + 1..pos + 5].try_into().expect("4 bytes"));
            let n = u32::from_le_bytes(buf[pos + 5..pos + 9].try_into().expect("4 bytes")) as usize;
            if pos + RECORD_HEADER + n > buf.len() {
                if records.is_empty() {
                    // One record larger than the window: read it whole.
                    let mut rec = vec![0u8; n];
                    f.seek(SeekFrom::Start(offset + (pos + RECORD_HEADER) as u64))?;
                    f.read_exact(&mut rec)?;
                    records.push(LogRecord {
                        attempt,
                        stream,
                        data: rec,
                    });
                    pos += RECORD_HEADER + n;
                }
                break;
            }
            if !records.is_empty() && data_bytes + n as u64 > max_bytes as u64 {
                break;
            }
            records.push(LogRecord {
                attempt,
                stream,
                data: buf[pos + RECORD_HEADER..pos + RECORD_HEADER + n].to_vec(),
            });
            data_bytes += n as u64;
            pos += RECORD_HEADER + n;
        }
        Ok((records, offset + pos as u64))
    }

    /// Reads like [`LogStore::read`] and reports whether everything has been read of a finished
    /// job (`finished` comes from the control plane).
    pub fn chunk(
        &self,
        job: JobId,
        offset: u64,
        max_bytes: u32,
        finished: bool,
    ) -> std::io::Result<LogChunk> {
        let (records, next_offset) = self.read(job, offset, max_bytes)?;
        let complete = finished && records.is_empty();
        Ok(LogChunk {
            records,
            next_offset,
            complete,
        })
    }
}

fn encode_record(buf: &mut Vec<u8>, attempt: u32, stream: LogStream, data: &[u8]) {
    buf.push(stream_byte(stream));
    buf.extend_from_slice(&attempt.to_le_bytes());
    buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
    buf.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_read_back_in_order_from_any_record_offset() {
        let d = tempfile::tempdir().unwrap();
        let s = LogStore::open(d.path(), 1 << 20).unwrap();
        let j = JobId(1);
        s.append(j, 1, LogStream::Stdout, b"hello\n").unwrap();
        s.append(j, 1, LogStream::Stderr, b"oops\n").unwrap();
        let (r, off) = s.read(j, 0, 1024).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].data, b"hello\n");
        assert_eq!(r[1].stream, LogStream::Stderr);
        s.append(j, 2, LogStream::Stdout, b"again\n").unwrap();
        let (r, _) = s.read(j, off, 1024).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].attempt, 2);
    }

    #[test]
    fn output_beyond_the_cap_is_dropped_and_marked() {
        let d = tempfile::tempdir().unwrap();
        let s = LogStore::open(d.path(), 10).unwrap();
        let j = JobId(1);
        s.append(j, 1, LogStream::Stdout, b"0123456789abcdef")
            .unwrap();
        s.append(j, 1, LogStream::Stdout, b"more").unwrap();
        let (r, _) = s.read(j, 0, 1 << 20).unwrap();
        assert_eq!(r[0].data, b"0123456789");
        assert_eq!(r[1].stream, LogStream::System);
        assert!(String::from_utf8_lossy(&r[1].data).contains("truncated at 10 bytes"));
        assert_eq!(r.len(), 2);
        // A new attempt gets a fresh budget.
        s.append(j, 2, LogStream::Stdout, b"x").unwrap();
        assert_eq!(s.read(j, 0, 1 << 20).unwrap().0.len(), 3);
    }

    #[test]
    fn reads_are_bounded_by_max_bytes() {
        let d = tempfile::tempdir().unwrap();
        let s = LogStore::open(d.path(), 1 << 20).unwrap();
        let j = JobId(1);
        for _ in 0..100 {
            s.append(j, 1, LogStream::Stdout, &[b'x'; 1000]).unwrap();
        }
        let (r, off) = s.read(j, 0, 10_000).unwrap();
        assert_eq!(r.len(), 10);
        let (r2, _) = s.read(j, off, 1_000_000).unwrap();
        assert_eq!(r2.len(), 90);
    }
}
