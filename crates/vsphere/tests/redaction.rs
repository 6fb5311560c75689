//! Captures every log line (all crates, trace level) across login, re-login, tagging and
//! folder creation, and checks that no password, session cookie, token or key appears.
//! Alone in its binary because it installs the global subscriber.

use std::io::Write;
use std::sync::{Arc, Mutex};

use vcfm_vsphere::sim::{Vcsim, VcsimOptions};
use vcfm_vsphere::{Cardinality, CategorySpec, Credentials, Error};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_reaches_the_logs() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .unwrap();

    let vc = Vcsim::start(VcsimOptions {
        password: "S3cret&<Pass>word!".into(),
        ..VcsimOptions::default()
    })
    .unwrap();
    let c = vc.client().unwrap();
    let admin = vc.client().unwrap();
    let mut secrets = vec![vc.password().to_string()];

    c.login().await.unwrap();
    secrets.extend(c.session_secrets_for_test());
    let key = c.current_session_key().await.unwrap();
    secrets.push(key.clone());

    // Tagging and folder creation.
    let cat = c
        .ensure_category(&CategorySpec {
            name: "openshift-region".into(),
            description: String::new(),
            cardinality: Cardinality::Single,
            associable_types: vec!["urn:vim25:Datacenter".into()],
        })
        .await
        .unwrap();
    let tag = c.ensure_tag(&cat.id, "eu", "").await.unwrap();
    let dc = c.find_datacenter("/DC0").await.unwrap();
    c.attach_tag(&tag.id, &dc).await.unwrap();
    c.ensure_folder("/DC0/vm/secret-test/a").await.unwrap();

    // Kill the session: the re-login creates a new cookie, which must be redacted too.
    admin
        .terminate_sessions(std::slice::from_ref(&key))
        .await
        .unwrap();
    c.ensure_folder("/DC0/vm/secret-test/b").await.unwrap();
    secrets.extend(c.session_secrets_for_test());
    secrets.extend(admin.session_secrets_for_test());
    assert_eq!(c.stats().soap_logins, 2);

    // A failed login with another password.
    let wrong = "Wr0ng-Passw0rd-XYZ";
    let bad = vcfm_vsphere::Client::new(
        vc.client_config_for(Credentials::new(vc.username(), wrong))
            .unwrap(),
    )
    .unwrap();
    let err = bad.login().await.unwrap_err();
    assert!(matches!(err, Error::InvalidLogin { .. }));
    assert!(!format!("{err} {err:?}").contains(wrong));
    secrets.push(wrong.to_string());

    c.logout().await.unwrap();
    drop(c);
    drop(admin);

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    // The capture is real: calls, bodies and redaction markers are there.
    for field in [
        "server=",
        "method=",
        "target_object=",
        "duration_ms=",
        "outcome=",
        "fault=",
    ] {
        assert!(logs.contains(field), "call events lack {field}");
    }
    for expected in [
        "Login",
        "CreateFolder",
        "tag-association",
        "<userName>",
        "<password>***</password>",
        "TerminateSession",
    ] {
        assert!(logs.contains(expected), "log lacks {expected:?}");
    }
    assert!(secrets.len() >= 6, "{} secrets captured", secrets.len());
    for s in &secrets {
        assert!(s.len() >= 8, "secret too short to be meaningful");
        assert!(
            !logs.contains(s.as_str()),
            "secret leaked into logs: {}...",
            &s[..3]
        );
        let escaped = s
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        assert!(
            !logs.contains(&escaped),
            "XML-escaped secret leaked into logs"
        );
    }
}
