//! Embedded, versioned schema migrations on `PRAGMA user_version`.
//!
//! Each entry of [`MIGRATIONS`] moves the schema from version `i` to `i + 1` inside one
//! transaction. Never edit a released migration: append a new one.

use rusqlite::Connection;

use super::LedgerError;

/// Migration `i` takes the schema from `user_version = i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the tables the walking skeleton needs.
    r#"
    CREATE TABLE systems (
        name TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        role TEXT NOT NULL
    ) STRICT;

    -- The golden record of one person.
    CREATE TABLE leads (
        id TEXT PRIMARY KEY,
        email_norm TEXT,
        fields TEXT NOT NULL,          -- JSON: canonical field -> value
        provenance TEXT NOT NULL,      -- JSON: canonical field -> {system, at, rule}
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    ) STRICT;
    CREATE INDEX leads_email ON leads(email_norm);

    -- Lead <-> remote record, with why.
    CREATE TABLE links (
        id INTEGER PRIMARY KEY,
        lead_id TEXT NOT NULL REFERENCES leads(id),
        system TEXT NOT NULL,
        object_type TEXT NOT NULL,
        remote_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_at TEXT NOT NULL,
        closed_at TEXT,
        UNIQUE (system, object_type, remote_id)
    ) STRICT;
    CREATE INDEX links_lead ON links(lead_id);

    CREATE TABLE link_history (
        id INTEGER PRIMARY KEY,
        link_id INTEGER NOT NULL,
        lead_id TEXT NOT NULL,
        event TEXT NOT NULL,
        reason TEXT NOT NULL,
        at TEXT NOT NULL
    ) STRICT;

    -- What leadsync knows of each remote record: its last seen state merged with what
    -- leadsync pushed since, which is what outgoing diffs are computed against.
    CREATE TABLE remote_records (
        system TEXT NOT NULL,
        object_type TEXT NOT NULL,
        remote_id TEXT NOT NULL,
        state TEXT NOT NULL,           -- JSON canonical fields
        modified_at TEXT,              -- vendor time of the last seen snapshot
        seen_at TEXT,                  -- our clock, when that snapshot was read
        pushed TEXT,                   -- JSON of the fields last pushed
        pushed_at TEXT,                -- our clock, when that push started
        PRIMARY KEY (system, object_type, remote_id)
    ) STRICT, WITHOUT ROWID;

    -- Observed changes, committed before they are processed.
    CREATE TABLE inbox (
        id INTEGER PRIMARY KEY,
        system TEXT NOT NULL,
        source TEXT NOT NULL,
        dedupe_key TEXT NOT NULL UNIQUE,
        change TEXT NOT NULL,          -- JSON domain::Change
        received_at TEXT NOT NULL,
        processed_at TEXT
    ) STRICT;
    CREATE INDEX inbox_pending ON inbox(id) WHERE processed_at IS NULL;

    -- Desired writes, coalesced per (lead, system, record) while pending.
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        lead_id TEXT NOT NULL,
        system TEXT NOT NULL,
        object_type TEXT NOT NULL,
        remote_id TEXT NOT NULL,       -- '' for a create
        fields TEXT NOT NULL,          -- JSON canonical fields to write
        version INTEGER NOT NULL DEFAULT 1,
        state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        error_code TEXT,
        last_error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    ) STRICT;
    CREATE UNIQUE INDEX outbox_coalesce ON outbox(lead_id, system, remote_id)
        WHERE state = 'pending';
    CREATE INDEX outbox_due ON outbox(system, next_attempt_at) WHERE state = 'pending';
    -- due_pushes walks pending rows in id order and stops at its LIMIT.
    CREATE INDEX outbox_pending_id ON outbox(system, id) WHERE state = 'pending';
    CREATE INDEX outbox_lead ON outbox(lead_id, system, state);

    CREATE TABLE cursors (
        system TEXT PRIMARY KEY,
        value TEXT,
        updated_at TEXT NOT NULL
    ) STRICT;

    CREATE TABLE system_status (
        system TEXT PRIMARY KEY,
        last_poll_ok_at TEXT,
        last_error TEXT,
        last_error_at TEXT
    ) STRICT;

    -- Why everything is the way it is.
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        lead_id TEXT,
        system TEXT,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL           -- JSON
    ) STRICT;
    CREATE INDEX audit_lead ON audit(lead_id);
    "#,
    // 2: a one-row table that readiness probes write to prove the ledger takes commits, and
    // an index that keeps counting dead letters per system cheap for metrics scrapes.
    r#"
    CREATE TABLE heartbeat (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        checked_at TEXT NOT NULL
    ) STRICT;
    INSERT INTO heartbeat(id, checked_at) VALUES (1, '');
    CREATE INDEX outbox_dead ON outbox(system) WHERE state = 'dead';
    "#,
    // 3: webhook notices, committed before the sender is acknowledged and turned into inbox
    // changes (from the state they carried, or by a fetch) after.
    r#"
    CREATE TABLE notices (
        id INTEGER PRIMARY KEY,
        system TEXT NOT NULL,
        dedupe_key TEXT NOT NULL,
        notice TEXT NOT NULL,          -- JSON domain::Notice
        received_at TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        processed_at TEXT,
        outcome TEXT,                  -- ingested | not_found
        UNIQUE (system, dedupe_key)
    ) STRICT;
    CREATE INDEX notices_pending ON notices(system, id) WHERE processed_at IS NULL;
    "#,
    // 4: identity. The last value each record and its person agreed on (three-way conflicts),
    // persons merged into others, closed links' reasons, blocking keys for fuzzy matching,
    // the review queue, and tombstones of records deleted at a vendor.
    r#"
    ALTER TABLE remote_records ADD COLUMN agreed TEXT;      -- JSON canonical fields
    ALTER TABLE leads ADD COLUMN merged_into TEXT;           -- the surviving person
    ALTER TABLE links ADD COLUMN closed_reason TEXT;         -- deleted | merged | converted | ...
    CREATE INDEX links_open_lead ON links(lead_id) WHERE closed_at IS NULL;

    -- Blocking keys of each live person: fuzzy matching compares a record only with the
    -- persons sharing one of its keys.
    CREATE TABLE match_keys (
        key TEXT NOT NULL,
        lead_id TEXT NOT NULL,
        PRIMARY KEY (key, lead_id)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX match_keys_lead ON match_keys(lead_id);

    -- Decisions leadsync will not take alone: possible duplicates and field conflicts.
    CREATE TABLE reviews (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('duplicate', 'conflict')),
        lead_id TEXT NOT NULL,
        other_lead_id TEXT NOT NULL DEFAULT '',   -- duplicate: the other person
        field TEXT NOT NULL DEFAULT '',           -- conflict: the field
        score REAL,
        rule TEXT,
        detail TEXT NOT NULL,                     -- JSON
        state TEXT NOT NULL CHECK (state IN ('open', 'accepted', 'rejected', 'obsolete')),
        created_at TEXT NOT NULL,
        decided_at TEXT,
        decision TEXT
    ) STRICT;
    CREATE UNIQUE INDEX reviews_open ON reviews(kind, lead_id, other_lead_id, field)
        WHERE state = 'open';
    CREATE INDEX reviews_lead ON reviews(lead_id);
    CREATE INDEX reviews_other ON reviews(other_lead_id) WHERE other_lead_id != '';

    -- Records deleted at a vendor: the person is not created there again unless configured.
    CREATE TABLE tombstones (
        system TEXT NOT NULL,
        object_type TEXT NOT NULL,
        remote_id TEXT NOT NULL,
        lead_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        at TEXT NOT NULL,
        PRIMARY KEY (system, object_type, remote_id)
    ) STRICT;
    CREATE INDEX tombstones_lead ON tombstones(lead_id, system);
    "#,
    // 5: vendor-side merges of a person's same-system duplicates (`identity.merge_at_vendor`):
    // one row per record merged away, so that a merge is asked for once (or retried with
    // backoff after a transient failure) and never in a loop. An index to find persons with
    // several open links in one system, and one to follow merged persons back to their
    // absorbed ids (for the duplicates report's link reasons).
    r#"
    CREATE TABLE vendor_merges (
        id INTEGER PRIMARY KEY,
        lead_id TEXT NOT NULL,
        system TEXT NOT NULL,
        object_type TEXT NOT NULL,
        primary_id TEXT NOT NULL,      -- the record that survives (the person's primary)
        loser_id TEXT NOT NULL,        -- the record merged into it
        state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL, -- pending: when it may be tried (again)
        error_code TEXT,
        answer TEXT,                   -- the vendor's answer, without personal data
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (system, object_type, loser_id)
    ) STRICT;
    CREATE INDEX vendor_merges_lead ON vendor_merges(lead_id);
    CREATE INDEX links_open_system_lead ON links(system, lead_id) WHERE closed_at IS NULL;
    CREATE INDEX leads_merged_into ON leads(merged_into) WHERE merged_into IS NOT NULL;
    "#,
    // 6: erasure. A per-ledger random salt (made on the first erasure) and the salted SHA-256
    // of each erased person's normalised email, remote record ids and ledger ids; changes
    // that match one are dropped before they are stored (see `erase.rs`).
    r#"
    CREATE TABLE erasure_salt (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        salt BLOB NOT NULL
    ) STRICT;
    CREATE TABLE erasures (
        hash TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('email', 'record', 'lead')),
        at TEXT NOT NULL
    ) STRICT, WITHOUT ROWID;
    "#,
    // 7: the lead contract's governed lifecycle per person, as JSON (`reconcile::lifecycle::
    // PersonLifecycle`: stage, stage-entry dates, event times, custom values, rules that
    // held), with the stage in its own column so that counts and `plan` need no JSON.
    r#"
    CREATE TABLE lifecycle (
        lead_id TEXT PRIMARY KEY,
        stage TEXT NOT NULL,
        state TEXT NOT NULL,           -- JSON PersonLifecycle
        updated_at TEXT NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX lifecycle_stage ON lifecycle(stage);
    "#,
    // 8: closed-loop data. Opportunities with their people and campaign touches per person,
    // as each system reported them, and the closed-loop poll cursor per system (committed with the rows it
    // produced). Remote ids are kept, not persons: reports resolve them through `links` when
    // they run, so a record linked (or merged) later is still attributed.
    r#"
    CREATE TABLE opportunities (
        system TEXT NOT NULL,
        remote_id TEXT NOT NULL,
        object_type TEXT NOT NULL,     -- Opportunity | deal
        name TEXT,
        amount_cents INTEGER,          -- integer cents of `currency`; never a float
        currency TEXT,                 -- NULL: the system's single currency
        stage TEXT NOT NULL,
        pipeline TEXT,
        is_closed INTEGER NOT NULL,
        is_won INTEGER NOT NULL,
        close_date TEXT,               -- YYYY-MM-DD
        primary_campaign TEXT,
        created_at TEXT,               -- vendor time
        modified_at TEXT NOT NULL,     -- vendor time of the stored state
        deleted INTEGER NOT NULL,
        first_seen_at TEXT NOT NULL,   -- our clock
        PRIMARY KEY (system, remote_id)
    ) STRICT;

    -- The people on an opportunity, in the order the system gave them (primary first).
    CREATE TABLE opportunity_contacts (
        system TEXT NOT NULL,
        opportunity_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        object_type TEXT NOT NULL,
        remote_id TEXT NOT NULL,
        is_primary INTEGER NOT NULL,
        role TEXT,
        PRIMARY KEY (system, opportunity_id, position)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE campaign_touches (
        system TEXT NOT NULL,
        touch_id TEXT NOT NULL,
        person_type TEXT NOT NULL,
        person_id TEXT NOT NULL,
        lead_type TEXT,                -- a converted lead's membership names the Lead too
        lead_id TEXT,
        campaign_id TEXT NOT NULL,
        campaign_name TEXT,
        kind TEXT NOT NULL,            -- campaign_member | form_submission
        at TEXT NOT NULL,
        responded INTEGER NOT NULL,
        responded_on TEXT,
        modified_at TEXT NOT NULL,
        deleted INTEGER NOT NULL,
        first_seen_at TEXT NOT NULL,
        PRIMARY KEY (system, touch_id)
    ) STRICT;

    CREATE TABLE closed_loop_cursors (
        system TEXT PRIMARY KEY,
        value TEXT,
        updated_at TEXT NOT NULL,
        last_ok_at TEXT,
        last_error TEXT,
        last_error_at TEXT
    ) STRICT;
    "#,
    // 9: SLA clocks of the lead contract, one per person on the MQL path. `clock` is the
    // serde `StoredClock` (the pure clock plus actions not yet delivered); `next_wakeup` is
    // when the SLA task must look at it again (NULL: nothing pending), indexed for that scan.
    r#"
    CREATE TABLE sla_clocks (
        lead_id TEXT PRIMARY KEY,
        clock TEXT NOT NULL,
        next_wakeup TEXT,
        state TEXT NOT NULL,
        updated_at TEXT NOT NULL
    ) STRICT;
    CREATE INDEX sla_clocks_wakeup ON sla_clocks(next_wakeup) WHERE next_wakeup IS NOT NULL;
    "#,
    // 10: one row per SLA clock cycle (a person handed over as MQL twice has two), kept after
    // `sla_clocks` moves on to the next cycle: what `leadsync report sla` counts. Flags are
    // sticky (set once an action was decided); `disqualified_at` and `attempts_at_disqualify`
    // record the first disqualification during the cycle, whatever the clock's phase. A clock
    // stored before this migration gets its row at its next write (no SQL backfill: the
    // clock JSON holds serde timestamps, not the ledger's fixed-width ones).
    r#"
    CREATE TABLE sla_cycles (
        lead_id TEXT NOT NULL,
        started_at TEXT NOT NULL,
        due_at TEXT NOT NULL,
        phase TEXT NOT NULL,
        first_touch_at TEXT,
        attempts INTEGER NOT NULL,
        breached INTEGER NOT NULL,
        escalated INTEGER NOT NULL,
        recycled INTEGER NOT NULL,
        disqualify_refused INTEGER NOT NULL,
        disqualified_at TEXT,
        attempts_at_disqualify INTEGER,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (lead_id, started_at)
    ) STRICT;
    CREATE INDEX sla_cycles_started ON sla_cycles(started_at);
    "#,
    // 11: sales activities (Salesforce Tasks) read by the closed-loop poller, one row per
    // activity id, naming the Lead or Contact by remote id. `counted_for` is the person whose
    // SLA clock counted it as a contact attempt (NULL: not counted, yet or ever), so an
    // activity read twice is counted once. Indexed by record for the clock-start scan.
    r#"
    CREATE TABLE activities (
        system TEXT NOT NULL,
        activity_id TEXT NOT NULL,
        who_type TEXT NOT NULL,        -- Lead | Contact
        who_id TEXT NOT NULL,
        kind TEXT NOT NULL,            -- call | email | meeting | other
        at TEXT NOT NULL,              -- vendor time the activity was logged
        completed INTEGER NOT NULL,
        modified_at TEXT NOT NULL,     -- vendor time of the stored state
        deleted INTEGER NOT NULL,
        counted_for TEXT,
        first_seen_at TEXT NOT NULL,   -- our clock
        PRIMARY KEY (system, activity_id)
    ) STRICT;
    CREATE INDEX activities_who ON activities(system, who_type, who_id);
    "#,
    // 12: the lead contract's own state, by key: `rules_hash` is the fingerprint of the
    // qualification rules everyone was last re-evaluated with (see `Contract::rules_hash`).
    // Outbox rows may carry stage-entry dates to write besides their fields (JSON: stage ->
    // RFC 3339 time; NULL: none); such a row stays when its fields are no longer needed.
    r#"
    CREATE TABLE contract_state (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at TEXT NOT NULL
    ) STRICT, WITHOUT ROWID;
    ALTER TABLE outbox ADD COLUMN stage_dates TEXT;
    "#,
    // 13: outbox rows may carry contract writes besides their fields and stage dates (JSON
    // `{stage_reason?, owner?}`; NULL: none): the latest named transition's reason code and an
    // SLA escalation's owner reassignment (see `ledger/vendor_writes.rs`). Such a row stays
    // when its fields are no longer needed, as one with stage dates does.
    r#"
    ALTER TABLE outbox ADD COLUMN vendor_writes TEXT;
    "#,
    // 14: records deleted at a vendor
    // before any person held their email, by the normalised email they held: the person
    // later made from that address takes them as tombstones, so that leadsync does not
    // create it again where a human deleted it.
    r#"
    CREATE TABLE email_tombstones (
        system TEXT NOT NULL,
        object_type TEXT NOT NULL,
        remote_id TEXT NOT NULL,
        email_norm TEXT NOT NULL,
        at TEXT NOT NULL,
        PRIMARY KEY (system, object_type, remote_id)
    ) STRICT;
    CREATE INDEX email_tombstones_email ON email_tombstones(email_norm);
    "#,
    // 15: the fuzzy twin of 14. A record deleted at a vendor before leadsync found its person
    // keeps its identity (the matcher's five profile fields, JSON; the normalised email, for
    // erasure) and its blocking keys: a person made later is scored against it with the
    // matching rules, and one at or above the auto-link threshold is tombstoned there, as if
    // the delete had been read after the person existed. A row goes when a person claims it,
    // when its record is read live again, at erasure, and after the inbox retention.
    r#"
    CREATE TABLE deleted_identities (
        system TEXT NOT NULL,
        object_type TEXT NOT NULL,
        remote_id TEXT NOT NULL,
        fields TEXT NOT NULL,
        email_norm TEXT,
        at TEXT NOT NULL,
        PRIMARY KEY (system, object_type, remote_id)
    ) STRICT;
    CREATE INDEX deleted_identities_email ON deleted_identities(email_norm);
    CREATE INDEX deleted_identities_at ON deleted_identities(at);
    CREATE TABLE deleted_identity_keys (
        key TEXT NOT NULL,
        system TEXT NOT NULL,
        object_type TEXT NOT NULL,
        remote_id TEXT NOT NULL,
        PRIMARY KEY (key, system, object_type, remote_id)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX deleted_identity_keys_record
        ON deleted_identity_keys(system, object_type, remote_id);
    "#,
    // 16: when a human last typed an address on a second record of a person in a system with
    // unique emails (RFC 3339; that address is the record's own, not the person's). When the
    // primary record is deleted and this one takes its place, an address typed after the
    // person's was set is the person's newest, and the person takes it.
    r#"
    ALTER TABLE remote_records ADD COLUMN own_email_at TEXT;
    "#,
    // 17: the outbox's state check written with `=` and `OR` instead of `IN (...)`. SQLite
    // builds an in-memory b-tree for a constant `IN` list each time a statement that checks
    // it runs, about 2.5 µs per outbox insert (more than the rest of a plain insert); the
    // outbox takes one insert per planned push. Same rule, same rows: SQLite cannot alter a
    // CHECK, so the table is rebuilt (nothing references it) with its ids, and its indexes
    // made again.
    r#"
    CREATE TABLE outbox_17 (
        id INTEGER PRIMARY KEY,
        lead_id TEXT NOT NULL,
        system TEXT NOT NULL,
        object_type TEXT NOT NULL,
        remote_id TEXT NOT NULL,       -- '' for a create
        fields TEXT NOT NULL,          -- JSON canonical fields to write
        version INTEGER NOT NULL DEFAULT 1,
        state TEXT NOT NULL CHECK (state = 'pending' OR state = 'done' OR state = 'dead'),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        error_code TEXT,
        last_error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        stage_dates TEXT,
        vendor_writes TEXT
    ) STRICT;
    INSERT INTO outbox_17(id, lead_id, system, object_type, remote_id, fields, version, state,
                          attempts, next_attempt_at, error_code, last_error, created_at,
                          updated_at, stage_dates, vendor_writes)
        SELECT id, lead_id, system, object_type, remote_id, fields, version, state, attempts,
               next_attempt_at, error_code, last_error, created_at, updated_at, stage_dates,
               vendor_writes
        FROM outbox;
    DROP TABLE outbox;
    ALTER TABLE outbox_17 RENAME TO outbox;
    CREATE UNIQUE INDEX outbox_coalesce ON outbox(lead_id, system, remote_id)
        WHERE state = 'pending';
    CREATE INDEX outbox_due ON outbox(system, next_attempt_at) WHERE state = 'pending';
    CREATE INDEX outbox_pending_id ON outbox(system, id) WHERE state = 'pending';
    CREATE INDEX outbox_lead ON outbox(lead_id, system, state);
    CREATE INDEX outbox_dead ON outbox(system) WHERE state = 'dead';
    "#,
];

/// The schema version this build writes.
#[allow(clippy::cast_possible_wrap, reason = "a handful of migrations")]
pub const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

/// Bring the schema up to date.
///
/// # Errors
/// Refuses a ledger written by a newer leadsync, and reports a failed migration (rolled back).
pub fn migrate(conn: &mut Connection) -> Result<(), LedgerError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > CURRENT_VERSION {
        return Err(LedgerError::TooNew { found: version, supported: CURRENT_VERSION });
    }
    for (i, sql) in (1i64..).zip(MIGRATIONS.iter()).skip(usize::try_from(version).unwrap_or(0)) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i)?;
        tx.commit()?;
        tracing::info!(version = i, "ledger migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_from_empty_and_is_idempotent() {
        let mut c = Connection::open_in_memory().expect("open");
        migrate(&mut c).expect("first");
        migrate(&mut c).expect("second");
        let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("v");
        assert_eq!(v, CURRENT_VERSION);
    }

    #[test]
    fn the_outbox_rebuild_keeps_rows_ids_indexes_and_the_state_rule() {
        let mut c = Connection::open_in_memory().expect("open");
        for (i, sql) in (1i64..).zip(MIGRATIONS.iter()).take(16) {
            c.execute_batch(sql).expect("older migration");
            c.pragma_update(None, "user_version", i).expect("version");
        }
        c.execute_batch(
            "INSERT INTO outbox(id, lead_id, system, object_type, remote_id, fields, version,
                                state, attempts, next_attempt_at, error_code, last_error,
                                created_at, updated_at, stage_dates, vendor_writes)
             VALUES (7, 'L1', 'crm', 'Lead', '', '{\"email\":\"a@x\"}', 3, 'dead', 4, 't1',
                     'http_400', 'refused', 't0', 't2', '{\"mql\":\"t\"}', '{\"r\":1}');
             INSERT INTO outbox(id, lead_id, system, object_type, remote_id, fields, state,
                                next_attempt_at, created_at, updated_at)
             VALUES (9, 'L1', 'crm', 'Lead', '', '{}', 'pending', 't1', 't0', 't0');",
        )
        .expect("rows");
        let dump = |c: &Connection| -> Vec<String> {
            c.prepare(
                "SELECT quote(id) || quote(lead_id) || quote(system) || quote(object_type)
                         || quote(remote_id) || quote(fields) || quote(version) || quote(state)
                         || quote(attempts) || quote(next_attempt_at) || quote(error_code)
                         || quote(last_error) || quote(created_at) || quote(updated_at)
                         || quote(stage_dates) || quote(vendor_writes)
                       FROM outbox ORDER BY id",
            )
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
        };
        let indexes = |c: &Connection| -> Vec<String> {
            c.prepare(
                "SELECT sql FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'outbox'
                       ORDER BY name",
            )
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("indexes")
        };
        let (rows, before) = (dump(&c), indexes(&c));
        migrate(&mut c).expect("17");
        assert_eq!(dump(&c), rows);
        let squash = |v: Vec<String>| -> Vec<String> {
            v.into_iter().map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ")).collect()
        };
        assert_eq!(squash(indexes(&c)), squash(before));
        let bad = c.execute(
            "INSERT INTO outbox(lead_id, system, object_type, remote_id, fields, state,
                                next_attempt_at, created_at, updated_at)
             VALUES ('L2', 'crm', 'Lead', '', '{}', 'sent', 't', 't', 't')",
            [],
        );
        assert!(bad.is_err(), "a state outside pending/done/dead is refused");
        // A new row takes the next id after the largest kept one, as before the rebuild.
        c.execute(
            "INSERT INTO outbox(lead_id, system, object_type, remote_id, fields, state,
                                next_attempt_at, created_at, updated_at)
             VALUES ('L2', 'crm', 'Lead', '', '{}', 'pending', 't', 't', 't')",
            [],
        )
        .expect("insert");
        assert_eq!(c.last_insert_rowid(), 10);
    }

    #[test]
    fn refuses_newer_schema() {
        let mut c = Connection::open_in_memory().expect("open");
        c.pragma_update(None, "user_version", CURRENT_VERSION + 1).expect("set");
        assert!(matches!(migrate(&mut c), Err(LedgerError::TooNew { .. })));
    }
}
