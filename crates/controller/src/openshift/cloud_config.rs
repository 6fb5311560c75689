//! `openshift-config/cloud-provider-config` (key `config`): the vSphere cloud
//! provider configuration, YAML on newer clusters and INI (gcfg) on older ones.
//!
//! Only the per-vCenter entries change. Edits are made on the text so that
//! every other byte (comments, key order, quoting, blank lines) survives; a YAML
//! edit is re-parsed and compared with the intended document, and only when the
//! text edit cannot be proven right is the document re-serialised (same data,
//! new layout). Adding and then removing an entry gives back the original text.

use crate::error::PhaseError;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::{Map, Value};

pub const NAMESPACE: &str = "openshift-config";
/// The ConfigMap and key the installer writes, used when the Infrastructure names none.
pub const NAME: &str = "cloud-provider-config";
pub const KEY: &str = "config";

/// The ConfigMap (in `openshift-config`) and key holding the cloud provider configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub name: String,
    pub key: String,
}

impl Location {
    /// `Infrastructure.spec.cloudConfig` (openshift/api `config/v1/types_infrastructure.go`,
    /// `ConfigMapFileReference`): the machine-config operator and the cloud controller
    /// manager operator read the configuration from there, so vcfm edits what it names.
    pub fn of(infra: Option<&vcfm_api::openshift::Infrastructure>) -> Self {
        let field = |k: &str| {
            infra
                .and_then(|i| i.spec.extra.get("cloudConfig"))
                .and_then(|c| c.get(k))
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        Self {
            name: field("name").unwrap_or_else(|| NAME.into()),
            key: field("key").unwrap_or_else(|| KEY.into()),
        }
    }

    /// `openshift-config/<name>`.
    pub fn describe(&self) -> String {
        format!("{NAMESPACE}/{} (key {})", self.name, self.key)
    }
}

/// Where this cluster keeps its cloud provider configuration, from the API
/// (`vcfm plan`; the phases pass the Infrastructure they read to [`Location::of`]).
pub async fn location(client: kube::Client) -> Result<Location, PhaseError> {
    let infra = crate::openshift::infra::get(client).await?;
    Ok(Location::of(infra.as_ref()))
}

/// The two layouts the cloud provider reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Ini,
}

/// Why a configuration could not be edited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudConfigError {
    #[error("the cloud provider configuration is not valid YAML: {0}")]
    InvalidYaml(String),
    #[error("the cloud provider configuration YAML is not a mapping at the top level")]
    NotAMapping,
    #[error("the cloud provider configuration has a `vcenter` entry that is not a mapping")]
    VcenterNotAMapping,
    #[error("re-serialising the cloud provider configuration failed: {0}")]
    Serialize(String),
    #[error(
        "removing vCenter {0} would leave the cloud provider configuration without any vCenter"
    )]
    LastVcenter(String),
}

/// A vCenter entry to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcenterEntry {
    pub server: String,
    pub port: u16,
    pub datacenters: Vec<String>,
}

impl VcenterEntry {
    pub fn new(server: impl Into<String>, datacenters: Vec<String>) -> Self {
        Self {
            server: server.into(),
            port: 443,
            datacenters,
        }
    }
}

/// The `[Workspace]` section of an INI configuration (YAML has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub server: String,
    pub datacenter: String,
    pub default_datastore: String,
    pub folder: String,
    pub resourcepool_path: Option<String>,
}

/// INI when a line looks like a gcfg section header, else YAML.
pub fn detect(text: &str) -> Format {
    let ini = text.lines().any(|l| {
        let t = l.trim();
        t.starts_with('[')
            && t.ends_with(']')
            && t[1..t.len() - 1]
                .trim_start()
                .starts_with(|c: char| c.is_ascii_alphabetic())
            && !t.contains(',')
    });
    if ini { Format::Ini } else { Format::Yaml }
}

/// The vCenter servers the configuration names, in file order.
pub fn vcenters(text: &str) -> Result<Vec<String>, CloudConfigError> {
    match detect(text) {
        Format::Ini => Ok(ini_sections(&lines(text))
            .into_iter()
            .filter_map(|s| s.vcenter)
            .collect()),
        Format::Yaml => {
            let doc = parse_yaml(text)?;
            Ok(match doc.get("vcenter") {
                Some(Value::Object(m)) => m.keys().cloned().collect(),
                _ => vec![],
            })
        }
    }
}

/// Adds `entry` unless the configuration already has that server. Returns the
/// new text, or `None` when nothing had to change.
pub fn add_vcenter(text: &str, entry: &VcenterEntry) -> Result<Option<String>, CloudConfigError> {
    match detect(text) {
        Format::Ini => Ok(ini_add(text, entry)),
        Format::Yaml => yaml_add(text, entry),
    }
}

/// Removes the entry of `server`. Returns the new text, or `None` when it was
/// not there. Refuses to remove the last vCenter.
pub fn remove_vcenter(text: &str, server: &str) -> Result<Option<String>, CloudConfigError> {
    match detect(text) {
        Format::Ini => ini_remove(text, server),
        Format::Yaml => yaml_remove(text, server),
    }
}

/// Points the INI `[Workspace]` section at another vCenter (needed when the
/// source is removed). YAML configurations have no workspace: `None`.
pub fn set_workspace(text: &str, ws: &Workspace) -> Option<String> {
    if detect(text) != Format::Ini {
        return None;
    }
    let mut ls = lines(text);
    let nl = newline(&ls);
    let sections = ini_sections(&ls);
    let mut wanted = vec![
        ("server", ws.server.clone()),
        ("datacenter", ws.datacenter.clone()),
        ("default-datastore", ws.default_datastore.clone()),
        ("folder", ws.folder.clone()),
    ];
    if let Some(rp) = &ws.resourcepool_path {
        wanted.push(("resourcepool-path", rp.clone()));
    }
    let Some(sec) = sections
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case("workspace"))
    else {
        let mut out = text.to_string();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push_str(nl);
        }
        if !out.is_empty() {
            out.push_str(nl);
        }
        out.push_str(&format!("[Workspace]{nl}"));
        for (k, v) in &wanted {
            out.push_str(&format!("{k} = \"{v}\"{nl}"));
        }
        return Some(out);
    };
    let mut changed = false;
    let mut insert_at = sec.last_content + 1;
    for (k, v) in wanted {
        let existing = (sec.start + 1..sec.end).find(|&i| ini_key(&ls[i]).as_deref() == Some(k));
        match existing {
            Some(i) => {
                if ini_value(&ls[i]).as_deref() != Some(v.as_str()) {
                    let indent: String = ls[i].chars().take_while(|c| c.is_whitespace()).collect();
                    ls[i] = format!("{indent}{k} = \"{v}\"{}", line_end(&ls[i]));
                    changed = true;
                }
            }
            None => {
                ls.insert(insert_at, format!("{k} = \"{v}\"{nl}"));
                insert_at += 1;
                changed = true;
            }
        }
    }
    changed.then(|| ls.concat())
}

/// The configuration seen as undo units (see [`crate::undo`]):
/// `{"vcenter": {<server>: <entry>}}`, the entry being the YAML mapping, or
/// for INI the `[VirtualCenter "<server>"]` section's keys and values.
pub fn as_units(text: &str) -> Result<Value, CloudConfigError> {
    let mut vc = Map::new();
    match detect(text) {
        Format::Ini => {
            let ls = lines(text);
            for sec in ini_sections(&ls) {
                let Some(server) = sec.vcenter else { continue };
                let mut e = Map::new();
                for l in &ls[sec.start + 1..sec.end] {
                    if let (Some(k), Some(v)) = (ini_key(l), ini_value(l)) {
                        e.insert(k, Value::String(v));
                    }
                }
                vc.insert(server, Value::Object(e));
            }
        }
        Format::Yaml => {
            if let Some(m) = vcenter_map(&parse_yaml(text)?)? {
                vc = m.clone();
            }
        }
    }
    let mut out = Map::new();
    out.insert("vcenter".into(), Value::Object(vc));
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------- text lines

/// Lines with their endings, so that joining them gives back the text.
fn lines(text: &str) -> Vec<String> {
    text.split_inclusive('\n').map(str::to_string).collect()
}

fn newline(ls: &[String]) -> &'static str {
    if ls.first().is_some_and(|l| l.ends_with("\r\n")) {
        "\r\n"
    } else {
        "\n"
    }
}

fn line_end(line: &str) -> &'static str {
    if line.ends_with("\r\n") {
        "\r\n"
    } else if line.ends_with('\n') {
        "\n"
    } else {
        ""
    }
}

fn is_blank(l: &str) -> bool {
    l.trim().is_empty()
}

fn indent_of(l: &str) -> usize {
    l.len() - l.trim_start_matches(' ').len()
}

/// Makes sure the line before an insertion ends with a newline.
fn terminate_last(ls: &mut [String], idx: usize, nl: &str) {
    if let Some(l) = ls.get_mut(idx)
        && !l.ends_with('\n')
    {
        l.push_str(nl);
    }
}

// ---------------------------------------------------------------------- INI

#[derive(Debug)]
struct IniSection {
    /// Section name (`Global`, `VirtualCenter`, ...).
    name: String,
    /// Server of a `[VirtualCenter "server"]` section.
    vcenter: Option<String>,
    /// Header line.
    start: usize,
    /// Line after the section (next header or end).
    end: usize,
    /// Last non-blank line of the section.
    last_content: usize,
}

fn ini_header(line: &str) -> Option<(String, Option<String>)> {
    let t = line.trim();
    let inner = t.strip_prefix('[')?.strip_suffix(']')?.trim();
    match inner.split_once(char::is_whitespace) {
        Some((name, sub)) => {
            let sub = sub.trim();
            let sub = sub
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .unwrap_or(sub);
            Some((name.to_string(), Some(sub.to_string())))
        }
        None => Some((inner.to_string(), None)),
    }
}

fn ini_sections(ls: &[String]) -> Vec<IniSection> {
    let mut out: Vec<IniSection> = vec![];
    for (i, l) in ls.iter().enumerate() {
        if let Some((name, sub)) = ini_header(l) {
            if let Some(prev) = out.last_mut() {
                prev.end = i;
            }
            let vcenter = name
                .eq_ignore_ascii_case("VirtualCenter")
                .then_some(sub)
                .flatten();
            out.push(IniSection {
                name,
                vcenter,
                start: i,
                end: ls.len(),
                last_content: i,
            });
        } else if !is_blank(l)
            && let Some(cur) = out.last_mut()
        {
            cur.last_content = i;
        }
    }
    out
}

fn ini_key(line: &str) -> Option<String> {
    let t = line.trim();
    if t.starts_with('#') || t.starts_with(';') {
        return None;
    }
    let (k, _) = t.split_once('=')?;
    Some(k.trim().to_ascii_lowercase())
}

fn ini_value(line: &str) -> Option<String> {
    let (_, v) = line.trim().split_once('=')?;
    let v = v.trim();
    Some(
        v.strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or(v)
            .to_string(),
    )
}

fn ini_add(text: &str, entry: &VcenterEntry) -> Option<String> {
    let mut ls = lines(text);
    let nl = newline(&ls);
    let sections = ini_sections(&ls);
    if sections
        .iter()
        .any(|s| s.vcenter.as_deref() == Some(entry.server.as_str()))
    {
        return None;
    }
    let mut block = vec![
        nl.to_string(),
        format!("[VirtualCenter \"{}\"]{nl}", entry.server),
        format!("datacenters = \"{}\"{nl}", entry.datacenters.join(",")),
    ];
    if entry.port != 443 {
        block.push(format!("port = \"{}\"{nl}", entry.port));
    }
    // Same TLS stance as the existing vCenter sections.
    let first_vc = sections.iter().find(|s| s.vcenter.is_some());
    if let Some(vc) = first_vc
        && let Some(line) =
            (vc.start + 1..vc.end).find(|&i| ini_key(&ls[i]).as_deref() == Some("insecure-flag"))
        && let Some(v) = ini_value(&ls[line])
    {
        block.push(format!("insecure-flag = \"{v}\"{nl}"));
    }
    let at = match sections.iter().rev().find(|s| s.vcenter.is_some()) {
        Some(last) => last.last_content + 1,
        None => {
            // After the last non-blank line of the file.
            ls.iter().rposition(|l| !is_blank(l)).map_or(0, |i| i + 1)
        }
    };
    if at == 0 {
        block.remove(0);
    } else {
        terminate_last(&mut ls, at - 1, nl);
    }
    for (k, l) in block.into_iter().enumerate() {
        ls.insert(at + k, l);
    }
    Some(ls.concat())
}

fn ini_remove(text: &str, server: &str) -> Result<Option<String>, CloudConfigError> {
    let mut ls = lines(text);
    let sections = ini_sections(&ls);
    let Some(sec) = sections
        .iter()
        .find(|s| s.vcenter.as_deref() == Some(server))
    else {
        return Ok(None);
    };
    if sections.iter().filter(|s| s.vcenter.is_some()).count() == 1 {
        return Err(CloudConfigError::LastVcenter(server.to_string()));
    }
    let mut start = sec.start;
    let mut end = sec.end;
    // Keep the blank lines that separate this section from the next one, and
    // drop the one that separated it from the previous one.
    if end < ls.len() {
        while end > start + 1 && is_blank(&ls[end - 1]) {
            end -= 1;
        }
    }
    if start > 0 && is_blank(&ls[start - 1]) {
        start -= 1;
    }
    ls.drain(start..end);
    Ok(Some(ls.concat()))
}

// --------------------------------------------------------------------- YAML

fn parse_yaml(text: &str) -> Result<Map<String, Value>, CloudConfigError> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    let v: Value =
        serde_saphyr::from_str(text).map_err(|e| CloudConfigError::InvalidYaml(e.to_string()))?;
    match v {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(Map::new()),
        _ => Err(CloudConfigError::NotAMapping),
    }
}

fn vcenter_map(doc: &Map<String, Value>) -> Result<Option<&Map<String, Value>>, CloudConfigError> {
    match doc.get("vcenter") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(CloudConfigError::VcenterNotAMapping),
    }
}

/// A YAML scalar as written: plain when it cannot be mistaken for another type.
fn yaml_scalar(s: &str) -> String {
    let keyword = matches!(
        s.to_ascii_lowercase().as_str(),
        "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "~"
    );
    let plain = !s.is_empty()
        && !keyword
        && s.chars().any(|c| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && !s.starts_with(['-', '.']);
    // Dotted IPv4 addresses are strings in YAML; a single dot would be a float.
    let dotted = s.split('.').count() > 2 && s.chars().all(|c| c.is_ascii_digit() || c == '.');
    if plain || dotted {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// The key of a mapping line (`  key: ...`), unquoted.
fn yaml_key(line: &str) -> Option<String> {
    let t = line.trim_start();
    if t.starts_with('#') || t.starts_with('-') {
        return None;
    }
    if let Some(rest) = t.strip_prefix('"') {
        let end = rest.find('"')?;
        return Some(rest[..end].to_string());
    }
    if let Some(rest) = t.strip_prefix('\'') {
        let end = rest.find('\'')?;
        return Some(rest[..end].to_string());
    }
    let idx = t.find(':')?;
    let after = &t[idx + 1..];
    (after.is_empty() || after.starts_with([' ', '\r', '\n', '\t'])).then(|| t[..idx].to_string())
}

/// The top-level `vcenter:` block: (key line, first line after the block).
fn yaml_vcenter_block(ls: &[String]) -> Option<(usize, usize)> {
    let start = ls
        .iter()
        .position(|l| indent_of(l) == 0 && yaml_key(l).as_deref() == Some("vcenter"))?;
    let end = (start + 1..ls.len())
        .find(|&i| {
            let l = &ls[i];
            !is_blank(l) && indent_of(l) == 0 && !l.trim_start().starts_with('#')
        })
        .unwrap_or(ls.len());
    Some((start, end))
}

fn entry_value(entry: &VcenterEntry, insecure: Option<&Value>) -> Value {
    let mut m = Map::new();
    m.insert("server".into(), Value::String(entry.server.clone()));
    m.insert("port".into(), Value::from(entry.port));
    if let Some(v) = insecure {
        m.insert("insecureFlag".into(), v.clone());
    }
    m.insert(
        "datacenters".into(),
        Value::Array(
            entry
                .datacenters
                .iter()
                .map(|d| Value::String(d.clone()))
                .collect(),
        ),
    );
    Value::Object(m)
}

fn serialize(doc: &Map<String, Value>) -> Result<String, CloudConfigError> {
    serde_saphyr::to_string(&Value::Object(doc.clone()))
        .map_err(|e| CloudConfigError::Serialize(e.to_string()))
}

fn yaml_add(text: &str, entry: &VcenterEntry) -> Result<Option<String>, CloudConfigError> {
    let doc = parse_yaml(text)?;
    let existing = vcenter_map(&doc)?;
    if existing.is_some_and(|m| m.contains_key(&entry.server)) {
        return Ok(None);
    }
    // Same TLS stance as the existing vCenter entries.
    let insecure = existing
        .and_then(|m| m.values().next())
        .and_then(|v| v.get("insecureFlag"))
        .cloned();
    let value = entry_value(entry, insecure.as_ref());
    let mut expected = doc.clone();
    let mut vc = existing.cloned().unwrap_or_default();
    vc.insert(entry.server.clone(), value.clone());
    expected.insert("vcenter".into(), Value::Object(vc));

    if let Some(t) = yaml_add_text(text, entry, insecure.as_ref())
        && parse_yaml(&t).ok().as_ref() == Some(&expected)
    {
        return Ok(Some(t));
    }
    serialize(&expected).map(Some)
}

fn yaml_add_text(text: &str, entry: &VcenterEntry, insecure: Option<&Value>) -> Option<String> {
    let mut ls = lines(text);
    let nl = newline(&ls);
    let (child, nested, at) = match yaml_vcenter_block(&ls) {
        Some((start, end)) => {
            // `vcenter: {}` or other flow styles: leave it to re-serialisation.
            let after = ls[start].trim_end().split_once(':').map(|x| x.1.trim());
            if after.is_some_and(|a| !a.is_empty() && !a.starts_with('#')) {
                return None;
            }
            let content: Vec<usize> = (start + 1..end)
                .filter(|&i| !is_blank(&ls[i]) && !ls[i].trim_start().starts_with('#'))
                .collect();
            let child = content.first().map(|&i| indent_of(&ls[i])).unwrap_or(2);
            let nested = content
                .iter()
                .map(|&i| indent_of(&ls[i]))
                .find(|&n| n > child)
                .unwrap_or(child * 2);
            let at = content.last().map_or(start + 1, |&i| i + 1);
            (child, nested, at)
        }
        None => {
            let at = ls.iter().rposition(|l| !is_blank(l)).map_or(0, |i| i + 1);
            if at > 0 {
                terminate_last(&mut ls, at - 1, nl);
            }
            ls.insert(at, format!("vcenter:{nl}"));
            (2, 4, at + 1)
        }
    };
    if at > 0 {
        terminate_last(&mut ls, at - 1, nl);
    }
    let (c, n) = (" ".repeat(child), " ".repeat(nested));
    let mut block = vec![
        format!("{c}{}:{nl}", yaml_scalar(&entry.server)),
        format!("{n}server: {}{nl}", yaml_scalar(&entry.server)),
        format!("{n}port: {}{nl}", entry.port),
    ];
    if let Some(Value::Bool(b)) = insecure {
        block.push(format!("{n}insecureFlag: {b}{nl}"));
    }
    block.push(format!("{n}datacenters:{nl}"));
    for dc in &entry.datacenters {
        block.push(format!("{n}- {}{nl}", yaml_scalar(dc)));
    }
    for (k, l) in block.into_iter().enumerate() {
        ls.insert(at + k, l);
    }
    Some(ls.concat())
}

fn yaml_remove(text: &str, server: &str) -> Result<Option<String>, CloudConfigError> {
    let doc = parse_yaml(text)?;
    let Some(existing) = vcenter_map(&doc)? else {
        return Ok(None);
    };
    if !existing.contains_key(server) {
        return Ok(None);
    }
    if existing.len() == 1 {
        return Err(CloudConfigError::LastVcenter(server.to_string()));
    }
    let mut expected = doc.clone();
    let mut vc = existing.clone();
    vc.remove(server);
    expected.insert("vcenter".into(), Value::Object(vc));
    if let Some(t) = yaml_remove_text(text, server)
        && parse_yaml(&t).ok().as_ref() == Some(&expected)
    {
        return Ok(Some(t));
    }
    serialize(&expected).map(Some)
}

fn yaml_remove_text(text: &str, server: &str) -> Option<String> {
    let mut ls = lines(text);
    let (start, end) = yaml_vcenter_block(&ls)?;
    let child = (start + 1..end)
        .find(|&i| !is_blank(&ls[i]) && !ls[i].trim_start().starts_with('#'))
        .map(|i| indent_of(&ls[i]))?;
    let from = (start + 1..end)
        .find(|&i| indent_of(&ls[i]) == child && yaml_key(&ls[i]).as_deref() == Some(server))?;
    let mut to = (from + 1..end)
        .find(|&i| {
            let l = &ls[i];
            !is_blank(l) && indent_of(l) <= child && !l.trim_start().starts_with('#')
        })
        .unwrap_or(end);
    while to > from + 1 && is_blank(&ls[to - 1]) {
        to -= 1;
    }
    ls.drain(from..to);
    Some(ls.concat())
}

// ------------------------------------------------------------ ConfigMap I/O

/// Reads the cloud provider configuration where the Infrastructure says it
/// is, from the API (`vcfm plan`; the phases read it from the controller's
/// watches, `PhaseCtx::cloud_config`).
pub async fn read(client: kube::Client) -> Result<(ConfigMap, String), PhaseError> {
    let loc = location(client.clone()).await?;
    let cm = Api::<ConfigMap>::namespaced(client, NAMESPACE)
        .get(&loc.name)
        .await
        .map_err(|e| PhaseError::from(e).context(&format!("reading {NAMESPACE}/{}", loc.name)))?;
    let text = text_of(&cm, &loc)?;
    Ok((cm, text))
}

/// The configuration text in `cm` under the key `loc` names.
pub fn text_of(cm: &ConfigMap, loc: &Location) -> Result<String, PhaseError> {
    cm.data
        .as_ref()
        .and_then(|d| d.get(&loc.key))
        .cloned()
        .ok_or_else(|| {
            PhaseError::fatal(format!(
                "{NAMESPACE}/{} has no `{}` key, which Infrastructure spec.cloudConfig names",
                loc.name, loc.key
            ))
        })
}

/// Applies `edit` to `text` (the configuration in `cm`, read at `loc`) and
/// writes the result with the resourceVersion of `cm` (a conflict is
/// transient: the next step reads again). Returns whether the ConfigMap changed.
pub async fn edit(
    client: kube::Client,
    loc: &Location,
    cm: ConfigMap,
    text: &str,
    edit: impl FnOnce(&str) -> Result<Option<String>, CloudConfigError>,
) -> Result<bool, PhaseError> {
    let Some(new) = edit(text).map_err(|e| PhaseError::fatal(e.to_string()))? else {
        return Ok(false);
    };
    write(client, loc, cm, new).await?;
    Ok(true)
}

/// Writes `text` at `loc` into `cm` as read (its resourceVersion guards
/// against lost updates; a conflict is transient). Returns what the API
/// server stored.
pub async fn write(
    client: kube::Client,
    loc: &Location,
    mut cm: ConfigMap,
    text: String,
) -> Result<ConfigMap, PhaseError> {
    cm.data
        .get_or_insert_with(Default::default)
        .insert(loc.key.clone(), text);
    Api::<ConfigMap>::namespaced(client, NAMESPACE)
        .replace(&loc.name, &PostParams::default(), &cm)
        .await
        .map_err(|e| PhaseError::from(e).context(&format!("writing {NAMESPACE}/{}", loc.name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As a 4.16 installer writes it (openshift-sim seeds the same).
    const YAML: &str = "global:\n  user: \"\"\n  password: \"\"\n  server: \"\"\n  port: 0\n  insecureFlag: true\n  datacenters: []\n  soapRoundtripCount: 0\n  caFile: \"\"\n  thumbprint: \"\"\n  secretName: vsphere-creds\n  secretNamespace: kube-system\n  secretsDirectory: \"\"\n  apiDisable: false\n  apiBinding: \"\"\n  ipFamily: []\nvcenter:\n  vcenter.source.example.com:\n    user: \"\"\n    password: \"\"\n    tenantref: \"\"\n    server: vcenter.source.example.com\n    port: 443\n    insecureFlag: true\n    datacenters:\n    - DC0\n    soapRoundtripCount: 0\n    caFile: \"\"\n    thumbprint: \"\"\n    secretref: \"\"\n    secretName: \"\"\n    secretNamespace: \"\"\n    ipFamily: []\nlabels:\n  zone: openshift-zone\n  region: openshift-region\n";

    /// As a 4.12 installer writes it.
    const INI: &str = "[Global]\nsecret-name = \"vsphere-creds\"\nsecret-namespace = \"kube-system\"\ninsecure-flag = \"1\"\n\n[Workspace]\nserver = \"vcenter.source.example.com\"\ndatacenter = \"DC0\"\ndefault-datastore = \"LocalDS_0\"\nfolder = \"/DC0/vm/ocp-x7k2p\"\n\n[VirtualCenter \"vcenter.source.example.com\"]\ndatacenters = \"DC0\"\n\n[Labels]\nregion = openshift-region\nzone = openshift-zone\n";

    fn target() -> VcenterEntry {
        VcenterEntry::new("vcenter.target.example.com", vec!["DC1".into()])
    }

    #[test]
    fn formats_are_detected() {
        assert_eq!(detect(YAML), Format::Yaml);
        assert_eq!(detect(INI), Format::Ini);
        assert_eq!(detect("global:\n  ipFamily: [ipv4, ipv6]\n"), Format::Yaml);
    }

    #[test]
    fn yaml_add_keeps_every_other_byte_and_remove_undoes_it() {
        let out = add_vcenter(YAML, &target()).unwrap().unwrap();
        let expected_insert = "    ipFamily: []\n  vcenter.target.example.com:\n    server: vcenter.target.example.com\n    port: 443\n    insecureFlag: true\n    datacenters:\n    - DC1\nlabels:\n";
        assert!(out.contains(expected_insert), "{out}");
        assert!(out.starts_with(&YAML[..YAML.find("labels:").unwrap()]));
        assert!(out.ends_with("labels:\n  zone: openshift-zone\n  region: openshift-region\n"));
        assert_eq!(
            vcenters(&out).unwrap(),
            ["vcenter.source.example.com", "vcenter.target.example.com"]
        );
        // Idempotent.
        assert_eq!(add_vcenter(&out, &target()).unwrap(), None);
        // Symmetric.
        let back = remove_vcenter(&out, "vcenter.target.example.com")
            .unwrap()
            .unwrap();
        assert_eq!(back, YAML);
        assert_eq!(
            remove_vcenter(&back, "vcenter.target.example.com").unwrap(),
            None
        );
    }

    #[test]
    fn yaml_remove_source_leaves_target_only() {
        let both = add_vcenter(YAML, &target()).unwrap().unwrap();
        let only = remove_vcenter(&both, "vcenter.source.example.com")
            .unwrap()
            .unwrap();
        assert_eq!(vcenters(&only).unwrap(), ["vcenter.target.example.com"]);
        assert!(only.starts_with(&YAML[..YAML.find("vcenter:\n").unwrap()]));
        assert!(only.contains("vcenter:\n  vcenter.target.example.com:\n    server:"));
        assert_eq!(
            remove_vcenter(&only, "vcenter.target.example.com"),
            Err(CloudConfigError::LastVcenter(
                "vcenter.target.example.com".into()
            ))
        );
    }

    #[test]
    fn yaml_ip_servers_comments_and_crlf() {
        let text = "# managed by the installer\r\nglobal:\r\n  secretName: vsphere-creds\r\nvcenter:\r\n  # the source\r\n  127.0.0.2:\r\n    server: 127.0.0.2\r\n    datacenters:\r\n      - DC0\r\n\r\nlabels:\r\n  zone: openshift-zone\r\n";
        let e = VcenterEntry::new("127.0.0.3", vec!["DC0".into()]);
        let out = add_vcenter(text, &e).unwrap().unwrap();
        assert!(
            out.contains("      - DC0\r\n  127.0.0.3:\r\n    server: 127.0.0.3\r\n"),
            "{out:?}"
        );
        let doc = parse_yaml(&out).unwrap();
        assert_eq!(doc["vcenter"]["127.0.0.3"]["datacenters"][0], "DC0");
        assert_eq!(doc["vcenter"]["127.0.0.3"]["port"], 443);
        assert_eq!(remove_vcenter(&out, "127.0.0.3").unwrap().unwrap(), text);
    }

    #[test]
    fn yaml_flow_or_missing_vcenter_falls_back_to_a_correct_document() {
        let flow = "global:\n  secretName: vsphere-creds\nvcenter: {}\n";
        let out = add_vcenter(flow, &target()).unwrap().unwrap();
        let doc = parse_yaml(&out).unwrap();
        assert_eq!(doc["global"]["secretName"], "vsphere-creds");
        assert_eq!(
            doc["vcenter"]["vcenter.target.example.com"]["server"],
            "vcenter.target.example.com"
        );
        let missing = "global:\n  secretName: vsphere-creds\n";
        let out = add_vcenter(missing, &target()).unwrap().unwrap();
        assert!(out.starts_with(missing), "{out}");
        assert_eq!(vcenters(&out).unwrap(), ["vcenter.target.example.com"]);
    }

    #[test]
    fn server_names_are_quoted_only_when_yaml_would_misread_them() {
        assert_eq!(yaml_scalar("vcenter.example.com"), "vcenter.example.com");
        assert_eq!(yaml_scalar("10.0.0.3"), "10.0.0.3");
        assert_eq!(yaml_scalar("1.5"), "\"1.5\"");
        assert_eq!(yaml_scalar("yes"), "\"yes\"");
        assert_eq!(yaml_scalar("123"), "\"123\"");
        for s in [
            "vcenter.example.com",
            "10.0.0.3",
            "1.5",
            "yes",
            "123",
            "null",
            "vc-1",
            "DC 1",
        ] {
            let doc = parse_yaml(&format!("{}: {}\n", yaml_scalar(s), yaml_scalar(s))).unwrap();
            assert_eq!(doc.get(s), Some(&Value::String(s.into())), "{s}");
        }
    }

    #[test]
    fn invalid_yaml_is_an_error_not_a_rewrite() {
        assert!(matches!(
            add_vcenter("global: [unclosed\n", &target()),
            Err(CloudConfigError::InvalidYaml(_))
        ));
    }

    #[test]
    fn ini_add_keeps_every_other_byte_and_remove_undoes_it() {
        let out = add_vcenter(INI, &target()).unwrap().unwrap();
        assert!(
            out.contains("[VirtualCenter \"vcenter.source.example.com\"]\ndatacenters = \"DC0\"\n\n[VirtualCenter \"vcenter.target.example.com\"]\ndatacenters = \"DC1\"\n\n[Labels]\n"),
            "{out}"
        );
        assert_eq!(
            vcenters(&out).unwrap(),
            ["vcenter.source.example.com", "vcenter.target.example.com"]
        );
        assert_eq!(add_vcenter(&out, &target()).unwrap(), None);
        assert_eq!(
            remove_vcenter(&out, "vcenter.target.example.com")
                .unwrap()
                .unwrap(),
            INI
        );
        // Removing the source instead leaves the rest intact.
        let only = remove_vcenter(&out, "vcenter.source.example.com")
            .unwrap()
            .unwrap();
        assert_eq!(
            only,
            INI.replace(
                "[VirtualCenter \"vcenter.source.example.com\"]\ndatacenters = \"DC0\"",
                "[VirtualCenter \"vcenter.target.example.com\"]\ndatacenters = \"DC1\""
            )
        );
        assert!(remove_vcenter(&only, "vcenter.target.example.com").is_err());
    }

    #[test]
    fn ini_copies_the_tls_stance_and_handles_end_of_file() {
        let text = "[Global]\nsecret-name = \"vsphere-creds\"\n\n[VirtualCenter \"a\"]\ninsecure-flag = \"1\"\ndatacenters = \"DC0\"";
        let out = add_vcenter(
            text,
            &VcenterEntry::new("b", vec!["D1".into(), "D2".into()]),
        )
        .unwrap()
        .unwrap();
        assert!(
            out.ends_with("datacenters = \"DC0\"\n\n[VirtualCenter \"b\"]\ndatacenters = \"D1,D2\"\ninsecure-flag = \"1\"\n"),
            "{out}"
        );
        let back = remove_vcenter(&out, "b").unwrap().unwrap();
        assert_eq!(back, format!("{text}\n"));
    }

    /// Both formats: the units of an added entry are what rollback removes;
    /// another entry edited by someone else meanwhile is not touched.
    #[test]
    fn undo_removes_only_the_added_entry_in_both_formats() {
        use crate::undo::{Plan, cloud_config_units, diff};
        for original in [YAML, INI] {
            let written = add_vcenter(original, &target()).unwrap().unwrap();
            let record = diff(
                cloud_config_units,
                &as_units(original).unwrap(),
                &as_units(&written).unwrap(),
            );
            assert_eq!(record.changes.len(), 1, "{original}");
            // Someone adds a datacenter to the source entry meanwhile.
            let live = match detect(original) {
                Format::Yaml => written.replace("    - DC0\n", "    - DC0\n    - DC5\n"),
                Format::Ini => {
                    written.replace("datacenters = \"DC0\"", "datacenters = \"DC0,DC5\"")
                }
            };
            assert_ne!(live, written);
            let plan = Plan::new(
                &as_units(original).unwrap(),
                &record,
                &as_units(&live).unwrap(),
            );
            assert!(plan.conflicts().is_empty(), "{original}");
            assert_eq!(plan.restored(), ["vcenter[vcenter.target.example.com]"]);
            let back = remove_vcenter(&live, "vcenter.target.example.com")
                .unwrap()
                .unwrap();
            assert_eq!(vcenters(&back).unwrap(), ["vcenter.source.example.com"]);
            assert!(back.contains("DC5"), "the other edit survives: {back}");
            // The target entry edited by someone else is a conflict.
            let edited = match detect(original) {
                Format::Yaml => written.replace("    - DC1\n", "    - DC7\n"),
                Format::Ini => written.replace("datacenters = \"DC1\"", "datacenters = \"DC7\""),
            };
            let plan = Plan::new(
                &as_units(original).unwrap(),
                &record,
                &as_units(&edited).unwrap(),
            );
            assert_eq!(plan.conflicts(), ["vcenter[vcenter.target.example.com]"]);
        }
    }

    #[test]
    fn ini_workspace_is_repointed() {
        let ws = Workspace {
            server: "vcenter.target.example.com".into(),
            datacenter: "DC1".into(),
            default_datastore: "ds1".into(),
            folder: "/DC1/vm/ocp-x7k2p".into(),
            resourcepool_path: None,
        };
        let out = set_workspace(INI, &ws).unwrap();
        assert!(out.contains("[Workspace]\nserver = \"vcenter.target.example.com\"\ndatacenter = \"DC1\"\ndefault-datastore = \"ds1\"\nfolder = \"/DC1/vm/ocp-x7k2p\"\n\n[VirtualCenter"), "{out}");
        assert_eq!(set_workspace(&out, &ws), None);
        assert_eq!(set_workspace(YAML, &ws), None);
    }
}
