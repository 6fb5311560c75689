//! Reading a migration's status: where it stands, in a form tests compare and print.

use crate::Vcfm;
use vcfm_api::{MigrationPhase, PhaseName, PhaseStatus};

/// A readable account of where a migration stands (for panic messages).
pub fn summary(m: &Vcfm) -> String {
    let Some(s) = m.status.as_ref() else {
        return "no status".into();
    };
    let mut out = format!("phase {:?}", s.phase);
    if let Some(c) = &s.current_phase_state {
        out += &format!(
            "\ncurrent {} {:?} {}% {:?} waiting for {:?}",
            c.name, c.status, c.progress, c.message, c.waiting_for
        );
    }
    for c in &s.conditions {
        out += &format!(
            "\ncondition {}={} {}: {}",
            c.type_, c.status, c.reason, c.message
        );
    }
    for h in &s.phase_history {
        out += &format!("\n  {} {:?} {}", h.phase, h.status, h.message);
        for l in h.logs.iter().rev().take(6).rev() {
            out += &format!("\n      [{:?}] {}", l.level, l.message);
        }
    }
    if let Some(rb) = &s.rollback {
        out += &format!("\nrollback {rb:?}");
    }
    out
}

/// `phase=seconds` for each finished history entry.
pub fn durations(m: &Vcfm) -> String {
    m.status
        .as_ref()
        .map(|s| {
            s.phase_history
                .iter()
                .filter_map(|h| {
                    let (a, b) = (h.start_time.as_ref()?, h.completion_time.as_ref()?);
                    Some(format!(
                        "{}={:.1}s",
                        h.phase,
                        b.0.duration_since(a.0).as_secs_f64()
                    ))
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

pub fn phase_of(m: &Vcfm) -> Option<MigrationPhase> {
    m.status.as_ref().and_then(|s| s.phase)
}

/// The phase waiting for approval, if any.
pub fn waiting_for_approval(m: &Vcfm) -> Option<PhaseName> {
    let c = m.status.as_ref()?.current_phase_state.as_ref()?;
    (c.status == PhaseStatus::WaitingForApproval).then_some(c.name)
}

/// Final status of each phase in history order.
pub fn history(m: &Vcfm) -> Vec<(PhaseName, PhaseStatus)> {
    m.status
        .as_ref()
        .map(|s| {
            s.phase_history
                .iter()
                .map(|h| (h.phase, h.status))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `phase` completed (or was skipped).
pub fn phase_done(m: &Vcfm, phase: PhaseName) -> bool {
    m.status.as_ref().is_some_and(|s| {
        s.phase_history.iter().any(|h| {
            h.phase == phase && matches!(h.status, PhaseStatus::Completed | PhaseStatus::Skipped)
        })
    })
}

/// The latest status `phase` has in the history.
pub fn phase_status(m: &Vcfm, phase: PhaseName) -> Option<PhaseStatus> {
    m.status
        .as_ref()?
        .phase_history
        .iter()
        .rev()
        .find(|h| h.phase == phase)
        .map(|h| h.status)
}

/// The current phase and its status.
pub fn current(m: &Vcfm) -> Option<(PhaseName, PhaseStatus)> {
    let c = m.status.as_ref()?.current_phase_state.as_ref()?;
    Some((c.name, c.status))
}

/// Status and message of condition `t`.
pub fn condition(m: &Vcfm, t: &str) -> Option<(String, String)> {
    m.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.clone(), c.message.clone()))
}

/// Panics with the summary when any phase failed.
pub fn assert_not_failed(m: &Vcfm) {
    let failed = m.status.as_ref().is_some_and(|s| {
        s.phase_history
            .iter()
            .any(|h| h.status == PhaseStatus::Failed)
    });
    assert!(!failed, "a phase failed:\n{}", summary(m));
}

/// A small deterministic generator (xorshift64*), so a failing seed replays.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    #[allow(clippy::should_implement_trait)] // Not an iterator: it never ends.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}
