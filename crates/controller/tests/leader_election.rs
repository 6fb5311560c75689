//! Leader election tolerates clock skew: a standby judges the holder's lease
//! by when it saw the lease change, not by the holder's `renewTime` against
//! its own clock (client-go's leaderelection does the same).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common_e2e;

use common_e2e::*;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use openshift_sim::Scenario;
use std::time::Duration;
use vcfm_controller::LeaderElection;

const HOLDER: &str = "replica-with-a-slow-clock";

/// The holder's clock runs an hour behind ours.
fn skewed_now() -> MicroTime {
    MicroTime(jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_does_not_take_a_lease_renewed_by_a_holder_whose_clock_is_behind() {
    let mut env = Env::start(Scenario {
        workers: 1,
        ..Scenario::default()
    })
    .await;
    let leases = Api::<Lease>::namespaced(env.client.clone(), NS);
    let le = LeaderElection {
        retry_period: Duration::from_millis(300),
        ..LeaderElection::new(NS, "standby")
    };
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(le.name.clone()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(HOLDER.into()),
            lease_duration_seconds: Some(3),
            renew_time: Some(skewed_now()),
            ..Default::default()
        }),
    };
    leases.create(&PostParams::default(), &lease).await.unwrap();
    env.leader_election = Some(le.clone());
    env.spawn_controller();
    env.create_migration("le", env.spec(FD, 1, true)).await;

    // The holder renews every second, for longer than its lease duration.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut l = leases.get(&le.name).await.unwrap();
        let spec = l.spec.as_mut().unwrap();
        assert_eq!(
            spec.holder_identity.as_deref(),
            Some(HOLDER),
            "the standby took a lease that was being renewed"
        );
        spec.renew_time = Some(skewed_now());
        leases
            .replace(&le.name, &PostParams::default(), &l)
            .await
            .unwrap();
    }
    let m = env.api().get("le").await.unwrap();
    assert!(m.status.is_none(), "a standby reconciled:\n{}", summary(&m));

    // The holder stops renewing: its lease lapses after its duration, and
    // the standby takes over and starts working.
    env.wait(
        "le",
        "the standby to take over",
        Duration::from_secs(30),
        |m| m.status.is_some(),
    )
    .await;
    let l = leases.get(&le.name).await.unwrap();
    assert_eq!(l.spec.unwrap().holder_identity.as_deref(), Some("standby"));
    env.shutdown().await;
}
