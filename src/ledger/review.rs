//! The review queue: possible duplicates and parked field conflicts, and the decisions a
//! person takes on them (`leadsync review`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use super::identity::{load_lead, merge_leads, replan, write_lead, write_match_keys};
use super::{Ledger, LedgerReader, Result, audit, ts};
use crate::domain::Field;
use crate::reconcile::{Provenance, Rules};

/// One item of the review queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Review {
    pub id: i64,
    /// `duplicate` or `conflict`.
    pub kind: String,
    pub lead_id: String,
    /// For a duplicate: the other person.
    pub other_lead_id: Option<String>,
    /// For a conflict: the field.
    pub field: Option<String>,
    pub score: Option<f64>,
    pub rule: Option<String>,
    pub detail: serde_json::Value,
    /// `open`, `accepted`, `rejected` or `obsolete`.
    pub state: String,
    pub created_at: String,
    pub decided_at: Option<String>,
    pub decision: Option<String>,
}

/// What a reviewer decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Duplicate: merge the two persons. Conflict: take the parked incoming value.
    Accept,
    /// Duplicate: they are different people (never asked again). Conflict: keep the person's
    /// current value (it is pushed to the other side).
    Reject,
}

/// Why a decision could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("no review item {0}")]
    NotFound(i64),
    #[error("review item {id} is already {state}")]
    NotOpen { id: i64, state: String },
    #[error(transparent)]
    Ledger(#[from] super::LedgerError),
}

const COLUMNS: &str = "id, kind, lead_id, other_lead_id, field, score, rule, detail, state,
                       created_at, decided_at, decision";

fn review_row(r: &Row<'_>) -> rusqlite::Result<Review> {
    let other: String = r.get(3)?;
    let field: String = r.get(4)?;
    let detail: String = r.get(7)?;
    Ok(Review {
        id: r.get(0)?,
        kind: r.get(1)?,
        lead_id: r.get(2)?,
        other_lead_id: (!other.is_empty()).then_some(other),
        field: (!field.is_empty()).then_some(field),
        score: r.get(5)?,
        rule: r.get(6)?,
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
        state: r.get(8)?,
        created_at: r.get(9)?,
        decided_at: r.get(10)?,
        decision: r.get(11)?,
    })
}

pub(super) fn list(conn: &Connection, all: bool) -> Result<Vec<Review>> {
    let sql = if all {
        format!("SELECT {COLUMNS} FROM reviews ORDER BY id")
    } else {
        format!("SELECT {COLUMNS} FROM reviews WHERE state = 'open' ORDER BY id")
    };
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([], review_row)?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

pub(super) fn get(conn: &Connection, id: i64) -> Result<Option<Review>> {
    Ok(conn
        .query_row(&format!("SELECT {COLUMNS} FROM reviews WHERE id = ?1"), [id], review_row)
        .optional()?)
}

/// Both sides of every open duplicate review, as `pairs(lead, other)`: a `WITH` clause for
/// the queries that ask where a review holds a person's create (`identity.review_holds_creates`;
/// `load_lead` asks the same of one person through the indexes).
pub(super) const OPEN_DUPLICATE_PAIRS: &str = "WITH pairs(lead, other) AS (
    SELECT lead_id, other_lead_id FROM reviews
    WHERE kind = 'duplicate' AND state = 'open' AND other_lead_id != ''
    UNION ALL
    SELECT other_lead_id, lead_id FROM reviews
    WHERE kind = 'duplicate' AND state = 'open' AND other_lead_id != '')";

impl LedgerReader {
    /// Open review items (or all of them).
    ///
    /// # Errors
    /// SQLite failures.
    pub fn reviews(&self, all: bool) -> Result<Vec<Review>> {
        list(&self.conn, all)
    }

    /// One review item.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn review(&self, id: i64) -> Result<Option<Review>> {
        get(&self.conn, id)
    }

    /// Open review items per kind (`duplicate`, `conflict`).
    ///
    /// # Errors
    /// SQLite failures.
    pub fn open_review_counts(&self) -> Result<BTreeMap<String, i64>> {
        let mut stmt = self
            .conn
            .prepare("SELECT kind, count(*) FROM reviews WHERE state = 'open' GROUP BY kind")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Per system, the persons an open duplicate review keeps from being created there
    /// (`identity.review_holds_creates`): the other person has a record there, they have none.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn review_hold_counts(&self) -> Result<BTreeMap<String, i64>> {
        let mut stmt = self.conn.prepare(&format!(
            "{OPEN_DUPLICATE_PAIRS}
             SELECT l.system, count(DISTINCT p.lead) FROM pairs p
             JOIN links l ON l.lead_id = p.other AND l.closed_at IS NULL
             WHERE NOT EXISTS (SELECT 1 FROM links m WHERE m.lead_id = p.lead
                               AND m.system = l.system AND m.closed_at IS NULL)
             GROUP BY l.system"
        ))?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

impl Ledger {
    /// Open review items.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn open_reviews(&self) -> Result<Vec<Review>> {
        let conn = self.conn.lock().map_err(|_| super::LedgerError::Poisoned)?;
        list(&conn, false)
    }

    /// Take a reviewer's decision on one item, in one transaction: merge the persons or
    /// record that they differ; take or refuse a parked value. The person's pushes are
    /// planned again.
    ///
    /// # Errors
    /// The item is unknown or already decided, or SQLite fails.
    pub fn decide_review(
        &self,
        id: i64,
        verdict: Verdict,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> std::result::Result<Review, ReviewError> {
        self.with_tx(|tx| {
            let Some(item) = get(tx, id)? else { return Ok(Err(ReviewError::NotFound(id))) };
            if item.state != "open" {
                return Ok(Err(ReviewError::NotOpen { id, state: item.state }));
            }
            let decision = match (item.kind.as_str(), verdict) {
                ("duplicate", Verdict::Accept) => {
                    let other = item.other_lead_id.clone().unwrap_or_default();
                    // The older person survives, so ids already stamped at vendors stay.
                    let older: Option<String> = tx
                        .query_row(
                            "SELECT id FROM leads WHERE id IN (?1, ?2) AND merged_into IS NULL
                             ORDER BY created_at, id LIMIT 1",
                            params![item.lead_id, other],
                            |r| r.get(0),
                        )
                        .optional()?;
                    let Some(winner) = older else {
                        return Ok(Err(ReviewError::NotOpen { id, state: "obsolete".into() }));
                    };
                    let loser = if winner == item.lead_id { other } else { item.lead_id.clone() };
                    merge_leads(tx, &winner, &loser, "review", rules, now)?;
                    format!("merged {loser} into {winner}")
                }
                ("duplicate", Verdict::Reject) => "different people".to_string(),
                ("conflict", v) => {
                    let field = item.field.as_deref().and_then(Field::parse);
                    if let (Some(field), Some(mut lead)) = (field, load_lead(tx, &item.lead_id)?)
                    {
                        let incoming = item.detail.get("incoming").and_then(|v| v.as_str());
                        let system = item.detail.get("system").and_then(|v| v.as_str());
                        if v == Verdict::Accept
                            && let Some(value) = incoming
                        {
                            lead.fields.insert(field, value.to_string());
                            lead.provenance.insert(
                                field,
                                Provenance {
                                    system: system.unwrap_or("review").to_string(),
                                    value: Some(value.to_string()),
                                    at: now,
                                    rule: "review".into(),
                                },
                            );
                            write_lead(tx, &item.lead_id, false, &lead.fields, &lead.provenance, now)?;
                            let keys = rules.matcher.blocking_keys(&rules.matcher.profile_of(&lead.fields));
                            write_match_keys(tx, &item.lead_id, &keys)?;
                        }
                    }
                    if v == Verdict::Accept { "took the incoming value" } else { "kept the current value" }
                        .to_string()
                }
                _ => "unknown kind".to_string(),
            };
            let state = if verdict == Verdict::Accept { "accepted" } else { "rejected" };
            tx.execute(
                "UPDATE reviews SET state = ?2, decided_at = ?3, decision = ?4 WHERE id = ?1",
                params![id, state, ts(now), decision],
            )?;
            audit(
                tx,
                now,
                Some(&item.lead_id),
                None,
                "review_decided",
                &serde_json::json!({ "review": id, "kind": item.kind, "state": state, "decision": decision }),
            )?;
            replan(tx, &item.lead_id, rules, now)?;
            if let Some(other) = item.other_lead_id.as_deref().filter(|o| !o.is_empty()) {
                // A duplicate review held both persons' creates; decided, they go out.
                replan(tx, other, rules, now)?;
            }
            Ok(Ok(get(tx, id)?.unwrap_or(item)))
        })?
    }
}
