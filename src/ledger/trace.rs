//! `leadsync trace`: one person's timeline, read from the ledger. It shows values (emails
//! included), because the operator asked for this person; nothing here is logged.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::identity::surviving_lead;
use super::{LedgerReader, Result, from_json};
use crate::domain::{Field, Fields, normalize_email};
use crate::reconcile::Provenance;

/// A person's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    pub lead_id: String,
    /// Persons folded into this one.
    pub merged_from: Vec<String>,
    pub fields: Vec<TraceField>,
    pub links: Vec<TraceLink>,
    /// Everything that happened, oldest first.
    pub events: Vec<TraceEvent>,
}

/// A field's value and why it has it.
#[derive(Debug, Clone, Serialize)]
pub struct TraceField {
    pub field: String,
    pub value: String,
    pub provenance: Option<Provenance>,
}

/// A link, open or closed.
#[derive(Debug, Clone, Serialize)]
pub struct TraceLink {
    pub system: String,
    pub object_type: String,
    pub remote_id: String,
    pub reason: String,
    pub created_at: String,
    pub closed_at: Option<String>,
    pub closed_reason: Option<String>,
}

/// One line of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TraceEvent {
    pub at: String,
    /// `change` (received), `link`, `fields`, `conflict`, `pushed`, `push_pending`,
    /// `push_dead`, `review`, ... (the audit kinds).
    pub kind: String,
    pub system: Option<String>,
    /// The person it happened to: this one, or one folded into it since (`merged_from`);
    /// `None` for changes received, which belong to a record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lead: Option<String>,
    pub detail: serde_json::Value,
}

/// Resolve what the operator typed to a live person id.
pub(super) fn find_lead(conn: &Connection, query: &str) -> Result<Option<String>> {
    let q = query.trim();
    let id: Option<String> = if q.contains('@') {
        let email = normalize_email(q).unwrap_or_default();
        conn.query_row(
            "SELECT id FROM leads WHERE email_norm = ?1 AND merged_into IS NULL
             ORDER BY created_at, id LIMIT 1",
            [email],
            |r| r.get(0),
        )
        .optional()?
    } else if let Some((system, remote)) = q.split_once(':') {
        conn.query_row(
            "SELECT lead_id FROM links WHERE system = ?1 AND remote_id = ?2
             ORDER BY closed_at IS NOT NULL, id DESC LIMIT 1",
            params![system, remote],
            |r| r.get(0),
        )
        .optional()?
    } else {
        Some(q.to_string())
    };
    // Follow merges to the surviving person.
    match id {
        Some(id) => surviving_lead(conn, &id),
        None => Ok(None),
    }
}

pub(super) fn trace(conn: &Connection, query: &str) -> Result<Option<Trace>> {
    let Some(lead_id) = find_lead(conn, query)? else { return Ok(None) };
    let (fields, provenance): (String, String) =
        conn.query_row("SELECT fields, provenance FROM leads WHERE id = ?1", [&lead_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let fields: Fields = from_json(&fields)?;
    let mut provenance: BTreeMap<Field, Provenance> = from_json(&provenance)?;
    let merged_from: Vec<String> = conn
        .prepare("SELECT id FROM leads WHERE merged_into = ?1 ORDER BY created_at")?
        .query_map([&lead_id], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    let mut ids = vec![lead_id.clone()];
    ids.extend(merged_from.iter().cloned());

    let mut links = Vec::new();
    let mut events = Vec::new();
    // A review between two persons of this trace (one folded into the other) is read from
    // each side; it is listed once.
    let mut reviews_seen = std::collections::BTreeSet::new();
    for id in &ids {
        let mut stmt = conn.prepare(
            "SELECT system, object_type, remote_id, reason, created_at, closed_at, closed_reason
             FROM links WHERE lead_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok(TraceLink {
                system: r.get(0)?,
                object_type: r.get(1)?,
                remote_id: r.get(2)?,
                reason: r.get(3)?,
                created_at: r.get(4)?,
                closed_at: r.get(5)?,
                closed_reason: r.get(6)?,
            })
        })?;
        for l in rows {
            links.push(l?);
        }
        let mut stmt = conn
            .prepare("SELECT at, kind, system, detail FROM audit WHERE lead_id = ?1 ORDER BY id")?;
        let rows = stmt.query_map([id], |r| {
            let detail: String = r.get(3)?;
            Ok(TraceEvent {
                at: r.get(0)?,
                kind: r.get(1)?,
                system: r.get(2)?,
                lead: Some(id.clone()),
                detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
            })
        })?;
        for e in rows {
            events.push(e?);
        }
        let mut stmt = conn.prepare(
            "SELECT updated_at, state, system, object_type, remote_id, fields, attempts, error_code,
                    last_error, vendor_writes
             FROM outbox WHERE lead_id = ?1 AND state != 'done' ORDER BY id",
        )?;
        let rows = stmt.query_map([id], |r| {
            let state: String = r.get(1)?;
            let fields: String = r.get(5)?;
            let remote: String = r.get(4)?;
            Ok(TraceEvent {
                at: r.get(0)?,
                kind: format!("push_{state}"),
                system: Some(r.get(2)?),
                lead: Some(id.clone()),
                detail: serde_json::json!({
                    "remote": if remote.is_empty() { "(create)".to_string() } else { format!("{}/{remote}", r.get::<_, String>(3)?) },
                    "fields": serde_json::from_str::<serde_json::Value>(&fields).unwrap_or_default(),
                    "attempts": r.get::<_, i64>(6)?,
                    "error_code": r.get::<_, Option<String>>(7)?,
                    "error": r.get::<_, Option<String>>(8)?,
                    // Contract writes besides the fields (reason code, owner), if any.
                    "writes": r
                        .get::<_, Option<String>>(9)?
                        .and_then(|w| serde_json::from_str::<serde_json::Value>(&w).ok()),
                }),
            })
        })?;
        for e in rows {
            events.push(e?);
        }
        let mut stmt = conn.prepare(
            "SELECT created_at, kind, other_lead_id, field, score, rule, state, decision, lead_id,
                    id
             FROM reviews WHERE lead_id = ?1 OR other_lead_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([id], |r| {
            let event = TraceEvent {
                at: r.get(0)?,
                kind: format!("review_{}", r.get::<_, String>(1)?),
                system: None,
                lead: Some(r.get(8)?),
                detail: serde_json::json!({
                    "other": r.get::<_, String>(2)?,
                    "field": r.get::<_, String>(3)?,
                    "score": r.get::<_, Option<f64>>(4)?,
                    "rule": r.get::<_, Option<String>>(5)?,
                    "state": r.get::<_, String>(6)?,
                    "decision": r.get::<_, Option<String>>(7)?,
                }),
            };
            Ok((r.get::<_, i64>(9)?, event))
        })?;
        for row in rows {
            let (review, e) = row?;
            if reviews_seen.insert(review) {
                events.push(e);
            }
        }
    }
    // Changes received from every record this person ever had (while the inbox keeps them).
    let mut seen = std::collections::BTreeSet::new();
    for link in &links {
        if !seen.insert((link.system.clone(), link.object_type.clone(), link.remote_id.clone())) {
            continue;
        }
        let prefix = format!("{}|{}|{}|", link.system, link.object_type, link.remote_id);
        let upper = format!("{}|{}|{}}}", link.system, link.object_type, link.remote_id);
        let mut stmt = conn.prepare(
            "SELECT received_at, source, change FROM inbox
             WHERE dedupe_key >= ?1 AND dedupe_key < ?2 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![prefix, upper], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
        })?;
        for row in rows {
            let (at, source, change) = row?;
            let change: serde_json::Value = serde_json::from_str(&change).unwrap_or_default();
            events.push(TraceEvent {
                at,
                kind: "change".into(),
                system: Some(link.system.clone()),
                lead: None,
                detail: serde_json::json!({
                    "remote": format!("{}/{}", link.object_type, link.remote_id),
                    "source": source,
                    "modified_at": change.get("modified_at"),
                    "fields": change.get("fields"),
                    "fate": change.get("fate"),
                }),
            });
        }
    }
    events.sort_by(|a, b| a.at.cmp(&b.at));
    let fields = fields
        .into_iter()
        .map(|(f, v)| TraceField {
            field: f.as_str().to_string(),
            value: v,
            provenance: provenance.remove(&f),
        })
        .collect();
    Ok(Some(Trace { lead_id, merged_from, fields, links, events }))
}

impl LedgerReader {
    /// The timeline of the person an email, a ledger id or `system:remote-id` names.
    ///
    /// # Errors
    /// SQLite failures or a corrupt row.
    pub fn trace(&self, query: &str) -> Result<Option<Trace>> {
        trace(&self.conn, query)
    }
}
