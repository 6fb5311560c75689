//! Minimal XML tree for vim25 SOAP responses, and escaping for hand-written requests.
//!
//! vim25 responses are small, deeply typed documents; a tiny tree with local names and the
//! `xsi:type` attribute is all the client needs, and avoids generated bindings.

use quick_xml::Reader;
use quick_xml::events::Event;

/// One XML element: local name, `type`/`xsi:type` attribute, text and children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    /// Local element name (namespace prefix dropped).
    pub name: String,
    /// The `xsi:type` attribute, or the plain `type` attribute of a managed object reference.
    pub xsi_type: Option<String>,
    /// The `type` attribute (managed object references carry their kind here).
    pub mo_type: Option<String>,
    /// Concatenated, unescaped text content.
    pub text: String,
    /// Child elements in document order.
    pub children: Vec<Node>,
}

impl Node {
    /// First child with the given local name.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// All children with the given local name.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// Follows a path of child names.
    pub fn path(&self, names: &[&str]) -> Option<&Node> {
        names.iter().try_fold(self, |n, name| n.child(name))
    }

    /// Text of the named child, trimmed.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }

    /// Interprets this element as a managed object reference (`<x type="Folder">group-d1</x>`).
    pub fn as_moref(&self) -> Option<crate::MoRef> {
        let kind = self.mo_type.as_deref()?;
        let value = self.text.trim();
        if value.is_empty() {
            return None;
        }
        Some(crate::MoRef::new(kind, value))
    }

    /// Interprets this element as `ArrayOfManagedObjectReference` (or a single reference).
    pub fn as_morefs(&self) -> Vec<crate::MoRef> {
        if let Some(m) = self.as_moref() {
            return vec![m];
        }
        self.children.iter().filter_map(Node::as_moref).collect()
    }

    /// Interprets this element as `ArrayOfString` (or a single string).
    pub fn as_strings(&self) -> Vec<String> {
        if self.children.is_empty() {
            return vec![self.text.trim().to_string()];
        }
        self.children
            .iter()
            .map(|c| c.text.trim().to_string())
            .collect()
    }

    /// Text content interpreted as an `xsd:boolean`.
    pub fn as_bool(&self) -> Option<bool> {
        match self.text.trim() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        }
    }
}

/// Parses a document into its root element.
pub fn parse(doc: &str) -> Result<Node, String> {
    let mut reader = Reader::from_str(doc);
    let mut stack: Vec<Node> = vec![Node::default()];
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => stack.push(start_node(&e)?),
            Ok(Event::Empty(e)) => {
                let node = start_node(&e)?;
                if let Some(parent) = stack.last_mut() {
                    parent.children.push(node);
                }
            }
            Ok(Event::End(_)) => {
                let node = stack.pop().ok_or("unbalanced XML")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => return Err("unbalanced XML".into()),
                }
            }
            Ok(Event::Text(t)) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t);
                }
            }
            Ok(Event::CData(t)) => {
                if let Some(top) = stack.last_mut() {
                    top.text
                        .push_str(&t.xml_content(quick_xml::XmlVersion::Implicit1_0));
                }
            }
            Ok(Event::GeneralRef(r)) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => quick_xml::escape::resolve_predefined_entity(&r)
                        .map(str::to_string)
                        .ok_or_else(|| format!("unknown XML entity &{};", &*r))?,
                };
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&resolved);
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => {
                return Err(format!(
                    "malformed XML at byte {}: {e}",
                    reader.buffer_position()
                ));
            }
        }
    }
    let mut root = stack.pop().ok_or("empty XML document")?;
    if !stack.is_empty() {
        return Err("truncated XML document".into());
    }
    root.children
        .pop()
        .ok_or_else(|| "empty XML document".to_string())
}

fn start_node(e: &quick_xml::events::BytesStart<'_>) -> Result<Node, String> {
    let name = e.local_name().as_ref().to_string();
    let mut node = Node {
        name,
        ..Node::default()
    };
    for attr in e.attributes() {
        let attr = attr.map_err(|e| format!("bad XML attribute: {e}"))?;
        let key = attr.key.as_ref();
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| format!("bad XML attribute value: {e}"))?;
        // Any prefix bound to the XML Schema instance namespace: vCenter writes `xsi:type`,
        // Go's encoder (vcsim) writes `XMLSchema-instance:type`.
        match key {
            "type" => node.mo_type = Some(value.into_owned()),
            k if k.ends_with(":type") && !k.starts_with("xmlns") => {
                node.xsi_type = Some(strip_prefix(&value).to_string());
            }
            _ => {}
        }
    }
    Ok(node)
}

fn strip_prefix(s: &str) -> &str {
    s.rsplit_once(':').map_or(s, |(_, t)| t)
}

/// Escapes text for element content or attribute values.
pub fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

/// `<name>text</name>` with escaping.
pub fn el(name: &str, text: &str) -> String {
    format!("<{name}>{}</{name}>", esc(text))
}

/// `<name type="Kind">value</name>` for a managed object reference.
pub fn moref_el(name: &str, m: &crate::MoRef) -> String {
    format!(
        "<{name} type=\"{}\">{}</{name}>",
        esc(&m.kind),
        esc(&m.value)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entities_types_and_morefs() {
        let doc = r#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="x" xmlns:xsi="y"><soapenv:Body>
            <R><returnval type="Folder">group-d1</returnval><name>a &amp; b &#65;</name>
            <val xsi:type="ArrayOfManagedObjectReference"><ManagedObjectReference type="VirtualMachine">vm-1</ManagedObjectReference><ManagedObjectReference type="Folder">group-2</ManagedObjectReference></val>
            <e/><f xmlns:XMLSchema-instance="y" XMLSchema-instance:type="InvalidArgument"/></R></soapenv:Body></soapenv:Envelope>"#;
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "Envelope");
        let r = root.path(&["Body", "R"]).unwrap();
        assert_eq!(
            r.child("returnval").unwrap().as_moref(),
            Some(crate::MoRef::new("Folder", "group-d1"))
        );
        assert_eq!(r.child_text("name"), Some("a & b A"));
        let val = r.child("val").unwrap();
        assert_eq!(
            val.xsi_type.as_deref(),
            Some("ArrayOfManagedObjectReference")
        );
        assert_eq!(val.as_morefs().len(), 2);
        assert!(r.child("e").is_some());
        assert_eq!(
            r.child("f").unwrap().xsi_type.as_deref(),
            Some("InvalidArgument")
        );
    }

    #[test]
    fn rejects_truncated_documents() {
        assert!(parse("<a><b>x</b>").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn escapes_markup_in_requests() {
        assert_eq!(
            el("password", "a<b>&\"c"),
            "<password>a&lt;b&gt;&amp;&quot;c</password>"
        );
    }
}
