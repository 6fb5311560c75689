//! Reconciles read migrations from the controller's watch cache: the
//! one-migration-at-a-time rule still holds, and the API server sees one list
//! of migrations (the watch's), not one list or get per reconcile. Sim tier (kube-sim's
//! request counters).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common_e2e;

use common_e2e::*;
use openshift_sim::Scenario;
use serde_json::json;
use std::time::Duration;
use vcfm_api::PhaseName;

const MIGRATIONS: &str = "/vmwarecloudfoundationmigrations";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciles_read_migrations_from_the_watch_cache_not_a_list_each() {
    let mut env = Env::start(Scenario {
        workers: 1,
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    env.migrate_through("first", 1, PhaseName::UpdateSecrets, json!({}))
        .await;
    // A second migration is held back while the first is active.
    env.create_migration("second", env.spec(FD, 1, false)).await;
    let m = env
        .wait(
            "second",
            "the second migration to be blocked",
            Duration::from_secs(60),
            |m| {
                m.status.as_ref().is_some_and(|s| {
                    s.conditions.iter().any(|c| {
                        c.type_ == "Blocked"
                            && c.status == "True"
                            && c.reason == "AnotherMigrationActive"
                    })
                })
            },
        )
        .await;
    assert!(
        m.status.as_ref().unwrap().start_time.is_none(),
        "the second migration did not start:\n{}",
        summary(&m)
    );
    let stats = env.sim.kube().stats();
    let count = |verb: &str| -> u64 {
        stats
            .snapshot()
            .iter()
            .filter(|(k, _)| {
                k.user == CONTROLLER_USER && k.verb == verb && k.resource.ends_with(MIGRATIONS)
            })
            .map(|(_, n)| n)
            .sum()
    };
    let (gets, lists) = (count("get"), count("list"));
    let writes: u64 = stats
        .snapshot()
        .iter()
        .filter(|(k, _)| {
            k.user == CONTROLLER_USER
                && k.verb == "update"
                && k.resource.ends_with(&format!("{MIGRATIONS}/status"))
        })
        .map(|(_, n)| n)
        .sum();
    // Reconciles read their own migration and the others from the cache,
    // filled by the watch's initial list (a relist after a dropped watch may
    // add one); a get is only the re-read after a conflicting write.
    assert!(
        writes >= 5,
        "only {writes} status writes: reconciles did not run"
    );
    assert!(
        lists <= 2,
        "{lists} lists of migrations for {writes} status writes: reconciles list instead of reading the cache"
    );
    assert!(
        gets <= 3,
        "{gets} gets of migrations for {writes} status writes: reconciles read the API instead of the cache"
    );
    env.shutdown().await;
}
