//! Standard `metav1.Condition` handling: one entry per type, and a
//! `lastTransitionTime` that moves only when the status does.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The condition types vcfm writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionType {
    /// A phase or rollback is being worked on.
    Progressing,
    /// Manual mode: a phase waits for approval.
    WaitingForApproval,
    /// `state: Paused` is in effect.
    Paused,
    /// A phase failed; the message says what to do.
    Failed,
    /// Every phase completed.
    Completed,
    /// A rollback finished (False when some step failed).
    RolledBack,
    /// A rollback request was refused (point of no return).
    RollbackRefused,
    /// Another migration is active in this cluster.
    Blocked,
    /// A rollback step is past its deadline; the message says what it waits for.
    Stalled,
    /// Deletion is held (past the point of no return) until forced.
    DeletionBlocked,
}

impl ConditionType {
    pub const fn as_str(self) -> &'static str {
        match self {
            ConditionType::Progressing => "Progressing",
            ConditionType::WaitingForApproval => "WaitingForApproval",
            ConditionType::Paused => "Paused",
            ConditionType::Failed => "Failed",
            ConditionType::Completed => "Completed",
            ConditionType::RolledBack => "RolledBack",
            ConditionType::RollbackRefused => "RollbackRefused",
            ConditionType::Blocked => "Blocked",
            ConditionType::Stalled => "Stalled",
            ConditionType::DeletionBlocked => "DeletionBlocked",
        }
    }
}

/// Finds a condition by type.
pub fn find(conds: &[Condition], t: ConditionType) -> Option<&Condition> {
    conds.iter().find(|c| c.type_ == t.as_str())
}

/// Whether the condition is present with status True.
pub fn is_true(conds: &[Condition], t: ConditionType) -> bool {
    find(conds, t).is_some_and(|c| c.status == "True")
}

/// Sets a condition. Returns true when its status changed (callers emit an
/// Event only then, so a repeated reconcile does not repeat the Event).
pub fn set(
    conds: &mut Vec<Condition>,
    t: ConditionType,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> bool {
    let status = if status { "True" } else { "False" }.to_string();
    match conds.iter_mut().find(|c| c.type_ == t.as_str()) {
        Some(c) => {
            let changed = c.status != status;
            if changed {
                c.last_transition_time = Time(now);
            }
            c.status = status;
            c.reason = reason.to_string();
            c.message = message.to_string();
            c.observed_generation = generation;
            changed
        }
        None => {
            conds.push(Condition {
                type_: t.as_str().to_string(),
                status,
                reason: reason.to_string(),
                message: message.to_string(),
                observed_generation: generation,
                last_transition_time: Time(now),
            });
            true
        }
    }
}

/// Removes a condition that no longer applies. Returns true when one was removed.
pub fn remove(conds: &mut Vec<Condition>, t: ConditionType) -> bool {
    let before = conds.len();
    conds.retain(|c| c.type_ != t.as_str());
    before != conds.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let t2 = Timestamp::from_second(3_000).unwrap();
        let mut c = vec![];
        assert!(set(
            &mut c,
            ConditionType::Progressing,
            true,
            "A",
            "first",
            Some(1),
            t0
        ));
        assert!(!set(
            &mut c,
            ConditionType::Progressing,
            true,
            "B",
            "second",
            Some(2),
            t1
        ));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, Time(t0));
        assert_eq!(c[0].message, "second");
        assert_eq!(c[0].observed_generation, Some(2));
        assert!(set(
            &mut c,
            ConditionType::Progressing,
            false,
            "C",
            "third",
            Some(2),
            t2
        ));
        assert_eq!(c[0].last_transition_time, Time(t2));
        assert!(!is_true(&c, ConditionType::Progressing));
        assert!(remove(&mut c, ConditionType::Progressing));
        assert!(!remove(&mut c, ConditionType::Progressing));
    }
}
