//! The `[recipients]` configuration section and [`build`].
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

use crate::{
    cache::StatusCache,
    maildir::{MaildirConfig, MaildirQuota},
    map_file::{MapFileConfig, MapFileDirectory, MapFileError},
    probe::{RcptProbe, RcptProbeConfig},
    quota_status::{QuotaStatus, QuotaStatusConfig},
    router::{Chain, Router},
};
use nobounce_core::{Clock, RecipientDirectory, SystemClock};
use serde::{Deserialize, Serialize};
use std::{
    collections::{BTreeMap, HashMap},
    error::Error,
    fmt::{self, Display, Formatter},
    sync::Arc,
};

/// The `[recipients]` section.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RecipientsConfig {
    /// Named backends, `[recipients.backends.NAME]`, each with a `type`.
    /// Default: none.
    #[serde(default)]
    pub backends: BTreeMap<String, BackendConfig>,
    /// Which chain of backends serves which domains. Default: none.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// The chain for domains no route lists. Default: `[]`, meaning such
    /// recipients are `NotHandled` (the MTA decides).
    #[serde(default)]
    pub default_chain: Vec<String>,
}

/// One `[[recipients.routes]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Domains served (case-insensitive, exact match; list each subdomain).
    /// Required, non-empty.
    pub domains: Vec<String>,
    /// Backend names asked in order (see [`Chain`]). Required, non-empty.
    pub chain: Vec<String>,
}

/// One backend; the `type` key selects the kind.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
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

/// The configuration cannot be turned into a directory.
#[derive(Debug)]
pub enum BuildError {
    /// A map file is missing or bad (with `file:line`).
    MapFile {
        /// The backend name.
        backend: String,
        /// What is wrong.
        error: MapFileError,
    },
    /// An inconsistent or invalid setting.
    Config(String),
}

impl Display for BuildError {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::MapFile { backend, error } => {
                write!(f, "recipients backend {backend:?}: {error}")
            }
            Self::Config(message) => write!(f, "recipients: {message}"),
        }
    }
}

impl Error for BuildError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::MapFile { error, .. } => Some(error),
            Self::Config(_) => None,
        }
    }
}

/// What [`build_with_reload`] returns: the directory, and a handle to
/// reload it (SIGHUP).
#[derive(Debug)]
pub struct Recipients {
    /// The directory to give the engine.
    pub directory: Arc<dyn RecipientDirectory>,
    /// Reloads map files and clears answer caches.
    pub reload: ReloadHandle,
}

/// Reloads every map file and clears every answer cache of one built
/// directory.
#[derive(Debug, Clone, Default)]
pub struct ReloadHandle {
    maps: Vec<(String, Arc<MapFileDirectory>)>,
    caches: Vec<Arc<StatusCache>>,
}

impl ReloadHandle {
    /// Re-reads every map file (a bad one keeps its previous contents and is
    /// reported) and forgets cached answers. Returns the map errors.
    pub async fn reload(&self) -> Vec<BuildError> {
        for cache in &self.caches {
            cache.clear();
        }
        let mut errors = Vec::new();
        for (backend, map) in &self.maps {
            if let Err(error) = map.reload().await {
                errors.push(BuildError::MapFile {
                    backend: backend.clone(),
                    error,
                });
            }
        }
        errors
    }
}

/// Builds the directory described by `config` (see [`build_with_reload`]).
pub fn build(config: &RecipientsConfig) -> Result<Arc<dyn RecipientDirectory>, BuildError> {
    build_with_reload(config).map(|r| r.directory)
}

/// Builds the directory and its reload handle.
///
/// Map files are read now: a missing or bad file is an error. Backends no
/// route uses are still built (and checked) but log a warning. Map files
/// with a `watch_interval` get a watcher task, which needs a tokio runtime:
/// call this from within one.
pub fn build_with_reload(config: &RecipientsConfig) -> Result<Recipients, BuildError> {
    build_with_clock(config, Arc::new(SystemClock))
}

/// [`build_with_reload`] with the clock the answer caches use (tests).
pub fn build_with_clock(
    config: &RecipientsConfig,
    clock: Arc<dyn Clock>,
) -> Result<Recipients, BuildError> {
    let err = |m: String| BuildError::Config(m);
    let mut reload = ReloadHandle::default();
    let mut backends: HashMap<&str, Arc<dyn RecipientDirectory>> = HashMap::new();
    let needs_runtime = config
        .backends
        .values()
        .any(|b| matches!(b, BackendConfig::MapFile(m) if !m.watch_interval.is_zero()));
    if needs_runtime && tokio::runtime::Handle::try_current().is_err() {
        return Err(err(
            "map files with a watch_interval need a tokio runtime to build in".into(),
        ));
    }
    for (name, backend) in &config.backends {
        let invalid = |m: String| err(format!("backend {name:?}: {m}"));
        let directory: Arc<dyn RecipientDirectory> = match backend {
            BackendConfig::MapFile(c) => {
                let map =
                    Arc::new(
                        MapFileDirectory::open(c).map_err(|error| BuildError::MapFile {
                            backend: name.clone(),
                            error,
                        })?,
                    );
                if !c.watch_interval.is_zero() {
                    drop(map.spawn_watcher(c.watch_interval));
                }
                reload.maps.push((name.clone(), Arc::clone(&map)));
                map
            }
            BackendConfig::RcptProbe(c) => {
                let probe =
                    RcptProbe::with_clock(c.clone(), Arc::clone(&clock)).map_err(invalid)?;
                reload.caches.push(probe.cache());
                Arc::new(probe)
            }
            BackendConfig::QuotaStatus(c) => {
                let client =
                    QuotaStatus::with_clock(c.clone(), Arc::clone(&clock)).map_err(invalid)?;
                reload.caches.push(client.cache());
                Arc::new(client)
            }
            BackendConfig::Maildir(c) => Arc::new(MaildirQuota::new(c.clone()).map_err(invalid)?),
        };
        backends.insert(name.as_str(), directory);
    }

    let mut used: HashMap<String, bool> =
        backends.keys().map(|k| ((*k).to_owned(), false)).collect();
    let mut make_chain =
        |names: &[String], what: &str| -> Result<Arc<dyn RecipientDirectory>, BuildError> {
            if names.is_empty() {
                return Err(err(format!("{what}: empty chain")));
            }
            let mut links = Vec::new();
            for name in names {
                let backend = backends
                    .get(name.as_str())
                    .ok_or_else(|| err(format!("{what}: no backend named {name:?}")))?;
                if links.iter().any(|(n, _)| n == name) {
                    return Err(err(format!("{what}: backend {name:?} listed twice")));
                }
                used.insert(name.clone(), true);
                links.push((name.clone(), Arc::clone(backend)));
            }
            Ok(if links.len() == 1 {
                links.remove(0).1
            } else {
                Arc::new(Chain::new(links))
            })
        };

    let mut router = Router::new();
    for (i, route) in config.routes.iter().enumerate() {
        let what = format!("routes[{i}]");
        if route.domains.is_empty() {
            return Err(err(format!("{what}: no domains")));
        }
        let chain = make_chain(&route.chain, &what)?;
        for domain in &route.domains {
            if crate::address::split(&format!("x@{domain}")).is_none() {
                return Err(err(format!("{what}: invalid domain {domain:?}")));
            }
            if !router.route(domain, Arc::clone(&chain)) {
                return Err(err(format!("{what}: domain {domain:?} routed twice")));
            }
        }
    }
    if !config.default_chain.is_empty() {
        router.set_default(make_chain(&config.default_chain, "default_chain")?);
    }
    for (name, used) in used {
        if !used {
            tracing::warn!(
                event = "recipient_backend_unused",
                backend = %name,
                "recipient backend configured but used by no route"
            );
        }
    }
    Ok(Recipients {
        directory: Arc::new(router),
        reload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{query, write_file};
    use nobounce_core::RecipientStatus;
    use std::time::Duration;

    fn parse(text: &str) -> Result<RecipientsConfig, toml::de::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Top {
            recipients: RecipientsConfig,
        }
        toml::from_str::<Top>(text).map(|t| t.recipients)
    }

    #[test]
    fn full_example_parses_with_defaults() {
        let config = parse(
            r#"
            [recipients]
            default_chain = ["lmtp"]

            [[recipients.routes]]
            domains = ["example.org", "example.net"]
            chain = ["users", "quota"]

            [recipients.backends.users]
            type = "map_file"
            path = "/etc/nobounce/recipients"
            recipient_delimiter = "+"

            [recipients.backends.quota]
            type = "maildir"
            path_template = "/var/mail/vhosts/{domain}/{local}/Maildir"

            [recipients.backends.lmtp]
            type = "rcpt_probe"
            address = "unix:/run/dovecot/lmtp"
            timeout = "3s"
            cache = { over_quota_ttl = "10s" }

            [recipients.backends.qs]
            type = "quota_status"
            address = "127.0.0.1:12340"
            "#,
        )
        .expect("valid config");
        assert_eq!(config.backends.len(), 4);
        let BackendConfig::MapFile(users) = &config.backends["users"] else {
            panic!("users is a map file");
        };
        assert_eq!(users.watch_interval, Duration::from_secs(5));
        assert!(!users.case_sensitive_local_part);
        let BackendConfig::RcptProbe(lmtp) = &config.backends["lmtp"] else {
            panic!("lmtp is a probe");
        };
        assert_eq!(lmtp.timeout, Duration::from_secs(3));
        assert_eq!(lmtp.cache.over_quota_ttl, Duration::from_secs(10));
        assert_eq!(lmtp.cache.deliverable_ttl, Duration::from_secs(60));
        // Serialises back to something that parses to the same value.
        let text = toml::to_string(&config).expect("serialises");
        let again: RecipientsConfig = toml::from_str(&text).expect("round trip");
        assert_eq!(again, config);
    }

    #[test]
    fn unknown_fields_and_types_are_refused() {
        for (text, needle) in [
            ("[recipients]\ndefault = []\n", "default"),
            ("[recipients.backends.x]\ntype = \"map_file\"\npath = \"/x\"\nwatch = \"1s\"\n", "watch"),
            ("[recipients.backends.x]\ntype = \"ldap\"\n", "ldap"),
            ("[recipients.backends.x]\ntype = \"rcpt_probe\"\naddress = \"nowhere\"\n", "nowhere"),
            ("[recipients.backends.x]\ntype = \"maildir\"\npath_template = \"/m/{local}\"\nmissing = \"maybe\"\n", "maybe"),
            ("[[recipients.routes]]\ndomains = [\"a.test\"]\nchain = [\"x\"]\nweight = 1\n", "weight"),
            ("[recipients.backends.x]\ntype = \"rcpt_probe\"\naddress = \"127.0.0.1:24\"\ncache = { ttl = \"1s\" }\n", "ttl"),
        ] {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[tokio::test]
    async fn build_checks_references() {
        let tmp = tempfile::tempdir().expect("tempdir");
        write_file(tmp.path(), "map", "alice@example.org\n");
        let base = format!(
            "[recipients.backends.users]\ntype = \"map_file\"\npath = \"{}\"\n",
            tmp.path().join("map").display()
        );
        for (extra, needle) in [
            ("[[recipients.routes]]\ndomains = [\"example.org\"]\nchain = [\"nope\"]\n", "no backend named \"nope\""),
            ("[[recipients.routes]]\ndomains = [\"example.org\"]\nchain = []\n", "empty chain"),
            ("[[recipients.routes]]\ndomains = []\nchain = [\"users\"]\n", "no domains"),
            ("[[recipients.routes]]\ndomains = [\"example.org\"]\nchain = [\"users\", \"users\"]\n", "twice"),
            ("[[recipients.routes]]\ndomains = [\"a.test\", \"A.TEST\"]\nchain = [\"users\"]\n", "routed twice"),
            ("[[recipients.routes]]\ndomains = [\"a b\"]\nchain = [\"users\"]\n", "invalid domain"),
            ("[recipients.backends.m]\ntype = \"maildir\"\npath_template = \"relative/{local}\"\n", "absolute"),
        ] {
            let config = parse(&format!("{base}{extra}")).expect("parses");
            let e = build(&config).expect_err(extra).to_string();
            assert!(e.contains(needle), "{extra}: {e}");
        }
        write_file(tmp.path(), "map", "alice@example.org\nbroken\n");
        let config = parse(&base).expect("parses");
        let e = build(&config).expect_err("bad map").to_string();
        assert!(e.contains("map:2: "), "{e}");
    }

    #[tokio::test]
    async fn built_directory_routes_chains_and_reloads() {
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
        let text = format!(
            r#"
            [recipients]
            [[recipients.routes]]
            domains = ["example.org"]
            chain = ["users", "quota"]

            [recipients.backends.users]
            type = "map_file"
            path = "{map}"
            watch_interval = "0s"

            [recipients.backends.quota]
            type = "maildir"
            path_template = "{root}/mail/{{domain}}/{{local}}/Maildir"
            "#,
            map = root.join("map").display(),
            root = root.display(),
        );
        let config = parse(&text).expect("parses");
        let built = build_with_reload(&config).expect("builds");
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
        assert!(built.reload.reload().await.is_empty());
        let got = dir
            .lookup(&query("carol@example.org", None))
            .await
            .expect("answer");
        assert_eq!(got, Deliverable, "reload picked up carol");
        write_file(root, "map", "bad line here\n");
        let errors = built.reload.reload().await;
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("\"users\""), "{}", errors[0]);
        let got = dir
            .lookup(&query("carol@example.org", None))
            .await
            .expect("answer");
        assert_eq!(got, Deliverable, "bad map kept the previous one");
    }

    #[test]
    fn empty_config_builds_a_directory_that_handles_nothing() {
        let config = parse("[recipients]\n").expect("parses");
        let dir = build(&config).expect("builds without a runtime");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let got = rt
            .block_on(dir.lookup(&query("a@example.org", None)))
            .expect("answer");
        assert_eq!(got, RecipientStatus::NotHandled);
    }

    /// Keeps docs/recipients.md in sync with the configuration model.
    #[test]
    fn docs_examples_parse() {
        let doc = include_str!("../../../docs/recipients.md");
        let blocks = |lang: &str| -> Vec<String> {
            let fence = format!("```{lang}\n");
            doc.split(fence.as_str())
                .skip(1)
                .map(|rest| rest.split("```").next().unwrap_or("").to_owned())
                .collect()
        };
        let toml_blocks = blocks("toml");
        assert!(toml_blocks.len() >= 3, "docs have TOML examples");
        for block in &toml_blocks {
            let config = parse(block).unwrap_or_else(|e| panic!("{e}\nin:\n{block}"));
            for backend in config.backends.values() {
                if let BackendConfig::Maildir(m) = backend {
                    MaildirQuota::new(m.clone()).expect("documented template is valid");
                }
            }
        }
        let map = blocks("text")
            .into_iter()
            .find(|b| b.starts_with("# /etc/nobounce/recipients"))
            .expect("docs show a map file");
        let map = crate::RecipientMap::parse(&map, std::path::Path::new("doc"), Default::default())
            .expect("documented map parses");
        assert_eq!(
            map.lookup("ex-staff@example.org"),
            RecipientStatus::Disabled
        );
        assert_eq!(
            map.lookup("abuse-test@example.net"),
            RecipientStatus::Unknown
        );
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
        let e = build(&config).expect_err("no runtime").to_string();
        assert!(e.contains("tokio runtime"), "{e}");
    }
}
