//! Tests for Salesforce outbound message parsing, the organization check and the ack body.

use secrecy::ExposeSecret;

use super::*;
use crate::xml::SOAP_ENV_NS;

const ORG: &str = "00Dxx0000001gPLEAY";

fn config() -> SalesforceOutboundConfig {
    SalesforceOutboundConfig { organization_id: ORG.into() }
}

fn notification(i: usize) -> String {
    format!(
        r#"
   <Notification>
    <Id>04l5g00000ABCD{i:04}</Id>
    <sObject xsi:type="sf:Lead" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>00Q5g00000XYZ{i:05}</sf:Id>
     <sf:Email>lead{i}@example.test</sf:Email>
     <sf:LastName>O&apos;Brien &amp; Sons &#233;</sf:LastName>
     <sf:Phone xsi:nil="true"/>
     <sf:Status>Open - Not Contacted</sf:Status>
    </sObject>
   </Notification>"#
    )
}

fn message(org: &str, count: usize) -> String {
    let notifications: String = (1..=count).map(notification).collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{org}</OrganizationId>
   <ActionId>04k5g000000TESTAA2</ActionId>
   <SessionId>00Dxx!AQ0AQsecret-session</SessionId>
   <EnterpriseUrl>https://example.my.salesforce.com/services/Soap/c/60.0/00Dxx0000001gPL</EnterpriseUrl>
   <PartnerUrl>https://example.my.salesforce.com/services/Soap/u/60.0/00Dxx0000001gPL</PartnerUrl>{notifications}
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>"#
    )
}

fn malformed_reason(body: &str) -> &'static str {
    match parse_outbound_message(&config(), body.as_bytes()) {
        Err(WebhookError::Malformed { reason }) => reason,
        other => panic!("expected malformed, got {other:?}"),
    }
}

#[test]
fn a_two_notification_message_parses() {
    let msg = parse_outbound_message(&config(), message(ORG, 2).as_bytes()).unwrap();
    assert_eq!(msg.organization_id, ORG);
    assert_eq!(msg.action_id, "04k5g000000TESTAA2");
    assert_eq!(msg.session_id.as_ref().unwrap().expose_secret(), "00Dxx!AQ0AQsecret-session");
    assert!(msg.partner_url.contains("/Soap/u/60.0/"));
    assert!(msg.enterprise_url.contains("/Soap/c/60.0/"));
    assert_eq!(msg.notifications.len(), 2);
    let n = &msg.notifications[1];
    assert_eq!(n.notification_id, "04l5g00000ABCD0002");
    assert_eq!(n.object_type, "Lead");
    assert_eq!(n.record_id, "00Q5g00000XYZ00002");
    assert_eq!(n.dedupe_key(), format!("salesforce:{ORG}:04l5g00000ABCD0002"));
    let names: Vec<&str> = n.fields.keys().map(String::as_str).collect();
    assert_eq!(names, ["Email", "LastName", "Phone", "Status"]);
    assert_eq!(n.fields["Email"], Some(Sensitive("lead2@example.test".into())));
    assert_eq!(n.fields["LastName"], Some(Sensitive("O'Brien & Sons é".into())));
    assert_eq!(n.fields["Phone"], None);
    assert_eq!(n.fields["Status"], Some(Sensitive("Open - Not Contacted".into())));
    assert_ne!(msg.notifications[0].dedupe_key(), n.dedupe_key());
}

#[test]
fn parsed_messages_print_no_field_values_or_session() {
    let msg = parse_outbound_message(&config(), message(ORG, 2).as_bytes()).unwrap();
    let printed = format!("{msg:?}");
    assert!(!printed.contains("example.test"), "{printed}");
    assert!(!printed.contains("secret-session"), "{printed}");
    assert!(printed.contains("LastName"), "{printed}");
}

#[test]
fn a_nil_session_id_reads_as_none() {
    let body = message(ORG, 1).replace(
        "<SessionId>00Dxx!AQ0AQsecret-session</SessionId>",
        r#"<SessionId xsi:nil="true"/>"#,
    );
    let msg = parse_outbound_message(&config(), body.as_bytes()).unwrap();
    assert!(msg.session_id.is_none());
}

#[test]
fn the_organization_must_match() {
    let other = "00Dxx0000009ZZZEAY";
    assert_eq!(
        parse_outbound_message(&config(), message(other, 1).as_bytes()).unwrap_err(),
        WebhookError::WrongOrganization
    );
    // A 15-character configured id matches the 18-character form Salesforce sends.
    let short = SalesforceOutboundConfig { organization_id: ORG[..15].into() };
    assert!(parse_outbound_message(&short, message(ORG, 1).as_bytes()).is_ok());
    // Org ids are case-sensitive in their first 15 characters.
    let lower = SalesforceOutboundConfig { organization_id: ORG[..15].to_lowercase() };
    assert_eq!(
        parse_outbound_message(&lower, message(ORG, 1).as_bytes()).unwrap_err(),
        WebhookError::WrongOrganization
    );
    let empty = SalesforceOutboundConfig { organization_id: String::new() };
    assert!(parse_outbound_message(&empty, message(ORG, 1).as_bytes()).is_err());
}

#[test]
fn doctype_and_entity_declarations_are_refused() {
    let xxe = message(ORG, 1).replacen(
        "<soapenv:Envelope",
        "<!DOCTYPE foo [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>\n<soapenv:Envelope",
        1,
    );
    let xxe = xxe.replace("lead1@example.test", "&xxe;");
    assert_eq!(malformed_reason(&xxe), "doctype and entity declarations are refused");
    let bare = message(ORG, 1).replacen("<soapenv:Envelope", "<!DOCTYPE soapenv:Envelope>", 1);
    assert_eq!(malformed_reason(&bare), "doctype and entity declarations are refused");
    // Without a DOCTYPE, an entity reference cannot resolve to anything.
    let undefined = message(ORG, 1).replace("lead1@example.test", "&xxe;");
    assert_eq!(malformed_reason(&undefined), "undefined entity reference");
}

#[test]
fn notification_counts_outside_1_to_100_are_refused() {
    assert!(parse_outbound_message(&config(), message(ORG, 100).as_bytes()).is_ok());
    assert_eq!(malformed_reason(&message(ORG, 101)), "more than 100 notifications in message");
    assert_eq!(malformed_reason(&message(ORG, 0)), "no notification in message");
}

#[test]
fn malformed_xml_is_refused_without_quoting_it() {
    let good = message(ORG, 1);
    let cases = [
        String::new(),
        "not xml at all".to_owned(),
        good[..good.len() - 20].to_owned(),
        good.replace("</sf:Email>", "</sf:Emial>"),
        good.replace("</soapenv:Envelope>", "</soapenv:Envelope><extra/>"),
        good.replace("http://schemas.xmlsoap.org/soap/envelope/", "urn:not-soap"),
        good.replace("http://soap.sforce.com/2005/09/outbound", "urn:other"),
        good.replace("<OrganizationId>", "<OrgId>").replace("</OrganizationId>", "</OrgId>"),
        good.replace(r#" xsi:type="sf:Lead""#, ""),
        good.replace("<sf:Id>00Q5g00000XYZ00001</sf:Id>", ""),
        good.replace("<Id>04l5g00000ABCD0001</Id>", ""),
        good.replace("<sf:Status>", "<sf:Email>x</sf:Email><sf:Status>"),
        good.replace("<sf:Status>Open", "<sf:Status><x:y xmlns:x=\"urn:x\"/>Open"),
        good.replace("<sf:Email>", "<sf:Email><?pi lead1@example.test?>"),
        good.replace("<sf:Email>", "<zz:Email>").replace("</sf:Email>", "</zz:Email>"),
    ];
    for body in &cases {
        let err = parse_outbound_message(&config(), body.as_bytes()).unwrap_err();
        assert!(matches!(err, WebhookError::Malformed { .. }), "{err:?} for case {body}");
        assert!(!err.to_string().contains("example.test"), "{err}");
    }
    let not_utf8 = [good.as_bytes(), &[0xff, 0xfe]].concat();
    assert!(matches!(
        parse_outbound_message(&config(), &not_utf8),
        Err(WebhookError::Malformed { .. })
    ));
}

#[test]
fn deep_nesting_is_refused() {
    let deep = format!("{}{}", "<a>".repeat(10_000), "</a>".repeat(10_000));
    assert_eq!(malformed_reason(&deep), "xml nested too deeply or too large");
}

#[test]
fn oversized_bodies_are_refused() {
    let body = vec![b' '; crate::ingest::webhook::MAX_BODY_BYTES + 1];
    assert_eq!(parse_outbound_message(&config(), &body).unwrap_err(), WebhookError::TooLarge);
}

#[test]
fn the_ack_is_well_formed_and_says_true() {
    assert_eq!(ACK_CONTENT_TYPE, "text/xml; charset=utf-8");
    let limits = XmlLimits { max_depth: MAX_DEPTH, max_elements: MAX_ELEMENTS };
    let root = parse_xml(ack_response(), limits).unwrap();
    assert!(root.is(SOAP_ENV_NS, "Envelope"));
    assert_eq!(root.children.len(), 1);
    let body = &root.children[0];
    assert!(body.is(SOAP_ENV_NS, "Body"));
    assert_eq!(body.children.len(), 1);
    let response = &body.children[0];
    assert!(response.is(OUTBOUND_NS, "notificationsResponse"));
    assert_eq!(response.children.len(), 1);
    let ack = &response.children[0];
    assert!(ack.is(OUTBOUND_NS, "Ack"));
    assert_eq!(ack.text, "true");
}
