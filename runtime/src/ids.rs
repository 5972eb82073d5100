//! Newtype identifiers. Ids are never bare strings or integers in Hodei's APIs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::SpecError;

/// A job's id: a number allocated by the control plane in submission order (shown as `42`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for JobId {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.trim().trim_start_matches("j-");
        digits
            .parse::<u64>()
            .map(JobId)
            .map_err(|_| SpecError::Invalid {
                field: "job id",
                value: s.to_string(),
                reason: "a job id is a positive number, e.g. 42".into(),
            })
    }
}

/// Attempt number of a job: 1 for the first run, incremented on every retry, lost attempt or
/// preemption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttemptNo(pub u32);

impl fmt::Display for AttemptNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The control plane's fencing epoch. On a single node it is incremented every time the node
/// starts (so results from before a restart are recognised as stale); in a cluster it is the
/// leader's term.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Maximum length of a name-like id (worker, pool, node, tenant).
pub const NAME_LEN_MAX: usize = 63;

fn validate_name(field: &'static str, s: &str) -> Result<(), SpecError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if s.is_empty() {
        return Err(SpecError::Invalid {
            field,
            value: s.into(),
            reason: "must not be empty".into(),
        });
    }
    if s.len() > NAME_LEN_MAX {
        return Err(SpecError::Invalid {
            field,
            value: s.into(),
            reason: format!("longer than {NAME_LEN_MAX} characters"),
        });
    }
    if !s.chars().all(ok_char) {
        return Err(SpecError::Invalid {
            field,
            value: s.into(),
            reason: "only ASCII letters, digits, '-', '_' and '.' are allowed".into(),
        });
    }
    Ok(())
}

macro_rules! name_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps a name.
            pub fn new(s: impl Into<String>) -> Result<Self, SpecError> {
                let s = s.into();
                validate_name($field, &s)?;
                Ok(Self(s))
            }
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = SpecError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }
    };
}

name_id!(
    /// A worker's id, unique within a cluster (e.g. `local-3`).
    WorkerId,
    "worker id"
);
name_id!(
    /// A pool's name as given in config (e.g. `local`).
    PoolId,
    "pool name"
);
name_id!(
    /// A control-plane node's configured name (e.g. `node-1`).
    NodeId,
    "node name"
);
name_id!(
    /// A tenant (team, project): the unit of quotas and fairness. `default` when not given.
    TenantId,
    "tenant"
);

impl Default for TenantId {
    fn default() -> Self {
        Self("default".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_parse_with_or_without_prefix() {
        assert_eq!("42".parse::<JobId>().unwrap(), JobId(42));
        assert_eq!("j-7".parse::<JobId>().unwrap(), JobId(7));
        assert!("x".parse::<JobId>().is_err());
    }

    #[test]
    fn names_reject_bad_characters_and_length() {
        assert!(WorkerId::new("local-1").is_ok());
        assert!(WorkerId::new("").is_err());
        assert!(PoolId::new("a b").is_err());
        assert!(TenantId::new("x".repeat(64)).is_err());
        let err = PoolId::new("a/b").unwrap_err().to_string();
        assert!(err.contains("pool name"), "{err}");
    }
}
