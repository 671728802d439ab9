//! The SOAP API documents leadsync sends and reads (partner WSDL): `merge()` only, since the
//! REST API cannot merge records. Like `wire.rs`, the only place that knows their shape.

use crate::xml::{self, XmlLimits, escape, parse_tree, soap_body};

const LIMITS: XmlLimits = XmlLimits { max_depth: 12, max_elements: 10_000 };

/// A `merge()` request: one master and one record merged into it, both of `object_type`.
/// Only the master's type and id are sent: the master keeps its values and fills its blanks
/// from the other record (Salesforce's default), and leadsync writes what the ledger resolved
/// afterwards.
pub(super) fn merge_request(
    session_id: &str,
    object_type: &str,
    master: &str,
    loser: &str,
) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <soapenv:Envelope xmlns:soapenv=\"{}\" xmlns:urn=\"urn:partner.soap.sforce.com\" \
         xmlns:urn1=\"urn:sobject.partner.soap.sforce.com\">\
         <soapenv:Header><urn:SessionHeader><urn:sessionId>{}</urn:sessionId>\
         </urn:SessionHeader></soapenv:Header>\
         <soapenv:Body><urn:merge><urn:request><urn:masterRecord><urn1:type>{}</urn1:type>\
         <urn1:Id>{}</urn1:Id></urn:masterRecord><urn:recordToMergeIds>{}\
         </urn:recordToMergeIds></urn:request></urn:merge></soapenv:Body></soapenv:Envelope>",
        xml::SOAP_ENV_NS,
        escape(session_id),
        escape(object_type),
        escape(master),
        escape(loser)
    )
}

/// What one merge request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum MergeResult {
    /// Merged: the surviving record's id.
    Merged(String),
    /// Refused for this record: Salesforce's status code (e.g. `ENTITY_IS_DELETED`).
    Refused(String),
}

/// The first `result` of a `mergeResponse`.
///
/// # Errors
/// A reason when the body is not a SOAP merge response.
pub(super) fn parse_merge_response(body: &[u8]) -> Result<MergeResult, &'static str> {
    let text = std::str::from_utf8(body).map_err(|_| "merge response is not utf-8")?;
    let root = parse_tree(text, LIMITS).map_err(|e| e.0)?;
    let response = soap_body(&root)
        .map_err(|e| e.0)?
        .child("mergeResponse")
        .ok_or("no mergeResponse in the SOAP body")?;
    let result = response.child("result").ok_or("mergeResponse without a result")?;
    if result.text_of("success") == Some("true") {
        let id = result.text_of("id").ok_or("successful merge result without an id")?;
        return Ok(MergeResult::Merged(id.to_string()));
    }
    let code = result.child("errors").and_then(|e| e.text_of("statusCode")).unwrap_or("");
    Ok(MergeResult::Refused(code.to_string()))
}

/// The fault code of a SOAP fault body without its prefix (`INVALID_SESSION_ID`), if it is one.
pub(super) fn fault_code(body: &[u8]) -> Option<String> {
    let root = parse_tree(std::str::from_utf8(body).ok()?, LIMITS).ok()?;
    let code = soap_body(&root).ok()?.child("Fault")?.text_of("faultcode")?;
    Some(code.rsplit(':').next().unwrap_or(code).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_request_escapes_and_names_the_session() {
        let r = merge_request("00D!a<b", "Lead", "00Q1", "00Q2");
        assert!(r.contains("<urn:sessionId>00D!a&lt;b</urn:sessionId>"), "{r}");
        assert!(r.contains("<urn1:type>Lead</urn1:type><urn1:Id>00Q1</urn1:Id>"), "{r}");
        assert!(r.contains("<urn:recordToMergeIds>00Q2</urn:recordToMergeIds>"), "{r}");
    }

    #[test]
    fn results_and_faults() {
        let env = |b: &str| {
            format!(
                "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
                 xmlns=\"urn:partner.soap.sforce.com\"><soapenv:Body>{b}</soapenv:Body>\
                 </soapenv:Envelope>"
            )
        };
        let ok = env("<mergeResponse><result><id>00Q1</id><mergedRecordIds>00Q2\
                      </mergedRecordIds><success>true</success></result></mergeResponse>");
        assert_eq!(parse_merge_response(ok.as_bytes()), Ok(MergeResult::Merged("00Q1".into())));
        let no = env("<mergeResponse><result><errors><message>entity is deleted</message>\
                      <statusCode>ENTITY_IS_DELETED</statusCode></errors><success>false\
                      </success></result></mergeResponse>");
        assert_eq!(
            parse_merge_response(no.as_bytes()),
            Ok(MergeResult::Refused("ENTITY_IS_DELETED".into()))
        );
        let fault = env("<soapenv:Fault><faultcode>sf:INVALID_SESSION_ID</faultcode>\
                         <faultstring>INVALID_SESSION_ID: x</faultstring></soapenv:Fault>");
        assert_eq!(fault_code(fault.as_bytes()).as_deref(), Some("INVALID_SESSION_ID"));
        assert!(parse_merge_response(fault.as_bytes()).is_err());
        assert_eq!(fault_code(b"<html>503</html>"), None);
    }
}
