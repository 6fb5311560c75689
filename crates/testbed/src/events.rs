//! The Events a migration's controller publishes, as an administrator reads them.

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use std::time::{Duration, Instant};

/// `reason note` of every Event in `ns`, only those about object `about` when given.
pub async fn event_notes(client: &kube::Client, ns: &str, about: Option<&str>) -> Vec<String> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| {
            about.is_none() || e.regarding.as_ref().and_then(|r| r.name.as_deref()) == about
        })
        .map(|e| {
            format!(
                "{} {}",
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default()
            )
        })
        .collect()
}

/// Waits at most `timeout` for an Event with this reason (about `about` when given) and
/// returns its `reason note`: Events are published right after the status write they
/// describe.
pub async fn wait_event(
    client: &kube::Client,
    ns: &str,
    about: Option<&str>,
    reason: &str,
    timeout: Duration,
) -> String {
    wait_event_naming(client, ns, about, reason, &[], timeout).await
}

/// [`wait_event`] for an Event whose note names every one of `mentions`.
pub async fn wait_event_naming(
    client: &kube::Client,
    ns: &str,
    about: Option<&str>,
    reason: &str,
    mentions: &[&str],
    timeout: Duration,
) -> String {
    let start = Instant::now();
    loop {
        let notes = event_notes(client, ns, about).await;
        if let Some(e) = notes.iter().find(|n| {
            n.split_once(' ').map_or(n.as_str(), |(r, _)| r) == reason
                && mentions.iter().all(|m| n.contains(m))
        }) {
            return e.clone();
        }
        assert!(
            start.elapsed() < timeout,
            "no {reason} Event about {about:?} naming {mentions:?}: {notes:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
