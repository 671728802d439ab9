//! A small, defensive XML tree for the SOAP documents leadsync reads: Salesforce outbound
//! messages (ingest), SOAP API replies (the Salesforce connector) and requests (its simulator).
//!
//! It keeps element names with their namespace, text, and the two `xsi` attributes SOAP uses
//! (`type`, `nil`); everything else is dropped. Doctype and entity declarations and processing
//! instructions are refused (no entity expansion, no external references), and depth and
//! element count are capped, so a hostile body costs at most its own size.

use quick_xml::NsReader;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;

/// The SOAP 1.1 envelope namespace.
pub const SOAP_ENV_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// The XML Schema instance namespace (`xsi:type`, `xsi:nil`).
pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// Why a document was refused. The reason never quotes the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XmlError(pub &'static str);

/// Bounds on what [`parse_tree`] builds.
#[derive(Debug, Clone, Copy)]
pub struct XmlLimits {
    pub max_depth: usize,
    pub max_elements: usize,
}

/// An element of a parsed document.
#[derive(Debug, Default)]
pub struct Node {
    /// Namespace URI, if the element is in one.
    pub ns: Option<String>,
    pub local: String,
    /// `xsi:type`, as written.
    pub xsi_type: Option<String>,
    /// `xsi:nil="true"`.
    pub nil: bool,
    pub children: Vec<Node>,
    pub text: String,
}

impl Node {
    pub fn is(&self, ns: &str, local: &str) -> bool {
        self.ns.as_deref() == Some(ns) && self.local == local
    }

    /// The first child with this local name, in any namespace.
    pub fn child(&self, local: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.local == local)
    }

    /// Every child with this local name, in any namespace.
    pub fn children_named<'a>(&'a self, local: &'a str) -> impl Iterator<Item = &'a Node> {
        self.children.iter().filter(move |c| c.local == local)
    }

    /// The trimmed text of the first child with this local name, when it has any.
    pub fn text_of(&self, local: &str) -> Option<&str> {
        self.child(local).map(|c| c.text.trim()).filter(|t| !t.is_empty())
    }
}

/// Parse `text` into its root element.
///
/// # Errors
/// Malformed XML, a doctype or processing instruction, an undefined entity or unbound prefix,
/// text or a second element outside the root, or a document beyond `limits`.
pub fn parse_tree(text: &str, limits: XmlLimits) -> Result<Node, XmlError> {
    let invalid = || XmlError("invalid xml");
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    let mut elements = 0usize;
    loop {
        let (ns, event) = reader.read_resolved_event().map_err(|_| invalid())?;
        let ns = match ns {
            ResolveResult::Bound(n) => Some(n.into_inner().to_owned()),
            ResolveResult::Unbound => None,
            ResolveResult::Unknown(_) => return Err(XmlError("unbound xml prefix")),
        };
        match event {
            Event::DocType(_) => {
                return Err(XmlError("doctype and entity declarations are refused"));
            }
            Event::PI(_) => return Err(XmlError("processing instructions are refused")),
            Event::Decl(_) | Event::Comment(_) => {}
            Event::Start(ref start) | Event::Empty(ref start) => {
                elements += 1;
                if root.is_some() {
                    return Err(XmlError("more than one root element"));
                }
                if stack.len() >= limits.max_depth || elements > limits.max_elements {
                    return Err(XmlError("xml nested too deeply or too large"));
                }
                let node = start_node(&reader, start, ns)?;
                if matches!(event, Event::Empty(_)) {
                    close(&mut stack, &mut root, node);
                } else {
                    stack.push(node);
                }
            }
            Event::End(_) => {
                let node = stack.pop().ok_or_else(invalid)?;
                close(&mut stack, &mut root, node);
            }
            Event::Text(t) => push_text(&mut stack, &t.xml10_content())?,
            Event::CData(t) => push_text(&mut stack, &t.xml10_content())?,
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().map_err(|_| invalid())? {
                    Some(ch) => ch.to_string(),
                    None => resolve_predefined_entity(&r.xml10_content())
                        .ok_or(XmlError("undefined entity reference"))?
                        .to_owned(),
                };
                push_text(&mut stack, &resolved)?;
            }
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(XmlError("unexpected end of xml"));
    }
    root.ok_or(XmlError("no root element"))
}

fn start_node(
    reader: &NsReader<&[u8]>,
    start: &BytesStart<'_>,
    ns: Option<String>,
) -> Result<Node, XmlError> {
    let invalid = || XmlError("invalid xml attribute");
    let local = start.local_name().into_inner().to_owned();
    let mut node = Node { ns, local, ..Node::default() };
    for attr in start.attributes() {
        let attr = attr.map_err(|_| invalid())?;
        let (attr_ns, attr_local) = reader.resolver().resolve_attribute(attr.key);
        let in_xsi = matches!(attr_ns, ResolveResult::Bound(n) if n.into_inner() == XSI_NS);
        if !in_xsi {
            continue;
        }
        let value =
            attr.normalized_value(quick_xml::XmlVersion::Implicit1_0).map_err(|_| invalid())?;
        match attr_local.into_inner() {
            "type" => node.xsi_type = Some(value.into_owned()),
            "nil" => node.nil = matches!(value.trim(), "true" | "1"),
            _ => {}
        }
    }
    Ok(node)
}

/// Attaches a finished element to its parent, or makes it the document root.
fn close(stack: &mut [Node], root: &mut Option<Node>, node: Node) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(node),
        None => *root = Some(node),
    }
}

fn push_text(stack: &mut [Node], text: &str) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(node) => {
            node.text.push_str(text);
            Ok(())
        }
        // Whitespace between the declaration and the root is allowed; anything else is not XML.
        None if text.trim().is_empty() => Ok(()),
        None => Err(XmlError("text outside the root element")),
    }
}

/// Escape text for an element body or a double-quoted attribute.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The body element of a SOAP 1.1 envelope.
///
/// # Errors
/// The root is not a SOAP 1.1 envelope, or it has no body.
pub fn soap_body(root: &Node) -> Result<&Node, XmlError> {
    if !root.is(SOAP_ENV_NS, "Envelope") {
        return Err(XmlError("root is not a soap 1.1 envelope"));
    }
    root.children.iter().find(|c| c.is(SOAP_ENV_NS, "Body")).ok_or(XmlError("soap body missing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: XmlLimits = XmlLimits { max_depth: 8, max_elements: 100 };

    #[test]
    fn a_soap_body_with_namespaces_text_and_xsi_attributes() {
        let doc = r#"<?xml version="1.0"?>
            <s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"
                xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
              <s:Body><r xmlns="urn:x"><id xsi:nil="true"/><v xsi:type="T">a &amp; b</v>
              <v>c</v></r></s:Body></s:Envelope>"#;
        let root = parse_tree(doc, LIMITS).expect("parses");
        let body = soap_body(&root).expect("body");
        let r = &body.children[0];
        assert_eq!((r.ns.as_deref(), r.local.as_str()), (Some("urn:x"), "r"));
        assert!(r.child("id").is_some_and(|n| n.nil));
        assert_eq!(r.text_of("v"), Some("a & b"));
        assert_eq!(r.children_named("v").count(), 2);
        assert_eq!(r.child("v").and_then(|n| n.xsi_type.as_deref()), Some("T"));
        assert_eq!(r.text_of("id"), None);
    }

    #[test]
    fn hostile_or_broken_documents_are_refused() {
        let cases = [
            ("<!DOCTYPE x [<!ENTITY e \"boom\">]><x>&e;</x>", "doctype"),
            ("<?php x ?><x/>", "processing"),
            ("<x>&nope;</x>", "entity"),
            ("<x/><y/>", "more than one root"),
            ("<a><b><c><d><e><f><g><h><i/></h></g></f></e></d></c></b></a>", "too deeply"),
            ("<p:x/>", "unbound"),
            ("<x>", "unexpected end"),
            ("", "no root"),
        ];
        for (doc, why) in cases {
            let err = parse_tree(doc, LIMITS).expect_err(doc);
            assert!(err.0.contains(why), "{doc}: {err:?}");
        }
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&apos;");
    }
}
