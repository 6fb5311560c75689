//! Kubernetes Events on the migration, one per phase transition, so that
//! `oc describe vcfm` tells the story. Messages come from our own code and
//! status text, which never carries secret material.

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use vcfm_api::VmwareCloudFoundationMigration;

#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    pub fn new(client: kube::Client, manager: &str) -> Self {
        let reporter = Reporter {
            controller: manager.to_string(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// Publishes an Event; failures are logged, never fatal (an Event is a courtesy).
    pub async fn publish(
        &self,
        m: &VmwareCloudFoundationMigration,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let mut note = note;
        if note.len() > 1000 {
            let mut cut = 1000;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
        }
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &m.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish Event");
        }
    }
}
