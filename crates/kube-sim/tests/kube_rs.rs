//! Conformance tests driven through kube-rs over HTTPS: CRUD semantics, errors,
//! list/watch, CRD validation, subresources, patches, finalizers, GC.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on purpose.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use kube_sim::KubeSim;
use serde_json::{Value, json};

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
        "data": {"k": "v"},
    }))
    .unwrap()
}

fn widget_api(client: kube::Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    Api::namespaced_with(client, ns, &ar)
}

fn widget(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec})).unwrap()
}

/// The next non-bookmark watch event.
async fn next_event<K>(
    s: &mut futures::stream::BoxStream<'_, kube::Result<WatchEvent<K>>>,
) -> WatchEvent<K> {
    loop {
        match s.try_next().await.unwrap().unwrap() {
            WatchEvent::Bookmark(_) => continue,
            other => return other,
        }
    }
}

fn rv(o: &impl kube::Resource) -> u64 {
    o.meta()
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn crud_errors_and_optimistic_concurrency() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client().await.unwrap(), "default");
    let created = api
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());

    let dup = status(
        api.create(&PostParams::default(), &cm("a", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(dup.message, "configmaps \"a\" already exists");

    let missing = status(api.get("nope").await.unwrap_err());
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "configmaps \"nope\" not found");

    // Update with the current resourceVersion succeeds and bumps it.
    let mut c = created.clone();
    c.data = Some(BTreeMap::from([("k".into(), "v2".into())]));
    let updated = api.replace("a", &PostParams::default(), &c).await.unwrap();
    assert!(rv(&updated) > rv(&created));
    // A stale resourceVersion is a 409 Conflict.
    let stale = status(
        api.replace("a", &PostParams::default(), &c)
            .await
            .unwrap_err(),
    );
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    assert!(
        stale.message.contains("the object has been modified"),
        "{}",
        stale.message
    );
    // A no-op update does not change the resourceVersion (no spurious watch events).
    let same = api
        .replace("a", &PostParams::default(), &updated)
        .await
        .unwrap();
    assert_eq!(rv(&same), rv(&updated));

    // generateName.
    let mut g = cm("", &[]);
    g.metadata.name = None;
    g.metadata.generate_name = Some("gen-".into());
    let gen_obj = api.create(&PostParams::default(), &g).await.unwrap();
    let gname = gen_obj.metadata.name.unwrap();
    assert!(gname.starts_with("gen-") && gname.len() == 9, "{gname}");

    // Invalid names are 422 with a cause on metadata.name.
    let bad = status(
        api.create(&PostParams::default(), &cm("Bad_Name", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((bad.code, bad.reason.as_str()), (422, "Invalid"));
    assert_eq!(bad.details.unwrap().causes[0].field, "metadata.name");

    // Creating in a missing namespace is 404 for the namespace.
    let other: Api<ConfigMap> = Api::namespaced(sim.client().await.unwrap(), "ghost");
    let e = status(
        other
            .create(&PostParams::default(), &cm("x", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "namespaces \"ghost\" not found")
    );

    api.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(status(api.get("a").await.unwrap_err()).code, 404);
    assert_eq!(
        status(api.delete("a", &DeleteParams::default()).await.unwrap_err()).code,
        404
    );

    let bad_token = sim.client_for_token("wrong").await.unwrap();
    let e = status(
        Api::<ConfigMap>::namespaced(bad_token, "default")
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (401, "Unauthorized"));
    sim.shutdown().await;
}

#[tokio::test]
async fn secrets_fold_string_data_and_validate_keys() {
    let sim = sim().await;
    let api: Api<Secret> = Api::namespaced(sim.client().await.unwrap(), "default");
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"user.name": "admin"}, "data": {"pw": "c2VjcmV0"}})).unwrap();
    let got = api.create(&PostParams::default(), &s).await.unwrap();
    assert!(got.string_data.is_none());
    let data = got.data.unwrap();
    assert_eq!(data["user.name"].0, b"admin");
    assert_eq!(data["pw"].0, b"secret");

    let bad: Secret = serde_json::from_value(
        json!({"metadata": {"name": "bad"}, "stringData": {"10.0.0.1:443.password": "x"}}),
    )
    .unwrap();
    let e = status(api.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    let cause = &e.details.unwrap().causes[0];
    assert_eq!(cause.field, "data[10.0.0.1:443.password]");
    assert!(
        cause.message.contains("[-._a-zA-Z0-9]+"),
        "{}",
        cause.message
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn list_paging_and_selectors() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client().await.unwrap(), "default");
    for i in 0..5 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        api.create(
            &PostParams::default(),
            &cm(&format!("c{i}"), &[("tier", tier)]),
        )
        .await
        .unwrap();
    }
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().unwrap();
    let second = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    let names: Vec<_> = second
        .items
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["c2", "c3"]);
    assert_eq!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );

    let even = api
        .list(&ListParams::default().labels("tier=even"))
        .await
        .unwrap();
    assert_eq!(even.items.len(), 3);
    let set = api
        .list(&ListParams::default().labels("tier in (odd),tier!=even"))
        .await
        .unwrap();
    assert_eq!(set.items.len(), 2);
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=c4"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let not_ns = Api::<ConfigMap>::all(sim.client().await.unwrap())
        .list(&ListParams::default().fields("metadata.namespace!=default"))
        .await
        .unwrap();
    assert!(not_ns.items.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn watch_streams_resumes_and_expires() {
    let sim = KubeSim::builder()
        .event_history(32)
        .bookmark_interval(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(sim.client().await.unwrap(), "default");
    let start = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &start)
        .await
        .unwrap()
        .boxed();
    let created = api
        .create(&PostParams::default(), &cm("w", &[("a", "1")]))
        .await
        .unwrap();
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "x"}})),
    )
    .await
    .unwrap();
    api.delete("w", &DeleteParams::default()).await.unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        match stream.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(o) => kinds.push(("ADDED", o.metadata.name.unwrap())),
            WatchEvent::Modified(o) => kinds.push(("MODIFIED", o.metadata.name.unwrap())),
            WatchEvent::Deleted(o) => kinds.push(("DELETED", o.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(
        kinds,
        [
            ("ADDED", "w".into()),
            ("MODIFIED", "w".into()),
            ("DELETED", "w".into())
        ]
    );

    // Resuming from the create's resourceVersion replays what followed it.
    let mut resumed = api
        .watch(
            &WatchParams::default().timeout(2),
            &created.metadata.resource_version.unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    assert!(matches!(
        next_event(&mut resumed).await,
        WatchEvent::Modified(_)
    ));
    assert!(matches!(
        next_event(&mut resumed).await,
        WatchEvent::Deleted(_)
    ));

    // Bookmarks arrive when allowed.
    let now = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut wp = WatchParams::default().timeout(5);
    wp.bookmarks = true;
    let mut bm = api.watch(&wp, &now).await.unwrap().boxed();
    assert!(matches!(
        bm.try_next().await.unwrap().unwrap(),
        WatchEvent::Bookmark(_)
    ));

    // Label-selected watches see objects leave the selection as DELETED.
    let mut sel = api
        .watch(&WatchParams::default().labels("a=1").timeout(5), &now)
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &cm("s", &[("a", "1")]))
        .await
        .unwrap();
    api.patch(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"a": "2"}}})),
    )
    .await
    .unwrap();
    assert!(matches!(next_event(&mut sel).await, WatchEvent::Added(_)));
    assert!(matches!(next_event(&mut sel).await, WatchEvent::Deleted(_)));

    // Beyond the bounded history: 410 Gone as an ERROR event.
    for i in 0..40 {
        api.create(&PostParams::default(), &cm(&format!("h{i}"), &[]))
            .await
            .unwrap();
    }
    let mut old = api
        .watch(&WatchParams::default().timeout(2), &start)
        .await
        .unwrap()
        .boxed();
    match old.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!(e.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
    // timeoutSeconds ends the stream.
    let mut short = api
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .boxed();
    let drained = tokio::time::timeout(Duration::from_secs(30), async {
        while short.try_next().await.unwrap().is_some() {}
    })
    .await;
    assert!(
        drained.is_ok(),
        "the server closes the watch after timeoutSeconds"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn crd_schema_validation_defaulting_pruning_and_cel() {
    let sim = sim_with_widgets().await;
    let client = sim.client().await.unwrap();
    let api = widget_api(client.clone(), "default");
    let w = api
        .create(
            &PostParams::default(),
            &widget(
                "w",
                json!({"size": "small", "unknown": 1, "extra": {"free": "form"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(w.data["spec"]["replicas"], 1, "default applied");
    assert!(
        w.data["spec"].get("unknown").is_none(),
        "unknown field pruned"
    );
    assert_eq!(
        w.data["spec"]["extra"]["free"], "form",
        "preserve-unknown-fields kept"
    );
    assert_eq!(w.metadata.generation, Some(1));

    let cases = [
        (
            json!({"size": "huge"}),
            "spec.size",
            "Unsupported value: \"huge\"",
        ),
        (json!({}), "spec.size", "Required value"),
        (
            json!({"size": "small", "replicas": "two"}),
            "spec.replicas",
            "must be of type integer",
        ),
        (
            json!({"size": "small", "replicas": -1}),
            "spec.replicas",
            "should be greater than or equal to 0",
        ),
        (
            json!({"size": "small", "label": "UPPER"}),
            "spec.label",
            "should match '^[a-z]+$'",
        ),
        (
            json!({"size": "small", "label": "waytoolong"}),
            "spec.label",
            "Too long",
        ),
        (
            json!({"size": "small", "tags": ["a", "a"]}),
            "spec.tags[1]",
            "Duplicate value",
        ),
        (
            json!({"size": "small", "tags": ["a", "b", "c", "d"]}),
            "spec.tags",
            "Too many",
        ),
        (
            json!({"size": "small", "replicas": 11}),
            "spec",
            "too many replicas",
        ),
    ];
    for (i, (spec, field, msg)) in cases.into_iter().enumerate() {
        let e = status(
            api.create(&PostParams::default(), &widget(&format!("bad{i}"), spec))
                .await
                .unwrap_err(),
        );
        assert_eq!(
            (e.code, e.reason.as_str()),
            (422, "Invalid"),
            "{}",
            e.message
        );
        let causes = e.details.unwrap().causes;
        assert!(
            causes
                .iter()
                .any(|c| c.field == field && c.message.contains(msg)),
            "case {i}: {causes:?}"
        );
        assert!(
            e.message
                .starts_with(&format!("Widget.example.com \"bad{i}\" is invalid: ")),
            "{}",
            e.message
        );
    }

    // Transition rule with oldSelf.
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"owner": "ann"}})),
    )
    .await
    .unwrap();
    let e = status(
        api.patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"owner": "bob"}})),
        )
        .await
        .unwrap_err(),
    );
    assert!(e.message.contains("owner is immutable"), "{}", e.message);

    // Lifting a CEL rule takes effect at once, and restoring it too.
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(client.clone());
    let original = crds.get("widgets.example.com").await.unwrap();
    let mut lifted = serde_json::to_value(&original).unwrap();
    lifted["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        .as_object_mut()
        .unwrap()
        .remove("x-kubernetes-validations");
    crds.replace(
        "widgets.example.com",
        &PostParams::default(),
        &serde_json::from_value(lifted).unwrap(),
    )
    .await
    .unwrap();
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 11}})),
    )
    .await
    .unwrap();
    let mut restored = crds.get("widgets.example.com").await.unwrap();
    restored.spec = original.spec.clone();
    crds.replace("widgets.example.com", &PostParams::default(), &restored)
        .await
        .unwrap();
    let e = status(
        api.patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 12}})),
        )
        .await
        .unwrap_err(),
    );
    assert!(e.message.contains("too many replicas"));

    // The CRD reports Established and NamesAccepted.
    let conds = crds
        .get("widgets.example.com")
        .await
        .unwrap()
        .status
        .unwrap()
        .conditions
        .unwrap();
    for t in ["Established", "NamesAccepted"] {
        assert!(
            conds.iter().any(|c| c.type_ == t && c.status == "True"),
            "{t}"
        );
    }

    // Deleting the CRD removes the resource from discovery and its objects.
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    let e = status(api.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(e.code, 404);
    sim.shutdown().await;
}

/// Marking an object for deletion bumps its generation, as the real API
/// server's store does (k8s.io/apiserver/pkg/registry/generic/registry/store.go),
/// so that controllers filtering watch events on generation see the deletion.
#[tokio::test]
async fn marking_for_deletion_bumps_the_generation() {
    let sim = sim_with_widgets().await;
    let api = widget_api(sim.client().await.unwrap(), "default");
    let mut w = widget("held", json!({"size": "small", "replicas": 1}));
    w.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    let created = api.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    api.delete("held", &DeleteParams::default()).await.unwrap();
    let marked = api.get("held").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.generation, Some(2));
    // A repeated delete changes nothing.
    api.delete("held", &DeleteParams::default()).await.unwrap();
    assert_eq!(api.get("held").await.unwrap().metadata.generation, Some(2));
    sim.shutdown().await;
}

#[tokio::test]
async fn status_and_scale_subresources() {
    let sim = sim_with_widgets().await;
    let client = sim.client().await.unwrap();
    let api = widget_api(client.clone(), "default");
    let mut w = widget("w", json!({"size": "small", "replicas": 2}));
    w.data["status"] = json!({"phase": "Ignored"});
    let created = api.create(&PostParams::default(), &w).await.unwrap();
    assert!(
        created.data.get("status").is_none(),
        "status is dropped on create"
    );

    // /status changes status only and does not bump generation.
    let st = api
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"phase": "Ready", "replicas": 2}, "spec": {"replicas": 5}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(st.data["status"]["phase"], "Ready");
    assert_eq!(st.data["spec"]["replicas"], 2, "spec ignored on /status");
    assert_eq!(st.metadata.generation, Some(1));
    // The main endpoint ignores status, and spec changes bump generation.
    let main = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Hacked"}, "spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(main.data["status"]["phase"], "Ready");
    assert_eq!(main.metadata.generation, Some(2));
    // Metadata-only changes do not bump generation.
    let lbl = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(lbl.metadata.generation, Some(2));

    let scale = api.get_scale("w").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(3));
    assert_eq!(scale.status.unwrap().replicas, 2);
    api.patch_scale(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 7}})),
    )
    .await
    .unwrap();
    assert_eq!(api.get("w").await.unwrap().data["spec"]["replicas"], 7);

    let deploys: Api<Deployment> = Api::namespaced(client, "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "d"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
                 "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
    }))
    .unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let s = deploys
        .patch_scale(
            "d",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(s.spec.unwrap().replicas, Some(4));
    assert_eq!(s.status.unwrap().selector.as_deref(), Some("app=d"));
    assert_eq!(deploys.get("d").await.unwrap().spec.replicas, Some(4));
    sim.shutdown().await;
}

#[tokio::test]
async fn patches_strategic_json_and_server_side_apply() {
    let sim = sim_with_widgets().await;
    let client = sim.client().await.unwrap();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "d"}},
                 "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}}
    }))
    .unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    // Strategic merge: containers merge by name.
    let p =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}}});
    let out = deploys
        .patch("d", &PatchParams::default(), &Patch::Strategic(p))
        .await
        .unwrap();
    let cs = out.spec.template.spec.unwrap().containers;
    assert_eq!(
        cs.iter()
            .map(|c| (c.name.as_str(), c.image.as_deref().unwrap()))
            .collect::<Vec<_>>(),
        [("a", "a:1"), ("b", "b:2")]
    );
    // JSON patch with a failing test op is rejected.
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/metadata/name", "value": "other"}]))
            .unwrap();
    let e = status(
        deploys
            .patch("d", &PatchParams::default(), &Patch::<()>::Json(jp))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    // JSON patch carrying a stale resourceVersion is a conflict.
    let jp: json_patch::Patch = serde_json::from_value(
        json!([{"op": "replace", "path": "/metadata/resourceVersion", "value": "1"}]),
    )
    .unwrap();
    let e = status(
        deploys
            .patch("d", &PatchParams::default(), &Patch::<()>::Json(jp))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));

    // Server-side apply: create, then conflict between managers, then force.
    let api = widget_api(client, "default");
    let cfg = |replicas: i64| json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "sa"}, "spec": {"size": "small", "replicas": replicas}});
    let created = api
        .patch("sa", &PatchParams::apply("alice"), &Patch::Apply(cfg(2)))
        .await
        .unwrap();
    assert_eq!(created.data["spec"]["replicas"], 2);
    let managers: Vec<_> = created
        .metadata
        .managed_fields
        .clone()
        .unwrap()
        .iter()
        .map(|m| (m.manager.clone().unwrap(), m.operation.clone().unwrap()))
        .collect();
    assert!(
        managers.contains(&("alice".into(), "Apply".into())),
        "{managers:?}"
    );
    // Re-applying an unchanged configuration is a no-op (no new resourceVersion, no event).
    let again = api
        .patch("sa", &PatchParams::apply("alice"), &Patch::Apply(cfg(2)))
        .await
        .unwrap();
    assert_eq!(rv(&again), rv(&created));
    // Same value from another manager: shared ownership, no conflict.
    api.patch("sa", &PatchParams::apply("bob"), &Patch::Apply(cfg(2)))
        .await
        .unwrap();
    // Different value from a third manager: conflict naming both owners' field.
    let e = status(
        api.patch("sa", &PatchParams::apply("carol"), &Patch::Apply(cfg(5)))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(
        e.message.contains("conflict with \"alice\"") && e.message.contains(".spec.replicas"),
        "{}",
        e.message
    );
    let before = api.get("sa").await.unwrap();
    let forced = api
        .patch(
            "sa",
            &PatchParams::apply("carol").force(),
            &Patch::Apply(cfg(5)),
        )
        .await
        .unwrap();
    // One write, one resourceVersion (and so one watch event) per apply.
    assert_eq!(rv(&forced), rv(&before) + 1);
    assert_eq!(forced.data["spec"]["replicas"], 5);
    // An update by a non-apply manager takes ownership; re-applying the old value conflicts.
    api.patch(
        "sa",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 6}})),
    )
    .await
    .unwrap();
    let e = status(
        api.patch("sa", &PatchParams::apply("carol"), &Patch::Apply(cfg(5)))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    // Apply of status via the status subresource, keyed list merge by type.
    let st = |t: &str| json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "sa"}, "status": {"conditions": [{"type": t, "status": "True"}]}});
    api.patch_status(
        "sa",
        &PatchParams::apply("ctl-a"),
        &Patch::Apply(st("Ready")),
    )
    .await
    .unwrap();
    let both = api
        .patch_status(
            "sa",
            &PatchParams::apply("ctl-b"),
            &Patch::Apply(st("Synced")),
        )
        .await
        .unwrap();
    assert_eq!(
        both.data["status"]["conditions"].as_array().unwrap().len(),
        2
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn finalizers_keep_objects_until_removed() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client().await.unwrap(), "default");
    let mut c = cm("f", &[]);
    c.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &c).await.unwrap();
    let mut events = api
        .watch(&WatchParams::default().timeout(5), "0")
        .await
        .unwrap()
        .boxed();
    api.delete("f", &DeleteParams::default()).await.unwrap();
    let held = api.get("f").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    let e = status(
        api.patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/hold", "new"]}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .contains("no new finalizers can be added if the object is being deleted"),
        "{}",
        e.message
    );
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(status(api.get("f").await.unwrap_err()).code, 404);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match events.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(_) => seen.push("ADDED"),
            WatchEvent::Modified(_) => seen.push("MODIFIED"),
            WatchEvent::Deleted(_) => seen.push("DELETED"),
            _ => {}
        }
    }
    assert_eq!(seen, ["ADDED", "MODIFIED", "DELETED"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn garbage_collection_and_namespace_termination() {
    let sim = sim().await;
    let client = sim.client().await.unwrap();
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "gc"}})).unwrap(),
    )
    .await
    .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "gc");
    let owner = api
        .create(&PostParams::default(), &cm("owner", &[]))
        .await
        .unwrap();
    let oref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid.clone().unwrap()}]);
    for name in ["dep1", "dep2"] {
        let mut d = serde_json::to_value(cm(name, &[])).unwrap();
        d["metadata"]["ownerReferences"] = oref.clone();
        api.create(&PostParams::default(), &serde_json::from_value(d).unwrap())
            .await
            .unwrap();
    }
    // Orphan: dependents stay, without the owner reference.
    let mut dep2 = api.get("dep2").await.unwrap();
    dep2.metadata.owner_references = None;
    api.replace("dep2", &PostParams::default(), &dep2)
        .await
        .unwrap();
    let owner2 = api
        .create(&PostParams::default(), &cm("owner2", &[]))
        .await
        .unwrap();
    let mut o3 = serde_json::to_value(cm("dep3", &[])).unwrap();
    o3["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner2", "uid": owner2.metadata.uid.unwrap()}]);
    api.create(&PostParams::default(), &serde_json::from_value(o3).unwrap())
        .await
        .unwrap();
    api.delete("owner2", &DeleteParams::orphan()).await.unwrap();
    assert!(
        api.get("dep3")
            .await
            .unwrap()
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );

    // Background: dependents are collected.
    api.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    assert_eq!(status(api.get("dep1").await.unwrap_err()).code, 404);
    assert!(api.get("dep2").await.is_ok());

    // Namespace deletion: Terminating, creation forbidden, contents removed, then gone.
    let mut held = cm("held", &[]);
    held.metadata.finalizers = Some(vec!["x/y".into()]);
    api.create(&PostParams::default(), &held).await.unwrap();
    nss.delete("gc", &DeleteParams::default()).await.unwrap();
    let ns = nss.get("gc").await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    let e = status(
        api.create(&PostParams::default(), &cm("late", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 403);
    assert_eq!(status(api.get("dep2").await.unwrap_err()).code, 404);
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(status(nss.get("gc").await.unwrap_err()).code, 404);
    sim.shutdown().await;
}

mod controller {
    use super::*;
    use kube::CustomResource;
    use kube::runtime::controller::{Action, Controller};
    use kube::runtime::finalizer::{Event, finalizer};
    use kube::runtime::watcher;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    #[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
    #[kube(
        group = "example.com",
        version = "v1",
        kind = "Widget",
        namespaced,
        status = "WidgetStatus"
    )]
    pub struct WidgetSpec {
        pub size: String,
        pub replicas: Option<i64>,
    }

    #[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
    pub struct WidgetStatus {
        pub phase: Option<String>,
        pub replicas: Option<i64>,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Err(String);

    struct Ctx {
        client: kube::Client,
    }

    async fn reconcile(
        w: Arc<Widget>,
        ctx: Arc<Ctx>,
    ) -> Result<Action, kube::runtime::finalizer::Error<Err>> {
        let ns = w.metadata.namespace.clone().unwrap();
        let api: Api<Widget> = Api::namespaced(ctx.client.clone(), &ns);
        let client = ctx.client.clone();
        finalizer(&api, "example.com/cleanup", w, |ev| async move {
            match ev {
                Event::Apply(w) => {
                    let name = w.metadata.name.clone().unwrap();
                    let st = json!({"status": {"phase": "Ready", "replicas": w.spec.replicas}});
                    Api::<Widget>::namespaced(client, &ns)
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(st))
                        .await
                        .map_err(|e| Err(e.to_string()))?;
                    Ok(Action::await_change())
                }
                Event::Cleanup(w) => {
                    let marker = cm(
                        &format!("cleaned-{}", w.metadata.name.clone().unwrap()),
                        &[],
                    );
                    Api::<ConfigMap>::namespaced(client, &ns)
                        .create(&PostParams::default(), &marker)
                        .await
                        .map_err(|e| Err(e.to_string()))?;
                    Ok(Action::await_change())
                }
            }
        })
        .await
    }

    fn error_policy(
        _: Arc<Widget>,
        _: &kube::runtime::finalizer::Error<Err>,
        _: Arc<Ctx>,
    ) -> Action {
        Action::requeue(Duration::from_millis(100))
    }

    #[tokio::test]
    async fn controller_with_finalizer_reconciles_end_to_end() {
        let sim = sim_with_widgets().await;
        let client = sim.client().await.unwrap();
        let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
        let ctl = Controller::new(
            Api::<Widget>::all(client.clone()),
            watcher::Config::default(),
        )
        .run(
            reconcile,
            error_policy,
            Arc::new(Ctx {
                client: client.clone(),
            }),
        )
        .for_each(|_| async {});
        let handle = tokio::spawn(ctl);

        let w = Widget::new(
            "w1",
            WidgetSpec {
                size: "large".into(),
                replicas: Some(3),
            },
        );
        widgets.create(&PostParams::default(), &w).await.unwrap();
        let ready = eventually(10, || async {
            let w = widgets.get("w1").await.ok()?;
            (w.status.as_ref()?.phase.as_deref() == Some("Ready")).then_some(w)
        })
        .await;
        assert_eq!(ready.status.unwrap().replicas, Some(3));
        assert_eq!(ready.metadata.finalizers.unwrap(), ["example.com/cleanup"]);

        widgets
            .delete("w1", &DeleteParams::default())
            .await
            .unwrap();
        eventually(10, || async {
            widgets.get("w1").await.is_err().then_some(())
        })
        .await;
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        assert!(
            cms.get("cleaned-w1").await.is_ok(),
            "cleanup ran before the object disappeared"
        );
        handle.abort();
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn runtime_watcher_with_streaming_lists() {
        let sim = sim_with_widgets().await;
        let client = sim.client().await.unwrap();
        let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
        widgets
            .create(
                &PostParams::default(),
                &Widget::new(
                    "pre",
                    WidgetSpec {
                        size: "small".into(),
                        replicas: None,
                    },
                ),
            )
            .await
            .unwrap();
        for cfg in [
            watcher::Config::default(),
            watcher::Config::default().streaming_lists(),
        ] {
            let mut stream = watcher(widgets.clone(), cfg).boxed();
            let mut names = Vec::new();
            loop {
                match stream.try_next().await.unwrap().unwrap() {
                    watcher::Event::InitApply(w) => names.push(w.metadata.name.unwrap()),
                    watcher::Event::InitDone => break,
                    _ => {}
                }
            }
            assert_eq!(names, ["pre"]);
        }
        sim.shutdown().await;
    }
}

mod rbac {
    use super::*;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    use kube_sim::UserInfo;

    async fn admin_apply(sim: &KubeSim, yaml: &str) {
        sim.apply_yaml(yaml).unwrap();
    }

    #[tokio::test]
    async fn rbac_enforces_rules_resource_names_subresources_and_wildcards() {
        let sim = KubeSim::builder().rbac(true).start().await.unwrap();
        sim.apply_yaml(WIDGET_CRD).unwrap();
        admin_apply(
            &sim,
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: ops}\n",
        )
        .await;
        let admin = sim.client().await.unwrap();
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
        }))
        .unwrap();
        for name in ["web", "other"] {
            let mut d = d.clone();
            d.metadata.name = Some(name.into());
            Api::<Deployment>::namespaced(admin.clone(), "ops")
                .create(&PostParams::default(), &d)
                .await
                .unwrap();
        }

        let sa = sim.service_account_client("ops", "ctl").await.unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(sa.clone(), "ops");
        let e = status(cms.list(&ListParams::default()).await.unwrap_err());
        assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
        assert_eq!(
            e.message,
            "configmaps is forbidden: User \"system:serviceaccount:ops:ctl\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"ops\""
        );
        // Discovery is open to every authenticated user, as with the default bindings.
        sa.apiserver_version().await.unwrap();

        let roles = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: web-scaler}
rules:
- {apiGroups: [apps], resources: [deployments/scale], verbs: [get, patch]}
- {apiGroups: [apps], resources: [deployments], resourceNames: [web], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: ctl-web-scaler}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: web-scaler}
subjects: [{kind: ServiceAccount, name: ctl, namespace: ops}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: cm-watch, namespace: ops}
rules:
- {apiGroups: [""], resources: [configmaps], verbs: [list, watch]}
- {apiGroups: [example.com], resources: [widgets/status], verbs: [patch]}
- {apiGroups: [example.com], resources: [widgets], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: sa-group, namespace: ops}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: cm-watch}
subjects: [{kind: Group, name: "system:serviceaccounts:ops"}]
"#;
        admin_apply(&sim, roles).await;
        let deploys: Api<Deployment> = Api::namespaced(sa.clone(), "ops");
        deploys.get("web").await.unwrap();
        assert_eq!(status(deploys.get("other").await.unwrap_err()).code, 403);
        let e = status(deploys.list(&ListParams::default()).await.unwrap_err());
        assert_eq!(
            e.code, 403,
            "resourceNames never grant an unrestricted list"
        );
        // ...but a list/watch pinned to the name by field selector is the object itself.
        let pinned = deploys
            .list(&ListParams::default().fields("metadata.name=web"))
            .await
            .unwrap();
        assert_eq!(pinned.items.len(), 1);
        let mut one = kube::runtime::watcher(
            deploys.clone(),
            kube::runtime::watcher::Config::default().fields("metadata.name=web"),
        )
        .boxed();
        assert!(matches!(
            one.try_next().await.unwrap(),
            Some(kube::runtime::watcher::Event::Init)
        ));
        assert_eq!(
            status(
                deploys
                    .list(&ListParams::default().fields("metadata.name=other"))
                    .await
                    .unwrap_err()
            )
            .code,
            403
        );
        deploys
            .patch_scale(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 2}})),
            )
            .await
            .unwrap();
        let e = status(
            deploys
                .patch(
                    "web",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"replicas": 3}})),
                )
                .await
                .unwrap_err(),
        );
        assert!(
            e.message
                .contains("cannot patch resource \"deployments\" in API group \"apps\""),
            "{}",
            e.message
        );

        // SelfSubjectAccessReview answers with the same authoriser.
        let can = |verb: &str, group: &str, resource: &str, sub: &str, name: &str| {
            let sa = sa.clone();
            let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {"namespace": "ops", "verb": verb, "group": group, "resource": resource, "subresource": sub, "name": name}}});
            async move {
                let api: Api<k8s_openapi::api::authorization::v1::SelfSubjectAccessReview> =
                    Api::all(sa);
                let out = api
                    .create(
                        &PostParams::default(),
                        &serde_json::from_value(review).unwrap(),
                    )
                    .await
                    .unwrap();
                out.status.unwrap().allowed
            }
        };
        assert!(can("patch", "apps", "deployments", "scale", "web").await);
        assert!(!can("patch", "apps", "deployments", "", "web").await);
        assert!(can("watch", "", "configmaps", "", "").await);
        assert!(!can("delete", "", "configmaps", "", "x").await);

        cms.list(&ListParams::default()).await.unwrap();
        let _events = cms
            .watch(&WatchParams::default().timeout(1), "0")
            .await
            .unwrap();
        assert_eq!(
            status(
                Api::<ConfigMap>::namespaced(sa.clone(), "default")
                    .list(&ListParams::default())
                    .await
                    .unwrap_err()
            )
            .code,
            403
        );
        let e = status(
            cms.create(&PostParams::default(), &cm("x", &[]))
                .await
                .unwrap_err(),
        );
        assert!(
            e.message.contains("cannot create resource \"configmaps\""),
            "{}",
            e.message
        );
        let e = status(
            cms.delete_collection(&DeleteParams::default(), &ListParams::default())
                .await
                .unwrap_err(),
        );
        assert!(
            e.message
                .contains("cannot deletecollection resource \"configmaps\""),
            "{}",
            e.message
        );

        // Subresource rules: status may be patched, the main resource may not.
        widget_api(admin.clone(), "ops")
            .create(
                &PostParams::default(),
                &widget("w", json!({"size": "small"})),
            )
            .await
            .unwrap();
        let w = widget_api(sa.clone(), "ops");
        w.patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Ready"}})),
        )
        .await
        .unwrap();
        assert_eq!(
            status(
                w.patch(
                    "w",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"size": "large"}}))
                )
                .await
                .unwrap_err()
            )
            .code,
            403
        );

        // Wildcards grant everything, for a plain user token.
        sim.add_token(
            "alice-token",
            UserInfo {
                name: "alice".into(),
                groups: vec!["system:authenticated".into()],
            },
        );
        let alice = sim.client_for_token("alice-token").await.unwrap();
        assert_eq!(
            status(
                Api::<ConfigMap>::all(alice.clone())
                    .list(&ListParams::default())
                    .await
                    .unwrap_err()
            )
            .code,
            403
        );
        // The bootstrap cluster-admin role exists, as on every cluster.
        Api::<ClusterRole>::all(admin.clone())
            .get("cluster-admin")
            .await
            .unwrap();
        let cr: ClusterRole = serde_json::from_value(json!({"metadata": {"name": "all"}, "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]})).unwrap();
        Api::<ClusterRole>::all(admin.clone())
            .create(&PostParams::default(), &cr)
            .await
            .unwrap();
        let crb: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "alice-all"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "all"},
            "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}]
        }))
        .unwrap();
        Api::<ClusterRoleBinding>::all(admin.clone())
            .create(&PostParams::default(), &crb)
            .await
            .unwrap();
        Api::<ConfigMap>::all(alice.clone())
            .list(&ListParams::default())
            .await
            .unwrap();
        Api::<Namespace>::all(alice)
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "alices"}})).unwrap(),
            )
            .await
            .unwrap();
        // Bindings are read per request: deleting one revokes access at once.
        Api::<RoleBinding>::namespaced(admin.clone(), "ops")
            .delete("sa-group", &DeleteParams::default())
            .await
            .unwrap();
        assert_eq!(
            status(cms.list(&ListParams::default()).await.unwrap_err()).code,
            403
        );
        let _ = Api::<Role>::namespaced(admin, "ops");
        sim.shutdown().await;
    }
}

mod faults {
    use super::*;
    use kube_sim::{FaultAction, FaultRule};

    #[tokio::test]
    async fn injected_faults_and_request_accounting() {
        let sim = sim().await;
        // kube's default client retries 429/503/504 (honouring Retry-After); see them raw.
        let mut cfg = sim.config().await.unwrap();
        cfg.default_retry = false;
        let client = kube::Client::try_from(cfg).unwrap();
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        api.create(&PostParams::default(), &cm("a", &[]))
            .await
            .unwrap();
        let faults = sim.faults();

        // With the default (retrying) client a transient 503 is invisible but costs a call.
        faults.inject(
            FaultRule::new(FaultAction::Error { code: 503 })
                .verb("get")
                .times(1),
        );
        Api::<ConfigMap>::namespaced(sim.client().await.unwrap(), "default")
            .get("a")
            .await
            .unwrap();
        assert_eq!(sim.stats().count("get", Some("configmaps")), 2);
        sim.stats().reset();

        faults.inject(
            FaultRule::new(FaultAction::Error { code: 503 })
                .verb("get")
                .resource("configmaps")
                .name("a")
                .times(2),
        );
        for _ in 0..2 {
            let e = status(api.get("a").await.unwrap_err());
            assert_eq!((e.code, e.reason.as_str()), (503, "ServiceUnavailable"));
        }
        api.get("a").await.unwrap();
        api.create(&PostParams::default(), &cm("b", &[]))
            .await
            .unwrap();

        faults.inject(
            FaultRule::new(FaultAction::Error { code: 429 })
                .verb("list")
                .times(1),
        );
        let e = status(api.list(&ListParams::default()).await.unwrap_err());
        assert_eq!((e.code, e.reason.as_str()), (429, "TooManyRequests"));

        faults.inject(
            FaultRule::new(FaultAction::Conflict)
                .verb("update")
                .times(1),
        );
        let cur = api.get("a").await.unwrap();
        let e = status(
            api.replace("a", &PostParams::default(), &cur)
                .await
                .unwrap_err(),
        );
        assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));

        faults.inject(
            FaultRule::new(FaultAction::Delay { millis: 300 })
                .verb("get")
                .times(1),
        );
        let t0 = std::time::Instant::now();
        api.get("a").await.unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(300));

        faults.inject(FaultRule::new(FaultAction::Drop).verb("get").times(1));
        let err = api.get("a").await.unwrap_err();
        assert!(
            !matches!(err, kube::Error::Api(_)),
            "dropped connection, not an API error: {err:?}"
        );
        api.get("a").await.unwrap();

        faults.outage(Duration::from_millis(400));
        assert_eq!(status(api.get("a").await.unwrap_err()).code, 503);
        tokio::time::sleep(Duration::from_millis(500)).await;
        api.get("a").await.unwrap();

        faults.inject(
            FaultRule::new(FaultAction::Error { code: 500 })
                .resource("secrets")
                .for_duration(Duration::from_millis(300)),
        );
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
        assert_eq!(
            status(secrets.list(&ListParams::default()).await.unwrap_err()).code,
            500
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        secrets.list(&ListParams::default()).await.unwrap();
        assert!(faults.active().is_empty());

        // Accounting: counts by user, verb and resource.
        let stats = sim.stats();
        assert_eq!(stats.count("get", Some("configmaps")), 9);
        assert_eq!(stats.count("create", Some("configmaps")), 1);
        assert_eq!(stats.count("list", Some("secrets")), 2);
        assert_eq!(stats.total_for_user("kube-sim-admin"), stats.total());

        // The admin HTTP endpoints.
        let rule = json!({"verb": "get", "resource": "configmaps", "name": "b", "action": {"type": "error", "code": 503}, "count": 1});
        let req = http::Request::post("/_sim/faults")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&rule).unwrap())
            .unwrap();
        client.request_text(req).await.unwrap();
        assert_eq!(status(api.get("b").await.unwrap_err()).code, 503);
        let text = client
            .request_text(http::Request::get("/_sim/stats").body(vec![]).unwrap())
            .await
            .unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["total"].as_u64().unwrap(), stats.total());
        let sa = sim.service_account_client("default", "x").await.unwrap();
        let e = sa
            .request_text(http::Request::get("/_sim/stats").body(vec![]).unwrap())
            .await
            .unwrap_err();
        assert_eq!(status(e).code, 403);
        sim.shutdown().await;
    }

    /// A `HoldEvents` rule leaves requests alone and delays what the open watches it
    /// matches deliver, in order, until it expires; watches it does not match go on.
    #[tokio::test]
    async fn held_watch_events_arrive_in_order_when_the_rule_expires() {
        let sim = sim().await;
        let client = sim.client().await.unwrap();
        let held: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let other: Api<Secret> = Api::namespaced(client, "default");
        // From now on: the changes that follow, not the objects already there.
        let now = held
            .list(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        let mut held_events = held
            .watch(&WatchParams::default().timeout(30), &now)
            .await
            .unwrap()
            .boxed();
        let mut other_events = other
            .watch(&WatchParams::default().timeout(30), &now)
            .await
            .unwrap()
            .boxed();
        let hold = Duration::from_millis(1500);
        // Before the rule: it expires `hold` after it is injected.
        let start = std::time::Instant::now();
        sim.faults().inject(
            FaultRule::new(FaultAction::HoldEvents)
                .verb("watch")
                .resource("configmaps")
                .namespace("default")
                .for_duration(hold),
        );
        held.create(&PostParams::default(), &cm("a", &[]))
            .await
            .unwrap();
        held.delete("a", &DeleteParams::default()).await.unwrap();
        other
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "s"}})).unwrap(),
            )
            .await
            .unwrap();
        assert!(matches!(
            next_event(&mut other_events).await,
            WatchEvent::Added(_)
        ));
        assert!(
            start.elapsed() < hold,
            "a watch the rule does not match was held"
        );
        let first = next_event(&mut held_events).await;
        assert!(start.elapsed() >= hold, "the held watch delivered early");
        assert!(matches!(first, WatchEvent::Added(_)), "{first:?}");
        assert!(matches!(
            next_event(&mut held_events).await,
            WatchEvent::Deleted(_)
        ));
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn pod_eviction_and_service_account_token_requests() {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
    let sim = KubeSim::builder().rbac(true).start().await.unwrap();
    let client = sim.client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Pending"));
    pods.evict("p", &kube::api::EvictParams::default())
        .await
        .unwrap();
    assert_eq!(status(pods.get("p").await.unwrap_err()).code, 404);

    let sas: Api<ServiceAccount> = Api::namespaced(client, "default");
    let tr: TokenRequest = serde_json::from_value(json!({"spec": {"audiences": []}})).unwrap();
    assert_eq!(
        status(
            sas.create_token_request("ghost", &PostParams::default(), &tr)
                .await
                .unwrap_err()
        )
        .code,
        404
    );
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "bot"}})).unwrap(),
    )
    .await
    .unwrap();
    let token = sas
        .create_token_request("bot", &PostParams::default(), &tr)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let bot = sim
        .client_for_token(token.as_deref().unwrap())
        .await
        .unwrap();
    let e = status(
        Api::<Pod>::namespaced(bot, "default")
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert!(
        e.message
            .contains("User \"system:serviceaccount:default:bot\" cannot list"),
        "{}",
        e.message
    );
    sim.shutdown().await;
}

/// A watch may bring its initial state (a streaming list) only where the
/// `WatchList` gate is on; off, the request is refused as the real server
/// refuses it, and a plain watch is still served.
#[tokio::test]
async fn streaming_lists_follow_the_watch_list_gate() {
    for gate in [true, false] {
        let sim = KubeSim::builder().watch_list(gate).start().await.unwrap();
        let api: Api<ConfigMap> = Api::namespaced(sim.client().await.unwrap(), "default");
        for name in ["a", "b"] {
            api.create(&PostParams::default(), &cm(name, &[]))
                .await
                .unwrap();
        }
        let streamed = api
            .watch(&WatchParams::streaming_lists().timeout(5), "0")
            .await;
        if gate {
            let mut s = streamed.unwrap().boxed();
            let mut added = vec![];
            let end = loop {
                match s.try_next().await.unwrap().unwrap() {
                    WatchEvent::Added(o) => added.push(o.metadata.name.unwrap()),
                    WatchEvent::Bookmark(b) => break b,
                    other => panic!("{other:?}"),
                }
            };
            assert_eq!(added, ["a", "b"]);
            assert_eq!(
                end.metadata
                    .annotations
                    .get("k8s.io/initial-events-end")
                    .map(String::as_str),
                Some("true")
            );
        } else {
            let Err(kube::Error::Api(s)) = streamed else {
                panic!("a streaming list served with the gate off");
            };
            assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
            assert_eq!(
                s.message,
                "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled"
            );
            let d = s.details.as_ref().unwrap();
            assert_eq!(
                (d.group.as_str(), d.kind.as_str()),
                ("meta.k8s.io", "ListOptions")
            );
            assert_eq!(d.causes[0].field, "sendInitialEvents");
            // A watch without it is served as always.
            let mut s = api
                .watch(&WatchParams::default().timeout(5), "0")
                .await
                .unwrap()
                .boxed();
            assert!(matches!(next_event(&mut s).await, WatchEvent::Added(_)));
        }
        sim.shutdown().await;
    }
}
