//! Combining backends: a [`Chain`] asks several in order; a [`Router`] picks
//! a chain by recipient domain.
//!
//! # How a chain combines answers
//!
//! Backends are asked in order:
//!
//! - `Unknown`, `Disabled` or `OverQuota` is definitive: it is returned at
//!   once and later backends are not asked;
//! - an error is returned at once (a temporary failure; never accept when a
//!   source of truth cannot be read);
//! - `NotHandled` falls through to the next backend;
//! - `Deliverable` is remembered and the walk goes on, so that a later
//!   quota source can still say `OverQuota` (a map file says the user
//!   exists, then Maildir++ says the mailbox is full).
//!
//! The chain answers `Deliverable` if any backend said so, else
//! `NotHandled`.

use crate::address;
use async_trait::async_trait;
use nobounce_core::{
    observe::Observer, DirectoryError, RecipientDirectory, RecipientQuery, RecipientStatus,
};
use std::{collections::HashMap, sync::Arc};

/// A backend that tells an observer how it answered, and how fast
/// (metrics per backend).
#[derive(Debug)]
pub struct Observed {
    name: String,
    inner: Arc<dyn RecipientDirectory>,
    observer: Arc<dyn Observer>,
}

impl Observed {
    /// Wraps `inner`, named `name` in the configuration.
    pub fn new(
        name: &str,
        inner: Arc<dyn RecipientDirectory>,
        observer: Arc<dyn Observer>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            inner,
            observer,
        }
    }
}

/// The metrics label of an answer.
pub fn outcome_label(answer: &Result<RecipientStatus, DirectoryError>) -> &'static str {
    match answer {
        Ok(RecipientStatus::Deliverable) => "deliverable",
        Ok(RecipientStatus::Unknown) => "unknown",
        Ok(RecipientStatus::OverQuota { .. }) => "over_quota",
        Ok(RecipientStatus::Disabled) => "disabled",
        Ok(RecipientStatus::NotHandled) => "not_handled",
        Err(_) => "error",
    }
}

#[async_trait]
impl RecipientDirectory for Observed {
    async fn lookup(&self, query: &RecipientQuery<'_>) -> Result<RecipientStatus, DirectoryError> {
        let started = std::time::Instant::now();
        let answer = self.inner.lookup(query).await;
        self.observer
            .backend_lookup(&self.name, outcome_label(&answer), started.elapsed());
        answer
    }
}

/// Backends asked in order (see the module documentation).
#[derive(Debug, Clone)]
pub struct Chain {
    links: Vec<(String, Arc<dyn RecipientDirectory>)>,
}

impl Chain {
    /// A chain of named backends; the names appear in errors and logs.
    pub fn new(links: Vec<(String, Arc<dyn RecipientDirectory>)>) -> Self {
        Self { links }
    }
}

#[async_trait]
impl RecipientDirectory for Chain {
    async fn lookup(&self, query: &RecipientQuery<'_>) -> Result<RecipientStatus, DirectoryError> {
        let mut deliverable = false;
        for (name, backend) in &self.links {
            let status = backend.lookup(query).await.map_err(|e| {
                DirectoryError::with_source(format!("recipient backend {name:?}"), e)
            })?;
            tracing::trace!(event = "recipient_backend_answer", backend = %name, ?status);
            match status {
                RecipientStatus::NotHandled => {}
                RecipientStatus::Deliverable => deliverable = true,
                definitive => return Ok(definitive),
            }
        }
        Ok(if deliverable {
            RecipientStatus::Deliverable
        } else {
            RecipientStatus::NotHandled
        })
    }
}

/// Picks a chain by the recipient's domain (exact, case-insensitive match),
/// or the default chain; `NotHandled` when neither applies.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: HashMap<String, Arc<dyn RecipientDirectory>>,
    default: Option<Arc<dyn RecipientDirectory>>,
}

impl Router {
    /// A router with no routes and no default (answers `NotHandled`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes `domain` to `directory`. Returns `false` (and changes nothing)
    /// if the domain already had a route.
    pub fn route(&mut self, domain: &str, directory: Arc<dyn RecipientDirectory>) -> bool {
        let domain = address::normalize_domain(domain);
        if self.routes.contains_key(&domain) {
            return false;
        }
        self.routes.insert(domain, directory);
        true
    }

    /// Sets the directory for domains without a route.
    pub fn set_default(&mut self, directory: Arc<dyn RecipientDirectory>) {
        self.default = Some(directory);
    }
}

#[async_trait]
impl RecipientDirectory for Router {
    async fn lookup(&self, query: &RecipientQuery<'_>) -> Result<RecipientStatus, DirectoryError> {
        let Some(parsed) = address::split(query.address) else {
            return Ok(RecipientStatus::NotHandled);
        };
        match self.routes.get(&parsed.domain).or(self.default.as_ref()) {
            Some(directory) => directory.lookup(query).await,
            None => Ok(RecipientStatus::NotHandled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::query;
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    };

    /// Answers from a table by address; counts calls.
    #[derive(Debug, Default)]
    struct Table {
        answers: Mutex<HashMap<String, Result<RecipientStatus, String>>>,
        calls: AtomicUsize,
    }

    impl Table {
        fn with(pairs: &[(&str, Result<RecipientStatus, &str>)]) -> Arc<Self> {
            let t = Self::default();
            for (a, r) in pairs {
                t.answers
                    .lock()
                    .expect("lock")
                    .insert((*a).into(), r.clone().map_err(str::to_owned));
            }
            Arc::new(t)
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl RecipientDirectory for Table {
        async fn lookup(&self, q: &RecipientQuery<'_>) -> Result<RecipientStatus, DirectoryError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match self.answers.lock().expect("lock").get(q.address) {
                Some(Ok(s)) => Ok(s.clone()),
                Some(Err(e)) => Err(DirectoryError::new(e.clone())),
                None => Ok(RecipientStatus::NotHandled),
            }
        }
    }

    fn chain(links: &[(&str, &Arc<Table>)]) -> Chain {
        Chain::new(
            links
                .iter()
                .map(|(n, t)| {
                    (
                        (*n).to_owned(),
                        Arc::clone(*t) as Arc<dyn RecipientDirectory>,
                    )
                })
                .collect(),
        )
    }

    #[tokio::test]
    async fn chain_combines_existence_and_quota() {
        use RecipientStatus::*;
        let full = OverQuota { room_left: Some(3) };
        let existence = Table::with(&[
            ("alice@x", Ok(Deliverable)),
            ("bob@x", Ok(Deliverable)),
            ("ghost@x", Ok(Unknown)),
            ("old@x", Ok(Disabled)),
            ("err@x", Err("map exploded")),
            ("carol@x", Ok(Deliverable)),
        ]);
        let quota = Table::with(&[
            ("bob@x", Ok(full.clone())),
            ("ghost@x", Ok(Deliverable)),
            ("dave@x", Ok(Deliverable)),
            ("carol@x", Err("quota service down")),
        ]);
        let c = chain(&[("map", &existence), ("quota", &quota)]);
        for (address, want) in [
            ("alice@x", Ok(Deliverable)),
            ("bob@x", Ok(full)),
            ("ghost@x", Ok(Unknown)),
            ("old@x", Ok(Disabled)),
            ("dave@x", Ok(Deliverable)),
            ("nobody@x", Ok(NotHandled)),
            ("err@x", Err("\"map\"")),
            ("carol@x", Err("\"quota\"")),
        ] {
            let got = c.lookup(&query(address, None)).await;
            match want {
                Ok(status) => assert_eq!(got.expect(address), status, "{address}"),
                Err(name) => {
                    let e = got.expect_err(address).to_string();
                    assert!(
                        e.contains(name),
                        "{address}: {e} should name the backend {name}"
                    );
                }
            }
        }
        // ghost, old and err stopped at the first backend.
        assert_eq!(existence.calls(), 8);
        assert_eq!(quota.calls(), 5);
    }

    #[tokio::test]
    async fn router_picks_by_domain_with_default() {
        use RecipientStatus::*;
        let org = Table::with(&[("a@example.org", Ok(Deliverable))]);
        let fallback = Table::with(&[("a@other.test", Ok(Unknown))]);
        let mut r = Router::new();
        assert!(r.route(
            "Example.ORG.",
            Arc::clone(&org) as Arc<dyn RecipientDirectory>
        ));
        assert!(!r.route(
            "example.org",
            Arc::clone(&org) as Arc<dyn RecipientDirectory>
        ));
        let got = r
            .lookup(&query("a@other.test", None))
            .await
            .expect("answer");
        assert_eq!(got, NotHandled, "no default yet");
        r.set_default(Arc::clone(&fallback) as Arc<dyn RecipientDirectory>);
        assert_eq!(
            r.lookup(&query("a@EXAMPLE.org", None))
                .await
                .expect("answer"),
            NotHandled
        );
        assert_eq!(
            r.lookup(&query("a@example.org", None))
                .await
                .expect("answer"),
            Deliverable
        );
        assert_eq!(
            r.lookup(&query("a@other.test", None))
                .await
                .expect("answer"),
            Unknown
        );
        assert_eq!(
            r.lookup(&query("postmaster", None)).await.expect("answer"),
            NotHandled
        );
        assert_eq!(org.calls(), 2);
        assert_eq!(fallback.calls(), 1);
    }
}
