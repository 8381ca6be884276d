//! # nobounce-metrics
//!
//! The [`Observer`] port of `nobounce-core` as Prometheus metrics, with
//! the official `prometheus-client` crate, and the `/metrics` endpoint.
//! The registry is passed in; there is no global state.
//!
//! # Layout
//!
//! - [`Metrics`]: the observer; its counters and histograms are
//!   registered in the registry given to [`Metrics::new`].
//! - [`Sampled`]: values read at each scrape (SPF cache, bans, store
//!   state), set by a refresh function before encoding.
//! - [`serve`]: the HTTP endpoint.
//!
//! No label carries an address or an IP: labels are stages, policies,
//! actions, SPF results, and the names of configured backends and zones.

use http_body_util::Full;
use hyper::{body::Bytes, server::conn::http1, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use nobounce_core::{
    observe::{Action, Observer},
    verdict::Policy,
    Stage,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};
use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::net::TcpListener;
use tracing::{debug, warn};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    stage: &'static str,
    policy: &'static str,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendOutcome {
    backend: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ZoneOutcome {
    zone: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabel {
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolStage {
    protocol: &'static str,
    stage: &'static str,
}

/// Buckets from 100 µs to about 26 s: a milter command takes well under a
/// millisecond from cache, and a DNS or backend timeout tens of seconds.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

/// Values read at each scrape rather than counted as they happen.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sampled {
    /// SPF answer cache: hits, misses, coalesced waits, evictions, entries.
    pub spf_cache: Option<nobounce_core::CacheStats>,
    /// Bans in force.
    pub bans_active: Option<u64>,
    /// Bans that ran out (seen active at one scrape, gone and past their
    /// end at a later one).
    pub bans_expired: u64,
    /// 1 while the shared store (Redis) is away and the local fallback
    /// serves; `None` with the memory store.
    pub store_fallback: Option<bool>,
}

/// Encodes each constant metric: `KIND name, help, value;` a line.
macro_rules! encode {
    ($encoder:ident: $($kind:ident $name:literal, $help:literal, $value:expr;)*) => {
        $({
            let m = $kind::new($value);
            m.encode($encoder.encode_descriptor($name, $help, None, m.metric_type())?)?;
        })*
    };
}

/// A count as a gauge value.
fn saturating(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// Encodes [`Sampled`] at each scrape.
#[derive(Debug, Default)]
struct SampledCollector(Arc<Mutex<Sampled>>);

impl Collector for SampledCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // One line a value: kind, name, help, value.
        if let Some(c) = &s.spf_cache {
            encode! { encoder:
                ConstCounter "nobounce_spf_cache_hits", "SPF checks answered from the cache.", c.hits;
                ConstCounter "nobounce_spf_cache_misses", "SPF checks that ran a DNS evaluation.", c.misses;
                ConstCounter "nobounce_spf_cache_coalesced", "SPF checks that waited for an identical evaluation already running.", c.coalesced;
                ConstCounter "nobounce_spf_cache_evictions", "SPF cache entries dropped to make room.", c.evictions;
                ConstGauge "nobounce_spf_cache_entries", "SPF answers in the cache.", saturating(c.entries);
            }
        }
        encode! { encoder:
            ConstCounter "nobounce_bans_expired", "Bans that ran out by themselves.", s.bans_expired;
        }
        if let Some(n) = s.bans_active {
            encode! { encoder:
                ConstGauge "nobounce_bans_active", "Bans in force.", saturating(n);
            }
        }
        if let Some(f) = s.store_fallback {
            encode! { encoder:
                ConstGauge "nobounce_store_fallback", "1 while Redis is away and the local fallback store serves.", i64::from(f);
            }
        }
        Ok(())
    }
}

/// Registers each metric as `registry.register(name, help, metric.clone())`,
/// one line a metric.
macro_rules! register {
    ($registry:ident: $($name:literal, $help:literal, $metric:expr;)*) => {
        $($registry.register($name, $help, $metric.clone());)*
    };
}

/// The observer: every counter and histogram of nobounce.
#[derive(Debug)]
pub struct Metrics {
    decisions: Family<DecisionLabels, Counter>,
    spf_results: Family<ResultLabel, Counter>,
    backend_lookups: Family<BackendOutcome, Counter>,
    backend_seconds: Family<BackendLabel, Histogram, fn() -> Histogram>,
    bans_added: Counter,
    dnsbl_answers: Family<ZoneOutcome, Counter>,
    bounce_guard: Family<OutcomeLabel, Counter>,
    aliases: Family<OutcomeLabel, Counter>,
    connections: Family<ProtocolLabel, Gauge>,
    command_seconds: Family<ProtocolStage, Histogram, fn() -> Histogram>,
    sampled: Arc<Mutex<Sampled>>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> Arc<Self> {
        let m = Metrics {
            decisions: Family::default(),
            spf_results: Family::default(),
            backend_lookups: Family::default(),
            backend_seconds: Family::new_with_constructor(latency_histogram),
            bans_added: Counter::default(),
            dnsbl_answers: Family::default(),
            bounce_guard: Family::default(),
            aliases: Family::default(),
            connections: Family::default(),
            command_seconds: Family::new_with_constructor(latency_histogram),
            sampled: Arc::default(),
        };
        // One line a metric: name, help, the metric.
        register! { registry:
            "nobounce_decisions", "Decisions, by SMTP stage, policy (none for an accept) and action.", m.decisions;
            "nobounce_spf_results", "SPF results of the MAIL FROM identity.", m.spf_results;
            "nobounce_directory_lookups", "Recipient backend answers, by configured backend and outcome.", m.backend_lookups;
            "nobounce_directory_lookup_seconds", "Time a recipient backend took to answer.", m.backend_seconds;
            "nobounce_bans_added", "Clients banned for dictionary attacks (new bans).", m.bans_added;
            "nobounce_dnsbl_answers", "DNS block list answers, by zone and outcome.", m.dnsbl_answers;
            "nobounce_bounce_guard", "Bounces judged by the bounce guard: sent or held.", m.bounce_guard;
            "nobounce_alias_lookups", "Alias lookups at RCPT, by outcome.", m.aliases;
            "nobounce_connections", "Open front end connections (milter, policy).", m.connections;
            "nobounce_command_seconds", "Time nobounce took to answer one command, by protocol and stage.", m.command_seconds;
        }
        registry.register_collector(Box::new(SampledCollector(Arc::clone(&m.sampled))));
        Arc::new(m)
    }

    /// Sets the values read at each scrape.
    pub fn set_sampled(&self, sampled: Sampled) {
        *self.sampled.lock().unwrap_or_else(|e| e.into_inner()) = sampled;
    }

    /// The values last sampled.
    pub fn sampled(&self) -> Sampled {
        self.sampled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn policy_name(p: Option<Policy>) -> &'static str {
    p.map_or("none", Policy::as_str)
}

impl Observer for Metrics {
    fn decision(&self, stage: Stage, policy: Option<Policy>, action: Action) {
        self.decisions
            .get_or_create(&DecisionLabels {
                stage: stage.as_str(),
                policy: policy_name(policy),
                action: action.as_str(),
            })
            .inc();
    }

    fn spf_result(&self, result: &'static str) {
        self.spf_results
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    fn backend_lookup(&self, backend: &str, outcome: &'static str, elapsed: Duration) {
        self.backend_lookups
            .get_or_create(&BackendOutcome {
                backend: backend.to_owned(),
                outcome,
            })
            .inc();
        self.backend_seconds
            .get_or_create(&BackendLabel {
                backend: backend.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    fn ban_added(&self) {
        self.bans_added.inc();
    }

    fn dnsbl_answer(&self, zone: &str, outcome: &'static str) {
        self.dnsbl_answers
            .get_or_create(&ZoneOutcome {
                zone: zone.to_owned(),
                outcome,
            })
            .inc();
    }

    fn bounce_guard(&self, outcome: &'static str) {
        self.bounce_guard
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    fn alias(&self, outcome: &'static str) {
        self.aliases.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    fn connection(&self, protocol: &'static str, open: bool) {
        let g = self.connections.get_or_create(&ProtocolLabel { protocol });
        if open {
            g.inc();
        } else {
            g.dec();
        }
    }

    fn command(&self, protocol: &'static str, stage: &'static str, elapsed: Duration) {
        self.command_seconds
            .get_or_create(&ProtocolStage { protocol, stage })
            .observe(elapsed.as_secs_f64());
    }
}

/// Refreshes the sampled values before a scrape.
pub type Refresh = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The text exposition of `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        warn!(
            event = "metrics_encode_failed",
            "cannot encode the metrics: {e}"
        );
    }
    out
}

/// Serves `GET /metrics` (the text format) on `listener` until `shutdown`
/// completes; anything else gets 404. `refresh` runs before each scrape.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    refresh: Refresh,
    shutdown: impl Future,
) -> io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(event = "metrics_accept_failed", "metrics endpoint: cannot accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let registry = Arc::clone(&registry);
        let refresh = Arc::clone(&refresh);
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let registry = Arc::clone(&registry);
                let refresh = Arc::clone(&refresh);
                async move {
                    let response = if req.uri().path() == "/metrics" {
                        refresh().await;
                        Response::builder()
                            .header(
                                hyper::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )
                            .body(Full::new(Bytes::from(encode(&registry))))
                    } else {
                        Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::from_static(b"not found; try /metrics\n")))
                    };
                    response
                }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            // A scraper that hangs is cut off: one scrape takes milliseconds.
            match tokio::time::timeout(Duration::from_secs(60), conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, "metrics connection: {e}"),
                Err(_) => debug!(%peer, "metrics connection too slow, closed"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_sampled_values_are_encoded_without_addresses() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        m.decision(Stage::RcptTo, Some(Policy::Recipient), Action::Reject);
        m.decision(Stage::RcptTo, None, Action::Accept);
        m.spf_result("softfail");
        m.backend_lookup("users", "unknown", Duration::from_millis(2));
        m.connection("milter", true);
        m.set_sampled(Sampled {
            bans_active: Some(3),
            store_fallback: Some(false),
            ..Default::default()
        });
        let text = encode(&registry);
        assert!(
            text.contains(
                "nobounce_decisions_total{stage=\"rcpt\",policy=\"recipient\",action=\"reject\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("nobounce_spf_results_total{result=\"softfail\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "nobounce_directory_lookups_total{backend=\"users\",outcome=\"unknown\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("nobounce_bans_active 3"), "{text}");
        assert!(text.contains("nobounce_store_fallback 0"), "{text}");
        assert!(
            text.contains("nobounce_connections{protocol=\"milter\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
