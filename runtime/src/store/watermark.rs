//! The acknowledgement watermark: a small file beside the store that records, independently of
//! sled, the highest journal index the node ever acknowledged and the highest ids it handed out.
//!
//! sled recovers its log by truncating it at the first record that fails its checksum, so a
//! flipped byte or a damaged blob can make it open "successfully" without the journal's tail —
//! and the journal's own checksums never see what is gone. The watermark is written (and
//! `fdatasync`ed) after every journal flush and before anything that flush covers is
//! acknowledged, so at start-up `recovered last index < watermark index` proves that
//! acknowledged entries were lost, and the ids in it keep new jobs and workers from reusing ids a
//! client or a container may already hold.
//!
//! Layout: two 64-byte slots written alternately, each
//! `[magic "HODEIWM1"][generation u64][index u64][next_job_id u64][epoch u64]`
//! `[worker_seq_max u64][reserved u64][crc32 u32][0 u32]` (little-endian, the checksum covers the
//! first 56 bytes). A torn write damages only the slot being written, whose value was not yet
//! relied on; the reader takes the valid slot with the higher generation.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"HODEIWM1";
const SLOT_BYTES: usize = 64;
const CHECKED_BYTES: usize = 56;

/// What the watermark records. Every field only grows, except after an accepted data loss
/// (when `index` is set back to the end of the surviving journal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Marks {
    /// Highest journal index that was durable before anything was acknowledged on it.
    pub index: u64,
    /// The state's `next_job_id` at that index: ids below it may be held by clients.
    pub next_job_id: u64,
    /// The fencing epoch at that index.
    pub epoch: u64,
    /// The highest per-pool worker sequence number handed out (worker ids are `<pool>-<n>`).
    pub worker_seq_max: u64,
}

impl Marks {
    /// The larger of two marks, field by field (ids and epochs never go back).
    pub fn max(self, o: Marks) -> Marks {
        Marks {
            index: self.index.max(o.index),
            next_job_id: self.next_job_id.max(o.next_job_id),
            epoch: self.epoch.max(o.epoch),
            worker_seq_max: self.worker_seq_max.max(o.worker_seq_max),
        }
    }
}

/// Errors reading or writing the watermark.
#[derive(Debug, thiserror::Error)]
pub enum WatermarkError {
    /// An I/O error.
    #[error("acknowledgement watermark {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Neither slot holds a valid record.
    #[error(
        "acknowledgement watermark {path} is corrupt (neither of its two records passes its checksum)"
    )]
    Corrupt {
        /// The file.
        path: String,
    },
}

/// The open watermark file.
#[derive(Debug)]
pub struct Watermark {
    path: PathBuf,
    file: File,
    generation: u64,
    marks: Marks,
}

fn encode_slot(generation: u64, m: &Marks) -> [u8; SLOT_BYTES] {
    let mut b = [0u8; SLOT_BYTES];
    b[0..8].copy_from_slice(MAGIC);
    for (i, v) in [
        generation,
        m.index,
        m.next_job_id,
        m.epoch,
        m.worker_seq_max,
        0,
    ]
    .iter()
    .enumerate()
    {
        b[8 + i * 8..16 + i * 8].copy_from_slice(&v.to_le_bytes());
    }
    let crc = crc32fast::hash(&b[..CHECKED_BYTES]);
    b[56..60].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode_slot(b: &[u8]) -> Option<(u64, Marks)> {
    if b.len() < SLOT_BYTES || &b[0..8] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(b[56..60].try_into().ok()?);
    if crc32fast::hash(&b[..CHECKED_BYTES]) != crc {
        return None;
    }
    let u = |i: usize| u64::from_le_bytes(b[8 + i * 8..16 + i * 8].try_into().expect("8 bytes"));
    Some((
        u(0),
        Marks {
            index: u(1),
            next_job_id: u(2),
            epoch: u(3),
            worker_seq_max: u(4),
        },
    ))
}

/// Reads the newest valid record of the file's contents.
fn newest(bytes: &[u8]) -> Option<(u64, Marks)> {
    [0, SLOT_BYTES]
        .iter()
        .filter_map(|&o| bytes.get(o..o + SLOT_BYTES).and_then(decode_slot))
        .max_by_key(|(g, _)| *g)
}

fn fsync_dir(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Watermark {
    /// The watermark file of the store in `store_dir` (`<store_dir>.watermark`, beside it, so
    /// that moving a damaged store aside keeps it).
    pub fn path_for(store_dir: &Path) -> PathBuf {
        let mut name = store_dir
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "store".into());
        name.push(".watermark");
        store_dir.with_file_name(name)
    }

    /// Reads the marks of an existing watermark file without opening it for writing
    /// (`Ok(None)`: there is no file).
    pub fn read(path: &Path) -> Result<Option<Marks>, WatermarkError> {
        let io = |source| WatermarkError::Io {
            path: path.display().to_string(),
            source,
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        newest(&bytes)
            .map(|(_, m)| Some(m))
            .ok_or_else(|| WatermarkError::Corrupt {
                path: path.display().to_string(),
            })
    }

    /// Opens the file, creating it (durably) with `initial` marks when it does not exist.
    /// Returns the open watermark and whether it was created.
    pub fn open_or_create(
        path: &Path,
        initial: Marks,
    ) -> Result<(Watermark, bool), WatermarkError> {
        let io = |source| WatermarkError::Io {
            path: path.display().to_string(),
            source,
        };
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(mut file) => {
                let mut bytes = Vec::with_capacity(2 * SLOT_BYTES);
                file.read_to_end(&mut bytes).map_err(io)?;
                let (generation, marks) =
                    newest(&bytes).ok_or_else(|| WatermarkError::Corrupt {
                        path: path.display().to_string(),
                    })?;
                Ok((
                    Watermark {
                        path: path.to_path_buf(),
                        file,
                        generation,
                        marks,
                    },
                    false,
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok((Self::create(path, initial)?, true))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Creates (or replaces) the file with `marks` in both slots, durably: written to a
    /// temporary file, synced, renamed over, and the directory synced.
    pub fn create(path: &Path, marks: Marks) -> Result<Watermark, WatermarkError> {
        let io = |source| WatermarkError::Io {
            path: path.display().to_string(),
            source,
        };
        let tmp = path.with_extension("watermark.tmp");
        {
            let mut f = File::create(&tmp).map_err(io)?;
            f.write_all(&encode_slot(1, &marks)).map_err(io)?;
            f.write_all(&encode_slot(0, &marks)).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)?;
        fsync_dir(path).map_err(io)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        Ok(Watermark {
            path: path.to_path_buf(),
            file,
            generation: 1,
            marks,
        })
    }

    /// The marks last written.
    pub fn marks(&self) -> Marks {
        self.marks
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Durably records `marks` (into the older slot, then `fdatasync`). Nothing is written when
    /// they equal the last marks written.
    pub fn write(&mut self, marks: Marks) -> Result<(), WatermarkError> {
        if marks == self.marks {
            return Ok(());
        }
        let generation = self.generation + 1;
        let slot = (generation % 2) * SLOT_BYTES as u64;
        let io = |source| WatermarkError::Io {
            path: self.path.display().to_string(),
            source,
        };
        self.file.seek(SeekFrom::Start(slot)).map_err(io)?;
        self.file
            .write_all(&encode_slot(generation, &marks))
            .map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.generation = generation;
        self.marks = marks;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(i: u64) -> Marks {
        Marks {
            index: i,
            next_job_id: i * 2,
            epoch: 3,
            worker_seq_max: 4,
        }
    }

    #[test]
    fn the_newest_written_marks_are_read_back_after_a_reopen() {
        let d = tempfile::tempdir().unwrap();
        let p = Watermark::path_for(&d.path().join("store"));
        assert_eq!(p, d.path().join("store.watermark"));
        assert_eq!(Watermark::read(&p).unwrap(), None);
        let (mut w, created) = Watermark::open_or_create(&p, Marks::default()).unwrap();
        assert!(created);
        for i in 1..=5 {
            w.write(m(i)).unwrap();
        }
        drop(w);
        assert_eq!(Watermark::read(&p).unwrap(), Some(m(5)));
        let (w, created) = Watermark::open_or_create(&p, Marks::default()).unwrap();
        assert!(!created);
        assert_eq!(w.marks(), m(5));
    }

    #[test]
    fn a_torn_write_of_one_slot_falls_back_to_the_other() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("store.watermark");
        let (mut w, _) = Watermark::open_or_create(&p, Marks::default()).unwrap();
        w.write(m(7)).unwrap();
        w.write(m(8)).unwrap();
        drop(w);
        // Damage the slot holding m(8): the reader takes m(7), never a mixture.
        let mut bytes = std::fs::read(&p).unwrap();
        let newest_slot = (0..2)
            .find(|s| decode_slot(&bytes[s * SLOT_BYTES..]).is_some_and(|(_, x)| x == m(8)))
            .unwrap();
        bytes[newest_slot * SLOT_BYTES + 20] ^= 0xff;
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(Watermark::read(&p).unwrap(), Some(m(7)));
        // Both slots damaged: corrupt, never zero.
        bytes[(1 - newest_slot) * SLOT_BYTES + 20] ^= 0xff;
        std::fs::write(&p, &bytes).unwrap();
        assert!(matches!(
            Watermark::read(&p),
            Err(WatermarkError::Corrupt { .. })
        ));
    }

    #[test]
    fn marks_combine_field_by_field() {
        let a = Marks {
            index: 5,
            next_job_id: 1,
            epoch: 9,
            worker_seq_max: 0,
        };
        let b = Marks {
            index: 2,
            next_job_id: 8,
            epoch: 1,
            worker_seq_max: 3,
        };
        assert_eq!(
            a.max(b),
            Marks {
                index: 5,
                next_job_id: 8,
                epoch: 9,
                worker_seq_max: 3
            }
        );
    }
}
