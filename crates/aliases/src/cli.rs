//! `nobounce alias ...`: the commands, their arguments and their output.
//!
//! The binary only hands [`AliasArgs`] to [`run`] and prints its error
//! (exit 1); everything else is here, so it is tested without a process.
//! Output goes to the writer given (standard output in the binary); the
//! new alias of `alias new` is always the last line, for scripts.

use crate::open_store;
use nobounce_config::{AliasBackend, Config, ConfigErrors};
use nobounce_core::{
    alias::{
        address_key, check_mailbox, domain_of, Alias, AliasError, AliasStore, Created, ListFilter,
        Update,
    },
    clock::rfc3339_utc,
};
use nobounce_store_redis::redact;
use serde_json::json;
use std::{
    fmt::{self, Display, Formatter},
    io::{self, Write},
    path::PathBuf,
    time::SystemTime,
};

/// How many new addresses `alias new` tries when the one it made exists
/// already (with 5 random characters, a second try is already unlikely).
const CREATE_ATTEMPTS: usize = 10;

/// `nobounce alias`: per-correspondent aliases (docs/aliases.md).
#[derive(Debug, clap::Args)]
pub struct AliasArgs {
    /// Configuration file (TOML), the one the daemon runs with: its
    /// [aliases] section says where the aliases are.
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: AliasCommand,
}

/// The `alias` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AliasCommand {
    /// Make a new, unguessable alias for CORRESPONDENT, leading to a
    /// mailbox; print it (the last line of the output).
    New(NewAlias),
    /// List the aliases in use (with --retired: the retired ones).
    List {
        /// List the retired aliases instead.
        #[arg(long)]
        retired: bool,
        /// List every alias.
        #[arg(long, conflicts_with = "retired")]
        all: bool,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Show everything known about one alias.
    Show {
        /// The alias address.
        alias: String,
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Retire an alias that went bad: mail to it is refused at RCPT TO
    /// (550 5.1.1) from now on.
    Retire {
        /// The alias address.
        alias: String,
        /// Why (kept with the alias, shown by `show`).
        #[arg(long, value_name = "TEXT", default_value = "")]
        reason: String,
    },
    /// Put a retired alias back in use.
    Restore {
        /// The alias address.
        alias: String,
    },
    /// Refuse (on) or only mark (off) mail to an alias from senders
    /// outside the correspondent's domains.
    RejectForeign {
        /// The alias address.
        alias: String,
        /// on or off.
        #[arg(value_enum)]
        setting: OnOff,
    },
    /// Print every alias, retired ones included, as a Postfix map
    /// (`alias mailbox` lines) for postmap and virtual_alias_maps.
    Export {
        /// Postfix map format (the only one).
        #[arg(long, required = true)]
        postmap: bool,
    },
}

/// `on` or `off`.
#[derive(Clone, Copy, Debug, Eq, PartialEq, clap::ValueEnum)]
pub enum OnOff {
    /// Refuse.
    On,
    /// Only mark.
    Off,
}

/// Why an `alias` command failed; the binary prints it and exits 1.
#[derive(Debug)]
pub enum CliError {
    /// The configuration file cannot be read or is invalid.
    Config(ConfigErrors),
    /// The command cannot be done as asked (unknown alias, a domain that is
    /// no alias domain, no mailbox, ...); the text says what.
    Usage(String),
    /// The alias store failed (Redis down, the SQLite file unreadable).
    Store {
        /// Which store: `sqlite PATH` or `redis URL`.
        store: String,
        /// What failed.
        error: AliasError,
    },
    /// The output could not be written.
    Output(io::Error),
}

impl Display for CliError {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => write!(f, "{}", e.one_line()),
            Self::Usage(why) => f.write_str(why),
            Self::Store { store, error } => write!(f, "the alias store ({store}) failed: {error}"),
            Self::Output(e) => write!(f, "cannot write the output: {e}"),
        }
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config(e) => Some(e),
            Self::Usage(_) => None,
            Self::Store { error, .. } => Some(error),
            Self::Output(e) => Some(e),
        }
    }
}

impl From<io::Error> for CliError {
    fn from(e: io::Error) -> Self {
        Self::Output(e)
    }
}

fn usage(why: impl Into<String>) -> CliError {
    CliError::Usage(why.into())
}

/// Runs one `alias` command, writing its output to `out`.
///
/// ```no_run
/// use clap::Parser;
/// use nobounce_aliases::cli::{run, AliasArgs};
///
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     alias: AliasArgs,
/// }
///
/// # async fn demo() -> Result<(), nobounce_aliases::cli::CliError> {
/// let cli = Cli::parse_from(["nobounce", "--config", "/etc/nobounce/nobounce.toml", "new", "shop.example"]);
/// let mut out = Vec::new();
/// run(cli.alias, &mut out).await?;
/// let alias = String::from_utf8_lossy(&out).lines().last().unwrap_or("").to_owned();
/// # Ok(()) }
/// ```
pub async fn run(args: AliasArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let config = match &args.config {
        Some(path) => Config::from_file(path).map_err(CliError::Config)?,
        None => Config::default(),
    };
    let creates = matches!(args.command, AliasCommand::New(_));
    if creates && !config.aliases.is_enabled() {
        return Err(usage(
            "no alias domains: set [aliases] domains in the configuration file (--config FILE)",
        ));
    }
    let store_name = describe_store(&config);
    if config.aliases.store == AliasBackend::Sqlite && !creates && !config.aliases.path.exists() {
        return Err(usage(format!(
            "no alias database at {} yet (`nobounce alias new` creates it)",
            config.aliases.path.display()
        )));
    }
    let in_store = |error: AliasError| CliError::Store {
        store: store_name.clone(),
        error,
    };
    let store = open_store(&config).await.map_err(in_store)?;
    let store = store.as_ref();
    match args.command {
        AliasCommand::New(request) => {
            let alias = create(store, &config, request, SystemTime::now(), |b| {
                getrandom::fill(b).map_err(|e| usage(format!("no random numbers: {e}")))
            })
            .await
            .map_err(|e| match e {
                CliError::Store { error, .. } => in_store(error),
                other => other,
            })?;
            writeln!(out, "{}", alias.address)?;
        }
        AliasCommand::List { retired, all, json } => {
            let filter = match (retired, all) {
                (_, true) => ListFilter::All,
                (true, false) => ListFilter::Retired,
                (false, false) => ListFilter::Active,
            };
            let aliases = store.list(filter).await.map_err(in_store)?;
            if json {
                let list: Vec<_> = aliases.iter().map(to_json).collect();
                writeln!(out, "{}", serde_json::Value::Array(list))?;
            } else {
                out.write_all(list_text(&aliases).as_bytes())?;
            }
        }
        AliasCommand::Show { alias, json } => {
            let a = store
                .get(&alias)
                .await
                .map_err(in_store)?
                .ok_or_else(|| unknown(&alias))?;
            if json {
                writeln!(out, "{}", to_json(&a))?;
            } else {
                out.write_all(show_text(&a).as_bytes())?;
            }
        }
        AliasCommand::Retire { alias, reason } => {
            check_text("--reason", &reason)?;
            match store
                .retire(&alias, &reason, SystemTime::now())
                .await
                .map_err(in_store)?
            {
                Update::Changed(a) => writeln!(out, "retired {}", a.address)?,
                Update::Unchanged(a) => {
                    writeln!(out, "{} was retired already, {}", a.address, retirement(&a))?
                }
                Update::NotFound => return Err(unknown(&alias)),
            }
        }
        AliasCommand::Restore { alias } => match store.restore(&alias).await.map_err(in_store)? {
            Update::Changed(a) => writeln!(out, "restored {}", a.address)?,
            Update::Unchanged(a) => writeln!(out, "{} is not retired", a.address)?,
            Update::NotFound => return Err(unknown(&alias)),
        },
        AliasCommand::RejectForeign { alias, setting } => {
            let on = setting == OnOff::On;
            let a = match store
                .set_reject_foreign(&alias, on)
                .await
                .map_err(in_store)?
            {
                Update::Changed(a) | Update::Unchanged(a) => a,
                Update::NotFound => return Err(unknown(&alias)),
            };
            let what = if on { "refused" } else { "marked" };
            if a.correspondent_domains.is_empty() {
                writeln!(
                    out,
                    "{}: mail from foreign senders will be {what}, but the alias knows no correspondent domain, so no sender is foreign",
                    a.address
                )?;
            } else {
                writeln!(
                    out,
                    "{}: mail from senders outside {} is {what}",
                    a.address,
                    a.correspondent_domains.join(", ")
                )?;
            }
        }
        AliasCommand::Export { postmap: _ } => {
            let aliases = store.list(ListFilter::All).await.map_err(in_store)?;
            out.write_all(postmap(&aliases).as_bytes())?;
        }
    }
    out.flush()?;
    Ok(())
}

/// `sqlite PATH` or `redis URL` (without a password), for messages.
fn describe_store(config: &Config) -> String {
    match config.aliases.store {
        AliasBackend::Sqlite => format!("sqlite {}", config.aliases.path.display()),
        AliasBackend::Redis => format!("redis {}", redact(&config.store.redis.url)),
    }
}

fn unknown(alias: &str) -> CliError {
    usage(format!("no alias {}", address_key(alias)))
}

/// What `alias new` was asked for (its arguments).
#[derive(Clone, Debug, Default, Eq, PartialEq, clap::Args)]
pub struct NewAlias {
    /// Whom the alias is for: a shop's domain (shop.example), an
    /// address, or a name. A domain or an address also gives the
    /// correspondent's domain for leak detection.
    pub correspondent: String,
    /// The mailbox mail to the alias goes to (default: [aliases]
    /// default_mailbox).
    #[arg(long, value_name = "ADDR")]
    pub mailbox: Option<String>,
    /// The alias domain (one of [aliases] domains; default: the first).
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// A note for yourself.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub note: String,
    /// The domains the correspondent sends from (repeat for several);
    /// default: the domain of CORRESPONDENT when it is one.
    #[arg(long = "correspondent-domain", value_name = "DOMAIN")]
    pub correspondent_domains: Vec<String>,
    /// Refuse mail to the alias from other sender domains (550 5.7.1)
    /// instead of only marking it.
    #[arg(long)]
    pub reject_foreign: bool,
}

/// Checks `request` against `config`'s `[aliases]`, makes an address with
/// random bytes from `fill`, and stores the alias (another address when it
/// exists already).
///
/// ```
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use nobounce_aliases::{cli::{create, NewAlias}, SqliteAliasStore};
/// use nobounce_config::Config;
/// use std::time::SystemTime;
///
/// let dir = tempfile::tempdir()?;
/// let config = Config::from_toml_str("[aliases]\ndomains = [\"alias.example.org\"]\n")?;
/// let store = SqliteAliasStore::open(&dir.path().join("a.db"))?;
/// let request = NewAlias {
///     correspondent: "shop.example".into(),
///     mailbox: Some("me@example.org".into()),
///     ..NewAlias::default()
/// };
/// let alias = create(&store, &config, request, SystemTime::now(), |b| {
///     b.copy_from_slice(&[10, 31, 16, 26, 12]);
///     Ok(())
/// })
/// .await?;
/// assert_eq!(alias.address, "shop-example.k7q2m@alias.example.org");
/// assert_eq!(alias.correspondent_domains, ["shop.example"]);
/// # Ok(()) }
/// ```
pub async fn create(
    store: &dyn AliasStore,
    config: &Config,
    request: NewAlias,
    now: SystemTime,
    mut fill: impl FnMut(&mut [u8]) -> Result<(), CliError>,
) -> Result<Alias, CliError> {
    let section = &config.aliases;
    let domain = match &request.domain {
        None => section
            .domains
            .first()
            .cloned()
            .ok_or_else(|| usage("no alias domains: set [aliases] domains"))?,
        Some(d) => {
            let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
            if !section.domains.contains(&d) {
                return Err(usage(format!(
                    "{d:?} is not an alias domain (aliases.domains: {})",
                    section.domains.join(", ")
                )));
            }
            d
        }
    };
    let mailbox = match request
        .mailbox
        .as_deref()
        .or(section.default_mailbox.as_deref())
    {
        Some(m) => {
            check_mailbox(m, &section.domains).map_err(|e| usage(format!("--mailbox: {e}")))?
        }
        None => {
            return Err(usage(
                "no mailbox: give --mailbox ADDR, or set [aliases] default_mailbox",
            ))
        }
    };
    let correspondent = request.correspondent.trim().to_owned();
    if correspondent.is_empty() {
        return Err(usage("the correspondent must not be empty"));
    }
    check_text("the correspondent", &correspondent)?;
    check_text("--note", &request.note)?;
    let correspondent_domains = if request.correspondent_domains.is_empty() {
        domain_of_correspondent(&correspondent)
            .into_iter()
            .collect()
    } else {
        let mut out = Vec::new();
        for d in &request.correspondent_domains {
            let d = as_domain(d)
                .ok_or_else(|| usage(format!("--correspondent-domain: {d:?} is not a domain")))?;
            if !out.contains(&d) {
                out.push(d);
            }
        }
        out
    };
    for _ in 0..CREATE_ATTEMPTS {
        let address = section
            .format
            .generate(&correspondent, &domain, &mut fill)?;
        let mut alias = Alias::new(&address, &correspondent, &mailbox, now);
        alias.correspondent_domains = correspondent_domains.clone();
        alias.note = request.note.clone();
        alias.reject_foreign = request.reject_foreign;
        match store.create(&alias).await {
            Ok(Created::New) => {
                // What the store keeps (times to the millisecond).
                return match store.get(&alias.address).await {
                    Ok(Some(stored)) => Ok(stored),
                    Ok(None) => Ok(alias),
                    Err(error) => Err(CliError::Store {
                        store: String::new(),
                        error,
                    }),
                };
            }
            Ok(Created::Exists) => continue,
            Err(error) => {
                return Err(CliError::Store {
                    store: String::new(),
                    error,
                })
            }
        }
    }
    Err(usage(format!(
        "{CREATE_ATTEMPTS} new addresses in a row existed already: raise [aliases] random_length"
    )))
}

/// Refuses control characters (they would break the list and the map).
fn check_text(what: &str, text: &str) -> Result<(), CliError> {
    if text.chars().any(char::is_control) {
        return Err(usage(format!(
            "{what} must be one line without control characters"
        )));
    }
    Ok(())
}

/// `text` as a domain name (lower case, no trailing dot), if it is one.
fn as_domain(text: &str) -> Option<String> {
    let d = text.trim().trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = d.split('.').collect();
    let ok = labels.len() >= 2
        && d.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    ok.then_some(d)
}

/// The correspondent's domain, when the correspondent is written as a
/// domain (`shop.example`) or an address (`news@shop.example`).
fn domain_of_correspondent(correspondent: &str) -> Option<String> {
    match domain_of(correspondent) {
        Some(d) => as_domain(d),
        None => as_domain(correspondent),
    }
}

fn retirement(a: &Alias) -> String {
    match &a.retired {
        Some((at, reason)) if reason.is_empty() => format!("on {}", rfc3339_utc(*at)),
        Some((at, reason)) => format!("on {}: {reason}", rfc3339_utc(*at)),
        None => "no".into(),
    }
}

/// One line per alias: address, mailbox, correspondent, creation, and the
/// retirement if any; tab-separated.
///
/// ```
/// use nobounce_aliases::cli::list_text;
/// use nobounce_core::alias::Alias;
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let a = Alias::new("x.abcde@alias.example.org", "x", "me@example.org", UNIX_EPOCH + Duration::from_secs(86400));
/// assert_eq!(list_text(&[a]), "x.abcde@alias.example.org\tme@example.org\tx\tcreated 1970-01-02T00:00:00Z\n");
/// ```
pub fn list_text(aliases: &[Alias]) -> String {
    let mut out = String::new();
    for a in aliases {
        out.push_str(&format!(
            "{}\t{}\t{}\tcreated {}",
            a.address,
            a.mailbox,
            a.correspondent,
            rfc3339_utc(a.created)
        ));
        if a.is_retired() {
            out.push_str(&format!("\tretired {}", retirement(a)));
        }
        out.push('\n');
    }
    out
}

/// Everything about one alias, a `name: value` line each.
///
/// ```
/// use nobounce_aliases::cli::show_text;
/// use nobounce_core::alias::Alias;
/// use std::time::UNIX_EPOCH;
///
/// let a = Alias::new("x.abcde@alias.example.org", "x", "me@example.org", UNIX_EPOCH);
/// assert!(show_text(&a).contains("status:         active\n"));
/// ```
pub fn show_text(a: &Alias) -> String {
    let status = match &a.retired {
        None => "active".to_owned(),
        Some(_) => format!("retired {}", retirement(a)),
    };
    format!(
        "alias:          {}\n\
         correspondent:  {}\n\
         domains:        {}\n\
         mailbox:        {}\n\
         note:           {}\n\
         created:        {}\n\
         status:         {status}\n\
         reject_foreign: {}\n",
        a.address,
        a.correspondent,
        a.correspondent_domains.join(" "),
        a.mailbox,
        a.note,
        rfc3339_utc(a.created),
        if a.reject_foreign { "yes" } else { "no" },
    )
}

/// An alias as JSON: `address`, `correspondent`, `correspondent_domains`,
/// `mailbox`, `note`, `created` (RFC 3339), `retired` (`null` or
/// `{"at", "reason"}`), `reject_foreign`.
///
/// ```
/// use nobounce_aliases::cli::to_json;
/// use nobounce_core::alias::Alias;
/// use std::time::UNIX_EPOCH;
///
/// let a = Alias::new("x.abcde@alias.example.org", "x", "me@example.org", UNIX_EPOCH);
/// assert_eq!(to_json(&a)["created"], "1970-01-01T00:00:00Z");
/// assert!(to_json(&a)["retired"].is_null());
/// ```
pub fn to_json(a: &Alias) -> serde_json::Value {
    json!({
        "address": a.address,
        "correspondent": a.correspondent,
        "correspondent_domains": a.correspondent_domains,
        "mailbox": a.mailbox,
        "note": a.note,
        "created": rfc3339_utc(a.created),
        "retired": a.retired.as_ref().map(|(at, reason)| json!({
            "at": rfc3339_utc(*at),
            "reason": reason,
        })),
        "reject_foreign": a.reject_foreign,
    })
}

/// Every alias as a Postfix map: `alias mailbox` lines, retired ones too
/// (they must pass `reject_unlisted_recipient`, so that nobounce refuses
/// them with 550 5.1.1 and says why).
///
/// ```
/// use nobounce_aliases::cli::postmap;
/// use nobounce_core::alias::Alias;
/// use std::time::UNIX_EPOCH;
///
/// let a = Alias::new("x.abcde@alias.example.org", "x", "me@example.org", UNIX_EPOCH);
/// assert!(postmap(&[a]).ends_with("\nx.abcde@alias.example.org me@example.org\n"));
/// ```
pub fn postmap(aliases: &[Alias]) -> String {
    let mut out = String::from(
        "# nobounce aliases, written by `nobounce alias export --postmap`; retired\n\
         # aliases are listed too: nobounce refuses them at RCPT TO.\n",
    );
    for a in aliases {
        out.push_str(&format!("{} {}\n", a.address, a.mailbox));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correspondents_give_their_domain_when_they_have_one() {
        assert_eq!(
            domain_of_correspondent("Shop.Example"),
            Some("shop.example".into())
        );
        assert_eq!(
            domain_of_correspondent("news@mail.shop.example."),
            Some("mail.shop.example".into())
        );
        for none in ["Bob's Garage", "localhost", "a..b", "-a.b", "x y.z"] {
            assert_eq!(domain_of_correspondent(none), None, "{none}");
        }
    }
}
