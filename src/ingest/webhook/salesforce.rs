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

use secrecy::SecretString;

use super::{WebhookError, check_body_size};
use crate::domain::Sensitive;
use crate::xml::{Node, XmlLimits, parse_tree as parse_xml, soap_body};

const OUTBOUND_NS: &str = "http://soap.sforce.com/2005/09/outbound";

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
    let limits = XmlLimits { max_depth: MAX_DEPTH, max_elements: MAX_ELEMENTS };
    let root = parse_xml(text, limits).map_err(|e| WebhookError::malformed(e.0))?;
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

fn required_text(node: &Node, local: &str, reason: &'static str) -> Result<String, WebhookError> {
    node.text_of(local).map(str::to_owned).ok_or(WebhookError::malformed(reason))
}

fn read_message(root: &Node) -> Result<OutboundMessage, WebhookError> {
    let body = soap_body(root).map_err(|e| WebhookError::malformed(e.0))?;
    let notifications = body
        .children
        .iter()
        .find(|c| c.is(OUTBOUND_NS, "notifications"))
        .ok_or(WebhookError::malformed("outbound notifications element missing"))?;
    let organization_id =
        required_text(notifications, "OrganizationId", "organization id missing")?;
    let action_id = required_text(notifications, "ActionId", "action id missing")?;
    let session_id = notifications
        .child("SessionId")
        .filter(|s| !s.nil && !s.text.trim().is_empty())
        .map(|s| SecretString::from(s.text.trim().to_owned()));
    let enterprise_url = required_text(notifications, "EnterpriseUrl", "enterprise url missing")?;
    let partner_url = required_text(notifications, "PartnerUrl", "partner url missing")?;

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
    let notification_id = required_text(n, "Id", "notification id missing")?;
    let sobject =
        n.child("sObject").ok_or(WebhookError::malformed("notification without sObject"))?;
    let object_type = sobject
        .xsi_type
        .as_deref()
        .map(|t| t.rsplit(':').next().unwrap_or(t).trim())
        .filter(|t| !t.is_empty())
        .ok_or(WebhookError::malformed("sObject without xsi:type"))?
        .to_owned();
    let record_id = required_text(sobject, "Id", "sObject without Id")?;
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
