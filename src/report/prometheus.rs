//! Charts for alert incidents, from Prometheus.
//!
//! A firing alert that carries a `generatorURL` opens an incident whose
//! evidence says where its chart comes from. With `prometheus: {url: …}`
//! configured, ripcord asks that Prometheus (never the host in the link:
//! an alert's text does not choose where ripcord connects) `query_range`
//! for the alert's expression (see [`super::promql`]) from `before` ahead
//! of the alert's start to now, when the incident opens and again when it
//! resolves, and keeps the series as the incident's evidence
//! (`Charts::put_chart`): the console, the link page and `ripcord report`
//! draw it like a metric incident's. A failure is kept too, and the page
//! says why.
//!
//! Bounded: at most `max_points` points (the step is chosen for it), an
//! answer of at most `max_bytes`, `timeout` per query, one query at a time
//! from a queue of [`QUEUE`] (past it a chart is dropped, counted). The
//! fetch runs on its own task and journal connection, after the decisions
//! are journaled: it never delays an action.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use super::promql::{self, Series};
use crate::config::yaml::MapReader;
use crate::config::{Errors, Secret};
use crate::decision::{Action, ChartSource, Decision, EvidenceSeries};
use crate::journal::{Reads, Shared};
use crate::telemetry::Metrics;
use crate::time::{Clock, Dur, Ts};

/// The `prometheus:` config section.
#[derive(Debug, Clone)]
pub struct PrometheusConfig {
    /// Prometheus' base URL (`http://prometheus:9090`); a secret, since it
    /// may carry credentials.
    pub url: Secret,
    /// Sent as `Authorization: Bearer …` when set.
    pub token: Option<Secret>,
    /// One query's time limit.
    pub timeout: Dur,
    /// How far before the alert's start the chart reaches.
    pub before: Dur,
    pub max_points: usize,
    pub max_bytes: usize,
}

/// Charts waiting to be fetched; past it one is dropped (counted).
const QUEUE: usize = 64;

/// Reads `prometheus:` (`url` required; `token`, `timeout`, `before`,
/// `max_points`, `max_bytes`).
pub fn read_config(mut m: MapReader<'_>, errs: &mut Errors) -> Option<PrometheusConfig> {
    let url = match m.node_of("url") {
        Some(_) => crate::config::secret::read_secret(&mut m, "url", errs),
        None => {
            m.err(
                errs,
                m.node(),
                "url",
                "is missing: the Prometheus to ask for alert charts (http://prometheus:9090)",
            );
            None
        }
    };
    if let Some(u) = url.as_ref().filter(|u| !u.is_unresolved()) {
        let ok =
            reqwest::Url::parse(u.expose()).is_ok_and(|p| matches!(p.scheme(), "http" | "https"));
        if !ok {
            let n = m.node_of("url").unwrap_or(m.node());
            // The value is a secret: the message never quotes it.
            m.err(errs, n, "url", "is not an http(s) URL");
        }
    }
    let token = crate::config::secret::read_secret(&mut m, "token", errs);
    let timeout = m
        .dur("timeout", Dur::from_secs(1)..=Dur::from_mins(1), errs)
        .unwrap_or(Dur::from_secs(5));
    let before = m
        .dur("before", Dur::from_mins(1)..=Dur::from_mins(24 * 60), errs)
        .unwrap_or(Dur::from_mins(15));
    let max_points = m
        .int("max_points", 10..=11_000, errs)
        .map_or(240, |n| n as usize);
    let max_bytes = m
        .int("max_bytes", 1024..=64 << 20, errs)
        .map_or(1 << 20, |n| n as usize);
    m.finish(errs);
    Some(PrometheusConfig {
        url: url?,
        token,
        timeout,
        before,
        max_points,
        max_bytes,
    })
}

/// One chart to fetch.
#[derive(Debug, Clone)]
struct Job {
    incident: String,
    /// The alert's labels, to pick its series out of the answer.
    labels: Vec<(String, String)>,
    /// For an opening alert: where its chart comes from (a resolve reads
    /// it back from the journal).
    source: Option<ChartSource>,
    /// The alert's start.
    breach: Ts,
}

/// The pipeline's side: hands each alert incident's opening and resolve to
/// the fetcher, never waiting.
pub struct Charts {
    tx: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
    /// The incident last offered (its decisions come together).
    last: Option<(String, bool)>,
}

impl Clone for Charts {
    /// Another pipeline shard's handle on the same fetcher.
    fn clone(&self) -> Charts {
        Charts {
            tx: self.tx.clone(),
            metrics: self.metrics.clone(),
            last: None,
        }
    }
}

impl Charts {
    /// Called for every decision newly journaled.
    pub fn offer(&mut self, d: &Decision) {
        let Some(incident) = d.incident.as_ref().map(ToString::to_string) else {
            return;
        };
        let resolve = d.action == Action::Resolve;
        let source = d
            .evidence
            .0
            .as_ref()
            .and_then(|e| e.chart.clone())
            .filter(|c| !c.generator_url.is_empty());
        // Openings carry the chart's source; resolves of alert incidents
        // (they have a fingerprint) find it in the journal.
        if !(source.is_some() || resolve && d.fingerprint.is_some()) {
            return;
        }
        if self.last.as_ref() == Some(&(incident.clone(), resolve)) {
            return;
        }
        self.last = Some((incident.clone(), resolve));
        let job = Job {
            incident,
            labels: d
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            breach: d.evidence.0.as_ref().map_or(d.at, |e| e.breach_from),
            source: if resolve { None } else { source },
        };
        if self.tx.try_send(job).is_err() {
            self.metrics.chart("dropped");
            tracing::warn!("alert chart not fetched: {QUEUE} already wait");
        }
    }
}

/// The fetcher: its task and the pipeline's handle.
pub fn start(
    cfg: PrometheusConfig,
    journal: Keep,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) -> Result<(Charts, tokio::task::JoinHandle<()>), reqwest::Error> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(cfg.timeout.to_std())
        // A redirect could lead anywhere; Prometheus answers directly.
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let fetcher = Fetcher {
        cfg,
        client,
        journal,
        clock,
        metrics: metrics.clone(),
    };
    let task = tokio::spawn(fetcher.run(rx, stop));
    Ok((
        Charts {
            tx,
            metrics,
            last: None,
        },
        task,
    ))
}

/// The fetcher's two roles of its connection: the incident's evidence
/// (where a chart without its query reads it), and the chart kept.
pub struct Keep {
    pub evidence: Shared<dyn Reads>,
    pub charts: Shared<dyn crate::journal::Charts>,
}

struct Fetcher {
    cfg: PrometheusConfig,
    client: reqwest::Client,
    journal: Keep,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
}

impl Fetcher {
    async fn run(self, mut rx: mpsc::Receiver<Job>, mut stop: watch::Receiver<bool>) {
        loop {
            let job = tokio::select! {
                j = rx.recv() => match j { Some(j) => j, None => return },
                _ = stop.wait_for(|s| *s) => return,
            };
            tokio::select! {
                _ = self.one(job) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    async fn one(&self, job: Job) {
        let incident = job.incident.clone();
        let source = match job.source.clone() {
            Some(s) => s,
            None => {
                let id = incident.clone();
                match self.journal.evidence.with(move |j| j.evidence(&id)).await {
                    Ok(Some(e)) => match e.chart {
                        Some(c) => c,
                        None => return,
                    },
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(%incident, error = %e, "alert chart: cannot read the incident's evidence");
                        return;
                    }
                }
            }
        };
        let now = self.clock.now();
        let chart = self.chart(&job, source, now).await;
        let outcome = if chart.chart.as_ref().is_some_and(|c| c.error.is_some()) {
            "failed"
        } else {
            "fetched"
        };
        self.metrics.chart(outcome);
        if let Some(why) = chart.chart.as_ref().and_then(|c| c.error.as_deref()) {
            tracing::info!(%incident, why, "alert chart not drawn");
        }
        let id = incident.clone();
        if let Err(e) = self
            .journal
            .charts
            .with(move |j| j.put_chart(&id, &chart))
            .await
        {
            tracing::warn!(%incident, error = %e, "alert chart not kept");
        }
    }

    /// The chart, or what went wrong, as the incident's evidence.
    async fn chart(&self, job: &Job, mut source: ChartSource, now: Ts) -> EvidenceSeries {
        let mut points = Vec::new();
        match promql::expression_of(&source.generator_url) {
            Err(e) => source.error = Some(e),
            Ok(expr) => {
                let plot = promql::plot_of(&expr);
                source.query = Some(plot.query.clone());
                source.threshold = plot.threshold;
                let from = job.breach.saturating_sub(self.cfg.before);
                let to = now.max(from.saturating_add(Dur::from_mins(1)));
                match self.query_range(&plot.query, from, to).await {
                    Err(e) => source.error = Some(e),
                    Ok(series) => {
                        let labels: Vec<(&str, &str)> = job
                            .labels
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_str()))
                            .collect();
                        match promql::pick(&series, &labels) {
                            Ok(s) => points = promql::thin(&s.points, self.cfg.max_points),
                            Err(e) => source.error = Some(e),
                        }
                    }
                }
            }
        }
        EvidenceSeries {
            breach_from: job.breach,
            points,
            annotations: Vec::new(),
            chart: Some(source),
        }
    }

    /// `GET /api/v1/query_range`, bounded in time and bytes. Errors never
    /// carry the URL (it is a secret).
    async fn query_range(&self, query: &str, from: Ts, to: Ts) -> Result<Vec<Series>, String> {
        let span = to.since(from).millis().max(1_000);
        let points = self.cfg.max_points.max(2) as i64 - 1;
        let step_s = ((span + points * 1000 - 1) / (points * 1000)).max(1);
        let secs = |t: Ts| format!("{:.3}", t.millis() as f64 / 1000.0);
        let mut url = reqwest::Url::parse(self.cfg.url.expose())
            .map_err(|_| "prometheus.url is not a URL".to_owned())?;
        url.path_segments_mut()
            .map_err(|_| "prometheus.url cannot take a path".to_owned())?
            .pop_if_empty()
            .extend(["api", "v1", "query_range"]);
        url.query_pairs_mut()
            .append_pair("query", query)
            .append_pair("start", &secs(from))
            .append_pair("end", &secs(to))
            .append_pair("step", &step_s.to_string());
        let mut req = self.client.get(url);
        if let Some(t) = &self.cfg.token {
            req = req.bearer_auth(t.expose());
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| format!("Prometheus could not be asked: {}", e.without_url()))?;
        let status = resp.status();
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("Prometheus' answer broke off: {}", e.without_url()))?
        {
            if body.len() + chunk.len() > self.cfg.max_bytes {
                return Err(format!(
                    "Prometheus' answer is larger than prometheus.max_bytes ({} bytes)",
                    self.cfg.max_bytes
                ));
            }
            body.extend_from_slice(&chunk);
        }
        parse_answer(status.as_u16(), &body)
    }
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<MatrixSeries>,
}

#[derive(Deserialize)]
struct MatrixSeries {
    metric: std::collections::BTreeMap<String, String>,
    values: Vec<(f64, String)>,
}

/// Prometheus' `query_range` answer as series, or why not.
fn parse_answer(status: u16, body: &[u8]) -> Result<Vec<Series>, String> {
    let a: Answer = serde_json::from_slice(body).map_err(|_| {
        format!("Prometheus answered {status} with something that is not its API's JSON")
    })?;
    if a.status != "success" {
        let why = a.error.unwrap_or_default();
        return Err(format!(
            "Prometheus answered {status}: {}",
            crate::text::clip_bytes(&why, 300)
        ));
    }
    let data = a.data.ok_or("Prometheus' answer has no data")?;
    if data.result_type != "matrix" {
        return Err(format!(
            "Prometheus answered a {} where a range query gives a matrix",
            data.result_type
        ));
    }
    Ok(data
        .result
        .into_iter()
        .map(|s| Series {
            labels: s.metric.into_iter().collect(),
            points: s
                .values
                .into_iter()
                .filter_map(|(t, v)| {
                    let v: f64 = v.parse().ok().filter(|v: &f64| v.is_finite())?;
                    Some((Ts((t * 1000.0).round() as i64), v))
                })
                .collect(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_answers_read_as_series_or_say_why() {
        let ok = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"instance":"i-1"},"values":[[1700000000,"0.5"],[1700000015.5,"NaN"],[1700000030,"1"]]}]}}"#;
        let s = parse_answer(200, ok).unwrap();
        assert_eq!(s[0].labels, vec![("instance".into(), "i-1".into())]);
        assert_eq!(
            s[0].points,
            vec![(Ts(1_700_000_000_000), 0.5), (Ts(1_700_000_030_000), 1.0)]
        );
        let bad = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#;
        assert_eq!(
            parse_answer(400, bad).unwrap_err(),
            "Prometheus answered 400: parse error at char 3"
        );
        assert!(
            parse_answer(502, b"<html>bad gateway</html>")
                .unwrap_err()
                .contains("502")
        );
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(parse_answer(200, vector).unwrap_err().contains("vector"));
    }
}
