//! Counting the requests an API server answered, on either tier: kube-sim's own
//! counters, or the real kube-apiserver's audit log.

use crate::Env;
use std::collections::{BTreeMap, BTreeSet};

/// Requests by (user, verb, `group/resource[/subresource]`).
pub type Requests = BTreeMap<(String, String, String), u64>;

/// Where the API server's request record stood, so that only later requests count.
#[derive(Debug, Clone)]
pub enum RequestMark {
    /// kube-sim's counters at the mark.
    Sim(Requests),
    /// How many audit events the real apiserver had logged.
    Real(usize),
}

impl Env {
    /// The request record as it stands now.
    pub fn request_mark(&self) -> RequestMark {
        match self.sim.real() {
            Some(cp) => RequestMark::Real(cp.audit_events().len()),
            None => RequestMark::Sim(sim_counts(self)),
        }
    }

    /// The requests answered since `mark`; on the real tier one per auditID (a
    /// watch logs a start and an end).
    pub fn requests_since(&self, mark: &RequestMark) -> Requests {
        match (self.sim.real(), mark) {
            (Some(cp), RequestMark::Real(skip)) => {
                let mut out = Requests::new();
                let mut seen = BTreeSet::new();
                for e in cp.audit_events().into_iter().skip(*skip) {
                    let id = e["auditID"].as_str().unwrap_or_default().to_string();
                    if !seen.insert(id) {
                        continue;
                    }
                    let user = e["user"]["username"].as_str().unwrap_or_default();
                    let verb = e["verb"].as_str().unwrap_or_default();
                    let o = &e["objectRef"];
                    let resource = match (o["apiGroup"].as_str(), o["resource"].as_str()) {
                        (_, None) => e["requestURI"].as_str().unwrap_or_default().to_string(),
                        (Some(g), Some(r)) if !g.is_empty() => format!("{g}/{r}"),
                        (_, Some(r)) => r.to_string(),
                    };
                    let resource = match o["subresource"].as_str() {
                        Some(sub) => format!("{resource}/{sub}"),
                        None => resource,
                    };
                    *out.entry((user.to_string(), verb.to_string(), resource))
                        .or_default() += 1;
                }
                out
            }
            (None, RequestMark::Sim(before)) => {
                let mut out = sim_counts(self);
                for (k, n) in out.iter_mut() {
                    *n -= before.get(k).copied().unwrap_or(0).min(*n);
                }
                out.retain(|_, n| *n > 0);
                out
            }
            _ => panic!("a request mark of the other tier"),
        }
    }
}

fn sim_counts(env: &Env) -> Requests {
    env.sim
        .kube()
        .stats()
        .snapshot()
        .into_iter()
        .map(|(k, n)| ((k.user, k.verb, k.resource), n))
        .collect()
}
