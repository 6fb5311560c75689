//! TokenReview and `pods/log` as kube-apiserver answers them, through kube-rs and kubectl.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on purpose.

mod common;

use common::*;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams, PostParams};
use kube_sim::KubeSim;
use serde_json::json;

#[tokio::test]
async fn token_reviews_answer_who_a_token_belongs_to_and_need_rbac() {
    let sim = KubeSim::builder().rbac(true).start().await.unwrap();
    let admin = sim.client().await.unwrap();
    let reviews: Api<TokenReview> = Api::all(admin);
    let review = |t: &str| TokenReview {
        spec: TokenReviewSpec {
            token: t.to_string(),
            audiences: None,
        },
        ..Default::default()
    };
    let token = sim.mint_service_account_token("monitoring", "scraper");
    let ok = reviews
        .create(&PostParams::default(), &review(&token))
        .await
        .unwrap();
    let st = ok.status.unwrap();
    assert_eq!(st.authenticated, Some(true));
    let user = st.user.unwrap();
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:monitoring:scraper")
    );
    assert!(
        user.groups
            .unwrap()
            .contains(&"system:serviceaccounts:monitoring".to_string())
    );
    // A token nobody issued: answered (201), not authenticated, with the reason.
    let bad = reviews
        .create(&PostParams::default(), &review("forged"))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(bad.authenticated, Some(false));
    assert!(bad.user.is_none() && bad.error.is_some());
    // An empty token is a bad request.
    let e = status(
        reviews
            .create(&PostParams::default(), &review(""))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);
    // Creating TokenReviews is itself authorized: the scraper may not.
    let scraper = sim.client_for_token(&token).await.unwrap();
    let e = status(
        Api::<TokenReview>::all(scraper)
            .create(&PostParams::default(), &review(&token))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 403);
}

#[tokio::test]
async fn pod_logs_are_served_per_container_as_the_kubelet_serves_its_files() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("c.log");
    std::fs::write(&log, "one\ntwo\nthree\n").unwrap();
    let client = sim.client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod = |containers: &[&str]| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": if containers.len() == 1 {"one"} else {"two"}},
            "spec": {"containers": containers.iter().map(|c| json!({"name": c, "image": "x"})).collect::<Vec<_>>()}}))
        .unwrap()
    };
    pods.create(&PostParams::default(), &pod(&["app"]))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod(&["app", "sidecar"]))
        .await
        .unwrap();
    sim.set_pod_log_file("default", "one", "app", false, &log);

    // One container: the container may be omitted; tailLines is honoured.
    assert_eq!(
        pods.logs("one", &LogParams::default()).await.unwrap(),
        "one\ntwo\nthree\n"
    );
    let tail = LogParams {
        tail_lines: Some(1),
        ..Default::default()
    };
    assert_eq!(pods.logs("one", &tail).await.unwrap(), "three\n");
    // Two containers: which one must be said; an unknown one is refused.
    let e = status(pods.logs("two", &LogParams::default()).await.unwrap_err());
    assert_eq!(e.code, 400);
    assert!(
        e.message.contains("choose one of: [app sidecar]"),
        "{}",
        e.message
    );
    let e = status(
        pods.logs(
            "one",
            &LogParams {
                container: Some("nope".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 400);
    // No earlier instance: `previous` is a bad request, as when a container never restarted.
    let e = status(
        pods.logs(
            "one",
            &LogParams {
                previous: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 400);
    // A missing pod is 404.
    let e = status(pods.logs("gone", &LogParams::default()).await.unwrap_err());
    assert_eq!(e.code, 404);
    // kubectl reads it the same way.
    let out = kubectl(sim.kubeconfig_path(), &["logs", "one", "--tail=2"]).await;
    assert_eq!(ok(&out), "two\nthree\n");
}
