//! The journal on PostgreSQL: what a cluster of replicas shares.
//!
//! The same tables and the same rules as the SQLite journal (one
//! conformance suite tests both), with what several hosts need: action
//! claims with `FOR UPDATE SKIP LOCKED` (no two replicas claim one action,
//! none waits for another's claim), the rollback budget counted under a
//! transaction-scoped advisory lock (no two replicas both admit the last
//! unit), and partition owner epochs checked inside each batch's
//! transaction (a replica that lost a partition commits nothing for it).
//!
//! The schema lives in `migrations/postgres/*.sql`, applied in order by the
//! first replica to start, under an advisory lock, and recorded in
//! `ripcord_migrations`. Connections come from a deadpool pool driven by
//! a small runtime of its own, so the journal's calls are synchronous like
//! the SQLite journal's (the pipeline thread and `spawn_blocking` call them).

use std::future::Future;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::Row;

use super::rows::{
    HOLD_COLS, SILENCE_COLS, SilenceCols, batch_from, batch_json, hold_from, labels_from,
    labels_json, matchers_json, parse,
};
use super::silences::Silence;
use super::{
    ActionRow, ActionState, Admission, ApprovalDecided, ApprovalOpened, ApprovalRow, Batch,
    EscalationRow, Expired, Gauges, HoldRecord, IncidentFilter, IncidentRow, Ingest, JournalError,
    OpenPage, Reads, RollbackLimits, RolloutRow, SampleRow, SampleStart, SampleState, Silences,
    TIERS_BY_URGENCY, TimelineEntry, UpgradeRow, Verdict, Verdicts, Via, Work,
};
use super::{OpenIncident, Promotion, TallyRow};
use crate::config::Secret;
use crate::decision::{Action, Decision, IncidentId, Severity, Tier};
use crate::time::{Clock, Dur, Ts};

/// The migrations, in order: (version, SQL).
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        include_str!("../../migrations/postgres/0001_journal.sql"),
    ),
    (2, include_str!("../../migrations/postgres/0002_gates.sql")),
    (
        3,
        include_str!("../../migrations/postgres/0003_silences.sql"),
    ),
    (4, include_str!("../../migrations/postgres/0004_review.sql")),
    (
        5,
        include_str!("../../migrations/postgres/0005_batches.sql"),
    ),
    (6, include_str!("../../migrations/postgres/0006_reads.sql")),
    (
        7,
        include_str!("../../migrations/postgres/0007_verify_stages.sql"),
    ),
    (
        8,
        include_str!("../../migrations/postgres/0008_sample_checks.sql"),
    ),
    (
        9,
        include_str!("../../migrations/postgres/0009_rollback_admissions.sql"),
    ),
];

/// Any key, for the advisory locks that serialize migrations and the
/// rollback budget across replicas ("ripcord" in ASCII).
const MIGRATION_LOCK: i64 = 0x7269_7063_6f72_6401;
const BUDGET_LOCK: i64 = 0x7269_7063_6f72_6402;

/// Connections one process keeps (the pipeline, the action lanes, the API
/// and the timers each hold a journal; they share this pool).
const POOL_SIZE: usize = 8;

impl From<tokio_postgres::Error> for JournalError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.code() == Some(&tokio_postgres::error::SqlState::DISK_FULL) {
            return JournalError::Storage(format!(
                "the journal's disk is full (PostgreSQL: {})",
                with_causes(&e)
            ));
        }
        JournalError::Storage(with_causes(&e))
    }
}

impl From<deadpool_postgres::PoolError> for JournalError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        JournalError::Storage(format!("no connection to PostgreSQL: {}", with_causes(&e)))
    }
}

/// An error and its causes on one line: the driver's "error performing TLS
/// handshake" is only useful with the "certificate verify failed" under it.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

/// `text` with the connection URL and its password taken out (driver
/// messages never quote it, but a parse error might).
pub fn scrub(text: &str, url: &str) -> String {
    crate::text::redact::Redact::new().url(url).apply(text)
}

#[derive(Clone)]
pub struct PgJournal {
    pool: Pool,
    rt: Arc<JournalRuntime>,
    clock: Arc<dyn Clock>,
}

/// The small runtime that drives the pool. The last handle may be dropped
/// anywhere, inside an async task too (a failed start in `run`, the
/// dispatcher's journal at shutdown), where dropping a tokio runtime
/// panics ("Cannot drop a runtime in a context where blocking is not
/// allowed"): it is shut down in the background instead of waited for.
struct JournalRuntime(Option<tokio::runtime::Runtime>);

impl JournalRuntime {
    fn get(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("taken only in drop")
    }
}

impl Drop for JournalRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// How long a start waits for PostgreSQL to answer before it says why not
/// (the URL's `connect_timeout` wins).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `host:port/database as user` of a connection config, for errors that
/// must say which database could not be reached (never the password).
pub fn describe_target(cfg: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let hosts: Vec<String> = cfg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            let port = cfg
                .get_ports()
                .get(i)
                .or_else(|| cfg.get_ports().first())
                .copied()
                .unwrap_or(5432);
            format!("host {host} port {port}")
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "host localhost port 5432".to_owned()
    } else {
        hosts.join(", ")
    };
    let user = cfg.get_user().unwrap_or("(the current user)");
    let db = cfg.get_dbname().unwrap_or(user);
    format!("{hosts}, database {db}, user {user}")
}

impl std::fmt::Debug for PgJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgJournal").finish_non_exhaustive()
    }
}

/// The TLS side of a connection: system roots plus the configured CA.
fn tls_connector(
    ca_file: Option<&std::path::Path>,
) -> Result<postgres_native_tls::MakeTlsConnector, String> {
    let mut b = native_tls::TlsConnector::builder();
    if let Some(path) = ca_file {
        let pem =
            std::fs::read(path).map_err(|e| format!("journal.ca_file {}: {e}", path.display()))?;
        let cert = native_tls::Certificate::from_pem(&pem)
            .map_err(|e| format!("journal.ca_file {}: {e}", path.display()))?;
        b.add_root_certificate(cert);
    }
    let c = b.build().map_err(|e| format!("TLS: {e}"))?;
    Ok(postgres_native_tls::MakeTlsConnector::new(c))
}

impl PgJournal {
    /// Connects (checking the database answers) and applies the migrations
    /// it has not seen. TLS as the URL's `sslmode` asks (`prefer` when it
    /// says nothing), the server's certificate checked against the system's
    /// roots and `ca_file` (a PEM bundle) when given.
    pub fn connect(
        url: &Secret,
        ca_file: Option<&std::path::Path>,
        clock: Arc<dyn Clock>,
    ) -> Result<PgJournal, JournalError> {
        let mut cfg: tokio_postgres::Config =
            url.expose()
                .parse()
                .map_err(|e: tokio_postgres::Error| JournalError::Open {
                    path: "PostgreSQL (journal.url)".into(),
                    reason: scrub(&e.to_string(), url.expose()),
                })?;
        // Which database, on which host and port: what someone reading a
        // failed start needs first.
        let target = format!("PostgreSQL (journal.url: {})", describe_target(&cfg));
        let open_err = |reason: String| JournalError::Open {
            path: target.clone(),
            reason: scrub(&reason, url.expose()),
        };
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(CONNECT_TIMEOUT);
        }
        let rt = JournalRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("ripcord-postgres")
                .enable_all()
                .build()
                .map_err(|e| open_err(e.to_string()))?,
        ));
        let tls = tls_connector(ca_file).map_err(open_err)?;
        let mgr = Manager::from_config(
            cfg,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = {
            let _guard = rt.get().enter();
            Pool::builder(mgr)
                .max_size(POOL_SIZE)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .build()
                .map_err(|e| open_err(e.to_string()))?
        };
        let j = PgJournal {
            pool,
            rt: Arc::new(rt),
            clock,
        };
        j.migrate().map_err(|e| {
            let mut why = e.to_string();
            if why.contains("certificate") {
                why.push_str(
                    " (journal.ca_file names the CA that signed the server's certificate; \
                     sslmode=disable in the URL turns TLS off)",
                );
            }
            open_err(why)
        })?;
        Ok(j)
    }

    /// Another handle on the same pool (for another part of the process).
    pub fn another(&self) -> PgJournal {
        self.clone()
    }

    /// Runs `f` to completion on the journal's runtime. Callers are
    /// synchronous (the pipeline thread, `spawn_blocking`); from inside an
    /// async task the worker steps aside first.
    fn block<T>(
        &self,
        f: impl Future<Output = Result<T, JournalError>>,
    ) -> Result<T, JournalError> {
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.rt.get().block_on(f))
            }
            _ => self.rt.get().block_on(f),
        }
    }

    fn now(&self) -> i64 {
        self.clock.now().millis()
    }

    fn migrate(&self) -> Result<(), JournalError> {
        self.block(async {
            let mut c = self.pool.get().await?;
            let tx = c.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS ripcord_migrations (
                     version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            )
            .await?;
            let done: Vec<i32> = tx
                .query("SELECT version FROM ripcord_migrations", &[])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if let Some(newest) = done.iter().max() {
                if *newest > MIGRATIONS.last().map_or(0, |m| m.0) {
                    return Err(JournalError::Corrupt(format!(
                        "schema version {newest} is newer than this ripcord"
                    )));
                }
            }
            for (version, sql) in MIGRATIONS {
                if done.contains(version) {
                    continue;
                }
                tx.batch_execute(sql).await?;
                tx.execute(
                    "INSERT INTO ripcord_migrations (version) VALUES ($1)",
                    &[version],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }
}

fn incident_from(r: &Row) -> Result<OpenIncident, JournalError> {
    let labels: String = r.try_get("labels")?;
    Ok(OpenIncident {
        id: IncidentId::from_string(r.try_get::<_, String>("id")?),
        rule: r.try_get::<_, String>("rule")?.into(),
        labels: labels_from(&labels)?,
        tier: parse::<Tier>("tier", r.try_get("tier")?)?,
        opened: Ts(r.try_get("opened_at")?),
        severity: parse::<Severity>("severity", r.try_get("severity")?)?,
        fired: r.try_get::<_, i32>("fired")? as u8,
        seq: r.try_get::<_, i32>("seq")? as u32,
        fingerprint: r
            .try_get::<_, Option<String>>("fingerprint")?
            .map(String::into_boxed_str),
        batch: batch_from(r.try_get("batch")?)?,
    })
}

/// An incident with the actions that wait for someone or need a look.
const INCIDENT_ROW: &str = "SELECT i.id, i.rule, i.partition, i.tier, i.severity, i.state, i.opened_at, i.resolved_at, i.labels,
        (SELECT string_agg(a.action || ':' || a.state, ',' ORDER BY a.seq) FROM actions a
          WHERE a.incident_id = i.id AND a.state IN ('awaiting_approval', 'approved', 'unknown', 'failed', 'running', 'pending')),
        i.batch
     FROM incidents i";

fn incident_row(r: &Row) -> Result<IncidentRow, JournalError> {
    let labels: String = r.try_get(8)?;
    let pairs = labels_from(&labels)?;
    let obj: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(&**v)))
        .collect();
    let attention: Option<String> = r.try_get(9)?;
    Ok(IncidentRow {
        id: r.try_get(0)?,
        rule: r.try_get(1)?,
        partition: r.try_get(2)?,
        tier: r.try_get(3)?,
        severity: r.try_get(4)?,
        state: r.try_get(5)?,
        opened_at: Ts(r.try_get(6)?),
        resolved_at: r.try_get::<_, Option<i64>>(7)?.map(Ts),
        labels: serde_json::Value::Object(obj),
        attention: attention
            .map(|s| s.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
        batch: batch_from(r.try_get(10)?)?,
    })
}

const ACTION_COLUMNS: &str =
    "a.key, a.incident_id, a.action, a.state, a.attempts, a.owner, a.detail,
     d.seq, d.at, d.tier, d.severity, d.rule, d.labels, d.value, d.threshold, d.baseline,
     d.fingerprint, d.message, d.escalated_from, a.started_at, a.finished_at, d.batch";

fn action_from(r: &Row) -> Result<ActionRow, JournalError> {
    let key: String = r.try_get(0)?;
    let incident: Option<String> = r.try_get(1)?;
    let action = parse::<Action>("action", r.try_get(2)?)?;
    let state: String = r.try_get(3)?;
    let labels: String = r.try_get(12)?;
    let decision = Decision {
        at: Ts(r.try_get(8)?),
        action,
        tier: parse("tier", r.try_get(9)?)?,
        severity: parse("severity", r.try_get(10)?)?,
        rule: r.try_get::<_, String>(11)?.into(),
        incident: incident.clone().map(IncidentId::from_string),
        labels: labels_from(&labels)?,
        value: r.try_get(13)?,
        threshold: r.try_get(14)?,
        baseline: r.try_get(15)?,
        message: r.try_get(17)?,
        key: key.clone(),
        seq: r.try_get::<_, i32>(7)? as u32,
        fingerprint: r
            .try_get::<_, Option<String>>(16)?
            .map(String::into_boxed_str),
        escalated_from: match r.try_get::<_, Option<String>>(18)? {
            Some(s) => Some(parse::<Severity>("severity", &s)?),
            None => None,
        },
        evidence: Default::default(),
        batch: batch_from(r.try_get(21)?)?,
    };
    Ok(ActionRow {
        key,
        incident,
        action,
        state: ActionState::parse(&state)
            .ok_or_else(|| JournalError::Corrupt(format!("action state {state:?}")))?,
        attempts: r.try_get::<_, i32>(4)? as u32,
        owner: r.try_get(5)?,
        detail: r.try_get(6)?,
        started_at: r.try_get::<_, Option<i64>>(19)?.map(Ts),
        finished_at: r.try_get::<_, Option<i64>>(20)?.map(Ts),
        decision,
    })
}

/// [`derive`] once per instance: the rollback of each of `instances`,
/// keyed [`super::instance_rollback_key`], with the instance among its
/// labels. The keys recorded now.
#[allow(clippy::too_many_arguments)]
async fn derive_each(
    tx: &Tx<'_>,
    from: &str,
    suffix: &str,
    instances: &[String],
    message: &str,
    at: Ts,
    now: i64,
) -> Result<Vec<String>, JournalError> {
    let Some(row) = tx
        .query_opt("SELECT labels FROM decisions WHERE key = $1", &[&from])
        .await?
    else {
        return Ok(Vec::new());
    };
    let base = labels_from(row.try_get::<_, &str>(0)?)?;
    let mut out = Vec::new();
    for instance in instances {
        let key = super::instance_rollback_key(from, suffix, instance);
        let labels = labels_json(&super::rows::with_instance(&base, instance));
        let inserted = tx
            .execute(
                "INSERT INTO decisions (key, incident_id, seq, at, action, tier, severity, rule, labels,
                     value, threshold, baseline, fingerprint, message, partition, recorded_at, escalated_from, service, batch)
                 SELECT $1, incident_id, seq, $2, 'rollback', tier, severity, rule, $3, value, threshold, baseline,
                     fingerprint, $4, partition, $5, NULL, service, batch FROM decisions WHERE key = $6
                 ON CONFLICT (key) DO NOTHING",
                &[&key, &at.millis(), &labels, &message, &now, &from],
            )
            .await?
            == 1;
        if !inserted {
            continue;
        }
        let incident: Option<String> = tx
            .query_one("SELECT incident_id FROM decisions WHERE key = $1", &[&key])
            .await?
            .try_get(0)?;
        tx.execute(
            "INSERT INTO actions (key, incident_id, action, state, created_at) VALUES ($1, $2, 'rollback', 'pending', $3)",
            &[&key, &incident, &now],
        )
        .await?;
        if let Some(inc) = incident {
            timeline(
                tx,
                &inc,
                at,
                "decision",
                &format!("rollback of {instance}: {message}"),
            )
            .await?;
        }
        out.push(key);
    }
    Ok(out)
}

/// What a timed-out request of `incident` rolls back: each breaching
/// member of a batch incident, `None` for a plain incident.
async fn timeout_targets(tx: &Tx<'_>, incident: &str) -> Result<Option<Vec<String>>, JournalError> {
    let batch: Option<String> = match tx
        .query_opt("SELECT batch FROM incidents WHERE id = $1", &[&incident])
        .await?
    {
        Some(r) => r.try_get(0)?,
        None => None,
    };
    Ok(batch_from(batch)?.map(|b| b.breaching_targets()))
}

fn approval_row(r: &Row) -> Result<ApprovalRow, JournalError> {
    Ok(ApprovalRow {
        incident: r.try_get("incident_id")?,
        request_key: r.try_get("request_key")?,
        tier: parse("tier", r.try_get("tier")?)?,
        state: r.try_get("state")?,
        requested_at: Ts(r.try_get("requested_at")?),
        expires_at: Ts(r.try_get("expires_at")?),
        decided_by: r.try_get("decided_by")?,
        decided_at: r.try_get::<_, Option<i64>>("decided_at")?.map(Ts),
        note: r.try_get("note")?,
        decided_via: r
            .try_get::<_, Option<String>>("decided_via")?
            .as_deref()
            .and_then(Via::parse),
        scope: super::ApprovedScope::from_json(r.try_get("scope")?)?,
    })
}

fn escalation_row(r: &Row) -> Result<EscalationRow, JournalError> {
    Ok(EscalationRow {
        incident: r.try_get("incident_id")?,
        tier: parse("tier", r.try_get("tier")?)?,
        step: r.try_get::<_, i32>("step")? as u32,
        started_at: Ts(r.try_get("started_at")?),
        next_at: r.try_get::<_, Option<i64>>("next_at")?.map(Ts),
        state: r.try_get("state")?,
        acked_by: r.try_get("acked_by")?,
    })
}

type Conn = deadpool_postgres::Object;
type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// The actions (with their decisions) of `keys`, in that order.
async fn actions_by_key(
    c: &impl deadpool_postgres::GenericClient,
    keys: &[String],
) -> Result<Vec<ActionRow>, JournalError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let rows = c
        .query(
            &format!(
                "SELECT {ACTION_COLUMNS} FROM actions a JOIN decisions d ON d.key = a.key
                 WHERE a.key = ANY($1) ORDER BY array_position($1, a.key)"
            ),
            &[&keys],
        )
        .await?;
    rows.iter().map(action_from).collect()
}

async fn timeline(
    c: &impl deadpool_postgres::GenericClient,
    incident: &str,
    at: Ts,
    kind: &str,
    message: &str,
) -> Result<(), JournalError> {
    c.execute(
        "INSERT INTO timeline (incident_id, at, kind, message) VALUES ($1, $2, $3, $4)",
        &[&incident, &at.millis(), &kind, &message],
    )
    .await?;
    Ok(())
}

/// Copies decision `from` as a new decision `<from>/<suffix>` for
/// `action`, with a pending action: what a human's approval or a timeout
/// releases.
async fn derive(
    tx: &Tx<'_>,
    from: &str,
    action: Action,
    suffix: &str,
    message: &str,
    at: Ts,
    now: i64,
) -> Result<Option<String>, JournalError> {
    let key = format!("{from}/{suffix}");
    let inserted = tx
        .execute(
            "INSERT INTO decisions (key, incident_id, seq, at, action, tier, severity, rule, labels,
                 value, threshold, baseline, fingerprint, message, partition, recorded_at, escalated_from, service, batch)
             SELECT $1, incident_id, seq, $2, $3, tier, severity, rule, labels, value, threshold, baseline,
                 fingerprint, $4, partition, $5, NULL, service, batch FROM decisions WHERE key = $6
             ON CONFLICT (key) DO NOTHING",
            &[&key, &at.millis(), &action.as_str(), &message, &now, &from],
        )
        .await?
        == 1;
    if !inserted {
        return Ok(None);
    }
    let incident: Option<String> = tx
        .query_one("SELECT incident_id FROM decisions WHERE key = $1", &[&key])
        .await?
        .try_get(0)?;
    tx.execute(
        "INSERT INTO actions (key, incident_id, action, state, created_at) VALUES ($1, $2, $3, 'pending', $4)",
        &[&key, &incident, &action.as_str(), &now],
    )
    .await?;
    if let Some(inc) = incident {
        timeline(tx, &inc, at, "decision", &format!("{action}: {message}")).await?;
    }
    Ok(Some(key))
}

impl PgJournal {
    async fn conn(&self) -> Result<Conn, JournalError> {
        Ok(self.pool.get().await?)
    }
}

impl Ingest for PgJournal {
    fn commit(&mut self, batch: &Batch<'_>) -> Result<Vec<bool>, JournalError> {
        let now = self.now();
        self.block(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            for (partition, epoch) in &batch.epochs {
                // FOR SHARE: a claim waits for this commit, and this commit
                // for a claim under way.
                let current: Option<i64> = tx
                    .query_opt(
                        "SELECT epoch FROM partition_owners WHERE partition = $1 FOR SHARE",
                        &[partition],
                    )
                    .await?
                    .map(|r| r.get(0));
                if current != Some(*epoch) {
                    return Err(JournalError::Fenced {
                        partition: Some(partition.to_string()),
                        reason: format!(
                            "partition {partition} is owned by another replica now (epoch {} > {epoch})",
                            current.unwrap_or(-1)
                        ),
                    });
                }
            }
            let insert_decision = tx
                .prepare_cached(
                    "INSERT INTO decisions (key, incident_id, seq, at, action, tier, severity, rule,
                         labels, value, threshold, baseline, fingerprint, message, partition, recorded_at,
                         escalated_from, service, batch)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
                     ON CONFLICT (key) DO NOTHING",
                )
                .await?;
            let upsert_incident = tx
                .prepare_cached(
                    "INSERT INTO incidents AS i (id, rule, partition, labels, tier, severity, severity_rank, opened_at,
                         state, resolved_at, fingerprint, seq, fired, updated_at, batch, service)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                     ON CONFLICT (id) DO UPDATE SET
                         batch = CASE WHEN excluded.seq >= i.seq THEN coalesce(excluded.batch, i.batch) ELSE i.batch END,
                         severity = CASE WHEN excluded.severity_rank > i.severity_rank THEN excluded.severity ELSE i.severity END,
                         severity_rank = GREATEST(i.severity_rank, excluded.severity_rank),
                         seq = GREATEST(i.seq, excluded.seq),
                         fired = i.fired | excluded.fired,
                         state = CASE WHEN excluded.state = 'resolved' THEN 'resolved' ELSE i.state END,
                         resolved_at = coalesce(excluded.resolved_at, i.resolved_at),
                         updated_at = excluded.updated_at",
                )
                .await?;
            let insert_action = tx
                .prepare_cached(
                    "INSERT INTO actions (key, incident_id, action, state, created_at) VALUES ($1, $2, $3, 'pending', $4)",
                )
                .await?;
            let mut fresh = Vec::with_capacity(batch.decisions.len());
            for (partition, d) in &batch.decisions {
                let labels = labels_json(&d.labels);
                let incident = d.incident.as_ref().map(IncidentId::as_str);
                let seq = d.seq as i32;
                let batch_info = batch_json(d.batch.as_ref());
                let inserted = tx
                    .execute(
                        &insert_decision,
                        &[
                            &d.key,
                            &incident,
                            &seq,
                            &d.at.millis(),
                            &d.action.as_str(),
                            &d.tier.as_str(),
                            &d.severity.as_str(),
                            &&*d.rule,
                            &labels,
                            &d.value.filter(|v| v.is_finite()),
                            &d.threshold.filter(|v| v.is_finite()),
                            &d.baseline.filter(|v| v.is_finite()),
                            &d.fingerprint.as_deref(),
                            &d.message,
                            partition,
                            &now,
                            &d.escalated_from.map(Severity::as_str),
                            &d.label("service"),
                            &batch_info,
                        ],
                    )
                    .await?
                    == 1;
                fresh.push(inserted);
                if !inserted {
                    continue;
                }
                if let Some(id) = incident {
                    let resolved = d.action == Action::Resolve;
                    tx.execute(
                        &upsert_incident,
                        &[
                            &id,
                            &&*d.rule,
                            partition,
                            &labels,
                            &d.tier.as_str(),
                            &d.severity.as_str(),
                            &(d.severity as i32),
                            &d.at.millis(),
                            &if resolved { "resolved" } else { "open" },
                            &resolved.then_some(d.at.millis()),
                            &d.fingerprint.as_deref(),
                            &(seq + 1),
                            &i32::from(d.action.bit()),
                            &now,
                            &batch_info,
                            &d.label("service"),
                        ],
                    )
                    .await?;
                    timeline(
                        &tx,
                        id,
                        d.at,
                        "decision",
                        &format!("{}: {}", d.action, d.message),
                    )
                    .await?;
                }
                tx.execute(&insert_action, &[&d.key, &incident, &d.action.as_str(), &now])
                    .await?;
            }
            for (partition, next) in &batch.positions {
                tx.execute(
                    "INSERT INTO positions (partition, next_offset, updated_at) VALUES ($1, $2, $3)
                     ON CONFLICT (partition) DO UPDATE SET next_offset = excluded.next_offset,
                         updated_at = excluded.updated_at",
                    &[partition, next, &now],
                )
                .await?;
            }
            for body in &batch.inbox {
                tx.execute(
                    "INSERT INTO inbox (received_at, body, origin) VALUES ($1, $2, $3)",
                    &[&now, body, &batch.origin],
                )
                .await?;
            }
            for (incident, at, points) in super::evidence_of(batch) {
                tx.execute(
                    "INSERT INTO evidence (incident_id, at, points) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                    &[&incident, &at.millis(), &points],
                )
                .await?;
            }
            for p in batch.progress {
                tx.execute(
                    "INSERT INTO progress_log (service, batch, stage, done, total, message, at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        &p.service,
                        &p.batch,
                        &p.stage,
                        &p.done.map(|d| d as i64),
                        &p.total.map(|t| t as i64),
                        &p.message,
                        &p.updated_at.millis(),
                    ],
                )
                .await?;
                if let Some((service, batch_name)) = super::ends_until_batch(p) {
                    tx.execute(
                        super::END_UNTIL_BATCH_PG,
                        &[&p.updated_at.millis(), &service, &batch_name],
                    )
                    .await?;
                }
                tx.execute(
                    "INSERT INTO upgrades AS u (service, batch, stage, done, total, message, updated_at, open)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (service) DO UPDATE SET batch = excluded.batch, stage = excluded.stage,
                         done = excluded.done, total = excluded.total, message = excluded.message,
                         updated_at = excluded.updated_at, open = excluded.open
                     WHERE excluded.updated_at >= u.updated_at",
                    &[
                        &p.service,
                        &p.batch,
                        &p.stage,
                        &p.done.map(|d| d as i64),
                        &p.total.map(|t| t as i64),
                        &p.message,
                        &p.updated_at.millis(),
                        &p.open,
                    ],
                )
                .await?;
            }
            if !batch.tallies.is_empty() {
                // One statement for the whole batch: a commit may carry a
                // row for every service's minute. Keys are unique within a
                // batch (the pipeline merges them).
                let t = batch.tallies;
                let services: Vec<&str> = t.iter().map(|r| r.service.as_str()).collect();
                let batches: Vec<&str> = t.iter().map(|r| r.batch.as_str()).collect();
                let minutes: Vec<i64> = t.iter().map(|r| r.minute.millis()).collect();
                let samples: Vec<i64> = t.iter().map(|r| r.samples as i64).collect();
                let sums: Vec<f64> = t.iter().map(|r| r.sum).collect();
                let lows: Vec<f64> = t.iter().map(|r| r.low).collect();
                let tiers: Vec<&str> = t.iter().map(|r| r.tier.as_str()).collect();
                tx.execute(
                    "INSERT INTO gate_tally AS g (service, batch, minute, samples, total, low, tier)
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[],
                                          $5::float8[], $6::float8[], $7::text[])
                     ON CONFLICT (service, batch, minute) DO UPDATE SET samples = g.samples + excluded.samples,
                         total = g.total + excluded.total, low = LEAST(g.low, excluded.low), tier = excluded.tier",
                    &[&services, &batches, &minutes, &samples, &sums, &lows, &tiers],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(fresh)
        })
    }

    fn position(&self, partition: &str) -> Result<Option<i64>, JournalError> {
        self.block(async {
            Ok(self
                .conn()
                .await?
                .query_opt(
                    "SELECT next_offset FROM positions WHERE partition = $1",
                    &[&partition],
                )
                .await?
                .map(|r| r.get(0)))
        })
    }

    fn open_incidents(&self, partition: &str) -> Result<Vec<OpenIncident>, JournalError> {
        self.block(async {
            let rows = self
                .conn()
                .await?
                .query(
                    "SELECT * FROM incidents WHERE partition = $1 AND state = 'open' ORDER BY opened_at, id",
                    &[&partition],
                )
                .await?;
            rows.iter().map(incident_from).collect()
        })
    }

    fn resolved_since(
        &self,
        partition: &str,
        since: Ts,
    ) -> Result<Vec<(OpenIncident, Ts)>, JournalError> {
        self.block(async {
            let rows = self
                .conn()
                .await?
                .query(
                    "SELECT * FROM incidents WHERE partition = $1 AND state = 'resolved' AND resolved_at >= $2
                     ORDER BY opened_at, id",
                    &[&partition, &since.millis()],
                )
                .await?;
            rows.iter()
                .map(|r| Ok((incident_from(r)?, Ts(r.try_get("resolved_at")?))))
                .collect()
        })
    }

    fn inbox_since(&self, since: Ts) -> Result<Vec<Vec<u8>>, JournalError> {
        self.block(async {
            let rows = self
                .conn()
                .await?
                .query(
                    "SELECT body FROM inbox WHERE received_at >= $1 ORDER BY seq",
                    &[&since.millis()],
                )
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn inbox_after(
        &self,
        after: i64,
        not_from: &str,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<u8>)>, JournalError> {
        self.block(async {
            let rows = self
                .conn()
                .await?
                .query(
                    "SELECT seq, body FROM inbox WHERE seq > $1 AND origin IS DISTINCT FROM $2
                     ORDER BY seq LIMIT $3",
                    &[&after, &not_from, &(limit as i64)],
                )
                .await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn inbox_last(&self) -> Result<i64, JournalError> {
        self.block(async {
            Ok(self
                .conn()
                .await?
                .query_one("SELECT coalesce(max(seq), 0) FROM inbox", &[])
                .await?
                .get(0))
        })
    }

    fn prune_inbox(&mut self, before: Ts) -> Result<usize, JournalError> {
        self.block(async {
            Ok(self
                .conn()
                .await?
                .execute(
                    "DELETE FROM inbox WHERE received_at < $1",
                    &[&before.millis()],
                )
                .await? as usize)
        })
    }

    fn prune_tally(&mut self, before: Ts) -> Result<usize, JournalError> {
        // Progress history goes with it, after its own (longer) retention.
        let history = self.now() - super::PROGRESS_RETENTION.millis();
        self.block(async {
            let c = self.conn().await?;
            c.execute("DELETE FROM progress_log WHERE at < $1", &[&history])
                .await?;
            Ok(c.execute(
                "DELETE FROM gate_tally WHERE minute < $1",
                &[&before.millis()],
            )
            .await? as usize)
        })
    }

    fn claim_partition(&mut self, partition: &str, owner: &str) -> Result<i64, JournalError> {
        let now = self.now();
        self.block(async {
            Ok(self
                .conn()
                .await?
                .query_one(
                    "INSERT INTO partition_owners AS p (partition, owner, epoch, claimed_at) VALUES ($1, $2, 1, $3)
                     ON CONFLICT (partition) DO UPDATE SET owner = excluded.owner, epoch = p.epoch + 1,
                         claimed_at = excluded.claimed_at
                     RETURNING epoch",
                    &[&partition, &owner, &now],
                )
                .await?
                .get(0))
        })
    }
}

impl Work for PgJournal {
    fn claim_actions(
        &mut self,
        owner: &str,
        kinds: &[Action],
        limit: usize,
    ) -> Result<Vec<ActionRow>, JournalError> {
        let now = self.now();
        let kinds: Vec<&str> = kinds.iter().map(|a| a.as_str()).collect();
        self.block(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            // SKIP LOCKED: replicas claiming at once each get other actions,
            // and none waits for another's claim.
            let keys: Vec<String> = tx
                .query(
                    "WITH picked AS (
                         SELECT key FROM actions WHERE state = 'pending' AND action = ANY($3)
                         ORDER BY seq LIMIT $4 FOR UPDATE SKIP LOCKED)
                     UPDATE actions a SET state = 'running', owner = $1, attempts = attempts + 1, started_at = $2
                     FROM picked WHERE a.key = picked.key
                     RETURNING a.key",
                    &[&owner, &now, &kinds, &(limit as i64)],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let mut out = actions_by_key(&tx, &keys).await?;
            tx.commit().await?;
            out.sort_by_key(|a| (a.decision.at, a.decision.seq));
            Ok(out)
        })
    }

    fn schedule_verification(&mut self, key: &str, due: Ts) -> Result<(), JournalError> {
        self.block(async {
            self.conn()
                .await?
                .execute(
                    "INSERT INTO verifications (key, due_at) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                    &[&key, &due.millis()],
                )
                .await?;
            Ok(())
        })
    }

    fn claim_verifications(
        &mut self,
        now: Ts,
        lease: Dur,
        limit: usize,
    ) -> Result<Vec<ActionRow>, JournalError> {
        self.block(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            let keys: Vec<String> = tx
                .query(
                    "WITH due AS (
                         SELECT key FROM verifications WHERE due_at <= $1
                         ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED)
                     UPDATE verifications v SET due_at = $2 FROM due WHERE v.key = due.key
                     RETURNING v.key",
                    &[
                        &now.millis(),
                        &now.saturating_add(lease).millis(),
                        &(limit as i64),
                    ],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let out = actions_by_key(&tx, &keys).await?;
            tx.commit().await?;
            Ok(out)
        })
    }

    fn verification_stage(&mut self, key: &str) -> Result<Option<u32>, JournalError> {
        self.block(async {
            let row = self
                .conn()
                .await?
                .query_opt("SELECT stage FROM verifications WHERE key = $1", &[&key])
                .await?;
            Ok(row.map(|r| r.get::<_, i32>(0) as u32))
        })
    }

    fn pass_verification_stage(
        &mut self,
        key: &str,
        stage: u32,
        held_until: Ts,
    ) -> Result<(), JournalError> {
        self.block(async {
            self.conn()
                .await?
                .execute(
                    "UPDATE verifications SET stage = GREATEST(stage, $2), due_at = $3 WHERE key = $1",
                    &[&key, &(stage as i32 + 1), &held_until.millis()],
                )
                .await?;
            Ok(())
        })
    }

    fn finish_verification(&mut self, key: &str) -> Result<(), JournalError> {
        self.block(async {
            self.conn()
                .await?
                .execute("DELETE FROM verifications WHERE key = $1", &[&key])
                .await?;
            Ok(())
        })
    }

    fn start_sample_check(&mut self, c: &SampleStart<'_>) -> Result<bool, JournalError> {
        self.block(async {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await?;
            // Two replicas starting the same check: the second waits here
            // and then finds the first one's rows.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                &[&format!("sample/{}/{}", c.service, c.batch)],
            )
            .await?;
            let started = tx
                .query_opt(
                    "SELECT 1 FROM sample_checks WHERE service = $1 AND batch = $2 AND done_at = $3 LIMIT 1",
                    &[&c.service, &c.batch, &c.done_at.millis()],
                )
                .await?
                .is_some();
            let labels = tx
                .query_opt("SELECT labels FROM decisions WHERE key = $1", &[&c.from_key])
                .await?;
            let (false, Some(labels)) = (started, labels) else {
                return Ok(false);
            };
            let base = labels_from(labels.try_get::<_, &str>(0)?)?;
            let (now, due, done_at) = (c.now.millis(), c.due.millis(), c.done_at.millis());
            let of = c.of as i32;
            for instance in c.instances {
                let key = super::sample_key(c.from_key, instance);
                let labels = labels_json(&super::rows::with_instance(&base, instance));
                let message = format!("sample check of {instance}");
                tx.execute(
                    "INSERT INTO decisions (key, incident_id, seq, at, action, tier, severity, rule, labels,
                         value, threshold, baseline, fingerprint, message, partition, recorded_at, escalated_from, service, batch)
                     SELECT $1, incident_id, seq, at, 'notify', tier, severity, rule, $2, value, threshold, baseline,
                         fingerprint, $3, partition, $4, NULL, service, NULL FROM decisions WHERE key = $5",
                    &[&key, &labels, &message, &now, &c.from_key],
                )
                .await?;
                tx.execute(
                    "INSERT INTO actions (key, incident_id, action, state, created_at, finished_at)
                     VALUES ($1, NULL, 'notify', 'done', $2, $2)",
                    &[&key, &now],
                )
                .await?;
                tx.execute(
                    "INSERT INTO verifications (key, due_at) VALUES ($1, $2)",
                    &[&key, &due],
                )
                .await?;
                tx.execute(
                    "INSERT INTO sample_checks (service, batch, done_at, instance, key, state, \"of\", updated_at)
                     VALUES ($1, $2, $3, $4, $5, 'running', $6, $7)",
                    &[&c.service, &c.batch, &done_at, instance, &key, &of, &now],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    fn sample_result(
        &mut self,
        key: &str,
        state: SampleState,
        detail: &str,
        at: Ts,
    ) -> Result<(), JournalError> {
        self.block(async {
            self.conn()
                .await?
                .execute(
                    "UPDATE sample_checks SET state = $2, detail = $3, updated_at = $4
                     WHERE key = $1 AND state = 'running'",
                    &[&key, &state.as_str(), &detail, &at.millis()],
                )
                .await?;
            Ok(())
        })
    }

    fn set_action(
        &mut self,
        key: &str,
        state: ActionState,
        detail: &str,
    ) -> Result<(), JournalError> {
        let now = self.now();
        self.block(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            set_action_in(&tx, key, state, detail, now, false).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn heartbeat(&mut self, owner: &str) -> Result<(), JournalError> {
        let now = self.now();
        self.block(async {
            self.conn()
                .await?
                .execute(
                    "INSERT INTO owners (owner, seen_at) VALUES ($1, $2)
                     ON CONFLICT (owner) DO UPDATE SET seen_at = excluded.seen_at",
                    &[&owner, &now],
                )
                .await?;
            Ok(())
        })
    }

    fn reap(&mut self, stale: Dur) -> Result<Vec<ActionRow>, JournalError> {
        let now = self.now();
        let alive_since = now - stale.millis();
        self.block(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            // Messages and approval requests are safe to run again: a
            // duplicate chat post beats a lost page. They go back to pending.
            tx.execute(
                &format!(
                    "UPDATE actions SET state = 'pending', owner = NULL
                     WHERE state = 'running' AND action NOT IN ({})
                       AND (owner IS NULL OR owner NOT IN (SELECT owner FROM owners WHERE seen_at >= $1))",
                    super::never_rerun_kinds()
                ),
                &[&alive_since],
            )
            .await?;
            // Rollbacks, pauses and traffic switches are not: they may have
            // half happened.
            let keys: Vec<String> = tx
                .query(
                    "UPDATE actions SET state = 'unknown',
                         detail = 'ripcord stopped while this action ran; it may or may not have taken effect'
                     WHERE state = 'running'
                       AND (owner IS NULL OR owner NOT IN (SELECT owner FROM owners WHERE seen_at >= $1))
                     RETURNING key",
                    &[&alive_since],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            tx.execute(
                "DELETE FROM owners WHERE seen_at < $1",
                &[&(alive_since - 86_400_000)],
            )
            .await?;
            let out = actions_by_key(&tx, &keys).await?;
            for a in &out {
                if let Some(inc) = &a.incident {
                    timeline(
                        &tx,
                        inc,
                        Ts(now),
                        "action",
                        &format!(
                            "{} unknown: ripcord stopped while it ran; check by hand",
                            a.action
                        ),
                    )
                    .await?;
                }
            }
            tx.commit().await?;
            Ok(out)
        })
    }

    fn add_timeline(
        &mut self,
        incident: &IncidentId,
        at: Ts,
        kind: &str,
        message: &str,
    ) -> Result<(), JournalError> {
        self.block(async {
            timeline(&self.conn().await?, incident.as_str(), at, kind, message).await
        })
    }

    fn expire_approvals(
        &mut self,
        now: Ts,
        rollback_tiers: &[Tier],
    ) -> Result<Vec<Expired>, JournalError> {
        let wall = self.now();
        self.block(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            let expired: Vec<(String, String, String)> = tx
                .query(
                    "UPDATE approvals SET state = 'expired', decided_at = $1
                     WHERE state = 'awaiting' AND expires_at <= $1
                     RETURNING incident_id, request_key, tier",
                    &[&now.millis()],
                )
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            let mut out = Vec::with_capacity(expired.len());
            for (incident, request_key, tier) in expired {
                let tier = parse::<Tier>("tier", &tier)?;
                tx.execute(
                    "UPDATE actions SET state = 'expired', detail = 'nobody decided in time', finished_at = $2
                     WHERE key = $1",
                    &[&request_key, &wall],
                )
                .await?;
                let rollback_keys = if rollback_tiers.contains(&tier) {
                    timeline(
                        &tx,
                        &incident,
                        now,
                        "approval",
                        "approval timed out: rolling back, as the tier's policy says",
                    )
                    .await?;
                    let message = "approval timed out; rolling back per policy";
                    match timeout_targets(&tx, &incident).await? {
                        Some(instances) => {
                            derive_each(&tx, &request_key, "timeout", &instances, message, now, wall)
                                .await?
                        }
                        None => derive(&tx, &request_key, Action::Rollback, "timeout", message, now, wall)
                            .await?
                            .into_iter()
                            .collect(),
                    }
                } else {
                    timeline(&tx, &incident, now, "approval", "approval timed out: escalating")
                        .await?;
                    Vec::new()
                };
                out.push(Expired {
                    incident,
                    request_key,
                    tier,
                    rollback_keys,
                });
            }
            tx.commit().await?;
            Ok(out)
        })
    }

    fn derive_action(
        &mut self,
        from_key: &str,
        action: Action,
        suffix: &str,
        message: &str,
        at: Ts,
    ) -> Result<Option<String>, JournalError> {
        let now = self.now();
        self.block(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            let key = derive(&tx, from_key, action, suffix, message, at, now).await?;
            tx.commit().await?;
            Ok(key)
        })
    }

    fn derive_rollbacks(
        &mut self,
        from_key: &str,
        suffix: &str,
        instances: &[String],
        message: &str,
        at: Ts,
    ) -> Result<Vec<String>, JournalError> {
        let now = self.now();
        self.block(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            let keys = derive_each(&tx, from_key, suffix, instances, message, at, now).await?;
            tx.commit().await?;
            Ok(keys)
        })
    }

    fn start_escalation(
        &mut self,
        incident: &str,
        tier: Tier,
        at: Ts,
        first: Ts,
    ) -> Result<bool, JournalError> {
        self.block(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            let inserted = tx
                .execute(
                    "INSERT INTO escalations (incident_id, tier, step, started_at, next_at, state)
                     VALUES ($1, $2, 0, $3, $4, 'active') ON CONFLICT (incident_id) DO NOTHING",
                    &[&incident, &tier.as_str(), &at.millis(), &first.millis()],
                )
                .await?
                == 1;
            if inserted {
                timeline(&tx, incident, at, "page", "paging started").await?;
            }
            tx.commit().await?;
            Ok(inserted)
        })
    }

    fn claim_escalations(
        &mut self,
        now: Ts,
        hold: Dur,
    ) -> Result<Vec<EscalationRow>, JournalError> {
        self.block(async {
            let rows = self
                .conn()
                .await?
                .query(
                    "UPDATE escalations SET claimed_until = $2
                     WHERE state = 'active' AND next_at IS NOT NULL AND next_at <= $1
                       AND (claimed_until IS NULL OR claimed_until <= $1)
                     RETURNING *",
                    &[&now.millis(), &(now.millis() + hold.millis())],
                )
                .await?;
            rows.iter().map(escalation_row).collect()
        })
    }

    fn escalation_step_done(
        &mut self,
        incident: &str,
        step: u32,
        next: Option<Ts>,
    ) -> Result<(), JournalError> {
        self.block(async {
            self.conn()
                .await?
                .execute(
                    "UPDATE escalations SET step = $2 + 1, next_at = $3, claimed_until = NULL,
                         state = CASE WHEN $3::BIGINT IS NULL AND state = 'active' THEN 'exhausted' ELSE state END
                     WHERE incident_id = $1 AND step = $2",
                    &[&incident, &(step as i32), &next.map(Ts::millis)],
                )
                .await?;
            Ok(())
        })
    }

    fn hurry_escalation(&mut self, incident: &str, now: Ts) -> Result<bool, JournalError> {
        self.block(async {
            Ok(self
                .conn()
                .await?
                .execute(
                    "UPDATE escalations SET next_at = LEAST(coalesce(next_at, $2), $2)
                     WHERE incident_id = $1 AND state = 'active' AND next_at IS NOT NULL",
                    &[&incident, &now.millis()],
                )
                .await?
                == 1)
        })
    }

    fn admit_rollback(
        &mut self,
        key: &str,
        owner: &str,
        service: Option<&str>,
        since: Ts,
        limits: RollbackLimits,
    ) -> Result<Admission, JournalError> {
        let now = self.now();
        self.block(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            // One admission at a time across every replica: two counting at
            // once would both see room for the last rollback.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&BUDGET_LOCK])
                .await?;
            let held = tx
                .query_opt(
                    "SELECT state, owner FROM actions WHERE key = $1 FOR UPDATE",
                    &[&key],
                )
                .await?
                .map(|r| (r.get::<_, String>(0), r.get::<_, Option<String>>(1)));
            if !matches!(&held, Some((state, Some(o))) if state == "running" && o == owner) {
                return Err(JournalError::Fenced {
                    partition: None,
                    reason: format!("the claim on {key} is no longer {owner}'s ({held:?})"),
                });
            }
            let count = async |service: Option<&str>| -> Result<u32, JournalError> {
                let n: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM actions a JOIN decisions d ON d.key = a.key
                         WHERE a.action = 'rollback' AND a.admitted_at >= $2 AND a.key <> $3
                           AND ($1::TEXT IS NULL OR d.service = $1)",
                        &[&service, &since.millis(), &key],
                    )
                    .await?
                    .get(0);
                Ok(n as u32)
            };
            let (for_service, overall) = (count(service).await?, count(None).await?);
            let admitted = for_service < limits.per_service && overall < limits.overall;
            if admitted {
                tx.execute(
                    "UPDATE actions SET admitted_at = $2 WHERE key = $1",
                    &[&key, &now],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(Admission {
                admitted,
                for_service,
                overall,
            })
        })
    }

    fn set_rollout(
        &mut self,
        service: &str,
        paused: bool,
        by: &str,
        incident: Option<&str>,
        at: Ts,
    ) -> Result<(), JournalError> {
        self.block(async {
            self.conn()
                .await?
                .execute(
                    "INSERT INTO rollouts AS r (service, paused, changed_at, changed_by, incident_id)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (service) DO UPDATE SET paused = excluded.paused, changed_at = excluded.changed_at,
                         changed_by = excluded.changed_by, incident_id = coalesce(excluded.incident_id, r.incident_id)",
                    &[&service, &paused, &at.millis(), &by, &incident],
                )
                .await?;
            Ok(())
        })
    }

    fn take_lease(
        &mut self,
        name: &str,
        holder: &str,
        until: Ts,
        now: Ts,
    ) -> Result<bool, JournalError> {
        self.block(async {
            Ok(self
                .conn()
                .await?
                .execute(
                    "INSERT INTO leases AS l (name, holder, until_at) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until_at = excluded.until_at
                     WHERE l.until_at <= $4",
                    &[&name, &holder, &until.millis(), &now.millis()],
                )
                .await?
                == 1)
        })
    }
}

impl Verdicts for PgJournal {
    fn open_approval(
        &mut self,
        incident: &str,
        request_key: &str,
        tier: Tier,
        at: Ts,
        expires: Ts,
    ) -> Result<ApprovalOpened, JournalError> {
        self.block(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            let state: Option<String> = tx
                .query_opt("SELECT state FROM incidents WHERE id = $1", &[&incident])
                .await?
                .map(|r| r.get(0));
            if state.as_deref() == Some("resolved") {
                return Ok(ApprovalOpened::IncidentOver);
            }
            let inserted = tx
                .execute(
                    "INSERT INTO approvals AS a (incident_id, request_key, tier, state, requested_at, expires_at)
                     VALUES ($1, $2, $3, 'awaiting', $4, $5)
                     ON CONFLICT (incident_id) DO UPDATE SET request_key = excluded.request_key,
                         state = 'awaiting', requested_at = excluded.requested_at, expires_at = excluded.expires_at,
                         decided_by = NULL, decided_at = NULL, note = NULL, decided_via = NULL, scope = NULL
                     WHERE a.state <> 'awaiting' AND a.request_key <> excluded.request_key",
                    &[&incident, &request_key, &tier.as_str(), &at.millis(), &expires.millis()],
                )
                .await?
                == 1;
            if inserted {
                timeline(
                    &tx,
                    incident,
                    at,
                    "approval",
                    &format!(
                        "approval requested; expires at {}",
                        crate::time::clock_words(at, expires)
                    ),
                )
                .await?;
            }
            tx.commit().await?;
            Ok(if inserted {
                ApprovalOpened::Opened
            } else {
                ApprovalOpened::AlreadyOpen
            })
        })
    }

    fn decide_approval(
        &mut self,
        incident: &str,
        verdict: Verdict,
        by: &str,
        note: &str,
        via: Via,
        at: Ts,
        scope: Option<&super::ApprovedScope>,
    ) -> Result<ApprovalDecided, JournalError> {
        let now = self.now();
        let scope = scope.filter(|_| verdict == Verdict::Approve);
        let scope_json = scope.map(|s| s.json());
        self.block(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            let row = tx
                .query_opt(
                    "SELECT state, request_key FROM approvals WHERE incident_id = $1 FOR UPDATE",
                    &[&incident],
                )
                .await?;
            let Some(row) = row else {
                return Ok(ApprovalDecided::NoSuchApproval);
            };
            let (state, request_key): (String, String) = (row.get(0), row.get(1));
            if state != "awaiting" {
                return Ok(ApprovalDecided::NotWaiting(state));
            }
            let (new_state, action_state, word) = match verdict {
                Verdict::Approve => ("approved", ActionState::Approved, "approved"),
                Verdict::Reject => ("rejected", ActionState::Rejected, "rejected"),
            };
            tx.execute(
                "UPDATE approvals SET state = $2, decided_by = $3, decided_at = $4, note = $5,
                     decided_via = $6, scope = $7
                 WHERE incident_id = $1 AND state = 'awaiting'",
                &[
                    &incident,
                    &new_state,
                    &by,
                    &at.millis(),
                    &note,
                    &via.as_str(),
                    &scope_json,
                ],
            )
            .await?;
            tx.execute(
                "UPDATE actions SET state = $2, detail = $3, finished_at = $4 WHERE key = $1",
                &[
                    &request_key,
                    &action_state.as_str(),
                    &format!("{word} by {by}"),
                    &now,
                ],
            )
            .await?;
            let note_text = if note.is_empty() {
                String::new()
            } else {
                format!(": {note}")
            };
            let scope_text = scope
                .map(|s| format!("; {}", s.describe()))
                .unwrap_or_default();
            timeline(
                &tx,
                incident,
                at,
                "approval",
                &format!("{word} by {by} via {}{note_text}{scope_text}", via.as_str()),
            )
            .await?;
            let message = format!("rollback approved by {by}{note_text}");
            let result = match verdict {
                Verdict::Approve => ApprovalDecided::Approved {
                    rollback_keys: match scope {
                        Some(s) => {
                            derive_each(
                                &tx,
                                &request_key,
                                "approved",
                                &s.instances,
                                &message,
                                at,
                                now,
                            )
                            .await?
                        }
                        None => derive(
                            &tx,
                            &request_key,
                            Action::Rollback,
                            "approved",
                            &message,
                            at,
                            now,
                        )
                        .await?
                        .into_iter()
                        .collect(),
                    },
                    request_key,
                },
                Verdict::Reject => ApprovalDecided::Rejected,
            };
            tx.commit().await?;
            Ok(result)
        })
    }

    fn withdraw_approval(
        &mut self,
        incident: &str,
        reason: &str,
        at: Ts,
    ) -> Result<bool, JournalError> {
        let now = self.now();
        self.block(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            let key: Option<String> = tx
                .query_opt(
                    "UPDATE approvals SET state = 'withdrawn', decided_at = $2, note = $3
                     WHERE incident_id = $1 AND state = 'awaiting' RETURNING request_key",
                    &[&incident, &at.millis(), &reason],
                )
                .await?
                .map(|r| r.get(0));
            if let Some(k) = &key {
                tx.execute(
                    "UPDATE actions SET state = 'withdrawn', detail = $2, finished_at = $3 WHERE key = $1",
                    &[k, &reason, &now],
                )
                .await?;
                timeline(
                    &tx,
                    incident,
                    at,
                    "approval",
                    &format!("approval request withdrawn: {reason}"),
                )
                .await?;
            }
            tx.commit().await?;
            Ok(key.is_some())
        })
    }

    fn promote(&mut self, p: &Promotion) -> Result<(), JournalError> {
        self.block(async {
            self.conn()
                .await?
                .execute(
                    "INSERT INTO promotions (service, batch, revision, by_whom, note, at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        &p.service,
                        &p.batch,
                        &p.revision,
                        &p.by,
                        &p.note,
                        &p.at.millis(),
                    ],
                )
                .await?;
            Ok(())
        })
    }

    fn stop_escalation(
        &mut self,
        incident: &str,
        state: &str,
        by: Option<&str>,
        at: Ts,
    ) -> Result<bool, JournalError> {
        self.block(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            let stopped = tx
                .execute(
                    "UPDATE escalations SET state = $2, next_at = NULL, acked_by = coalesce($3, acked_by),
                         acked_at = CASE WHEN $3::TEXT IS NULL THEN acked_at ELSE $4 END
                     WHERE incident_id = $1 AND state IN ('active', 'exhausted')",
                    &[&incident, &state, &by, &at.millis()],
                )
                .await?
                == 1;
            if stopped {
                let who = by.map(|b| format!(" by {b}")).unwrap_or_default();
                timeline(
                    &tx,
                    incident,
                    at,
                    "page",
                    &format!("paging stopped: {state}{who}"),
                )
                .await?;
            }
            tx.commit().await?;
            Ok(stopped)
        })
    }
}

/// Sets an action's state inside `tx`, with a timeline line; `running_only`:
/// only if it is still running (a hold never overrides an outcome).
/// Returns whether the action changed.
async fn set_action_in(
    tx: &deadpool_postgres::Transaction<'_>,
    key: &str,
    state: ActionState,
    detail: &str,
    now: i64,
    running_only: bool,
) -> Result<bool, JournalError> {
    // A human (or a recovery) may have decided an approval while its
    // request was still being sent: that verdict stands.
    let row = tx
        .query_opt(
            "UPDATE actions SET state = $2, detail = $3,
                 finished_at = CASE WHEN $4 THEN $5 ELSE finished_at END
             WHERE key = $1 AND ($2 <> 'awaiting_approval' OR state = 'running')
               AND (state <> $2 OR detail IS DISTINCT FROM $3) AND (NOT $6 OR state = 'running')
             RETURNING incident_id, action",
            &[
                &key,
                &state.as_str(),
                &detail,
                &state.is_final(),
                &now,
                &running_only,
            ],
        )
        .await?;
    let Some(r) = row else {
        return Ok(false);
    };
    let (incident, action): (Option<String>, String) = (r.get(0), r.get(1));
    if let Some(incident) = incident {
        timeline(
            tx,
            &incident,
            Ts(now),
            "action",
            &format!("{action} {}: {detail}", state.as_str()),
        )
        .await?;
    }
    Ok(true)
}

/// An upgrade's progress: service, batch, stage, done, total, message,
/// time, open (the columns of `upgrades` and `progress_log` alike).
fn upgrade_row(r: &Row) -> UpgradeRow {
    UpgradeRow {
        service: r.get(0),
        batch: r.get(1),
        stage: r.get(2),
        done: r.get::<_, Option<i64>>(3).map(|d| d as u64),
        total: r.get::<_, Option<i64>>(4).map(|t| t as u64),
        message: r.get(5),
        updated_at: Ts(r.get(6)),
        open: r.get(7),
    }
}

fn silence_row(r: &Row) -> SilenceCols {
    SilenceCols {
        id: r.get(0),
        matchers: r.get(1),
        scope: r.get(2),
        starts_at: r.get(3),
        ends_at: r.get(4),
        until_service: r.get(5),
        until_batch: r.get(6),
        created_by: r.get(7),
        comment: r.get(8),
        created_at: r.get(9),
        updated_at: r.get(10),
        expired_by: r.get(11),
    }
}

impl Silences for PgJournal {
    fn add_silence(&mut self, s: &Silence) -> Result<(), JournalError> {
        self.block(async {
            self.conn()
                .await?
                .execute(
                    &format!(
                        "INSERT INTO silences ({SILENCE_COLS})
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                    ),
                    &[
                        &s.id,
                        &matchers_json(&s.matchers),
                        &s.scope.as_str(),
                        &s.starts_at.millis(),
                        &s.ends_at.millis(),
                        &s.until.as_ref().map(|u| &u.service),
                        &s.until.as_ref().map(|u| &u.batch),
                        &s.created_by,
                        &s.comment,
                        &s.created_at.millis(),
                        &s.updated_at.millis(),
                        &s.expired_by,
                    ],
                )
                .await?;
            Ok(())
        })
    }

    fn expire_silence(&mut self, id: &str, by: &str, at: Ts) -> Result<bool, JournalError> {
        self.block(async {
            let n = self
                .conn()
                .await?
                .execute(
                    // A pending silence ends before it starts: keep
                    // starts_at <= ends_at.
                    "UPDATE silences SET ends_at = $2, starts_at = LEAST(starts_at, $2),
                         updated_at = $2, expired_by = $3
                     WHERE id = $1 AND ends_at > $2",
                    &[&id, &at.millis(), &by],
                )
                .await?;
            Ok(n > 0)
        })
    }

    fn silences(&self, now: Ts, include_expired: bool) -> Result<Vec<Silence>, JournalError> {
        self.block(async {
            let c = self.conn().await?;
            let rows = if include_expired {
                c.query(
                    &format!(
                        "SELECT {SILENCE_COLS} FROM silences ORDER BY created_at DESC, id LIMIT 10000"
                    ),
                    &[],
                )
                .await?
            } else {
                c.query(
                    &format!(
                        "SELECT {SILENCE_COLS} FROM silences WHERE ends_at > $1 ORDER BY created_at, id"
                    ),
                    &[&now.millis()],
                )
                .await?
            };
            rows.iter()
                .map(|r| silence_row(r).into_silence())
                .collect()
        })
    }

    fn silence(&self, id: &str) -> Result<Option<Silence>, JournalError> {
        self.block(async {
            self.conn()
                .await?
                .query_opt(
                    &format!("SELECT {SILENCE_COLS} FROM silences WHERE id = $1"),
                    &[&id],
                )
                .await?
                .map(|r| silence_row(&r).into_silence())
                .transpose()
        })
    }

    fn hold_action(&mut self, key: &str, hold: &HoldRecord) -> Result<bool, JournalError> {
        let now = self.now();
        self.block(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            let held =
                set_action_in(&tx, key, ActionState::Skipped, &hold.detail, now, true).await?;
            if held {
                tx.execute(
                    &format!(
                        "INSERT INTO silence_holds ({HOLD_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
                         ON CONFLICT DO NOTHING"
                    ),
                    &[
                        &hold.source,
                        &hold.action_key,
                        &hold.action.as_str(),
                        &hold.incident,
                        &hold.scope.as_str(),
                        &hold.detail,
                        &hold.at.millis(),
                    ],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(held)
        })
    }

    fn holds_of(&self, source: &str) -> Result<Vec<HoldRecord>, JournalError> {
        self.block(async {
            let rows = self
                .conn()
                .await?
                .query(
                    &format!(
                        "SELECT {HOLD_COLS} FROM silence_holds WHERE source = $1
                         ORDER BY at, action_key LIMIT 10000"
                    ),
                    &[&source],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    let (action, scope): (String, String) = (r.get(2), r.get(4));
                    hold_from(
                        r.get(0),
                        r.get(1),
                        &action,
                        r.get(3),
                        &scope,
                        r.get(5),
                        r.get(6),
                    )
                })
                .collect()
        })
    }
}

impl super::Charts for PgJournal {
    fn put_chart(
        &mut self,
        incident: &str,
        chart: &crate::decision::EvidenceSeries,
    ) -> Result<(), JournalError> {
        let points = super::evidence_json(chart);
        self.block(async {
            self.conn()
                .await?
                .execute(
                    "INSERT INTO evidence (incident_id, at, points) VALUES ($1, $2, $3)
                     ON CONFLICT (incident_id, at) DO UPDATE SET points = excluded.points",
                    &[&incident, &super::CHART_ROW_AT.millis(), &points],
                )
                .await?;
            Ok(())
        })
    }
}

/// The console's filter in SQL: `$2` severity, `$3` text (lower case).
const LIST_FILTER: &str = "($2::TEXT IS NULL OR i.severity = $2)
     AND ($3::TEXT IS NULL OR strpos(lower(i.labels || ' ' || i.rule || ' ' || i.id), $3) > 0)";

/// An open incident that blocks its service's gate (`super::blocks`).
const BLOCKS_GATE: &str = "i.severity <> 'minor' AND NOT (i.tier = 'medium' AND EXISTS (
     SELECT 1 FROM actions a WHERE a.incident_id = i.id AND a.action = 'request_approval'
       AND a.state IN ('pending', 'running', 'awaiting_approval')))";

impl Reads for PgJournal {
    fn open_page(&self, f: &IncidentFilter, limit: usize) -> Result<OpenPage, JournalError> {
        let text = f.text.as_deref().map(str::to_lowercase);
        self.block(async {
            let c = self.conn().await?;
            let page = c
                .prepare_cached(&format!(
                    "{INCIDENT_ROW} WHERE i.state = 'open' AND i.tier = $1 AND {LIST_FILTER}
                     ORDER BY i.severity_rank DESC, i.opened_at DESC, i.id LIMIT $4"
                ))
                .await?;
            let mut rows = Vec::new();
            for tier in TIERS_BY_URGENCY {
                let room = limit.saturating_sub(rows.len());
                if room == 0 || f.tier.as_deref().is_some_and(|t| t != tier) {
                    continue;
                }
                for r in c
                    .query(&page, &[&tier, &f.severity, &text, &(room as i64)])
                    .await?
                {
                    rows.push(incident_row(&r)?);
                }
            }
            let total: i64 = c
                .query_one(
                    &format!(
                        "SELECT count(*) FROM incidents i WHERE i.state = 'open'
                         AND ($1::TEXT IS NULL OR i.tier = $1) AND {LIST_FILTER}"
                    ),
                    &[&f.tier, &f.severity, &text],
                )
                .await?
                .try_get(0)?;
            Ok(OpenPage {
                rows,
                total: total as u64,
            })
        })
    }

    fn resolved_recently(&self, limit: usize) -> Result<Vec<IncidentRow>, JournalError> {
        self.block(async {
            let rows = self
                .conn()
                .await?
                .query(
                    &format!(
                        "{INCIDENT_ROW} WHERE i.state = 'resolved' ORDER BY i.resolved_at DESC, i.id LIMIT $1"
                    ),
                    &[&(limit as i64)],
                )
                .await?;
            rows.iter().map(incident_row).collect()
        })
    }

    fn open_of_service(&self, service: &str, limit: usize) -> Result<OpenPage, JournalError> {
        self.block(async {
            let c = self.conn().await?;
            let mut rows = c
                .query(
                    &format!(
                        "{INCIDENT_ROW} WHERE i.state = 'open' AND i.service = $1
                         ORDER BY i.severity_rank DESC, i.opened_at DESC, i.id LIMIT $2"
                    ),
                    &[&service, &(limit as i64)],
                )
                .await?
                .iter()
                .map(incident_row)
                .collect::<Result<Vec<_>, _>>()?;
            let total: i64 = c
                .query_one(
                    "SELECT count(*) FROM incidents WHERE state = 'open' AND service = $1",
                    &[&service],
                )
                .await?
                .try_get(0)?;
            if total as usize > rows.len() && !rows.iter().any(super::blocks) {
                for r in c
                    .query(
                        &format!(
                            "{INCIDENT_ROW} WHERE i.state = 'open' AND i.service = $1 AND {BLOCKS_GATE}
                             ORDER BY i.severity_rank DESC, i.opened_at DESC, i.id LIMIT 1"
                        ),
                        &[&service],
                    )
                    .await?
                {
                    rows.push(incident_row(&r)?);
                }
            }
            Ok(OpenPage {
                rows,
                total: total as u64,
            })
        })
    }

    fn incidents(&self, state: Option<&str>) -> Result<Vec<IncidentRow>, JournalError> {
        self.block(async {
            let rows = self
                .conn()
                .await?
                .query(
                    &format!(
                        "{INCIDENT_ROW} WHERE $1::TEXT IS NULL OR i.state = $1 ORDER BY i.opened_at DESC, i.id"
                    ),
                    &[&state],
                )
                .await?;
            rows.iter().map(incident_row).collect()
        })
    }

    fn incident(&self, id: &str) -> Result<Option<IncidentRow>, JournalError> {
        self.block(async {
            let rows = self
                .conn()
                .await?
                .query(&format!("{INCIDENT_ROW} WHERE i.id = $1"), &[&id])
                .await?;
            rows.first().map(incident_row).transpose()
        })
    }

    fn timeline(&self, incident: &str) -> Result<Vec<TimelineEntry>, JournalError> {
        self.block(async {
            let rows = self
                .conn()
                .await?
                .query(
                    "SELECT at, kind, message FROM timeline WHERE incident_id = $1 ORDER BY seq",
                    &[&incident],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| TimelineEntry {
                    at: Ts(r.get(0)),
                    kind: r.get(1),
                    message: r.get(2),
                })
                .collect())
        })
    }

    fn actions_of(&self, incident: &str) -> Result<Vec<ActionRow>, JournalError> {
        self.block(async {
            let rows = self
                .conn()
                .await?
                .query(
                    &format!(
                        "SELECT {ACTION_COLUMNS} FROM actions a JOIN decisions d ON d.key = a.key
                         WHERE a.incident_id = $1 ORDER BY d.at, d.seq"
                    ),
                    &[&incident],
                )
                .await?;
            rows.iter().map(action_from).collect()
        })
    }

    fn approval(&self, incident: &str) -> Result<Option<ApprovalRow>, JournalError> {
        self.block(async {
            let rows = self
                .conn()
                .await?
                .query(
                    "SELECT * FROM approvals WHERE incident_id = $1",
                    &[&incident],
                )
                .await?;
            rows.first().map(approval_row).transpose()
        })
    }

    fn pending_actions(&self) -> Result<Vec<(Action, u64)>, JournalError> {
        self.block(async {
            let rows = self
                .conn()
                .await?
                .query(
                    "SELECT action, count(*) FROM actions WHERE state = 'pending' GROUP BY action",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .filter_map(|r| {
                    let (a, n): (String, i64) = (r.get(0), r.get(1));
                    Some((a.parse().ok()?, n.max(0) as u64))
                })
                .collect())
        })
    }

    fn gauges(&self) -> Result<Gauges, JournalError> {
        self.block(async {
            let conn = self.conn().await?;
            let rows = conn
                .query(
                    "SELECT tier, count(*) FROM incidents WHERE state = 'open' GROUP BY tier",
                    &[],
                )
                .await?;
            let open_by_tier = rows
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1).max(0) as u64))
                .collect();
            let row = conn
                .query_one(
                    "SELECT count(*), min(requested_at) FROM approvals WHERE state = 'awaiting'",
                    &[],
                )
                .await?;
            let (awaiting, oldest): (i64, Option<i64>) = (row.get(0), row.get(1));
            Ok(Gauges {
                open_by_tier,
                awaiting_approvals: awaiting.max(0) as u64,
                oldest_awaiting: oldest.map(Ts),
            })
        })
    }

    fn approvals(&self, state: Option<&str>) -> Result<Vec<ApprovalRow>, JournalError> {
        self.block(async {
            let rows = self
                .conn()
                .await?
                .query(
                    "SELECT * FROM approvals WHERE $1::TEXT IS NULL OR state = $1 ORDER BY requested_at",
                    &[&state],
                )
                .await?;
            rows.iter().map(approval_row).collect()
        })
    }

    fn escalation(&self, incident: &str) -> Result<Option<EscalationRow>, JournalError> {
        self.block(async {
            let rows = self
                .conn()
                .await?
                .query(
                    "SELECT * FROM escalations WHERE incident_id = $1",
                    &[&incident],
                )
                .await?;
            rows.first().map(escalation_row).transpose()
        })
    }

    fn rollouts(&self) -> Result<Vec<RolloutRow>, JournalError> {
        self.block(async {
            let rows = self
                .conn()
                .await?
                .query(
                    "SELECT service, paused, changed_at, changed_by, incident_id FROM rollouts ORDER BY service",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| RolloutRow {
                    service: r.get(0),
                    paused: r.get(1),
                    changed_at: Ts(r.get(2)),
                    changed_by: r.get(3),
                    incident: r.get(4),
                })
                .collect())
        })
    }

    fn upgrades(&self, open_only: bool) -> Result<Vec<UpgradeRow>, JournalError> {
        self.block(async {
            let rows = self
                .conn()
                .await?
                .query(
                    "SELECT service, batch, stage, done, total, message, updated_at, open FROM upgrades
                     WHERE NOT $1 OR open ORDER BY service",
                    &[&open_only],
                )
                .await?;
            Ok(rows.iter().map(upgrade_row).collect())
        })
    }

    fn tally(&self, service: &str, since: Ts) -> Result<Vec<TallyRow>, JournalError> {
        self.block(async {
            let rows = self
                .conn()
                .await?
                .query(
                    "SELECT service, batch, minute, samples, total, low, tier FROM gate_tally
                     WHERE service = $1 AND minute >= $2 ORDER BY minute, batch",
                    &[&service, &since.millis()],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    let tier: String = r.get(6);
                    Ok(TallyRow {
                        service: r.get(0),
                        batch: r.get(1),
                        minute: Ts(r.get(2)),
                        samples: r.get::<_, i64>(3) as u64,
                        sum: r.get(4),
                        low: r.get(5),
                        tier: tier.parse().map_err(|e: String| {
                            JournalError::Corrupt(format!("gate_tally tier: {e}"))
                        })?,
                    })
                })
                .collect()
        })
    }

    fn sample_checks(&self, service: &str, batch: &str) -> Result<Vec<SampleRow>, JournalError> {
        self.block(async {
            let rows = self
                .conn()
                .await?
                .query(
                    "SELECT service, batch, done_at, instance, key, state, detail, \"of\", updated_at
                     FROM sample_checks
                     WHERE service = $1 AND batch = $2 AND done_at = (SELECT max(done_at)
                         FROM sample_checks WHERE service = $1 AND batch = $2)
                     ORDER BY instance",
                    &[&service, &batch],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(SampleRow {
                        service: r.try_get(0)?,
                        batch: r.try_get(1)?,
                        done_at: Ts(r.try_get(2)?),
                        instance: r.try_get(3)?,
                        key: r.try_get(4)?,
                        state: SampleState::parse(r.try_get::<_, &str>(5)?)?,
                        detail: r.try_get(6)?,
                        of: r.try_get::<_, i32>(7)? as u32,
                        updated_at: Ts(r.try_get(8)?),
                    })
                })
                .collect()
        })
    }

    fn promotions(&self, service: &str) -> Result<Vec<Promotion>, JournalError> {
        self.block(async {
            let rows = self
                .conn()
                .await?
                .query(
                    "SELECT service, batch, revision, by_whom, note, at FROM promotions
                     WHERE service = $1 ORDER BY seq",
                    &[&service],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| Promotion {
                    service: r.get(0),
                    batch: r.get(1),
                    revision: r.get(2),
                    by: r.get(3),
                    note: r.get(4),
                    at: Ts(r.get(5)),
                })
                .collect())
        })
    }

    fn evidence(
        &self,
        incident: &str,
    ) -> Result<Option<crate::decision::EvidenceSeries>, JournalError> {
        self.block(async {
            let rows: Vec<String> = self
                .conn()
                .await?
                .query(
                    "SELECT points FROM evidence WHERE incident_id = $1 ORDER BY at",
                    &[&incident],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            super::merge_evidence(&rows)
        })
    }

    fn progress_log(
        &self,
        service: &str,
        from: Ts,
        to: Ts,
    ) -> Result<Vec<UpgradeRow>, JournalError> {
        self.block(async {
            let rows = self
                .conn()
                .await?
                .query(
                    "SELECT service, batch, stage, done, total, message, at,
                         stage NOT IN ('completed', 'failed') FROM progress_log
                     WHERE service = $1 AND at >= $2 AND at <= $3 ORDER BY at, seq LIMIT 10000",
                    &[&service, &from.millis(), &to.millis()],
                )
                .await?;
            Ok(rows.iter().map(upgrade_row).collect())
        })
    }
}
