//! The runtime crate's error types.

use thiserror::Error;

/// A value given by a user (job spec, quantity, id) that is not acceptable. The message names the
/// field, the value and the reason.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum SpecError {
    /// A field holds an invalid value.
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        /// The field that was wrong.
        field: &'static str,
        /// The offending value, as given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// A required field was missing.
    #[error("missing {field}: {reason}")]
    Missing {
        /// The missing field.
        field: &'static str,
        /// What it is for.
        reason: String,
    },
    /// A scheduling constraint (selector, affinity, toleration, profile, deadline) is invalid.
    #[error(transparent)]
    Scheduling(#[from] crate::scheduling::SchedulingError),
}

/// Errors of the durable store (journal and snapshots).
#[derive(Debug, Error)]
pub enum StoreError {
    /// sled failed (I/O error, corruption detected by sled, data dir locked by another process).
    #[error("store at {path}: {source}")]
    Sled {
        /// The database directory.
        path: String,
        /// The underlying error.
        #[source]
        source: sled::Error,
    },
    /// The data was written by a different on-disk format version.
    #[error(
        "data in {path} was written with store format version {found}, but this build of hodei reads only version {expected}; \
         refusing to open it (use the hodei release that wrote it, or move the directory aside to start empty)"
    )]
    FormatVersion {
        /// The database directory.
        path: String,
        /// The version found on disk.
        found: u32,
        /// The version this build understands.
        expected: u32,
    },
    /// A record failed its checksum or could not be decoded.
    #[error("corrupt {what} in {path}: {reason}")]
    Corrupt {
        /// The database directory.
        path: String,
        /// Which record (e.g. "journal entry 17").
        what: String,
        /// Why it was refused.
        reason: String,
    },
    /// Replaying the journal over a snapshot failed: the data is inconsistent.
    #[error("journal replay failed at entry {index}: {reason}")]
    Replay {
        /// The entry that failed.
        index: u64,
        /// Why.
        reason: String,
    },
    /// sled found its files damaged (a flipped byte, a truncated or corrupt blob).
    #[error(
        "the store at {path} is damaged: {detail}. Refusing to start: entries up to {acked} were acknowledged to clients. \
         Restore a backup (`hodei operator snapshot restore FILE` into an empty data directory), or start once with \
         --accept-data-loss to move the damaged store aside and continue from what can be read (the loss is recorded in \
         the journal; job ids are not reused)"
    )]
    Damaged {
        /// The database directory.
        path: String,
        /// What sled reported.
        detail: String,
        /// The highest acknowledged index (from the watermark).
        acked: u64,
    },
    /// The journal that could be recovered ends before the last acknowledged entry.
    #[error(
        "the store at {path} recovered its journal only up to entry {recovered}, but entry {acked} was acknowledged \
         to clients ({watermark}): acknowledged data was lost ({detail}). Refusing to start. Restore a backup \
         (`hodei operator snapshot restore FILE` into an empty data directory), or start once with --accept-data-loss \
         to continue from entry {recovered} (the loss is recorded in the journal; job ids are not reused)"
    )]
    DataLoss {
        /// The database directory.
        path: String,
        /// The highest acknowledged index.
        acked: u64,
        /// Where the recovered journal ends.
        recovered: u64,
        /// The watermark file.
        watermark: String,
        /// What recovery found.
        detail: String,
    },
    /// The store holds data but its acknowledgement watermark is missing.
    #[error(
        "the store at {path} holds data but its acknowledgement watermark {watermark} is missing, so it cannot be \
         checked for lost acknowledged entries. Refusing to start. Restore the file or a backup, or start once with \
         --accept-data-loss to accept the store as it is"
    )]
    WatermarkMissing {
        /// The database directory.
        path: String,
        /// The watermark file.
        watermark: String,
    },
    /// The acknowledgement watermark could not be read or written.
    #[error("{0}")]
    Watermark(String),
    /// Encoding a record failed.
    #[error("encoding {what}: {reason}")]
    Encode {
        /// Which record.
        what: String,
        /// Why.
        reason: String,
    },
}
