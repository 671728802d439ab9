//! Salesforce Outbound Messages: parse the SOAP notification, check the organization, and give
//! the exact acknowledgement Salesforce expects (api-facts §2.7).
//!
//! Salesforce does not sign outbound messages. The shared secret travels in the URL path or in
//! basic auth, which the HTTP layer checks before calling [`parse_outbound_message`]; here we
//! only check that the message names the configured organization.
//!
//! The XML is read with `quick-xml` into a small bounded tree, then walked. Any DOCTYPE is
//! refused, so no entity can be declared (XXE, billion laughs); only the five predefined
//! entities and character references are expanded. Element names are matched by local name
//! inside the SOAP envelope and outbound namespaces, as the WSDL defines them.

use std::collections::BTreeMap;
use std::fmt;

use quick_xml::NsReader;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use secrecy::SecretString;

use super::{WebhookError, check_body_size};
use crate::domain::Sensitive;

const SOAP_ENV_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const OUTBOUND_NS: &str = "http://soap.sforce.com/2005/09/outbound";
const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// Most notifications one outbound message may carry.
pub const MAX_NOTIFICATIONS: usize = 100;
/// Deepest element nesting we accept; a real message is 6 deep.
const MAX_DEPTH: usize = 16;
/// Most elements we build; 100 notifications of ~60 fields stay well below it.
const MAX_ELEMENTS: usize = 20_000;

/// The acknowledgement body. Salesforce retries any answer that is not exactly this shape.
const ACK: &str = concat!(
    r#"<?xml version="1.0" encoding="UTF-8"?>"#,
    r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">"#,
    r#"<soapenv:Body>"#,
    r#"<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">"#,
    r#"<Ack>true</Ack>"#,
    r#"</notificationsResponse>"#,
    r#"</soapenv:Body>"#,
    r#"</soapenv:Envelope>"#,
);

/// `Content-Type` for [`ack_response`].
pub const ACK_CONTENT_TYPE: &str = "text/xml; charset=utf-8";

/// The SOAP body to answer (HTTP 200) once the notifications are durably stored.
pub fn ack_response() -> &'static str {
    ACK
}

/// What the receiver trusts.
#[derive(Debug, Clone)]
pub struct SalesforceOutboundConfig {
    /// The Salesforce organization id, 15 or 18 characters.
    pub organization_id: String,
}

/// One parsed outbound message.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    pub organization_id: String,
    pub action_id: String,
    /// Present only when the outbound message is set to send a session id. It is a live
    /// credential, hence secret.
    pub session_id: Option<SecretString>,
    pub enterprise_url: String,
    pub partner_url: String,
    /// 1 to [`MAX_NOTIFICATIONS`] notifications, in message order.
    pub notifications: Vec<OutboundNotification>,
}

/// One notification: the latest values of one record when Salesforce sent it.
#[derive(Clone, PartialEq)]
pub struct OutboundNotification {
    /// The organization that sent it, copied from the message for the dedupe key.
    pub organization_id: String,
    /// The notification `Id`, stable across retries of the same notification.
    pub notification_id: String,
    /// From `xsi:type` without its prefix, e.g. `Lead`.
    pub object_type: String,
    /// `sf:Id` of the record.
    pub record_id: String,
    /// Every other field by API name; `None` when sent as `xsi:nil="true"`. Values are PII.
    pub fields: BTreeMap<String, Option<Sensitive>>,
}

impl OutboundNotification {
    /// `salesforce:<orgId>:<notificationId>`, the inbox idempotency key.
    pub fn dedupe_key(&self) -> String {
        format!("salesforce:{}:{}", self.organization_id, self.notification_id)
    }
}

impl fmt::Debug for OutboundNotification {
    // Field names help debugging; values are already redacted by `Sensitive`, but listing only
    // the names keeps the output short.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundNotification")
            .field("organization_id", &self.organization_id)
            .field("notification_id", &self.notification_id)
            .field("object_type", &self.object_type)
            .field("record_id", &self.record_id)
            .field("fields", &self.fields.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Parses an outbound message and checks that it comes from the configured organization.
///
/// # Errors
/// [`WebhookError::TooLarge`] above the body limit; [`WebhookError::Malformed`] for invalid
/// XML, a DOCTYPE, an unknown entity, a missing required element, or not 1 to
/// [`MAX_NOTIFICATIONS`] notifications; [`WebhookError::WrongOrganization`] when the message's
/// `OrganizationId` is not the configured one.
pub fn parse_outbound_message(
    config: &SalesforceOutboundConfig,
    body: &[u8],
) -> Result<OutboundMessage, WebhookError> {
    check_body_size(body)?;
    let text =
        std::str::from_utf8(body).map_err(|_| WebhookError::malformed("body is not utf-8"))?;
    let root = parse_tree(text)?;
    let message = read_message(&root)?;
    if !same_org(&config.organization_id, &message.organization_id) {
        return Err(WebhookError::WrongOrganization);
    }
    Ok(message)
}

/// Org ids come as 15 case-sensitive characters, or 18 with a 3-character case-insensitive
/// checksum suffix. Two 18-character ids must match exactly (the suffix guards typos);
/// otherwise the 15-character prefixes must.
fn same_org(configured: &str, received: &str) -> bool {
    let (a, b) = (configured.trim(), received.trim());
    match (a.len(), b.len()) {
        (18, 18) => a == b,
        (15 | 18, 15 | 18) => a.get(..15) == b.get(..15),
        _ => false,
    }
}

/// An element of the parsed document: only what the outbound WSDL needs.
#[derive(Debug, Default)]
struct Node {
    /// Namespace URI, if the element is in one.
    ns: Option<String>,
    local: String,
    /// `xsi:type`, as written.
    xsi_type: Option<String>,
    /// `xsi:nil="true"`.
    nil: bool,
    children: Vec<Node>,
    text: String,
}

impl Node {
    fn is(&self, ns: &str, local: &str) -> bool {
        self.ns.as_deref() == Some(ns) && self.local == local
    }

    fn child(&self, local: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.local == local)
    }

    fn required_text(&self, local: &str, reason: &'static str) -> Result<String, WebhookError> {
        let text = self.child(local).map(|c| c.text.trim()).unwrap_or_default();
        if text.is_empty() { Err(WebhookError::malformed(reason)) } else { Ok(text.to_owned()) }
    }
}

fn parse_tree(text: &str) -> Result<Node, WebhookError> {
    let invalid = || WebhookError::malformed("invalid xml");
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    let mut elements = 0usize;
    loop {
        let (ns, event) = reader.read_resolved_event().map_err(|_| invalid())?;
        let ns = match ns {
            ResolveResult::Bound(n) => Some(n.into_inner().to_owned()),
            ResolveResult::Unbound => None,
            ResolveResult::Unknown(_) => return Err(WebhookError::malformed("unbound xml prefix")),
        };
        match event {
            Event::DocType(_) => {
                return Err(WebhookError::malformed("doctype and entity declarations are refused"));
            }
            Event::PI(_) => {
                return Err(WebhookError::malformed("processing instructions are refused"));
            }
            Event::Decl(_) | Event::Comment(_) => {}
            Event::Start(ref start) | Event::Empty(ref start) => {
                elements += 1;
                if root.is_some() {
                    return Err(WebhookError::malformed("more than one root element"));
                }
                if stack.len() >= MAX_DEPTH || elements > MAX_ELEMENTS {
                    return Err(WebhookError::malformed("xml nested too deeply or too large"));
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
                        .ok_or(WebhookError::malformed("undefined entity reference"))?
                        .to_owned(),
                };
                push_text(&mut stack, &resolved)?;
            }
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(WebhookError::malformed("unexpected end of xml"));
    }
    root.ok_or(WebhookError::malformed("no root element"))
}

fn start_node(
    reader: &NsReader<&[u8]>,
    start: &BytesStart<'_>,
    ns: Option<String>,
) -> Result<Node, WebhookError> {
    let invalid = || WebhookError::malformed("invalid xml attribute");
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

fn push_text(stack: &mut [Node], text: &str) -> Result<(), WebhookError> {
    match stack.last_mut() {
        Some(node) => {
            node.text.push_str(text);
            Ok(())
        }
        // Whitespace between the declaration and the root is allowed; anything else is not XML.
        None if text.trim().is_empty() => Ok(()),
        None => Err(WebhookError::malformed("text outside the root element")),
    }
}

fn read_message(root: &Node) -> Result<OutboundMessage, WebhookError> {
    if !root.is(SOAP_ENV_NS, "Envelope") {
        return Err(WebhookError::malformed("root is not a soap 1.1 envelope"));
    }
    let body = root
        .children
        .iter()
        .find(|c| c.is(SOAP_ENV_NS, "Body"))
        .ok_or(WebhookError::malformed("soap body missing"))?;
    let notifications = body
        .children
        .iter()
        .find(|c| c.is(OUTBOUND_NS, "notifications"))
        .ok_or(WebhookError::malformed("outbound notifications element missing"))?;
    let organization_id =
        notifications.required_text("OrganizationId", "organization id missing")?;
    let action_id = notifications.required_text("ActionId", "action id missing")?;
    let session_id = notifications
        .child("SessionId")
        .filter(|s| !s.nil && !s.text.trim().is_empty())
        .map(|s| SecretString::from(s.text.trim().to_owned()));
    let enterprise_url = notifications.required_text("EnterpriseUrl", "enterprise url missing")?;
    let partner_url = notifications.required_text("PartnerUrl", "partner url missing")?;

    let items: Vec<&Node> =
        notifications.children.iter().filter(|c| c.local == "Notification").collect();
    if items.is_empty() {
        return Err(WebhookError::malformed("no notification in message"));
    }
    if items.len() > MAX_NOTIFICATIONS {
        return Err(WebhookError::malformed("more than 100 notifications in message"));
    }
    let notifications = items
        .into_iter()
        .map(|n| read_notification(n, &organization_id))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(OutboundMessage {
        organization_id,
        action_id,
        session_id,
        enterprise_url,
        partner_url,
        notifications,
    })
}

fn read_notification(
    n: &Node,
    organization_id: &str,
) -> Result<OutboundNotification, WebhookError> {
    let notification_id = n.required_text("Id", "notification id missing")?;
    let sobject =
        n.child("sObject").ok_or(WebhookError::malformed("notification without sObject"))?;
    let object_type = sobject
        .xsi_type
        .as_deref()
        .map(|t| t.rsplit(':').next().unwrap_or(t).trim())
        .filter(|t| !t.is_empty())
        .ok_or(WebhookError::malformed("sObject without xsi:type"))?
        .to_owned();
    let record_id = sobject.required_text("Id", "sObject without Id")?;
    let mut fields = BTreeMap::new();
    for field in sobject.children.iter().filter(|c| c.local != "Id") {
        if !field.children.is_empty() {
            // Compound fields (addresses) are not selectable for outbound messages; a nested
            // element means a shape we do not understand, and Salesforce retries a refusal.
            return Err(WebhookError::malformed("nested sObject field"));
        }
        let value = if field.nil { None } else { Some(Sensitive(field.text.clone())) };
        if fields.insert(field.local.clone(), value).is_some() {
            return Err(WebhookError::malformed("sObject field repeated"));
        }
    }
    Ok(OutboundNotification {
        organization_id: organization_id.to_owned(),
        notification_id,
        object_type,
        record_id,
        fields,
    })
}

#[cfg(test)]
mod tests;
