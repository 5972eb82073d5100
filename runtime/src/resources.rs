//! Resource quantities (Kubernetes notation) and resource vectors.
//!
//! CPU is counted in millicores (`500m` = half a core, `2` = 2000m), memory and ephemeral storage
//! in bytes (`512Mi`, `2Gi`, `1G`, `1000`), GPUs as whole devices.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::SpecError;

/// Largest CPU request or capacity accepted: 4096 cores.
pub const CPU_MILLIS_MAX: u64 = 4096 * 1000;
/// Largest memory or storage quantity accepted: 64 TiB.
pub const BYTES_MAX: u64 = 64 << 40;
/// Largest GPU count accepted.
pub const GPUS_MAX: u32 = 64;

/// Parses a CPU quantity (`500m`, `2`, `0.5`, `1.25`) into millicores.
pub fn parse_cpu_millis(s: &str) -> Result<u64, SpecError> {
    let bad = |reason: &str| SpecError::Invalid {
        field: "cpu",
        value: s.to_string(),
        reason: reason.to_string(),
    };
    let t = s.trim();
    if t.is_empty() {
        return Err(bad("empty quantity; use e.g. 500m or 2"));
    }
    if t.starts_with('-') {
        return Err(bad("must not be negative"));
    }
    let millis = if let Some(m) = t.strip_suffix('m') {
        m.parse::<u64>()
            .map_err(|_| bad("expected an integer before 'm', e.g. 500m"))?
    } else {
        parse_decimal_scaled(t, 1000).ok_or_else(|| {
            bad("expected cores (2, 0.5) or millicores (500m), at most 3 decimals")
        })?
    };
    if millis > CPU_MILLIS_MAX {
        return Err(bad(&format!(
            "more than the maximum of {} cores",
            CPU_MILLIS_MAX / 1000
        )));
    }
    Ok(millis)
}

/// Parses a byte quantity (`512Mi`, `2Gi`, `1G`, `100k`, `1000`) into bytes.
pub fn parse_bytes(field: &'static str, s: &str) -> Result<u64, SpecError> {
    let bad = |reason: &str| SpecError::Invalid {
        field,
        value: s.to_string(),
        reason: reason.to_string(),
    };
    let t = s.trim();
    if t.is_empty() {
        return Err(bad("empty quantity; use e.g. 512Mi or 2Gi"));
    }
    if t.starts_with('-') {
        return Err(bad("must not be negative"));
    }
    const SUFFIXES: [(&str, u64); 12] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("k", 1_000),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
        ("B", 1),
    ];
    let (num, mult) = SUFFIXES
        .iter()
        .find_map(|(suf, mult)| t.strip_suffix(suf).map(|n| (n, *mult)))
        .unwrap_or((t, 1));
    let bytes = parse_decimal_scaled(num, mult).ok_or_else(|| {
        bad("expected a number with an optional suffix Ki, Mi, Gi, Ti, k, M, G, T")
    })?;
    if bytes > BYTES_MAX {
        return Err(bad("more than the maximum of 64Ti"));
    }
    Ok(bytes)
}

/// `"1.5"` scaled by 1000 = 1500. Exact integer arithmetic; None on syntax error or overflow or
/// when precision would be lost below one unit.
fn parse_decimal_scaled(s: &str, scale: u64) -> Option<u64> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let int_v: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut value = int_v.checked_mul(scale)?;
    if !frac.is_empty() {
        if frac.len() > 18 {
            return None;
        }
        let frac_v: u128 = frac.parse().ok()?;
        let denom: u128 = 10u128.pow(frac.len() as u32);
        let scaled = frac_v * scale as u128;
        if !scaled.is_multiple_of(denom) {
            return None;
        }
        value = value.checked_add(u64::try_from(scaled / denom).ok()?)?;
    }
    Some(value)
}

/// Formats millicores the way they are written: `2`, `500m`.
pub fn format_cpu_millis(m: u64) -> String {
    if m.is_multiple_of(1000) {
        format!("{}", m / 1000)
    } else {
        format!("{m}m")
    }
}

/// Formats bytes with the largest exact binary suffix: `512Mi`, `2Gi`, `1000`.
pub fn format_bytes(b: u64) -> String {
    for (suf, mult) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if b >= mult && b.is_multiple_of(mult) {
            return format!("{}{suf}", b / mult);
        }
    }
    format!("{b}")
}

/// Formats bytes for people, rounded to one decimal: `23.5Gi`, `512Mi`, `100`.
pub fn format_bytes_approx(b: u64) -> String {
    for (suf, mult) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if b >= mult {
            let v = b as f64 / mult as f64;
            return if (v - v.round()).abs() < 0.05 {
                format!("{}{suf}", v.round() as u64)
            } else {
                format!("{v:.1}{suf}")
            };
        }
    }
    format!("{b}")
}

/// A resource vector: a job's request, a worker's capacity, or what is free.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Ephemeral (scratch) storage in bytes.
    pub ephemeral_storage_bytes: u64,
    /// Whole GPU devices.
    pub gpus: u32,
}

impl Resources {
    /// Nothing.
    pub const ZERO: Resources = Resources {
        cpu_millis: 0,
        memory_bytes: 0,
        ephemeral_storage_bytes: 0,
        gpus: 0,
    };

    /// True when `self` fits inside `available` in every dimension.
    pub fn fits_in(&self, available: &Resources) -> bool {
        self.cpu_millis <= available.cpu_millis
            && self.memory_bytes <= available.memory_bytes
            && self.ephemeral_storage_bytes <= available.ephemeral_storage_bytes
            && self.gpus <= available.gpus
    }

    /// Component-wise sum, saturating.
    pub fn saturating_add(&self, o: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(o.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(o.memory_bytes),
            ephemeral_storage_bytes: self
                .ephemeral_storage_bytes
                .saturating_add(o.ephemeral_storage_bytes),
            gpus: self.gpus.saturating_add(o.gpus),
        }
    }

    /// Component-wise difference, saturating at zero.
    pub fn saturating_sub(&self, o: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(o.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(o.memory_bytes),
            ephemeral_storage_bytes: self
                .ephemeral_storage_bytes
                .saturating_sub(o.ephemeral_storage_bytes),
            gpus: self.gpus.saturating_sub(o.gpus),
        }
    }

    /// The names of the dimensions in which `self` does not fit into `available`
    /// (`cpu`, `memory`, `ephemeral-storage`, `gpu`).
    pub fn shortfalls(&self, available: &Resources) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.cpu_millis > available.cpu_millis {
            out.push("cpu");
        }
        if self.memory_bytes > available.memory_bytes {
            out.push("memory");
        }
        if self.ephemeral_storage_bytes > available.ephemeral_storage_bytes {
            out.push("ephemeral-storage");
        }
        if self.gpus > available.gpus {
            out.push("gpu");
        }
        out
    }

    /// Checks every dimension against the absolute maxima.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.cpu_millis > CPU_MILLIS_MAX {
            return Err(SpecError::Invalid {
                field: "cpu",
                value: format_cpu_millis(self.cpu_millis),
                reason: format!("more than the maximum of {} cores", CPU_MILLIS_MAX / 1000),
            });
        }
        for (field, v) in [
            ("memory", self.memory_bytes),
            ("ephemeral storage", self.ephemeral_storage_bytes),
        ] {
            if v > BYTES_MAX {
                return Err(SpecError::Invalid {
                    field,
                    value: format_bytes(v),
                    reason: "more than the maximum of 64Ti".into(),
                });
            }
        }
        if self.gpus > GPUS_MAX {
            return Err(SpecError::Invalid {
                field: "gpu",
                value: self.gpus.to_string(),
                reason: format!("more than the maximum of {GPUS_MAX}"),
            });
        }
        Ok(())
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cpu={} memory={}",
            format_cpu_millis(self.cpu_millis),
            format_bytes(self.memory_bytes)
        )?;
        if self.ephemeral_storage_bytes > 0 {
            write!(f, " storage={}", format_bytes(self.ephemeral_storage_bytes))?;
        }
        if self.gpus > 0 {
            write!(f, " gpu={}", self.gpus)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cpu_quantities_parse_like_kubernetes() {
        assert_eq!(parse_cpu_millis("500m").unwrap(), 500);
        assert_eq!(parse_cpu_millis("2").unwrap(), 2000);
        assert_eq!(parse_cpu_millis("0.5").unwrap(), 500);
        assert_eq!(parse_cpu_millis("1.25").unwrap(), 1250);
        assert!(
            parse_cpu_millis("-1")
                .unwrap_err()
                .to_string()
                .contains("negative")
        );
        assert!(parse_cpu_millis("1.0001").is_err());
        assert!(parse_cpu_millis("abc").is_err());
        assert!(
            parse_cpu_millis("100000")
                .unwrap_err()
                .to_string()
                .contains("maximum")
        );
        assert!(parse_cpu_millis("").is_err());
    }

    #[test]
    fn memory_quantities_parse_like_kubernetes() {
        assert_eq!(parse_bytes("memory", "512Mi").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("memory", "2Gi").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("memory", "1G").unwrap(), 1_000_000_000);
        assert_eq!(parse_bytes("memory", "1.5Gi").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("memory", "1000").unwrap(), 1000);
        assert!(parse_bytes("memory", "-5Mi").is_err());
        assert!(parse_bytes("memory", "5Qi").is_err());
        assert!(
            parse_bytes("memory", "100Pi")
                .unwrap_err()
                .to_string()
                .contains("64Ti")
        );
        let e = parse_bytes("memory", "lots").unwrap_err().to_string();
        assert!(e.contains("memory") && e.contains("lots"), "{e}");
    }

    proptest! {
        #[test]
        fn formatted_quantities_parse_back(cpu in 0u64..CPU_MILLIS_MAX, mem in 0u64..BYTES_MAX) {
            prop_assert_eq!(parse_cpu_millis(&format_cpu_millis(cpu)).unwrap(), cpu);
            prop_assert_eq!(parse_bytes("memory", &format_bytes(mem)).unwrap(), mem);
        }

        #[test]
        fn sub_then_add_never_exceeds(a in 0u64..1_000_000, b in 0u64..1_000_000) {
            let x = Resources { cpu_millis: a, memory_bytes: b, ..Resources::ZERO };
            let y = Resources { cpu_millis: b, memory_bytes: a, ..Resources::ZERO };
            let free = x.saturating_sub(&y);
            prop_assert!(free.fits_in(&x));
        }
    }
}
