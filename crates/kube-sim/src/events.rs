//! One Event store, two APIs: as in a real apiserver, an Event written through
//! `events.k8s.io/v1` is the same object as the core `v1` Event (so `kubectl
//! describe`, which lists core Events, shows what a controller recorded with
//! kube-runtime's `Recorder`). kube-sim stores core `v1` Events and converts
//! `events.k8s.io/v1` bodies on the way in and out.
//!
//! The field mapping follows kubernetes `pkg/apis/events/v1/conversion.go`
//! (`Convert_v1_Event_To_core_Event` / `Convert_core_Event_To_v1_Event`):
//! `regarding`↔`involvedObject`, `note`↔`message`, `deprecatedSource`↔`source`,
//! `deprecatedFirstTimestamp`/`deprecatedLastTimestamp`/`deprecatedCount`↔
//! `firstTimestamp`/`lastTimestamp`/`count`, and `reportingController`↔core
//! v1's `reportingComponent` (both the internal type's `ReportingController`).
//! The remaining fields keep their names.

use serde_json::{Map, Value};

/// (events.k8s.io/v1 field, core v1 field) pairs that differ only by name.
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
];

/// Whether `group` serves a view of the core Event store.
pub(crate) fn is_events_group(group: &str, plural: &str) -> bool {
    group == "events.k8s.io" && plural == "events"
}

fn rename(obj: &Value, from_events: bool, api_version: &str) -> Value {
    let Some(m) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = Map::with_capacity(m.len());
    for (k, v) in m {
        let renamed = RENAMED.iter().find_map(|(ev, core)| {
            if from_events {
                (k == ev).then_some(*core)
            } else {
                (k == core).then_some(*ev)
            }
        });
        out.insert(renamed.unwrap_or(k).to_string(), v.clone());
    }
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    out.insert("kind".into(), Value::String("Event".into()));
    Value::Object(out)
}

/// An `events.k8s.io/v1` Event as the core `v1` Event it is stored as.
pub(crate) fn to_core(obj: &Value) -> Value {
    rename(obj, true, "v1")
}

/// A stored core `v1` Event as `events.k8s.io/<version>` serves it.
pub(crate) fn from_core(obj: &Value, version: &str) -> Value {
    rename(obj, false, &format!("events.k8s.io/{version}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_events_v1_event_round_trips_through_the_core_shape() {
        let ev = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "m.1", "namespace": "ns"},
            "regarding": {"kind": "Pod", "name": "p", "uid": "u1"},
            "note": "phase 3 started", "reason": "PhaseStarted", "type": "Normal",
            "action": "DisableCVO", "reportingController": "vcfm", "reportingInstance": "vcfm-0",
            "eventTime": "2026-12-06T08:00:00.000000Z", "series": {"count": 2, "lastObservedTime": "2026-12-06T08:00:01.000000Z"}
        });
        let core = to_core(&ev);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["uid"], "u1");
        assert_eq!(core["message"], "phase 3 started");
        assert_eq!(core["reportingComponent"], "vcfm");
        assert_eq!(core["series"]["count"], 2);
        assert!(core.get("regarding").is_none() && core.get("note").is_none());
        assert_eq!(from_core(&core, "v1"), ev);
    }
}
