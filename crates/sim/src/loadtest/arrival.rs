//! Open-loop arrival processes: when each call is due, independent of how fast earlier calls came back.
//!
//! A process is a piecewise-constant rate (calls/s) over time: `constant` and `poisson` (one rate), `step`
//! (a rate that changes at given times), `spike` (a base rate with a burst). Gaps are `1/rate` or, with
//! `poisson = true` (always for `kind = "poisson"`), exponentially distributed with mean `1/rate`.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArrivalKind {
    Constant,
    Poisson,
    Step,
    Spike,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    #[serde(deserialize_with = "super::scenario::dur")]
    pub at: Duration,
    pub rate: f64,
}

/// `arrival = { kind = "...", rate = N, ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArrivalSpec {
    pub kind: ArrivalKind,
    /// Calls per second (the base rate for step and spike).
    pub rate: f64,
    #[serde(default)]
    pub poisson: bool,
    /// `step`: later rates, e.g. `steps = [{ at = "5s", rate = 400 }]`.
    #[serde(default)]
    pub steps: Vec<StepSpec>,
    /// `spike`: the burst's rate, start and length.
    #[serde(default)]
    pub spike_rate: Option<f64>,
    #[serde(default, deserialize_with = "opt_dur")]
    pub spike_at: Option<Duration>,
    #[serde(default, deserialize_with = "opt_dur")]
    pub spike_for: Option<Duration>,
}

fn opt_dur<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    super::scenario::dur(d).map(Some)
}

fn rate_ok(r: f64) -> bool {
    r.is_finite() && r >= 0.0
}

impl ArrivalSpec {
    pub fn constant(rate: f64) -> ArrivalSpec {
        ArrivalSpec {
            kind: ArrivalKind::Constant,
            rate,
            poisson: false,
            steps: Vec::new(),
            spike_rate: None,
            spike_at: None,
            spike_for: None,
        }
    }

    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        if !rate_ok(self.rate) {
            return Err(("rate", "must be a number of calls per second, 0 or more".into()));
        }
        match self.kind {
            ArrivalKind::Step if self.steps.is_empty() => {
                Err(("steps", "kind \"step\" needs steps = [{ at = \"5s\", rate = 400 }]".into()))
            }
            ArrivalKind::Step if self.steps.iter().any(|s| !rate_ok(s.rate)) => {
                Err(("steps", "each rate must be a number of calls per second, 0 or more".into()))
            }
            ArrivalKind::Spike => match (self.spike_rate, self.spike_at, self.spike_for) {
                (Some(r), Some(_), Some(_)) if rate_ok(r) => Ok(()),
                _ => Err(("spike_rate", "kind \"spike\" needs spike_rate, spike_at and spike_for".into())),
            },
            ArrivalKind::Constant | ArrivalKind::Poisson if !self.steps.is_empty() || self.spike_rate.is_some() => {
                Err(("kind", "steps and spike_* apply only to kind \"step\" and \"spike\"".into()))
            }
            _ => Ok(()),
        }
    }

    /// `(start s, rate)` phases, sorted by start, the first at 0.
    fn phases(&self) -> Vec<(f64, f64)> {
        let mut p = vec![(0.0, self.rate)];
        match self.kind {
            ArrivalKind::Step => p.extend(self.steps.iter().map(|s| (s.at.as_secs_f64(), s.rate))),
            ArrivalKind::Spike => {
                let at = self.spike_at.unwrap_or_default().as_secs_f64();
                let len = self.spike_for.unwrap_or_default().as_secs_f64();
                p.push((at, self.spike_rate.unwrap_or(self.rate)));
                p.push((at + len, self.rate));
            }
            ArrivalKind::Constant | ArrivalKind::Poisson => {}
        }
        // A stable sort keeps the later of two entries for the same start last, so it wins.
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
        p
    }

    /// The arrival offsets from the start, up to `end`.
    pub fn arrivals(&self, end: Duration, seed: u64) -> Arrivals {
        Arrivals {
            phases: self.phases(),
            poisson: self.poisson || self.kind == ArrivalKind::Poisson,
            rng: StdRng::seed_from_u64(seed),
            next: 0.0,
            end: end.as_secs_f64(),
        }
    }
}

/// Iterator over due times (offsets from the run's start).
pub struct Arrivals {
    phases: Vec<(f64, f64)>,
    poisson: bool,
    rng: StdRng,
    next: f64,
    end: f64,
}

impl Arrivals {
    fn phase(&self, t: f64) -> (f64, Option<f64>) {
        let i = self.phases.iter().rposition(|p| p.0 <= t).unwrap_or(0);
        (self.phases[i].1, self.phases.get(i + 1).map(|p| p.0))
    }
}

impl Iterator for Arrivals {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        loop {
            let t = self.next;
            if t >= self.end {
                return None;
            }
            let (rate, change) = self.phase(t);
            if rate <= 0.0 {
                // Nothing due in this phase: skip to the next one.
                self.next = change?;
                continue;
            }
            let gap = if self.poisson { -(1.0 - self.rng.random::<f64>()).ln() / rate } else { 1.0 / rate };
            // A new phase restarts the gaps at its own rate (a step from 1/s to 1000/s does not wait 1 s). The
            // nanosecond of slack keeps summed float gaps (0.1 × 10) from landing just short of the change.
            self.next = match change {
                Some(c) if t + gap > c - 1e-9 => c,
                _ => t + gap,
            };
            return Some(Duration::from_secs_f64(t));
        }
    }
}
