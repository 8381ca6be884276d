//! The `[recipients]` backends and routes, and [`build`]: turning them into
//! one [`RecipientDirectory`].
//!
//! ```toml
//! [recipients]
//! # Chain for domains without a route; empty (the default): NotHandled.
//! default_chain = ["dovecot"]
//!
//! [[recipients.routes]]
//! domains = ["example.org", "example.net"]
//! chain = ["users", "quota"]
//!
//! [recipients.backends.users]
//! type = "map_file"
//! path = "/etc/nobounce/recipients"
//!
//! [recipients.backends.quota]
//! type = "maildir"
//! path_template = "/var/mail/vhosts/{domain}/{local}/Maildir"
//!
//! [recipients.backends.dovecot]
//! type = "rcpt_probe"
//! address = "unix:/run/dovecot/lmtp"
//! ```
//!
//! The configuration file is read by `nobounce-config`; this module builds
//! what it describes.

use crate::{
    maildir::{MaildirConfig, MaildirQuota},
    map_file::{MapFileConfig, MapFileDirectory, MapFileError},
    probe::{RcptProbe, RcptProbeConfig},
    quota_status::{QuotaStatus, QuotaStatusConfig},
    router::{Chain, Observed, Router},
};
use nobounce_core::{
    observe::{NoObserver, Observer},
    Clock, RecipientDirectory, SystemClock,
};
use serde::Serialize;
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

/// The backends and routes of `[recipients]`.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct RecipientsConfig {
    /// Named backends, `[recipients.backends.NAME]`, each with a `type`.
    /// Default: none.
    pub backends: BTreeMap<String, BackendConfig>,
    /// Which chain of backends serves which domains. Default: none.
    pub routes: Vec<RouteConfig>,
    /// The chain for domains no route lists. Default: `[]`, meaning such
    /// recipients are `NotHandled` (the MTA decides).
    pub default_chain: Vec<String>,
}

/// One `[[recipients.routes]]` entry.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RouteConfig {
    /// Domains served (case-insensitive, exact match; list each subdomain).
    /// Required, non-empty.
    pub domains: Vec<String>,
    /// Backend names asked in order (see [`Chain`]). Required, non-empty.
    pub chain: Vec<String>,
}

/// One backend; the `type` key selects the kind.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BackendConfig {
    /// A text file of addresses ([`crate::map_file`]).
    MapFile(MapFileConfig),
    /// An LMTP/SMTP `RCPT TO` probe ([`crate::probe`]).
    RcptProbe(RcptProbeConfig),
    /// Dovecot quota-status, policy protocol ([`crate::quota_status`]).
    QuotaStatus(QuotaStatusConfig),
    /// Maildir++ `maildirsize` files ([`crate::maildir`]).
    Maildir(MaildirConfig),
}

/// A route that cannot be built, with the configuration key it is about
/// (`recipients.routes[0].chain`).
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct RouteError {
    /// The key, as the configuration file writes it.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

/// The configuration cannot be turned into a directory.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A map file is missing or bad (with `file:line`).
    #[error("recipients backend {backend:?}: {error}")]
    MapFile {
        /// The backend name.
        backend: String,
        /// What is wrong.
        #[source]
        error: MapFileError,
    },
    /// A route names a backend that does not exist, and the like.
    #[error(transparent)]
    Route(RouteError),
    /// Map files with a `watch_interval` need a tokio runtime to build in.
    #[error("map files with a watch_interval need a tokio runtime to build in")]
    NoRuntime,
}

impl BuildError {
    /// The configuration key the error is about.
    pub fn key(&self) -> String {
        match self {
            Self::MapFile { backend, .. } => format!("recipients.backends.{backend}.path"),
            Self::Route(e) => e.key.clone(),
            Self::NoRuntime => "recipients".into(),
        }
    }
}

/// Checks that every route and the default chain name existing backends,
/// each once, and that no domain is routed twice; warns of backends no
/// route uses. The configuration builder runs this too, so that
/// `nobounce config check` reports these errors at their lines.
pub fn check_routes(config: &RecipientsConfig) -> Result<(), RouteError> {
    let mut used = HashSet::new();
    let mut check_chain = |names: &[String], key: String| -> Result<(), RouteError> {
        let bad = |problem: String| RouteError {
            key: key.clone(),
            problem,
        };
        if names.is_empty() {
            return Err(bad("empty chain".into()));
        }
        let mut seen = HashSet::new();
        for name in names {
            if !config.backends.contains_key(name) {
                return Err(bad(format!("no backend named {name:?}")));
            }
            if !seen.insert(name) {
                return Err(bad(format!("backend {name:?} listed twice")));
            }
            used.insert(name.clone());
        }
        Ok(())
    };
    let mut domains = HashSet::new();
    for (i, route) in config.routes.iter().enumerate() {
        let key = format!("recipients.routes[{i}]");
        check_chain(&route.chain, format!("{key}.chain"))?;
        if route.domains.is_empty() {
            return Err(RouteError {
                key: format!("{key}.domains"),
                problem: "no domains".into(),
            });
        }
        for domain in &route.domains {
            let bad = |problem: String| RouteError {
                key: format!("{key}.domains"),
                problem,
            };
            if crate::address::split(&format!("x@{domain}")).is_none() {
                return Err(bad(format!("invalid domain {domain:?}")));
            }
            if !domains.insert(crate::address::normalize_domain(domain)) {
                return Err(bad(format!("domain {domain:?} routed twice")));
            }
        }
    }
    if !config.default_chain.is_empty() {
        check_chain(&config.default_chain, "recipients.default_chain".into())?;
    }
    for name in config.backends.keys().filter(|n| !used.contains(*n)) {
        tracing::warn!(
            event = "recipient_backend_unused",
            backend = %name,
            "recipient backend configured but used by no route"
        );
    }
    Ok(())
}

/// A built directory: what the engine asks, and the backends it is made
/// of, so that a rebuild can keep those whose settings did not change.
#[derive(Debug)]
pub struct Recipients {
    /// The directory to give the engine.
    pub directory: Arc<dyn RecipientDirectory>,
    backends: HashMap<String, (BackendConfig, Arc<dyn RecipientDirectory>)>,
}

/// Builds the directory described by `config`.
///
/// Map files are read now: a missing or bad file is an error. Map files
/// with a `watch_interval` get a watcher task, which needs a tokio runtime:
/// call this from within one.
pub fn build(config: &RecipientsConfig) -> Result<Recipients, BuildError> {
    build_reusing(config, None, Arc::new(SystemClock))
}

/// Builds the directory described by `config`, taking over from `previous`
/// every network and Maildir backend whose settings did not change (with
/// its connections and its answer cache). Map files are always read anew,
/// into new maps: `previous` is never changed, so a failed build leaves it
/// whole. The answer caches read time from `clock`.
pub fn build_reusing(
    config: &RecipientsConfig,
    previous: Option<&Recipients>,
    clock: Arc<dyn Clock>,
) -> Result<Recipients, BuildError> {
    build_observed(config, previous, clock, Arc::new(NoObserver))
}

/// [`build_reusing`], with every backend telling `observer` how it answered
/// and how fast (metrics per backend, labelled by its configured name).
pub fn build_observed(
    config: &RecipientsConfig,
    previous: Option<&Recipients>,
    clock: Arc<dyn Clock>,
    observer: Arc<dyn Observer>,
) -> Result<Recipients, BuildError> {
    check_routes(config).map_err(BuildError::Route)?;
    let needs_runtime = config
        .backends
        .values()
        .any(|b| matches!(b, BackendConfig::MapFile(m) if !m.watch_interval.is_zero()));
    if needs_runtime && tokio::runtime::Handle::try_current().is_err() {
        return Err(BuildError::NoRuntime);
    }
    let mut backends = HashMap::new();
    let mut watchers = Vec::new();
    for (name, backend) in &config.backends {
        let kept = previous
            .and_then(|p| p.backends.get(name))
            .filter(|(old, _)| old == backend && !matches!(backend, BackendConfig::MapFile(_)))
            .map(|(_, directory)| Arc::clone(directory));
        let directory: Arc<dyn RecipientDirectory> = match (kept, backend) {
            (Some(directory), _) => directory,
            (None, BackendConfig::MapFile(c)) => {
                let map =
                    Arc::new(
                        MapFileDirectory::open(c).map_err(|error| BuildError::MapFile {
                            backend: name.clone(),
                            error,
                        })?,
                    );
                if !c.watch_interval.is_zero() {
                    watchers.push((Arc::clone(&map), c.watch_interval));
                }
                map
            }
            (None, BackendConfig::RcptProbe(c)) => {
                Arc::new(RcptProbe::with_clock(c.clone(), Arc::clone(&clock)))
            }
            (None, BackendConfig::QuotaStatus(c)) => {
                Arc::new(QuotaStatus::with_clock(c.clone(), Arc::clone(&clock)))
            }
            (None, BackendConfig::Maildir(c)) => Arc::new(MaildirQuota::new(c.clone())),
        };
        backends.insert(name.clone(), (backend.clone(), directory));
    }
    // Watchers start only once everything is built: a failed build starts
    // nothing.
    for (map, interval) in watchers {
        drop(map.spawn_watcher(interval));
    }

    let chain = |names: &[String]| -> Arc<dyn RecipientDirectory> {
        let mut links: Vec<(String, Arc<dyn RecipientDirectory>)> = names
            .iter()
            .filter_map(|n| {
                backends.get(n).map(|(_, d)| {
                    let observed: Arc<dyn RecipientDirectory> =
                        Arc::new(Observed::new(n, Arc::clone(d), Arc::clone(&observer)));
                    (n.clone(), observed)
                })
            })
            .collect();
        if links.len() == 1 {
            links.remove(0).1
        } else {
            Arc::new(Chain::new(links))
        }
    };
    let mut router = Router::new();
    for route in &config.routes {
        let directory = chain(&route.chain);
        for domain in &route.domains {
            // check_routes refused domains routed twice.
            router.route(domain, Arc::clone(&directory));
        }
    }
    if !config.default_chain.is_empty() {
        router.set_default(chain(&config.default_chain));
    }
    Ok(Recipients {
        directory: Arc::new(router),
        backends,
    })
}

impl Recipients {
    /// Whether the backend `name` is the very same object in `other` (kept
    /// by [`build_reusing`], with its cache).
    pub fn shares_backend(&self, other: &Recipients, name: &str) -> bool {
        match (self.backends.get(name), other.backends.get(name)) {
            (Some((_, a)), Some((_, b))) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{query, write_file};
    use nobounce_core::RecipientStatus;
    use std::{path::Path, time::Duration};

    fn map(path: &Path) -> BackendConfig {
        let mut c = MapFileConfig::new(path);
        c.watch_interval = Duration::ZERO;
        BackendConfig::MapFile(c)
    }

    fn route(domains: &[&str], chain: &[&str]) -> RouteConfig {
        RouteConfig {
            domains: domains.iter().map(|d| d.to_string()).collect(),
            chain: chain.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn routes_must_name_existing_backends_once() {
        let base = RecipientsConfig {
            backends: BTreeMap::from([("users".to_string(), map(Path::new("/nonexistent")))]),
            ..Default::default()
        };
        for (routes, key, needle) in [
            (
                vec![route(&["example.org"], &["nope"])],
                "recipients.routes[0].chain",
                "no backend named \"nope\"",
            ),
            (
                vec![route(&["example.org"], &[])],
                "recipients.routes[0].chain",
                "empty chain",
            ),
            (
                vec![route(&[], &["users"])],
                "recipients.routes[0].domains",
                "no domains",
            ),
            (
                vec![route(&["example.org"], &["users", "users"])],
                "recipients.routes[0].chain",
                "twice",
            ),
            (
                vec![
                    route(&["a.test"], &["users"]),
                    route(&["A.TEST"], &["users"]),
                ],
                "recipients.routes[1].domains",
                "routed twice",
            ),
            (
                vec![route(&["a b"], &["users"])],
                "recipients.routes[0].domains",
                "invalid domain",
            ),
        ] {
            let config = RecipientsConfig {
                routes,
                ..base.clone()
            };
            let e = check_routes(&config).expect_err(needle);
            assert_eq!(e.key, key, "{e}");
            assert!(e.problem.contains(needle), "{e}");
            // build() checks first, before any file is read.
            let e = build(&config).expect_err(needle);
            assert!(matches!(e, BuildError::Route(_)), "{e}");
        }
    }

    #[tokio::test]
    async fn built_directory_routes_chains_and_rebuilds_without_touching_the_old_one() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        write_file(
            root,
            "map",
            "alice@example.org\nbob@example.org\nold@example.org disabled\n",
        );
        write_file(
            root,
            "mail/example.org/bob/Maildir/maildirsize",
            "1000S\n1000 10\n",
        );
        write_file(
            root,
            "mail/example.org/alice/Maildir/maildirsize",
            "1000S\n10 1\n",
        );
        let template = format!("{}/mail/{{domain}}/{{local}}/Maildir", root.display());
        let config = RecipientsConfig {
            backends: BTreeMap::from([
                ("users".to_string(), map(&root.join("map"))),
                (
                    "quota".to_string(),
                    BackendConfig::Maildir(MaildirConfig::new(template.parse().expect("template"))),
                ),
            ]),
            routes: vec![route(&["example.org"], &["users", "quota"])],
            default_chain: Vec::new(),
        };
        let built = build(&config).expect("builds");
        let dir = &built.directory;
        use RecipientStatus::*;
        for (address, want) in [
            ("alice@example.org", Deliverable),
            ("bob@example.org", OverQuota { room_left: Some(0) }),
            ("old@example.org", Disabled),
            ("carol@example.org", Unknown),
            ("alice@elsewhere.test", NotHandled),
        ] {
            assert_eq!(
                dir.lookup(&query(address, Some(100))).await.expect(address),
                want,
                "{address}"
            );
        }
        write_file(root, "map", "alice@example.org\ncarol@example.org\n");
        let again = build_reusing(&config, Some(&built), Arc::new(SystemClock)).expect("rebuilds");
        assert!(
            again.shares_backend(&built, "quota"),
            "unchanged backend kept"
        );
        assert!(
            !again.shares_backend(&built, "users"),
            "map files are read anew"
        );
        let got = again
            .directory
            .lookup(&query("carol@example.org", None))
            .await
            .expect("answer");
        assert_eq!(got, Deliverable, "the new map has carol");
        let got = dir
            .lookup(&query("carol@example.org", None))
            .await
            .expect("answer");
        assert_eq!(got, Unknown, "the old directory is untouched");
        write_file(root, "map", "bad line here\n");
        let e = build_reusing(&config, Some(&again), Arc::new(SystemClock)).expect_err("bad map");
        assert!(e.to_string().contains("\"users\""), "{e}");
        assert_eq!(e.key(), "recipients.backends.users.path");
    }

    #[test]
    fn empty_config_builds_a_directory_that_handles_nothing() {
        let dir = build(&RecipientsConfig::default())
            .expect("builds without a runtime")
            .directory;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let got = rt
            .block_on(dir.lookup(&query("a@example.org", None)))
            .expect("answer");
        assert_eq!(got, RecipientStatus::NotHandled);
    }

    #[test]
    fn watched_map_needs_a_runtime() {
        let tmp = tempfile::tempdir().expect("tempdir");
        write_file(tmp.path(), "map", "a@example.org\n");
        let config = RecipientsConfig {
            backends: BTreeMap::from([(
                "m".to_string(),
                BackendConfig::MapFile(MapFileConfig::new(tmp.path().join("map"))),
            )]),
            ..RecipientsConfig::default()
        };
        let e = build(&config).expect_err("no runtime");
        assert!(e.to_string().contains("tokio runtime"), "{e}");
    }
}
