//! [`HickoryLookup`]: hickory-resolver as a [`TtlLookup`]. (Wrap it in
//! `nobounce_core::dns::TtlAsLookup` to use it as a viaspf `Lookup`.)

use crate::config::{DnsConfig, Error};
use async_trait::async_trait;
use hickory_resolver::{
    config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts},
    lookup::Lookup as HickoryAnswer,
    net::{runtime::TokioRuntimeProvider, DnsError, NetError},
    proto::rr::{Name as HickoryName, RData, RecordType},
    Resolver, TokioResolver,
};
use nobounce_core::dns::{Answer, TtlLookup, TtlLookupError, TtlResult};
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};
use tracing::debug;
use viaspf::lookup::Name;

/// A caching DNS resolver (hickory-resolver 0.26) serving SPF lookups.
///
/// Create one per process with [`HickoryLookup::new`] and clone it for each
/// user: clones are cheap and share one resolver, its connections and its
/// answer cache (see the [crate docs](crate#caching)).
///
/// Answers carry the smallest TTL of the records used (CNAMEs followed on
/// the way included); on a cache hit that TTL is what is left of it.
/// "No such name" (NXDOMAIN) and "no records of this type" (NODATA) are
/// [`TtlLookupError::NoRecords`], with the negative TTL of the answer's SOA
/// record when the server sent one. A query that got no answer in time is
/// [`TtlLookupError::Timeout`]; every other failure (SERVFAIL, REFUSED,
/// network or protocol errors) is [`TtlLookupError::Dns`].
///
/// Can be built anywhere; lookups must run inside a tokio runtime.
#[derive(Clone, Debug)]
pub struct HickoryLookup {
    resolver: TokioResolver,
}

impl HickoryLookup {
    /// Builds the resolver: with `config.nameservers` empty from
    /// `/etc/resolv.conf`, else asking exactly those servers (UDP, and TCP
    /// for truncated answers). `/etc/hosts` is never consulted: SPF is about
    /// what the domain publishes in the DNS.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a zero `timeout` or `attempts`;
    /// [`Error::Resolver`] when the system configuration cannot be read.
    pub fn new(config: &DnsConfig) -> Result<Self, Error> {
        if config.timeout.is_zero() {
            return Err(Error::InvalidConfig("timeout must be more than zero"));
        }
        if config.attempts == 0 {
            return Err(Error::InvalidConfig("attempts must be at least 1"));
        }

        let mut builder = if config.nameservers.is_empty() {
            debug!("DNS: using the name servers of /etc/resolv.conf");
            TokioResolver::builder_tokio().map_err(|e| Error::Resolver(e.into()))?
        } else {
            let servers = config
                .nameservers
                .iter()
                .map(|addr| {
                    let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                        .into_iter()
                        .map(|mut c| {
                            c.port = addr.port();
                            c
                        })
                        .collect();
                    NameServerConfig::new(addr.ip(), true, connections)
                })
                .collect();
            // No domain, no search list: every name is taken as it is.
            let resolver_config = ResolverConfig::from_parts(None, Vec::new(), servers);
            Resolver::builder_with_config(resolver_config, TokioRuntimeProvider::default())
                .with_options(ResolverOpts::default())
        };

        let opts = builder.options_mut();
        opts.timeout = config.timeout;
        // hickory counts the tries after the first one.
        opts.attempts = config.attempts - 1;
        opts.cache_size = config.cache_size;
        opts.use_hosts_file = ResolveHosts::Never;

        let resolver = builder.build().map_err(|e| Error::Resolver(e.into()))?;
        Ok(Self { resolver })
    }

    /// Forgets all cached answers.
    pub fn clear_cache(&self) {
        self.resolver.clear_cache();
    }

    async fn query(
        &self,
        name: HickoryName,
        rtype: RecordType,
    ) -> Result<HickoryAnswer, TtlLookupError> {
        match self.resolver.lookup(name.clone(), rtype).await {
            Ok(answer) => Ok(answer),
            Err(e) => {
                let error = to_ttl_error(e);
                debug!(%name, %rtype, error = ?error, "DNS lookup failed");
                Err(error)
            }
        }
    }

    async fn lookup_name(
        &self,
        name: &Name,
        rtype: RecordType,
    ) -> Result<HickoryAnswer, TtlLookupError> {
        self.query(to_hickory_name(name)?, rtype).await
    }
}

/// A viaspf name (always fully qualified, with the trailing dot) as a
/// hickory name, marked fully qualified so that no search list applies.
fn to_hickory_name(name: &Name) -> Result<HickoryName, TtlLookupError> {
    let mut n =
        HickoryName::from_ascii(name.as_str()).map_err(|e| TtlLookupError::Dns(Box::new(e)))?;
    n.set_fqdn(true);
    Ok(n)
}

fn to_ttl_error(e: NetError) -> TtlLookupError {
    match e {
        NetError::Timeout => TtlLookupError::Timeout,
        NetError::Dns(DnsError::NoRecordsFound(no_records)) => TtlLookupError::NoRecords {
            ttl: no_records
                .negative_ttl
                .map(|s| Duration::from_secs(s.into())),
        },
        other => TtlLookupError::Dns(Box::new(other)),
    }
}

/// The records of type `rtype` in `answer`, converted by `f`, with the
/// smallest TTL of them and of the CNAMEs that led to them.
fn collect<T>(
    answer: &HickoryAnswer,
    rtype: RecordType,
    mut f: impl FnMut(&RData) -> Option<T>,
) -> TtlResult<T> {
    let mut ttl = u32::MAX;
    let mut found = false;
    let mut records = Vec::new();
    for record in answer.answers() {
        let kind = record.record_type();
        if kind == rtype || kind == RecordType::CNAME {
            ttl = ttl.min(record.ttl);
        }
        if kind == rtype {
            found = true;
            records.extend(f(&record.data));
        }
    }
    if found {
        Ok(Answer {
            records,
            ttl: Duration::from_secs(ttl.into()),
        })
    } else {
        // hickory reports an empty answer as an error; be safe all the same.
        Err(TtlLookupError::NoRecords { ttl: None })
    }
}

/// A name from an answer as a viaspf name; `None` (and skipped) for names
/// viaspf cannot represent, such as the root of a null MX (RFC 7505).
fn to_spf_name(name: &HickoryName) -> Option<Name> {
    let ascii = name.to_ascii();
    match Name::new(&ascii) {
        Ok(n) => Some(n),
        Err(_) => {
            debug!(name = %ascii, "DNS: skipping a name SPF cannot use");
            None
        }
    }
}

#[async_trait]
impl TtlLookup for HickoryLookup {
    async fn lookup_a(&self, name: &Name) -> TtlResult<Ipv4Addr> {
        let answer = self.lookup_name(name, RecordType::A).await?;
        collect(&answer, RecordType::A, |d| match d {
            RData::A(a) => Some(a.0),
            _ => None,
        })
    }

    async fn lookup_aaaa(&self, name: &Name) -> TtlResult<Ipv6Addr> {
        let answer = self.lookup_name(name, RecordType::AAAA).await?;
        collect(&answer, RecordType::AAAA, |d| match d {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        })
    }

    async fn lookup_mx(&self, name: &Name) -> TtlResult<Name> {
        let answer = self.lookup_name(name, RecordType::MX).await?;
        let mut mx = collect(&answer, RecordType::MX, |d| match d {
            RData::MX(mx) => Some((mx.preference, mx.exchange.clone())),
            _ => None,
        })?;
        // Stable: equal preferences keep the order the server gave.
        mx.records.sort_by_key(|(preference, _)| *preference);
        Ok(Answer {
            records: mx
                .records
                .iter()
                .filter_map(|(_, exchange)| to_spf_name(exchange))
                .collect(),
            ttl: mx.ttl,
        })
    }

    async fn lookup_txt(&self, name: &Name) -> TtlResult<String> {
        let answer = self.lookup_name(name, RecordType::TXT).await?;
        collect(&answer, RecordType::TXT, |d| match d {
            RData::TXT(txt) => {
                // The character-strings of one record form one text (RFC
                // 7208 §3.3); join the bytes first so that a UTF-8 sequence
                // split between two strings survives.
                let bytes: Vec<u8> = txt
                    .txt_data
                    .iter()
                    .flat_map(|s| s.iter().copied())
                    .collect();
                Some(String::from_utf8_lossy(&bytes).into_owned())
            }
            _ => None,
        })
    }

    async fn lookup_ptr(&self, ip: IpAddr) -> TtlResult<Name> {
        let answer = self.query(HickoryName::from(ip), RecordType::PTR).await?;
        collect(&answer, RecordType::PTR, |d| match d {
            RData::PTR(ptr) => to_spf_name(&ptr.0),
            _ => None,
        })
    }
}
