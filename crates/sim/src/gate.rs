//! The regression gate's arithmetic: instructions per `tools/call` from two callgrind runs, and the comparison
//! against a checked-in baseline (`bench/callgrind-baseline.json`, driven by `bench/gate.sh`).
//!
//! Instruction counts come from callgrind, so they do not depend on the machine's load the way wall-clock time
//! does. Each case is run twice with the same warmup and a different number of measured calls; the difference of
//! the two totals divided by the difference of the call counts cancels startup, warmup and shutdown, leaving what one
//! more call costs. [`per_call`] does that; [`compare`] decides pass/fail with a relative tolerance.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The default tolerance: a case fails when it costs more than 10 % over its baseline.
pub const DEFAULT_TOLERANCE: f64 = 0.10;

/// `bench/callgrind-baseline.json`, and the measured file `bench/gate.sh` writes in the same shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Relative tolerance; absent = [`DEFAULT_TOLERANCE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// Free text: where and how the numbers were taken.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// Case name → instructions per `tools/call`.
    pub cases: BTreeMap<String, u64>,
}

/// What became of one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Within the tolerance either way.
    Pass,
    /// More than the tolerance over the baseline: the gate fails.
    Regressed,
    /// More than the tolerance under the baseline: passes, and the baseline should be lowered to keep the gain.
    Improved,
    /// In the baseline but not measured: the gate fails (a case silently dropped is not a pass).
    Missing,
    /// Measured but not in the baseline: passes, reported so it gets added.
    New,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub case: String,
    pub baseline: Option<u64>,
    pub measured: Option<u64>,
    /// `measured / baseline - 1` when both exist.
    pub change: Option<f64>,
    pub status: Status,
}

impl Verdict {
    pub fn fails(&self) -> bool {
        matches!(self.status, Status::Regressed | Status::Missing)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let change = self.change.map_or_else(|| "-".to_owned(), |c| format!("{:+.1}%", c * 100.0));
        let status = match self.status {
            Status::Pass => "ok",
            Status::Regressed => "REGRESSED",
            Status::Improved => "improved (lower the baseline: bench/gate.sh --update)",
            Status::Missing => "MISSING (not measured)",
            Status::New => "new (not in the baseline: bench/gate.sh --update)",
        };
        write!(
            f,
            "{:<24} baseline {:>10}  measured {:>10}  {:>8}  {status}",
            self.case,
            n(self.baseline),
            n(self.measured),
            change
        )
    }
}

/// Compare every case of `measured` with `baseline`. `tolerance` is relative (0.10 = 10 %); a change exactly at
/// the tolerance passes.
pub fn compare(baseline: &Baseline, measured: &BTreeMap<String, u64>, tolerance: f64) -> Vec<Verdict> {
    let mut out = Vec::new();
    for (case, &base) in &baseline.cases {
        let Some(&m) = measured.get(case) else {
            out.push(Verdict {
                case: case.clone(),
                baseline: Some(base),
                measured: None,
                change: None,
                status: Status::Missing,
            });
            continue;
        };
        let change = if base == 0 {
            if m == 0 {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            m as f64 / base as f64 - 1.0
        };
        // A hair of slack so that a change of exactly the tolerance is not failed by rounding (1.1 / 1.0 - 1 > 0.1).
        let status = if change > tolerance + 1e-9 {
            Status::Regressed
        } else if change < -tolerance - 1e-9 {
            Status::Improved
        } else {
            Status::Pass
        };
        out.push(Verdict { case: case.clone(), baseline: Some(base), measured: Some(m), change: Some(change), status });
    }
    for (case, &m) in measured {
        if !baseline.cases.contains_key(case) {
            out.push(Verdict {
                case: case.clone(),
                baseline: None,
                measured: Some(m),
                change: None,
                status: Status::New,
            });
        }
    }
    out
}

/// Whether the gate passes: no case regressed or went missing.
pub fn passes(verdicts: &[Verdict]) -> bool {
    !verdicts.iter().any(Verdict::fails)
}

/// What one more call costs, from two runs of the same case: `(total_b - total_a) / (calls_b - calls_a)`, rounded.
/// `None` when run B did not make more calls or did not cost more (the runs are not comparable).
pub fn per_call(total_a: u64, calls_a: u64, total_b: u64, calls_b: u64) -> Option<u64> {
    if calls_b <= calls_a || total_b <= total_a {
        return None;
    }
    let d = (total_b - total_a) as f64 / (calls_b - calls_a) as f64;
    Some(d.round() as u64)
}

/// The total instruction count (event `Ir`) of a callgrind output file: its `summary:` line, or the `totals:` line
/// when there is no summary. With several events, `Ir` is the first (callgrind's default order).
pub fn callgrind_total(text: &str) -> Option<u64> {
    let pick = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    pick("summary:").or_else(|| pick("totals:"))
}

/// Inclusive cost per function from `callgrind_annotate --inclusive=yes` output: lines such as
/// `1,234,567 (12.34%)  file.rs:crate::module::function [/path/to/bin]`. The key is the text after the first
/// `:` that follows the cost (the function, without the file and the object). Callgrind splits a function whose
/// code was inlined from several files into one entry per file; the largest entry is kept, a lower bound of the
/// function's inclusive cost. Call lines of the source annotation (`=> file:callee (Nx)`) are skipped.
pub fn annotate_inclusive(text: &str) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim_start();
        let Some((cost, rest)) = line.split_once(' ') else { continue };
        if cost.is_empty() || !cost.bytes().all(|b| b.is_ascii_digit() || b == b',') {
            continue;
        }
        let Ok(cost) = cost.replace(',', "").parse::<u64>() else { continue };
        let rest = rest.trim_start();
        // Optional "(12.34%)".
        let rest = match rest.strip_prefix('(') {
            Some(r) => r.split_once(')').map_or(r, |(_, after)| after).trim_start(),
            None => rest,
        };
        // Call lines of the source annotation ("=> file:callee (Nx)") are not function totals.
        if rest.starts_with("=>") || rest.starts_with('<') || rest.starts_with('*') {
            continue;
        }
        // "file:function [object]" — the file may be "???".
        let Some((_, func)) = rest.split_once(':') else { continue };
        let func = match func.rfind(" [") {
            Some(i) if func.ends_with(']') => &func[..i],
            _ => func,
        };
        let e = out.entry(func.trim().to_owned()).or_default();
        *e = (*e).max(cost);
    }
    out
}

/// Per-call inclusive cost of each function between two annotated runs (B made `calls` more calls than A).
/// Functions whose cost did not grow are left out.
pub fn per_call_functions(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>, calls: u64) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    if calls == 0 {
        return out;
    }
    for (f, &cb) in b {
        let ca = a.get(f).copied().unwrap_or(0);
        if cb > ca {
            out.insert(f.clone(), ((cb - ca) as f64 / calls as f64).round() as u64);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(cases: &[(&str, u64)]) -> Baseline {
        Baseline { tolerance: None, note: String::new(), cases: cases.iter().map(|(k, v)| ((*k).into(), *v)).collect() }
    }

    fn measured(cases: &[(&str, u64)]) -> BTreeMap<String, u64> {
        cases.iter().map(|(k, v)| ((*k).into(), *v)).collect()
    }

    #[test]
    fn within_tolerance_passes_both_ways() {
        let v = compare(&base(&[("c", 100_000)]), &measured(&[("c", 109_000)]), 0.10);
        assert_eq!(v[0].status, Status::Pass);
        let v = compare(&base(&[("c", 100_000)]), &measured(&[("c", 91_000)]), 0.10);
        assert_eq!(v[0].status, Status::Pass);
        assert!(passes(&v));
    }

    #[test]
    fn exactly_at_tolerance_passes() {
        let v = compare(&base(&[("c", 100_000)]), &measured(&[("c", 110_000)]), 0.10);
        assert_eq!(v[0].status, Status::Pass, "{}", v[0]);
    }

    #[test]
    fn over_tolerance_fails() {
        let v = compare(&base(&[("c", 100_000), ("d", 200_000)]), &measured(&[("c", 100_000), ("d", 220_001)]), 0.10);
        assert_eq!(v[0].status, Status::Pass);
        assert_eq!(v[1].status, Status::Regressed);
        assert!((v[1].change.unwrap_or_default() - 0.100005).abs() < 1e-9);
        assert!(!passes(&v));
        assert!(v[1].to_string().contains("REGRESSED"));
    }

    #[test]
    fn big_improvement_passes_and_says_so() {
        let v = compare(&base(&[("c", 100_000)]), &measured(&[("c", 50_000)]), 0.10);
        assert_eq!(v[0].status, Status::Improved);
        assert!(passes(&v));
    }

    #[test]
    fn a_missing_case_fails_and_a_new_one_passes() {
        let v = compare(&base(&[("c", 1)]), &measured(&[("x", 5)]), 0.10);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].status, Status::Missing);
        assert_eq!(v[1].status, Status::New);
        assert!(!passes(&v));
        let v = compare(&base(&[]), &measured(&[("x", 5)]), 0.10);
        assert!(passes(&v));
    }

    #[test]
    fn zero_baseline() {
        assert_eq!(compare(&base(&[("c", 0)]), &measured(&[("c", 0)]), 0.1)[0].status, Status::Pass);
        assert_eq!(compare(&base(&[("c", 0)]), &measured(&[("c", 1)]), 0.1)[0].status, Status::Regressed);
    }

    #[test]
    fn per_call_is_the_slope() {
        // 1M fixed + 150k per call: 50 calls vs 250 calls.
        assert_eq!(per_call(1_000_000 + 50 * 150_000, 50, 1_000_000 + 250 * 150_000, 250), Some(150_000));
        assert_eq!(per_call(10, 3, 21, 5), Some(6)); // 5.5 rounds up
        assert_eq!(per_call(10, 5, 20, 5), None);
        assert_eq!(per_call(20, 5, 10, 10), None);
    }

    #[test]
    fn baseline_json_round_trip() {
        let text = r#"{"tolerance":0.1,"note":"n","cases":{"c_off":150000,"d_auth":190000}}"#;
        let b: Baseline = serde_json::from_str(text).expect("parses");
        assert_eq!(b.tolerance, Some(0.1));
        assert_eq!(b.cases["d_auth"], 190_000);
        let again: Baseline = serde_json::from_str(&serde_json::to_string(&b).expect("ser")).expect("de");
        assert_eq!(again, b);
        let minimal: Baseline = serde_json::from_str(r#"{"cases":{}}"#).expect("parses");
        assert_eq!(minimal.tolerance, None);
    }

    #[test]
    fn total_from_callgrind_output() {
        let out = "version: 1\ncreator: callgrind-3.22.0\nevents: Ir\nfl=(1) a.rs\nfn=(1) f\n16 3\nsummary: 123456789\n\ntotals: 123456789\n";
        assert_eq!(callgrind_total(out), Some(123_456_789));
        assert_eq!(callgrind_total("events: Ir Dr\ntotals: 42 7\n"), Some(42));
        assert_eq!(callgrind_total("nothing here"), None);
    }

    #[test]
    fn annotate_lines() {
        let text = "\
--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
300,000 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                  file:function
--------------------------------------------------------------------------------
250,000 (83.33%)  ???:std::sys::pal::unix::thread::Thread::new::thread_start [/bin/portcullis]
 12,345 ( 4.12%)  crates/protocol/src/message.rs:portcullis_protocol::message::Message::parse [/bin/portcullis]
  9,000 ( 3.00%)  ???:<hyper::proto::h1::role::Server as hyper::proto::h1::Http1Transaction>::parse [/bin/portcullis]
  8,000           ???:malloc
  5,000 ( 1.00%)  /src/x.rs:portcullis_protocol::message::Message::parse
1,692,160 ( 0.66%)  => /work/crates/protocol/src/raw.rs:portcullis_protocol::raw::RawObject::parse (550x)
";
        let m = annotate_inclusive(text);
        assert_eq!(m["portcullis_protocol::message::Message::parse"], 12_345);
        assert_eq!(m["<hyper::proto::h1::role::Server as hyper::proto::h1::Http1Transaction>::parse"], 9_000);
        assert_eq!(m["std::sys::pal::unix::thread::Thread::new::thread_start"], 250_000);
        assert_eq!(m["malloc"], 8_000);
        assert!(!m.contains_key("PROGRAM TOTALS"));
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn per_function_slope() {
        let a = measured(&[("f", 1_000), ("g", 500), ("h", 10)]);
        let b = measured(&[("f", 21_000), ("g", 500), ("k", 400)]);
        let p = per_call_functions(&a, &b, 200);
        assert_eq!(p["f"], 100);
        assert_eq!(p["k"], 2);
        assert!(!p.contains_key("g"));
        assert!(per_call_functions(&a, &b, 0).is_empty());
    }
}
