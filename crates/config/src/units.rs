//! Human strings for durations ("30s", "250ms") and sizes ("4MiB", "512KiB", "1000").

use serde::{Deserialize, Deserializer};
use std::time::Duration;

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?} ({e}); use e.g. \"30s\" or \"250ms\""))
}

pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num.parse().map_err(|_| format!("invalid size {s:?}; use e.g. \"4MiB\" or \"512KiB\""))?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("unknown size unit {other:?} in {s:?}; use B, KiB, MiB or GiB")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("size {s:?} is too large"))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Num(u64),
    Str(String),
}

pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match NumOrStr::deserialize(d)? {
        NumOrStr::Str(s) => parse_duration(&s).map_err(serde::de::Error::custom),
        NumOrStr::Num(_) => Err(serde::de::Error::custom("durations need a unit, e.g. \"30s\"")),
    }
}

pub(crate) fn size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match NumOrStr::deserialize(d)? {
        NumOrStr::Str(s) => parse_size(&s).map_err(serde::de::Error::custom),
        NumOrStr::Num(n) => usize::try_from(n).map_err(serde::de::Error::custom),
    }
}
