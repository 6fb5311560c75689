//! Call logging: one `tracing` event per SOAP/REST exchange, bodies at trace level (redacted),
//! and a per-client-handle observer so the controller can copy a phase's calls into its log.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Which API a call used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// vim25 SOAP at `/sdk`.
    Soap,
    /// vAPI REST under `/rest/com/vmware/cis`.
    Rest,
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Api::Soap => "soap",
            Api::Rest => "rest",
        })
    }
}

/// Summary of one HTTP exchange with vCenter. Never contains secrets.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// Server name (host or host:port).
    pub server: String,
    /// SOAP or REST.
    pub api: Api,
    /// SOAP method (`FindByInventoryPath`) or REST `VERB path` (tag ids included, tokens never).
    pub method: String,
    /// Target object (`Folder:group-d1`) or argument (inventory path), when meaningful.
    pub target: Option<String>,
    /// Wall time of the exchange.
    pub duration: Duration,
    /// True when the call returned a result (no fault, no transport error).
    pub ok: bool,
    /// Fault or error kind (`DuplicateName`, `already_exists`, `timeout`, ...).
    pub fault: Option<String>,
    /// Request body size in bytes.
    pub request_bytes: usize,
    /// Response body size in bytes.
    pub response_bytes: usize,
    /// 1 for the first try, higher for retries.
    pub attempt: u32,
}

impl std::fmt::Display for CallRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.server, self.api, self.method)?;
        if let Some(t) = &self.target {
            write!(f, " {t}")?;
        }
        write!(f, " {}ms", self.duration.as_millis())?;
        match &self.fault {
            Some(fault) => write!(f, " -> {fault}"),
            None => f.write_str(" -> ok"),
        }
    }
}

/// Receives a record of every call made through a client handle.
pub trait CallObserver: Send + Sync {
    /// Called once per HTTP exchange (retries and re-logins included).
    fn on_call(&self, record: &CallRecord);
}

/// Bounded in-memory call log: keeps the last `capacity` records and counts the rest.
#[derive(Debug, Clone)]
pub struct CallLog {
    inner: Arc<Mutex<CallLogInner>>,
}

#[derive(Debug)]
struct CallLogInner {
    capacity: usize,
    records: VecDeque<CallRecord>,
    total: u64,
    failed: u64,
}

impl CallLog {
    /// A log keeping at most `capacity` records.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(CallLogInner {
                capacity: capacity.max(1),
                records: VecDeque::new(),
                total: 0,
                failed: 0,
            })),
        }
    }

    /// The retained records, oldest first.
    pub fn records(&self) -> Vec<CallRecord> {
        self.lock().records.iter().cloned().collect()
    }

    /// Number of calls seen (retained or not).
    pub fn total(&self) -> u64 {
        self.lock().total
    }

    /// Number of failed calls seen.
    pub fn failed(&self) -> u64 {
        self.lock().failed
    }

    /// Human-readable summary: counts plus the retained records, one per line.
    pub fn summary(&self) -> String {
        let g = self.lock();
        let mut out = format!("{} vSphere calls, {} failed", g.total, g.failed);
        let dropped = g.total.saturating_sub(g.records.len() as u64);
        if dropped > 0 {
            out.push_str(&format!(" ({dropped} oldest not shown)"));
        }
        for r in &g.records {
            out.push('\n');
            out.push_str(&r.to_string());
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CallLogInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl CallObserver for CallLog {
    fn on_call(&self, record: &CallRecord) {
        let mut g = self.lock();
        g.total += 1;
        if !record.ok {
            g.failed += 1;
        }
        if g.records.len() == g.capacity {
            g.records.pop_front();
        }
        g.records.push_back(record.clone());
    }
}

/// Emits the tracing event for a call and notifies the observer.
pub(crate) fn emit(record: &CallRecord, observer: Option<&Arc<dyn CallObserver>>) {
    let ms = record.duration.as_secs_f64() * 1000.0;
    if record.ok {
        tracing::debug!(
            target: "vcfm_vsphere::call",
            server = %record.server, api = %record.api, method = %record.method,
            target_object = record.target.as_deref().unwrap_or(""), duration_ms = ms,
            outcome = "ok", attempt = record.attempt,
            request_bytes = record.request_bytes, response_bytes = record.response_bytes,
            "vSphere call"
        );
    } else {
        tracing::info!(
            target: "vcfm_vsphere::call",
            server = %record.server, api = %record.api, method = %record.method,
            target_object = record.target.as_deref().unwrap_or(""), duration_ms = ms,
            outcome = "error", fault = record.fault.as_deref().unwrap_or(""), attempt = record.attempt,
            request_bytes = record.request_bytes, response_bytes = record.response_bytes,
            "vSphere call failed"
        );
    }
    if let Some(o) = observer {
        o.on_call(record);
    }
}

/// Known secret values of one client (password, cookies, tokens, session keys), replaced by
/// `***` in everything the client logs or puts into errors.
#[derive(Debug, Default)]
pub(crate) struct Secrets {
    values: RwLock<VecDeque<String>>,
}

/// Secrets kept besides the password; old session tokens age out.
const MAX_SECRETS: usize = 32;

impl Secrets {
    pub(crate) fn add(&self, s: &str) {
        if s.len() < 4 {
            return; // Too short to redact without mangling normal text; never a real token.
        }
        let mut v = self
            .values
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if v.iter().any(|x| x == s) {
            return;
        }
        if v.len() >= MAX_SECRETS {
            // Keep index 0: the password is added first and must never age out.
            v.remove(1);
        }
        v.push_back(s.to_string());
    }

    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = redact_structure(text);
        let v = self
            .values
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for s in v.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
            let escaped = crate::xml::esc(s);
            if escaped != s.as_str() && out.contains(escaped.as_ref()) {
                out = out.replace(escaped.as_ref(), "***");
            }
        }
        out
    }
}

/// Blanks the content of elements/fields that carry credentials, whatever their value.
pub(crate) fn redact_structure(text: &str) -> String {
    let mut out = text.to_string();
    for tag in ["password", "key"] {
        out = blank_elements(&out, tag);
    }
    blank_session_keys(&out)
}

/// Session-scoped objects (ContainerView, ListView, PropertyFilter) are named
/// `session[<session key>]<id>` (govmomi simulator/session.go `setReference`, as
/// vCenter names them), so their morefs carry the session key: blanked like a cookie.
fn blank_session_keys(text: &str) -> String {
    const OPEN: &str = "session[";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(OPEN) {
        let after = &rest[i + OPEN.len()..];
        match after.find(']') {
            Some(j) => {
                out.push_str(&rest[..i + OPEN.len()]);
                out.push_str("***");
                rest = &after[j..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

fn blank_elements(text: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        match after.find(&close) {
            Some(j) => {
                out.push_str(&rest[..i + open.len()]);
                out.push_str("***");
                rest = &after[j..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_scoped_morefs_lose_their_session_key() {
        let r = redact_structure(
            "ContainerView:session[32883f90-cd7b]2933afea <_this type=\"ContainerView\">session[abc-def]x1</_this>",
        );
        assert_eq!(
            r,
            "ContainerView:session[***]2933afea <_this type=\"ContainerView\">session[***]x1</_this>"
        );
    }

    #[test]
    fn structural_redaction_blanks_passwords_and_keys() {
        let s = "<Login><userName>u</userName><password>p&amp;w</password></Login><key>abc</key>";
        let r = redact_structure(s);
        assert!(!r.contains("p&amp;w") && !r.contains("abc"), "{r}");
        assert!(r.contains("<userName>u</userName>"));
    }

    #[test]
    fn known_secrets_are_replaced_including_xml_escaped_forms() {
        let s = Secrets::default();
        s.add("pa<ss>word");
        s.add("tok-123456");
        let r = s.redact("x pa&lt;ss&gt;word y tok-123456 z");
        assert_eq!(r, "x *** y *** z");
    }

    #[test]
    fn call_log_is_bounded_and_counts_everything() {
        let log = CallLog::new(2);
        for i in 0..5 {
            log.on_call(&CallRecord {
                server: "vc".into(),
                api: Api::Soap,
                method: format!("M{i}"),
                target: None,
                duration: Duration::from_millis(1),
                ok: i != 4,
                fault: (i == 4).then(|| "NoPermission".into()),
                request_bytes: 1,
                response_bytes: 1,
                attempt: 1,
            });
        }
        assert_eq!(log.total(), 5);
        assert_eq!(log.failed(), 1);
        let names: Vec<_> = log.records().into_iter().map(|r| r.method).collect();
        assert_eq!(names, ["M3", "M4"]);
        assert!(log.summary().contains("3 oldest not shown"));
    }
}
