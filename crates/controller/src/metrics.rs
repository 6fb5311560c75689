//! Prometheus metrics served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use vcfm_vsphere::{CallObserver, CallRecord};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `ok` or `error`.
    pub outcome: String,
    /// What kind of error ended the reconcile (`none` when it succeeded),
    /// from [`crate::error::Error::class`].
    pub error_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabel {
    pub server: String,
    pub outcome: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<OutcomeLabel, Counter>,
    pub phase_duration: Family<PhaseLabel, Histogram>,
    pub phase_failures: Family<PhaseLabel, Counter>,
    pub vsphere_calls: Family<CallLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("vcfm");
        let reconciles = Family::<OutcomeLabel, Counter>::default();
        let phase_duration = Family::<PhaseLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0])
        });
        let phase_failures = Family::<PhaseLabel, Counter>::default();
        let vsphere_calls = Family::<CallLabel, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by outcome and error class, each counted once",
            reconciles.clone(),
        );
        registry.register(
            "phase_duration_seconds",
            "Time from a phase's start to its completion",
            phase_duration.clone(),
        );
        registry.register(
            "phase_failures",
            "Phase failures by phase",
            phase_failures.clone(),
        );
        registry.register(
            "vsphere_calls",
            "vSphere API calls by server and outcome",
            vsphere_calls.clone(),
        );
        Self {
            registry,
            reconciles,
            phase_duration,
            phase_failures,
            vsphere_calls,
        }
    }
}

impl Metrics {
    /// Counts one reconcile: `None` when it succeeded, else its error class.
    pub fn reconciled(&self, error_class: Option<&str>) {
        self.reconciles
            .get_or_create(&OutcomeLabel {
                outcome: if error_class.is_some() { "error" } else { "ok" }.into(),
                error_class: error_class.unwrap_or("none").into(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Counts every vSphere call made by any phase.
pub struct CallCounter(pub Arc<Metrics>);

impl CallObserver for CallCounter {
    fn on_call(&self, r: &CallRecord) {
        let outcome = if r.ok {
            "ok".to_string()
        } else {
            r.fault.clone().unwrap_or_else(|| "error".into())
        };
        self.0
            .vsphere_calls
            .get_or_create(&CallLabel {
                server: r.server.clone(),
                outcome,
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_in_the_exposition() {
        let m = Metrics::default();
        m.reconciled(None);
        m.reconciled(None);
        m.reconciled(Some("kube_transient"));
        m.phase_failures
            .get_or_create(&PhaseLabel {
                phase: "Backup".into(),
            })
            .inc();
        let text = m.encode();
        assert!(
            text.contains("vcfm_reconciles_total{outcome=\"ok\",error_class=\"none\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "vcfm_reconciles_total{outcome=\"error\",error_class=\"kube_transient\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("vcfm_phase_failures_total{phase=\"Backup\"} 1"),
            "{text}"
        );
    }
}
