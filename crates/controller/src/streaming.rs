//! Watches that receive their initial state on the watch itself ("streaming
//! lists", KEP-3157) instead of listing first: one request per watch instead
//! of two, and the API server sends the objects one by one from its watch
//! cache instead of building a whole list response.
//!
//! Not every API server serves them: the `WatchList` feature gate is off by
//! default in Kubernetes 1.27-1.31 and again in 1.33 (OpenShift 4.16-4.18 and
//! 4.20), on in 1.32 and from 1.34 (k8s.io/apiserver
//! `pkg/features/kube_features.go`). With it off the server refuses such a
//! watch with 422 Invalid, "sendInitialEvents is forbidden for watch unless
//! the WatchList feature gate is enabled" (k8s.io/apimachinery
//! `pkg/apis/meta/internalversion/validation/validation.go`, answered by
//! k8s.io/apiserver `pkg/endpoints/handlers/get.go`). So the first watch to
//! start asks alone, and the others wait for its answer: refused, it and
//! every watch after it list first, and a cluster without the gate pays one
//! refused request, not one per watch and relist. client-go's reflector falls
//! back the same way, but on every attempt (client-go
//! `tools/cache/reflector.go`, `ListAndWatchWithContext`).

use futures::{Stream, StreamExt};
use kube::Api;
use kube::runtime::watcher::{self, watcher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// How long a watch waits for the first one's answer before it asks itself
/// (the first may be retrying an unreachable server, or have been dropped).
const ANSWER_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Served {
    Unknown,
    Yes,
    Refused,
}

/// Whether this controller's API server serves streaming lists, as its
/// watches found out: shared by all of them.
#[derive(Debug, Clone)]
pub struct ListMode(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    served: watch::Sender<Served>,
    asking: AtomicBool,
    refusal_logged: AtomicBool,
}

impl Default for ListMode {
    fn default() -> Self {
        Self(Arc::new(Inner {
            served: watch::Sender::new(Served::Unknown),
            asking: AtomicBool::new(false),
            refusal_logged: AtomicBool::new(false),
        }))
    }
}

impl ListMode {
    /// Whether a watch starting now streams its initial state: at once when
    /// the answer is known or nobody has asked yet, else once the watch that
    /// asked first has its answer (or [`ANSWER_WAIT`] has passed).
    async fn streaming(&self) -> bool {
        match *self.0.served.borrow() {
            Served::Yes => return true,
            Served::Refused => return false,
            Served::Unknown => {}
        }
        if !self.0.asking.swap(true, Ordering::SeqCst) {
            return true;
        }
        let mut answer = self.0.served.subscribe();
        let served = tokio::time::timeout(ANSWER_WAIT, answer.wait_for(|s| *s != Served::Unknown))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|s| *s);
        served != Some(Served::Refused)
    }

    /// Any streaming watch answers: the first that is served, or refused.
    fn answer(&self, served: Served) {
        self.0.served.send_if_modified(|s| {
            let changes = *s == Served::Unknown || (served == Served::Refused && *s != served);
            if changes {
                *s = served;
            }
            changes
        });
        if served == Served::Refused && !self.0.refusal_logged.swap(true, Ordering::SeqCst) {
            tracing::info!(
                "the API server does not serve streaming lists (its WatchList feature gate is off): every watch lists first"
            );
        }
    }
}

/// A refusal of the streaming list itself. Nothing else in a watch request
/// can be invalid: it carries no body, and its other options are those of a
/// list-then-watch, which every server serves.
fn is_refusal(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::WatchStartFailed(kube::Error::Api(s)) if s.code == 422)
}

/// `watcher(api, cfg)`, its initial state streamed where the server serves
/// that, listed otherwise (see the module docs).
pub fn watch<K>(
    api: Api<K>,
    cfg: watcher::Config,
    mode: ListMode,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let open = move |streaming: bool| {
        let cfg = if streaming {
            cfg.clone().streaming_lists()
        } else {
            cfg.clone()
        };
        watcher(api.clone(), cfg).boxed()
    };
    futures::stream::unfold(
        (None, false, false, open, mode),
        |(mut events, mut streaming, mut answered, open, mode)| async move {
            loop {
                let Some(current) = events.as_mut() else {
                    streaming = mode.streaming().await;
                    answered = !streaming;
                    events = Some(open(streaming));
                    continue;
                };
                let ev = current.next().await?;
                if streaming && ev.as_ref().err().is_some_and(is_refusal) {
                    // A refused watch has sent nothing: the list that
                    // replaces it starts its store afresh.
                    mode.answer(Served::Refused);
                    (streaming, answered) = (false, true);
                    events = Some(open(false));
                    continue;
                }
                if !answered && ev.is_ok() {
                    mode.answer(Served::Yes);
                    answered = true;
                }
                return Some((ev, (events, streaming, answered, open, mode)));
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_watch_asks_alone_and_the_others_follow_its_answer() {
        let mode = ListMode::default();
        assert!(mode.streaming().await, "the first watch asks");
        let waiting = tokio::spawn({
            let mode = mode.clone();
            async move { mode.streaming().await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "the second waits for the answer");
        mode.answer(Served::Refused);
        assert!(!waiting.await.unwrap(), "refused: it lists first");
        assert!(!mode.streaming().await, "and so does every later watch");
        // A served streaming watch does not undo a refusal.
        mode.answer(Served::Yes);
        assert!(!mode.streaming().await);

        let mode = ListMode::default();
        assert!(mode.streaming().await);
        mode.answer(Served::Yes);
        assert!(
            mode.streaming().await,
            "served: later watches stream at once"
        );
    }
}
