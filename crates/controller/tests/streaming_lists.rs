//! The controller's watches stream their initial state where the API server
//! serves that (the `WatchList` feature gate, on from Kubernetes 1.34), and list
//! first where it does not (off in 1.29-1.31 and 1.33: OpenShift 4.16-4.18 and
//! 4.20): a migration completes either way, a server with the gate on is never
//! asked for a list of what the controller watches, and one without it refuses
//! one watch, not every one. Both tiers: on the real tier the refusal is the
//! real kube-apiserver's, with `--feature-gates=WatchList=false`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common_e2e;

use common_e2e::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, WatchParams};
use openshift_sim::Scenario;
use std::collections::{BTreeMap, BTreeSet};

const WORKERS: u32 = 1;

/// The controller's requests of one migration, by verb and resource.
async fn migrate(watch_list: bool) -> (Env, BTreeMap<(String, String), u64>) {
    let mut env = Env::start(Scenario {
        workers: WORKERS,
        watch_list,
        ..Scenario::default()
    })
    .await;
    let mark = env.request_mark();
    env.spawn_controller();
    env.migrate_to_completion("move", WORKERS).await;
    env.stop_controller().await;
    let requests = env
        .requests_since(&mark)
        .into_iter()
        .filter(|((user, _, _), _)| user == CONTROLLER_USER)
        .map(|((_, verb, resource), n)| ((verb, resource), n))
        .collect();
    (env, requests)
}

fn resources(requests: &BTreeMap<(String, String), u64>, verb: &str) -> BTreeSet<String> {
    requests
        .keys()
        .filter(|(v, _)| v == verb)
        .map(|(_, r)| r.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_streaming_lists_nothing_the_controller_watches_is_listed() {
    let (env, requests) = migrate(true).await;
    let watched = resources(&requests, "watch");
    let listed = resources(&requests, "list");
    assert!(
        watched
            .iter()
            .any(|r| r.ends_with("vmwarecloudfoundationmigrations"))
            && watched.contains("pods")
            && watched.contains("nodes"),
        "{requests:?}"
    );
    // Secrets are watched by name only; the one list of them is Preflight's
    // query for other migrations' unfinished backups, by label.
    let both: Vec<&String> = watched
        .intersection(&listed)
        .filter(|r| *r != "secrets")
        .collect();
    assert!(
        both.is_empty(),
        "listed although watched: {both:?}\n{requests:?}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_streaming_lists_one_watch_is_refused_and_every_watch_lists_first() {
    let (env, requests) = migrate(false).await;
    // What the controller met: the server's own refusal (kube-sim's follows
    // k8s.io/apimachinery `internalversion/validation/validation.go`).
    let refused = Api::<ConfigMap>::namespaced(env.client.clone(), "default")
        .watch(&WatchParams::streaming_lists(), "0")
        .await
        .err()
        .expect("a streaming list refused");
    let kube::Error::Api(s) = &refused else {
        panic!("{refused:?}");
    };
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"), "{s:?}");
    assert_eq!(
        s.message,
        "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled"
    );

    let watched = resources(&requests, "watch");
    let listed = resources(&requests, "list");
    let unlisted: Vec<&String> = watched.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "watched without a list first: {unlisted:?}\n{requests:?}"
    );
    // One refused watch: the first asks alone, the others wait for its answer.
    match env.sim.real() {
        // The apiserver's audit log has each request's response code.
        Some(cp) => {
            let refusals: BTreeSet<String> = cp
                .audit_events()
                .iter()
                .filter(|e| {
                    e["user"]["username"] == CONTROLLER_USER
                        && e["verb"] == "watch"
                        && e["responseStatus"]["code"] == 422
                })
                .filter_map(|e| e["auditID"].as_str().map(String::from))
                .collect();
            assert_eq!(refusals.len(), 1, "{refusals:?}\n{requests:?}");
        }
        // kube-sim counts requests, not their answers: every kind but one is
        // watched once (a watch that ends resumes without a list; kube-sim
        // ends none within a migration), the one asking twice.
        None => {
            let twice: Vec<(&(String, String), &u64)> = requests
                .iter()
                .filter(|((verb, r), n)| {
                    verb == "watch" && r != "pods" && r != "secrets" && **n >= 2
                })
                .collect();
            assert_eq!(twice.len(), 1, "{twice:?}\n{requests:?}");
        }
    }
    env.shutdown().await;
}
