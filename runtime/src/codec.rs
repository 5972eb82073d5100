//! The one place that knows the binary encoding (bincode 2, serde mode, standard config), so it
//! can be swapped. Decoding is bounded: a length prefix can never make it allocate past the limit.
//!
//! bincode's serde mode does not support `#[serde(flatten)]`, `untagged` enums or
//! `skip_serializing_if`; encoded types keep to plain structs and enums (every wire and store
//! type has a round-trip test).

use bincode::config::{self, Config};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// Largest value decoded from the network (a frame is capped at 16 MiB by the transport).
pub const WIRE_DECODE_LIMIT_BYTES: usize = 16 << 20;
/// Largest value decoded from the store (a snapshot of a very large state).
pub const STORE_DECODE_LIMIT_BYTES: usize = 1 << 30;

/// Encoding or decoding failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// Could not encode.
    #[error("encode failed: {0}")]
    Encode(String),
    /// Could not decode (truncated, malformed, or over the size limit).
    #[error("decode failed: {0}")]
    Decode(String),
    /// Bytes left over after the value: not the type we expected.
    #[error("decode failed: {0} trailing bytes after the value")]
    Trailing(usize),
}

fn wire_config() -> impl Config {
    config::standard().with_limit::<WIRE_DECODE_LIMIT_BYTES>()
}

fn store_config() -> impl Config {
    config::standard().with_limit::<STORE_DECODE_LIMIT_BYTES>()
}

/// Encodes a value.
pub fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(v, config::standard())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a value received from the network; all bytes must be consumed.
pub fn decode_wire<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (v, used) = bincode::serde::decode_from_slice(bytes, wire_config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(v)
}

/// Decodes a value read from the store; all bytes must be consumed.
pub fn decode_store<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (v, used) = bincode::serde::decode_from_slice(bytes, store_config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let r: Result<Vec<String>, _> = decode_wire(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert!(r.is_err());
        let r: Result<u8, _> = decode_wire(&[1, 2]);
        assert_eq!(r, Err(CodecError::Trailing(1)));
    }

    #[test]
    fn a_huge_length_prefix_does_not_allocate() {
        // varint 0xfd + u64::MAX/2 as the length of a Vec<u8>
        let mut b = vec![0xfd];
        b.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
        let r: Result<Vec<u8>, _> = decode_wire(&b);
        assert!(r.is_err());
    }
}
