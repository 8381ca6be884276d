//! Per-correspondent aliases as a port (issue 11).
//!
//! Each correspondent gets an address of its own, for example
//! `shop-example.k7q2m@alias.example.org`, that leads to one real mailbox.
//! When an alias goes bad (the correspondent sold it, or leaked it), it is
//! *retired*: nobounce then refuses mail to it during the SMTP dialog, and
//! the record tells who leaked it. Retired aliases stay in the store, so
//! that they keep being refused (an unknown address would be refused too,
//! but a retired one tells the log why) and the leak stays on record.
//!
//! - [`Alias`]: one alias and what is known about it.
//! - [`AliasStore`]: the port (an SQLite file for one host, Redis for
//!   several MX hosts; crate `nobounce-aliases`), with [`AliasError`] for
//!   a store that failed.
//! - [`AliasFormat`]: making a new, unguessable alias from a correspondent's
//!   name and random bytes the caller brings; [`slug`] is its name part.
//! - [`address_key`]: the one normalisation of an alias address.
//!
//! # Addresses and case
//!
//! An alias is stored, looked up and compared in the form [`address_key`]
//! gives: surrounding space and angle brackets and a trailing dot of the
//! domain removed, and **the whole address, local part included, in ASCII
//! lower case**. RFC 5321 lets a local part be case-sensitive, but aliases
//! are generated in lower case, correspondents' systems sometimes change
//! the case of what they were given, and two aliases that differ only in
//! case would be a trap; Postfix folds the keys of its lookup tables to
//! lower case as well. So `Shop-Example.K7Q2M@Alias.Example.ORG` is the
//! alias `shop-example.k7q2m@alias.example.org`. Characters outside ASCII
//! are kept as they are.
//!
//! # Rules every store keeps
//!
//! - Keys are [`address_key`]s: every operation normalises the address it
//!   is given, and [`Alias::address`] of what it returns is normalised.
//! - [`AliasStore::create`] is atomic: of two hosts creating the same
//!   address at once, one gets [`Created::New`], the other
//!   [`Created::Exists`], and the first one's record stays.
//! - Updates are atomic read-modify-writes of one record.
//! - Times are kept to the millisecond.
//! - `Err` means the store failed (unreachable, timed out, corrupt), never
//!   "no such alias": that is `Ok(None)` or [`Update::NotFound`]. At SMTP
//!   time a store error becomes a temporary failure, never a rejection.

use crate::error::{BackendError, Port};
use async_trait::async_trait;
use std::{fmt::Debug, time::SystemTime};

/// The alias store port, for [`BackendError`]: names it in messages.
///
/// ```
/// use nobounce_core::{alias::Aliases, error::Port};
///
/// assert_eq!(<Aliases as Port>::WHAT, "alias store");
/// ```
#[derive(Debug)]
pub enum Aliases {}

impl Port for Aliases {
    const WHAT: &'static str = "alias store";
}

/// The alias store failed (unreachable, timed out, corrupt, unreadable
/// file). Never a reason to refuse mail for good: at SMTP time it becomes a
/// temporary failure.
///
/// ```
/// use nobounce_core::alias::AliasError;
///
/// let e = AliasError::new("sqlite /var/lib/nobounce/aliases.db: disk I/O error");
/// assert!(format!("{e:?}").contains("alias store"));
/// ```
pub type AliasError = BackendError<Aliases>;

/// One alias: where it leads, whom it was given to, and whether it is
/// still in use.
///
/// ```
/// use nobounce_core::alias::Alias;
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let created = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
/// let mut a = Alias::new("Shop.K7Q2M@Alias.Example.org", "shop.example", "me@example.org", created);
/// assert_eq!(a.address, "shop.k7q2m@alias.example.org");
/// a.correspondent_domains = vec!["shop.example".into()];
/// assert!(!a.is_retired());
/// assert!(a.is_foreign_sender("spam.example"));
/// assert!(!a.is_foreign_sender("mail.shop.example"));
/// ```
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Alias {
    /// The alias address, as [`address_key`] writes it.
    pub address: String,
    /// Whom it was given to, as the user named them (`shop.example`,
    /// `Bob's Garage`).
    pub correspondent: String,
    /// The domains the correspondent sends from (lower case, no trailing
    /// dot). Mail to the alias from any other sender domain (or one of its
    /// subdomains) is a sign of a leak. Empty: unknown, no leak detection.
    pub correspondent_domains: Vec<String>,
    /// The real mailbox mail to the alias is delivered to.
    pub mailbox: String,
    /// Free text for the user; may be empty.
    pub note: String,
    /// When the alias was made (to the millisecond).
    pub created: SystemTime,
    /// When and why it was retired; `None` while it is in use. Mail to a
    /// retired alias is refused at RCPT with `550 5.1.1`.
    pub retired: Option<(SystemTime, String)>,
    /// Refuse mail from senders outside [`Alias::correspondent_domains`]
    /// (`550 5.7.1`) instead of only marking it.
    pub reject_foreign: bool,
}

impl Alias {
    /// An active alias of `address` (normalised with [`address_key`]) for
    /// `correspondent`, leading to `mailbox`, made at `created`; no
    /// correspondent domains, no note, foreign senders only marked.
    ///
    /// ```
    /// use nobounce_core::alias::Alias;
    /// use std::time::SystemTime;
    ///
    /// let a = Alias::new("x.abcde@alias.example.org", "x", "me@example.org", SystemTime::now());
    /// assert_eq!(a.retired, None);
    /// assert!(!a.reject_foreign);
    /// ```
    pub fn new(address: &str, correspondent: &str, mailbox: &str, created: SystemTime) -> Self {
        Self {
            address: address_key(address),
            correspondent: correspondent.to_owned(),
            correspondent_domains: Vec::new(),
            mailbox: mailbox.to_owned(),
            note: String::new(),
            created,
            retired: None,
            reject_foreign: false,
        }
    }

    /// Whether the alias has been retired.
    ///
    /// ```
    /// use nobounce_core::alias::Alias;
    /// use std::time::SystemTime;
    ///
    /// let mut a = Alias::new("x.abcde@alias.example.org", "x", "me@example.org", SystemTime::now());
    /// a.retired = Some((SystemTime::now(), "sold to spammers".into()));
    /// assert!(a.is_retired());
    /// ```
    pub fn is_retired(&self) -> bool {
        self.retired.is_some()
    }

    /// Whether mail from `sender_domain` is foreign to this alias: the
    /// alias knows its correspondent's domains, and `sender_domain` is
    /// neither one of them nor a subdomain of one (compared without case
    /// and trailing dot). Always `false` without correspondent domains.
    ///
    /// ```
    /// use nobounce_core::alias::Alias;
    /// use std::time::SystemTime;
    ///
    /// let mut a = Alias::new("x.abcde@alias.example.org", "x", "me@example.org", SystemTime::now());
    /// assert!(!a.is_foreign_sender("anywhere.example"), "no domains known");
    /// a.correspondent_domains = vec!["shop.example".into()];
    /// assert!(!a.is_foreign_sender("Shop.Example."));
    /// assert!(!a.is_foreign_sender("news.shop.example"));
    /// assert!(a.is_foreign_sender("evilshop.example"));
    /// ```
    pub fn is_foreign_sender(&self, sender_domain: &str) -> bool {
        if self.correspondent_domains.is_empty() {
            return false;
        }
        let sender = domain_key(sender_domain);
        !self.correspondent_domains.iter().any(|d| {
            let d = domain_key(d);
            sender == d
                || sender
                    .strip_suffix(d.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        })
    }
}

/// The one normalisation of alias addresses (see the module docs): trimmed,
/// without angle brackets, without a trailing dot of the domain, in ASCII
/// lower case throughout.
///
/// ```
/// use nobounce_core::alias::address_key;
///
/// assert_eq!(address_key(" <Shop.K7Q2M@Alias.Example.ORG.> "), "shop.k7q2m@alias.example.org");
/// assert_eq!(address_key("no-at-sign"), "no-at-sign");
/// ```
pub fn address_key(address: &str) -> String {
    let a = address.trim();
    let a = a
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(a);
    let a = a.strip_suffix('.').unwrap_or(a);
    a.to_ascii_lowercase()
}

/// The domain of `address` (after its last `@`), if it has a local part and
/// a domain.
///
/// ```
/// use nobounce_core::alias::domain_of;
///
/// assert_eq!(domain_of("a.b@alias.example.org"), Some("alias.example.org"));
/// assert_eq!(domain_of("@alias.example.org"), None);
/// assert_eq!(domain_of("postmaster"), None);
/// ```
pub fn domain_of(address: &str) -> Option<&str> {
    let (local, domain) = address.rsplit_once('@')?;
    (!local.is_empty() && !domain.is_empty()).then_some(domain)
}

/// Whether `address` is in one of `domains` (exactly, not a subdomain;
/// compared without case and trailing dot): the addresses an alias store
/// answers for.
///
/// ```
/// use nobounce_core::alias::in_domains;
///
/// let domains = vec!["alias.example.org".to_string()];
/// assert!(in_domains("Anything@ALIAS.example.org", &domains));
/// assert!(!in_domains("a@sub.alias.example.org", &domains));
/// assert!(!in_domains("alias.example.org", &domains));
/// ```
pub fn in_domains(address: &str, domains: &[String]) -> bool {
    let key = address_key(address);
    domain_of(&key).is_some_and(|d| domains.iter().any(|x| domain_key(x) == d))
}

/// Checks a mailbox aliases may lead to: `local@domain` without spaces,
/// control characters or angle brackets, and not in one of the alias
/// `domains` (an alias leading to an alias is a loop waiting to happen).
/// Returns it trimmed; the error says what is wrong.
///
/// ```
/// use nobounce_core::alias::check_mailbox;
///
/// let domains = vec!["alias.example.org".to_string()];
/// assert_eq!(check_mailbox(" me@example.org ", &domains), Ok("me@example.org".to_string()));
/// assert!(check_mailbox("me", &domains).is_err());
/// assert!(check_mailbox("a b@example.org", &domains).is_err());
/// assert!(check_mailbox("x.abcde@Alias.Example.org", &domains).is_err());
/// ```
pub fn check_mailbox(mailbox: &str, domains: &[String]) -> Result<String, String> {
    let m = mailbox.trim();
    if domain_of(m).is_none()
        || m.chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ','))
    {
        return Err(format!(
            "{mailbox:?} is not a mailbox address (local@domain)"
        ));
    }
    if in_domains(m, domains) {
        return Err(format!(
            "{m} is in an alias domain: an alias must lead to a real mailbox"
        ));
    }
    Ok(m.to_owned())
}

/// A domain in lower case without a trailing dot.
fn domain_key(domain: &str) -> String {
    let d = domain.trim();
    d.strip_suffix('.').unwrap_or(d).to_ascii_lowercase()
}

/// Which aliases [`AliasStore::list`] returns.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub enum ListFilter {
    /// Those in use (the default).
    ///
    /// ```
    /// assert_eq!(nobounce_core::alias::ListFilter::default(), nobounce_core::alias::ListFilter::Active);
    /// ```
    #[default]
    Active,
    /// Those retired.
    Retired,
    /// Every alias.
    All,
}

impl ListFilter {
    /// Whether `alias` passes the filter.
    ///
    /// ```
    /// use nobounce_core::alias::{Alias, ListFilter};
    /// use std::time::SystemTime;
    ///
    /// let a = Alias::new("x.abcde@alias.example.org", "x", "me@example.org", SystemTime::now());
    /// assert!(ListFilter::Active.matches(&a));
    /// assert!(!ListFilter::Retired.matches(&a));
    /// assert!(ListFilter::All.matches(&a));
    /// ```
    pub fn matches(self, alias: &Alias) -> bool {
        match self {
            Self::Active => !alias.is_retired(),
            Self::Retired => alias.is_retired(),
            Self::All => true,
        }
    }
}

/// What [`AliasStore::create`] did.
///
/// ```
/// use nobounce_core::alias::Created;
///
/// let outcome = Created::Exists;
/// assert_ne!(outcome, Created::New, "another address must be made");
/// ```
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[must_use]
pub enum Created {
    /// The alias was stored.
    New,
    /// An alias with that address exists already; nothing changed (make
    /// another address).
    Exists,
}

/// What an update ([`AliasStore::retire`], [`AliasStore::restore`],
/// [`AliasStore::set_reject_foreign`]) did.
///
/// ```
/// use nobounce_core::alias::{Alias, Update};
/// use std::time::SystemTime;
///
/// let a = Alias::new("x.abcde@alias.example.org", "x", "me@example.org", SystemTime::now());
/// assert_eq!(Update::Changed(a.clone()).alias(), Some(&a));
/// assert_eq!(Update::NotFound.alias(), None);
/// ```
#[derive(Clone, Debug, Eq, PartialEq)]
#[must_use]
pub enum Update {
    /// The alias was changed; here it is as it is now.
    Changed(Alias),
    /// The alias was as asked already (retiring a retired alias keeps its
    /// first retirement); here it is, unchanged.
    Unchanged(Alias),
    /// There is no such alias.
    NotFound,
}

impl Update {
    /// The alias as it is after the update, if it exists.
    pub fn alias(&self) -> Option<&Alias> {
        match self {
            Self::Changed(a) | Self::Unchanged(a) => Some(a),
            Self::NotFound => None,
        }
    }
}

/// Where aliases live: the port. Implementations: `SqliteAliasStore` and
/// `RedisAliasStore` in crate `nobounce-aliases`; every implementation
/// passes that crate's contract suite (`nobounce_aliases::contract`).
///
/// See the module docs for the rules (normalised keys, atomic updates,
/// `Err` only for failures). Implementations are cheap to share behind an
/// `Arc` and bound their own waits.
///
/// ```
/// use nobounce_core::alias::{Alias, AliasStore, Created, Update};
/// use std::time::SystemTime;
///
/// async fn leak(store: &dyn AliasStore) -> Result<(), nobounce_core::alias::AliasError> {
///     let now = SystemTime::now();
///     let a = Alias::new("shop-example.k7q2m@alias.example.org", "shop.example", "me@example.org", now);
///     assert_eq!(store.create(&a).await?, Created::New);
///     let got = store.get("SHOP-EXAMPLE.K7Q2M@alias.example.org").await?;
///     assert_eq!(got.as_ref(), Some(&a));
///     match store.retire(&a.address, "spam from a list seller", now).await? {
///         Update::Changed(retired) => assert!(retired.is_retired()),
///         other => panic!("{other:?}"),
///     }
///     Ok(())
/// }
/// ```
#[async_trait]
pub trait AliasStore: Send + Sync + Debug {
    /// Stores `alias` under [`address_key`]`(&alias.address)`, unless that
    /// address exists already ([`Created::Exists`], nothing changed).
    async fn create(&self, alias: &Alias) -> Result<Created, AliasError>;

    /// The alias of `address` (any case), active or retired.
    async fn get(&self, address: &str) -> Result<Option<Alias>, AliasError>;

    /// The aliases that pass `filter`, sorted by address.
    async fn list(&self, filter: ListFilter) -> Result<Vec<Alias>, AliasError>;

    /// Retires the alias of `address` at `now` for `reason`. An alias
    /// retired already keeps its first retirement ([`Update::Unchanged`]).
    async fn retire(
        &self,
        address: &str,
        reason: &str,
        now: SystemTime,
    ) -> Result<Update, AliasError>;

    /// Puts a retired alias back in use (its retirement is forgotten).
    async fn restore(&self, address: &str) -> Result<Update, AliasError>;

    /// Sets whether mail from foreign senders to the alias is refused
    /// (`true`) or only marked (`false`).
    async fn set_reject_foreign(&self, address: &str, reject: bool) -> Result<Update, AliasError>;
}

/// Characters of the random part: RFC 4648 base32, lower case (no `0`,
/// `1`, `8`, `9`, so nothing reads like `o`, `l`, `b` or `g`).
///
/// ```
/// assert_eq!(nobounce_core::alias::RANDOM_ALPHABET.len(), 32);
/// ```
pub const RANDOM_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The default alias format: `shop-example.k7q2m`.
///
/// ```
/// use nobounce_core::alias::{AliasFormat, DEFAULT_FORMAT};
///
/// assert_eq!(AliasFormat::default().template(), DEFAULT_FORMAT);
/// ```
pub const DEFAULT_FORMAT: &str = "{correspondent}.{random}";

/// The default length of the random part: 5 characters, 25 bits. With
/// the correspondent's name in front, and dictionary-attack bans on
/// clients that try unknown addresses, that is far more than anyone can
/// guess; longer if the format leaves out `{correspondent}`.
///
/// ```
/// use nobounce_core::alias::{AliasFormat, DEFAULT_RANDOM_LENGTH};
///
/// assert_eq!(AliasFormat::default().random_length(), DEFAULT_RANDOM_LENGTH);
/// ```
pub const DEFAULT_RANDOM_LENGTH: usize = 5;

/// Bounds of the random part's length.
///
/// ```
/// use nobounce_core::alias::{AliasFormat, RANDOM_LENGTH_RANGE};
///
/// assert!(AliasFormat::new("{random}", *RANDOM_LENGTH_RANGE.start()).is_ok());
/// assert!(AliasFormat::new("{random}", RANDOM_LENGTH_RANGE.end() + 1).is_err());
/// ```
pub const RANDOM_LENGTH_RANGE: std::ops::RangeInclusive<usize> = 5..=32;

/// The longest [`slug`]: leaves room in the 64 characters of a local part.
///
/// ```
/// use nobounce_core::alias::{slug, MAX_SLUG_LENGTH};
///
/// assert_eq!(slug(&"z".repeat(200)).len(), MAX_SLUG_LENGTH);
/// ```
pub const MAX_SLUG_LENGTH: usize = 24;

/// How new aliases' local parts look: a template with the placeholders
/// `{correspondent}` (the [`slug`] of the correspondent's name, optional)
/// and `{random}` (required), and the length of the random part.
///
/// ```
/// use nobounce_core::alias::AliasFormat;
///
/// let f = AliasFormat::new("{correspondent}.{random}", 5).unwrap();
/// // Random bytes come from the caller (the OS's generator in nobounce);
/// // fixed ones here, to show the result.
/// let alias = f
///     .generate("Shop.Example", "alias.example.org", |buf| {
///         buf.copy_from_slice(&[10, 31, 16, 26, 12]);
///         Ok::<(), ()>(())
///     })
///     .unwrap();
/// assert_eq!(alias, "shop-example.k7q2m@alias.example.org");
///
/// assert!(AliasFormat::new("{correspondent}", 5).is_err(), "no {{random}}");
/// assert!(AliasFormat::new("{random}..x", 5).is_err(), "not a dot-atom");
/// ```
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct AliasFormat {
    template: String,
    random_length: usize,
}

impl Default for AliasFormat {
    fn default() -> Self {
        Self {
            template: DEFAULT_FORMAT.to_owned(),
            random_length: DEFAULT_RANDOM_LENGTH,
        }
    }
}

impl AliasFormat {
    /// Checks `template` and `random_length`: `{random}` must appear, no
    /// other placeholder than `{correspondent}`, the rest lower-case
    /// letters, digits, `.`, `-` and `_`, the result a dot-atom (no dot at
    /// either end, none doubled) that fits 64 characters with the longest
    /// slug; `random_length` within [`RANDOM_LENGTH_RANGE`]. The error says
    /// what is wrong.
    ///
    /// ```
    /// use nobounce_core::alias::AliasFormat;
    ///
    /// assert!(AliasFormat::new("{random}-{correspondent}", 8).is_ok());
    /// assert!(AliasFormat::new("{random}", 4).is_err());
    /// assert!(AliasFormat::new("{random}+{correspondent}", 5).is_err());
    /// ```
    pub fn new(template: &str, random_length: usize) -> Result<Self, String> {
        if !RANDOM_LENGTH_RANGE.contains(&random_length) {
            return Err(format!(
                "the random part must be {} to {} characters long, not {random_length}",
                RANDOM_LENGTH_RANGE.start(),
                RANDOM_LENGTH_RANGE.end()
            ));
        }
        if !template.contains("{random}") {
            return Err(format!(
                "{template:?} has no {{random}}: an alias must not be guessable"
            ));
        }
        // Substitute the placeholders, then check what remains.
        let filled = template
            .replace("{correspondent}", &"c".repeat(MAX_SLUG_LENGTH))
            .replace("{random}", &"r".repeat(random_length));
        if filled.contains(['{', '}']) {
            return Err(format!(
                "{template:?}: the only placeholders are {{correspondent}} and {{random}}"
            ));
        }
        if let Some(c) = filled.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
        }) {
            return Err(format!(
                "{template:?}: {c:?} is not allowed; use lower-case letters, digits, '.', '-' and '_'"
            ));
        }
        if filled.starts_with('.') || filled.ends_with('.') || filled.contains("..") {
            return Err(format!(
                "{template:?}: a local part must not start or end with '.' nor hold \"..\""
            ));
        }
        if filled.len() > 64 {
            return Err(format!(
                "{template:?}: with a {MAX_SLUG_LENGTH}-character correspondent it is longer than the 64 characters of a local part"
            ));
        }
        Ok(Self {
            template: template.to_owned(),
            random_length,
        })
    }

    /// The template.
    ///
    /// ```
    /// assert_eq!(nobounce_core::alias::AliasFormat::default().template(), "{correspondent}.{random}");
    /// ```
    pub fn template(&self) -> &str {
        &self.template
    }

    /// The length of the random part.
    ///
    /// ```
    /// assert_eq!(nobounce_core::alias::AliasFormat::default().random_length(), 5);
    /// ```
    pub fn random_length(&self) -> usize {
        self.random_length
    }

    /// A new alias address for `correspondent` in `domain`: the template
    /// with the correspondent's [`slug`] and [`AliasFormat::random_length`]
    /// characters of [`RANDOM_ALPHABET`], one per byte `fill` writes (its
    /// low 5 bits: every character equally likely), `@domain` in lower
    /// case. `fill` gets a buffer to fill with random bytes (say
    /// `getrandom::fill`); its error is returned as is.
    ///
    /// ```
    /// use nobounce_core::alias::AliasFormat;
    ///
    /// let f = AliasFormat::new("{random}", 6).unwrap();
    /// let a = f.generate("ignored", "Alias.Example.org.", |b| { b.fill(0); Ok::<(), ()>(()) });
    /// assert_eq!(a, Ok("aaaaaa@alias.example.org".to_string()));
    /// ```
    pub fn generate<E>(
        &self,
        correspondent: &str,
        domain: &str,
        fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<String, E> {
        let mut bytes = vec![0u8; self.random_length];
        fill(&mut bytes)?;
        let random: String = bytes
            .iter()
            .map(|b| char::from(RANDOM_ALPHABET[usize::from(b & 31)]))
            .collect();
        let local = self
            .template
            .replace("{correspondent}", &slug(correspondent))
            .replace("{random}", &random);
        Ok(format!("{local}@{}", domain_key(domain)))
    }
}

/// The correspondent's name as a local-part word: ASCII letters and digits
/// in lower case, every run of anything else one `-`, none at either end,
/// at most [`MAX_SLUG_LENGTH`] characters; `x` when nothing is left.
///
/// ```
/// use nobounce_core::alias::slug;
///
/// assert_eq!(slug("shop.example"), "shop-example");
/// assert_eq!(slug("  Bob's Garage & Sons!"), "bob-s-garage-sons");
/// assert_eq!(slug("news@Shop.Example"), "news-shop-example");
/// assert_eq!(slug("日本"), "x");
/// assert_eq!(slug(&"a".repeat(100)).len(), 24);
/// ```
pub fn slug(correspondent: &str) -> String {
    let mut out = String::new();
    for c in correspondent.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(MAX_SLUG_LENGTH);
    let trimmed = out.trim_end_matches('-');
    if trimmed.is_empty() {
        "x".to_owned()
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue11_example_alias_shape() {
        let f = AliasFormat::default();
        for _ in 0..100 {
            let a = f
                .generate("shop.example", "alias.example.org", |b| {
                    for (i, x) in b.iter_mut().enumerate() {
                        *x = u8::try_from(i * 53 % 256).unwrap();
                    }
                    Ok::<(), ()>(())
                })
                .unwrap();
            let (local, domain) = a.split_once('@').unwrap();
            assert_eq!(domain, "alias.example.org");
            let (name, random) = local.split_once('.').unwrap();
            assert_eq!(name, "shop-example");
            assert_eq!(random.len(), 5);
            assert!(random.bytes().all(|c| RANDOM_ALPHABET.contains(&c)));
        }
    }

    #[test]
    fn every_byte_maps_to_the_alphabet_evenly() {
        let f = AliasFormat::new("{random}", 32).unwrap();
        let a = f
            .generate("", "d", |b| {
                for (i, x) in b.iter_mut().enumerate() {
                    *x = u8::try_from(i).unwrap() + 64;
                }
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!(a, "abcdefghijklmnopqrstuvwxyz234567@d");
    }

    #[test]
    fn fill_errors_pass_through() {
        let f = AliasFormat::default();
        assert_eq!(
            f.generate("x", "d", |_| Err("no entropy")),
            Err("no entropy")
        );
    }

    #[test]
    fn formats_are_checked() {
        for (template, len) in [
            ("{correspondent}.{random}", 5),
            ("{random}", 32),
            ("alias-{random}_{correspondent}", 8),
        ] {
            AliasFormat::new(template, len).unwrap_or_else(|e| panic!("{template}: {e}"));
        }
        for (template, len, why) in [
            ("{random}", 4, "5 to 32"),
            ("{random}", 33, "5 to 32"),
            ("{correspondent}", 5, "no {random}"),
            ("{random}.{other}", 5, "only placeholders"),
            ("{random}.X", 5, "'X' is not allowed"),
            ("{random}+tag", 5, "'+' is not allowed"),
            (".{random}", 5, "must not start"),
            ("{random}.", 5, "must not start or end"),
            ("{correspondent}..{random}", 5, "\"..\""),
            (
                "{correspondent}.{correspondent}.{random}",
                16,
                "64 characters",
            ),
        ] {
            let e = AliasFormat::new(template, len).unwrap_err();
            assert!(e.contains(why), "{template}: {e}");
        }
    }

    #[test]
    fn local_parts_and_domains_fold_case() {
        assert_eq!(address_key("A.B@C.D"), "a.b@c.d");
        let mut a = Alias::new("X@Y", "c", "m@z", SystemTime::UNIX_EPOCH);
        assert_eq!(a.address, "x@y");
        a.correspondent_domains = vec!["Shop.Example.".into()];
        assert!(!a.is_foreign_sender("shop.example"));
        assert!(!a.is_foreign_sender("a.b.SHOP.example"));
        assert!(a.is_foreign_sender("example"));
        assert!(a.is_foreign_sender("xshop.example"));
        assert!(a.is_foreign_sender(""));
    }
}
