//! The client against an HTTPS stub serving responses shaped like real vCenter 8.0U2's, for
//! behaviour vcsim cannot show: categories read back without `urn:vim25:`, a task that never
//! finishes, a `NoPermission` fault, 503s, REST 401/403. The bodies are transcribed from the
//! vim25 WSDL and vCenter responses (no live vCenter is reachable from this machine).

// The stub server is test support code outside #[test] fns; a panic there fails the test.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use vcfm_vsphere::{
    CallLog, Cardinality, CategorySpec, Client, ClientConfig, Credentials, Error, MoRef,
    RestErrorKind, RetryPolicy, TlsOptions,
};

struct Reply {
    status: u16,
    body: String,
    cookie: Option<&'static str>,
}

fn ok(body: impl Into<String>) -> Reply {
    Reply {
        status: 200,
        body: body.into(),
        cookie: None,
    }
}

fn status(status: u16, body: impl Into<String>) -> Reply {
    Reply {
        status,
        body: body.into(),
        cookie: None,
    }
}

type Handler = dyn Fn(&str, &str, &str) -> Reply + Send + Sync;

/// HTTPS server on 127.0.0.1 with a fresh self-signed certificate; the client pins it.
struct Stub {
    port: u16,
    thumbprint: String,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stub {
    async fn start(handler: impl Fn(&str, &str, &str) -> Reply + Send + Sync + 'static) -> Stub {
        let handler: Arc<Handler> = Arc::new(handler);
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let thumbprint = vcfm_vsphere::thumbprint_sha256(cert.cert.der());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, handler, seen) = (acceptor.clone(), handler.clone(), seen2.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (handler, seen) = (handler.clone(), seen.clone());
                            async move {
                                let method = req.method().to_string();
                                let path = req
                                    .uri()
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default();
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let body = String::from_utf8_lossy(&body).to_string();
                                let key = match soap_method(&body) {
                                    Some(m) => m,
                                    None => format!("{method} {path}"),
                                };
                                seen.lock().unwrap().push(key);
                                let r = handler(&method, &path, &body);
                                let mut resp = hyper::Response::builder().status(r.status);
                                if let Some(c) = r.cookie {
                                    resp = resp.header("set-cookie", c);
                                }
                                Ok::<_, Infallible>(
                                    resp.body(Full::new(Bytes::from(r.body))).unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Stub {
            port,
            thumbprint,
            seen,
            task,
        }
    }

    fn client(&self) -> Client {
        let cfg = ClientConfig::new(
            format!("127.0.0.1:{}", self.port),
            Credentials::new("administrator@vsphere.local", "pw-1234567"),
        )
        .with_tls(TlsOptions::with_thumbprint(&self.thumbprint))
        .with_timeout(Duration::from_secs(5))
        .with_retry(RetryPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
        });
        Client::new(cfg).unwrap()
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// The SOAP method of a request body (`<FindByInventoryPath xmlns="urn:vim25">`).
fn soap_method(body: &str) -> Option<String> {
    let i = body.find("<soapenv:Body><")? + "<soapenv:Body><".len();
    let rest = &body[i..];
    Some(rest[..rest.find(' ')?].to_string())
}

fn envelope(inner: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<soapenv:Body>{inner}</soapenv:Body></soapenv:Envelope>"#
    )
}

const SERVICE_CONTENT: &str = r#"<RetrieveServiceContentResponse xmlns="urn:vim25"><returnval>
<rootFolder type="Folder">group-d1</rootFolder><propertyCollector type="PropertyCollector">propertyCollector</propertyCollector>
<viewManager type="ViewManager">ViewManager</viewManager><about><name>VMware vCenter Server</name>
<fullName>VMware vCenter Server 8.0.2 build-22617221</fullName><vendor>VMware, Inc.</vendor><version>8.0.2</version>
<patchLevel></patchLevel><build>22617221</build><localeVersion>INTL</localeVersion><localeBuild>000</localeBuild>
<osType>linux-x64</osType><productLineId>vpx</productLineId><apiType>VirtualCenter</apiType><apiVersion>8.0.2.0</apiVersion>
<instanceUuid>0e3b8a5c-7d6a-4a51-8c36-2f5a8f0c9e11</instanceUuid><licenseProductName>VMware VirtualCenter Server</licenseProductName>
<licenseProductVersion>8.0</licenseProductVersion></about><setting type="OptionManager">VpxSettings</setting>
<userDirectory type="UserDirectory">UserDirectory</userDirectory><sessionManager type="SessionManager">SessionManager</sessionManager>
<authorizationManager type="AuthorizationManager">AuthorizationManager</authorizationManager>
<searchIndex type="SearchIndex">SearchIndex</searchIndex><taskManager type="TaskManager">TaskManager</taskManager>
</returnval></RetrieveServiceContentResponse>"#;

const LOGIN: &str = r#"<LoginResponse xmlns="urn:vim25"><returnval><key>52b4a1e0-9f07-3c6e-5a8d-1f3c2b4e6d7a</key>
<userName>VSPHERE.LOCAL\Administrator</userName><fullName>Administrator vsphere.local</fullName>
<loginTime>2026-11-26T09:00:00.000Z</loginTime><lastActiveTime>2026-11-26T09:00:00.000Z</lastActiveTime>
<locale>en</locale><messageLocale>en</messageLocale><extensionSession>false</extensionSession></returnval></LoginResponse>"#;

/// vCenter's `Set-Cookie` for a SOAP session.
const COOKIE: &str =
    "vmware_soap_session=\"3f9c8d2e1b7a6f5e4d3c2b1a09f8e7d6c5b4a392\"; Path=/; HttpOnly; Secure;";

/// Answers RetrieveServiceContent and Login; `rest` handles everything else.
fn soap_base(body: &str, rest: impl Fn(&str) -> Reply) -> Reply {
    match soap_method(body).as_deref() {
        Some("RetrieveServiceContent") => ok(envelope(SERVICE_CONTENT)),
        Some("Login") => Reply {
            cookie: Some(COOKIE),
            ..ok(envelope(LOGIN))
        },
        Some(m) => rest(m),
        None => status(400, "not SOAP"),
    }
}

#[tokio::test]
async fn category_read_back_without_urn_prefix_is_accepted() {
    const ID: &str =
        "urn:vmomi:InventoryServiceCategory:9c4f5c8a-1c1e-4b6c-9a33-4d0d0b1a2f10:GLOBAL";
    let stub = Stub::start(|method, path, _| match (method, path) {
        ("POST", "/rest/com/vmware/cis/session") => ok(r#"{"value":"0d6f4c2a8e1b3d5f7a9c1e3b5d7f9a1c"}"#),
        ("GET", "/rest/com/vmware/cis/tagging/category") => ok(format!(r#"{{"value":["{ID}"]}}"#)),
        ("GET", p) if p.ends_with(":GLOBAL") => ok(format!(
            r#"{{"value":{{"associable_types":["ClusterComputeResource","Datacenter"],"name":"openshift-zone",
            "description":"Added by openshift-install do not remove","id":"{ID}","used_by":[],"cardinality":"SINGLE"}}}}"#
        )),
        _ => status(500, "unexpected"),
    })
    .await;
    let spec = CategorySpec {
        name: "openshift-zone".into(),
        description: String::new(),
        cardinality: Cardinality::Single,
        associable_types: vec![
            "urn:vim25:Datacenter".into(),
            "urn:vim25:ClusterComputeResource".into(),
        ],
    };
    let cat = stub.client().ensure_category(&spec).await.unwrap();
    assert_eq!(cat.id, ID);
    assert!(
        !stub
            .seen()
            .iter()
            .any(|r| r == "POST /rest/com/vmware/cis/tagging/category"),
        "reused, not created"
    );
}

#[tokio::test]
async fn a_task_that_never_finishes_hits_the_deadline() {
    let running = envelope(
        r#"<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="Task">task-4711</obj>
        <propSet><name>info</name><val xsi:type="TaskInfo"><key>task-4711</key><task type="Task">task-4711</task>
        <descriptionId>VirtualMachine.clone</descriptionId><entity type="VirtualMachine">vm-42</entity>
        <state>running</state><cancelled>false</cancelled><cancelable>true</cancelable><progress>12</progress>
        </val></propSet></objects></returnval></RetrievePropertiesExResponse>"#,
    );
    let stub = Stub::start(move |_, _, body| {
        soap_base(body, |m| match m {
            "RetrievePropertiesEx" => ok(running.clone()),
            _ => status(500, "unexpected"),
        })
    })
    .await;
    let c = stub.client();
    let err = c
        .wait_for_task(&MoRef::new("Task", "task-4711"), Duration::from_millis(300))
        .await
        .unwrap_err();
    match err {
        Error::TaskTimeout {
            operation,
            state,
            waited,
            ..
        } => {
            assert_eq!(operation, "VirtualMachine.clone");
            assert_eq!(state, "running");
            assert!(waited >= Duration::from_millis(300));
        }
        other => panic!("expected TaskTimeout, got {other:?}"),
    }
    let polls = stub
        .seen()
        .iter()
        .filter(|m| *m == "RetrievePropertiesEx")
        .count();
    assert!(polls >= 2, "polled {polls} times");
}

#[tokio::test]
async fn no_permission_fault_names_the_privilege_and_object() {
    let fault = envelope(
        r#"<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>Permission to perform this operation was denied.</faultstring>
        <detail><NoPermissionFault xmlns="urn:vim25" xsi:type="NoPermission"><object type="Folder">group-v4</object>
        <privilegeId>Folder.Create</privilegeId><missingPrivileges><entity type="Folder">group-v4</entity>
        <privileges>Folder.Create</privileges></missingPrivileges></NoPermissionFault></detail></soapenv:Fault>"#,
    );
    let stub = Stub::start(move |_, _, body| {
        soap_base(body, |m| match m {
            "CreateFolder" => status(500, fault.clone()),
            _ => status(500, "unexpected"),
        })
    })
    .await;
    let err = stub
        .client()
        .create_folder(&MoRef::new("Folder", "group-v4"), "ocp")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NoPermission { privilege, object, .. } if privilege == "Folder.Create" && object == "Folder:group-v4"),
        "{err:?}"
    );
    assert!(err.to_string().contains("grant it"), "{err}");
}

#[tokio::test]
async fn unavailable_vcenter_is_retried_only_for_idempotent_calls() {
    let found = envelope(
        r#"<FindByInventoryPathResponse xmlns="urn:vim25"><returnval type="Datacenter">datacenter-3</returnval></FindByInventoryPathResponse>"#,
    );
    let flaky = Arc::new(Mutex::new(0));
    let f = flaky.clone();
    let stub = Stub::start(move |_, _, body| {
        soap_base(body, |m| match m {
            "FindByInventoryPath" => {
                let mut n = f.lock().unwrap();
                *n += 1;
                if *n == 1 {
                    status(503, "Service Unavailable")
                } else {
                    ok(found.clone())
                }
            }
            "CreateFolder" => status(503, "Service Unavailable"),
            _ => status(500, "unexpected"),
        })
    })
    .await;
    let log = CallLog::new(20);
    let c = stub.client().with_observer(Arc::new(log.clone()));
    assert_eq!(
        c.find_datacenter("/DC1").await.unwrap(),
        MoRef::new("Datacenter", "datacenter-3")
    );
    assert_eq!(*flaky.lock().unwrap(), 2, "lookup retried after 503");
    let err = c
        .create_folder(&MoRef::new("Folder", "group-v4"), "x")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert_eq!(
        stub.seen().iter().filter(|m| *m == "CreateFolder").count(),
        1,
        "a change is never retried"
    );
    assert!(
        log.records()
            .iter()
            .any(|r| r.method == "FindByInventoryPath" && r.attempt == 2)
    );
}

#[tokio::test]
async fn rest_401_relogs_in_and_403_is_unauthorized() {
    let tokens = Arc::new(Mutex::new(0));
    let t = tokens.clone();
    let stub = Stub::start(move |method, path, _| match (method, path) {
        ("POST", "/rest/com/vmware/cis/session") => {
            let mut n = t.lock().unwrap();
            *n += 1;
            ok(format!(r#"{{"value":"token-number-{n}-abcdef"}}"#))
        }
        // The first token is rejected as if it had expired.
        ("GET", "/rest/com/vmware/cis/tagging/tag") if *t.lock().unwrap() == 1 => status(
            401,
            r#"{"type":"com.vmware.vapi.std.errors.unauthenticated","value":{"messages":[{"args":[],"default_message":"Authentication required.","id":"vapi.method.authentication.required"}]}}"#,
        ),
        ("GET", "/rest/com/vmware/cis/tagging/tag") => ok(r#"{"value":[]}"#),
        ("POST", p) if p.contains("~action=attach") => status(
            403,
            r#"{"type":"com.vmware.vapi.std.errors.unauthorized","value":{"messages":[{"args":[],"default_message":"Unable to authorize user","id":"vapi.security.authorization.invalid"}]}}"#,
        ),
        _ => status(500, "unexpected"),
    })
    .await;
    let c = stub.client();
    assert!(c.list_tags().await.unwrap().is_empty());
    assert_eq!(c.stats().rest_logins, 2);
    let err = c
        .attach_tag(
            "urn:vmomi:InventoryServiceTag:x:GLOBAL",
            &MoRef::new("Datacenter", "datacenter-3"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Rest { kind: RestErrorKind::Unauthorized, status: 403, message, .. } if message == "Unable to authorize user"),
        "{err:?}"
    );
}
