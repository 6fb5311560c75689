//! cloud-credential operator (passthrough mode): keeps the component secrets an exact copy
//! of `kube-system/vsphere-creds`, a `credentials_sync` delay after each change.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use super::{Ctx, run_loop, trigger, waited};
use crate::kapi::{self, call};
use crate::seed::CREDENTIAL_COPIES;

/// Runs the operator until cancelled.
pub(crate) async fn run(ctx: Ctx) {
    let source: Api<Secret> = Api::namespaced(ctx.client.clone(), "kube-system");
    let pending: Arc<Mutex<Option<Instant>>> = Arc::default();
    // What the operator watches (cloud-credential-operator
    // `pkg/operator/credentialsrequest/credentialsrequest_controller.go`, `add`): the root
    // secret, the Secrets it wrote (a copy changed or deleted by someone else is put back
    // at once) and the CloudCredential config (its mode).
    let mut triggers = vec![
        trigger(source.clone()),
        super::mcp::dyn_trigger(kapi::dyn_api(
            &ctx.client,
            "operator.openshift.io/v1",
            "CloudCredential",
            None,
        )),
    ];
    for (ns, _) in CREDENTIAL_COPIES {
        triggers.push(trigger(Api::<Secret>::namespaced(ctx.client.clone(), ns)));
    }
    run_loop("cloud-credential-operator", &ctx, triggers, || {
        reconcile(ctx.clone(), source.clone(), pending.clone())
    })
    .await;
}

async fn reconcile(
    ctx: Ctx,
    source: Api<Secret>,
    pending: Arc<Mutex<Option<Instant>>>,
) -> Result<(), String> {
    if ctx.faults.credentials_not_propagated {
        return Ok(());
    }
    let e = |e: kapi::CallError| e.to_string();
    // Manual mode: the administrator owns the component secrets; cloud-credential-operator's
    // controllers return early on `operatorv1.CloudCredentialsModeManual` ("operator in
    // disabled / manual mode") and copy nothing.
    let config = kapi::dyn_api(
        &ctx.client,
        "operator.openshift.io/v1",
        "CloudCredential",
        None,
    );
    if let Some(cc) = call(config.get_opt("cluster")).await.map_err(e)?
        && cc
            .data
            .pointer("/spec/credentialsMode")
            .and_then(|v| v.as_str())
            == Some("Manual")
    {
        return Ok(());
    }
    let Some(root) = call(source.get_opt("vsphere-creds")).await.map_err(e)? else {
        return Ok(());
    };
    let data = root.data.clone().unwrap_or_default();
    let mut stale = Vec::new();
    for (ns, name) in CREDENTIAL_COPIES {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
        let copy = call(api.get_opt(name)).await.map_err(e)?;
        if copy
            .as_ref()
            .and_then(|c| c.data.clone())
            .unwrap_or_default()
            != data
        {
            stale.push((api, *ns, *name, copy));
        }
    }
    if stale.is_empty() {
        *pending.lock().map_err(|e| e.to_string())? = None;
        return Ok(());
    }
    let since = *pending
        .lock()
        .map_err(|e| e.to_string())?
        .get_or_insert_with(Instant::now);
    if !waited(since, ctx.delays.credentials_sync) {
        return Ok(());
    }
    for (api, ns, name, copy) in stale {
        match copy {
            Some(mut s) => {
                s.data = Some(data.clone());
                call(api.replace(name, &PostParams::default(), &s))
                    .await
                    .map_err(e)?;
            }
            None => {
                let obj = crate::seed::secret(ns, name, json!(data));
                kapi::create(&ctx.client, &obj).await.map_err(e)?;
            }
        }
        tracing::info!(secret = name, "credentials propagated");
    }
    *pending.lock().map_err(|e| e.to_string())? = None;
    Ok(())
}
