//! DNS with time-to-live: the port SPF caching needs.
//!
//! viaspf's [`Lookup`] returns records without their TTL, so a cache of SPF
//! *results* could not know how long a result stays true. [`TtlLookup`] is
//! the same narrow interface with the TTL of each answer. Any `TtlLookup` can
//! serve as a viaspf `Lookup` through [`TtlAsLookup`] (TTLs dropped), and
//! [`RecordingLookup`] remembers the smallest TTL one SPF evaluation saw.

use async_trait::async_trait;
use std::{
    fmt::Debug,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Mutex,
    time::Duration,
};
use viaspf::lookup::{Lookup, LookupError, LookupResult, Name};

/// Records with the time they may be kept.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Answer<T> {
    /// The records.
    pub records: T,
    /// The smallest TTL of the records (for a negative answer: the SOA
    /// minimum, or a resolver default).
    pub ttl: Duration,
}

/// A DNS failure, with the negative TTL for "no such records".
#[derive(Debug)]
pub enum TtlLookupError {
    /// The lookup timed out.
    Timeout,
    /// NXDOMAIN or no records of this type; may be cached for `ttl`.
    NoRecords { ttl: Option<Duration> },
    /// Any other failure (SERVFAIL, I/O, protocol).
    Dns(Box<dyn std::error::Error + Send + Sync>),
}

/// Result of a [`TtlLookup`] query.
pub type TtlResult<T> = Result<Answer<Vec<T>>, TtlLookupError>;

/// viaspf's `Lookup` with TTLs; same semantics otherwise (TXT strings of one
/// record joined without separator, invalid UTF-8 replaced lossily).
#[async_trait]
pub trait TtlLookup: Send + Sync + Debug {
    /// A records.
    async fn lookup_a(&self, name: &Name) -> TtlResult<Ipv4Addr>;
    /// AAAA records.
    async fn lookup_aaaa(&self, name: &Name) -> TtlResult<Ipv6Addr>;
    /// MX exchanges, ordered by preference.
    async fn lookup_mx(&self, name: &Name) -> TtlResult<Name>;
    /// TXT records.
    async fn lookup_txt(&self, name: &Name) -> TtlResult<String>;
    /// PTR names of an address.
    async fn lookup_ptr(&self, ip: IpAddr) -> TtlResult<Name>;
}

/// A shared lookup is a lookup.
#[async_trait]
impl<L: TtlLookup + ?Sized> TtlLookup for std::sync::Arc<L> {
    async fn lookup_a(&self, name: &Name) -> TtlResult<Ipv4Addr> {
        (**self).lookup_a(name).await
    }
    async fn lookup_aaaa(&self, name: &Name) -> TtlResult<Ipv6Addr> {
        (**self).lookup_aaaa(name).await
    }
    async fn lookup_mx(&self, name: &Name) -> TtlResult<Name> {
        (**self).lookup_mx(name).await
    }
    async fn lookup_txt(&self, name: &Name) -> TtlResult<String> {
        (**self).lookup_txt(name).await
    }
    async fn lookup_ptr(&self, ip: IpAddr) -> TtlResult<Name> {
        (**self).lookup_ptr(ip).await
    }
}

fn strip<T>(r: TtlResult<T>) -> LookupResult<Vec<T>> {
    match r {
        Ok(a) => Ok(a.records),
        Err(TtlLookupError::Timeout) => Err(LookupError::Timeout),
        Err(TtlLookupError::NoRecords { .. }) => Err(LookupError::NoRecords),
        Err(TtlLookupError::Dns(e)) => Err(LookupError::Dns(Some(e))),
    }
}

/// Serves a [`TtlLookup`] as a viaspf [`Lookup`], dropping the TTLs.
#[derive(Debug)]
pub struct TtlAsLookup<L>(pub L);

#[async_trait]
impl<L: TtlLookup> Lookup for TtlAsLookup<L> {
    async fn lookup_a<'lookup, 'a>(&'lookup self, name: &'a Name) -> LookupResult<Vec<Ipv4Addr>> {
        strip(self.0.lookup_a(name).await)
    }
    async fn lookup_aaaa<'lookup, 'a>(
        &'lookup self,
        name: &'a Name,
    ) -> LookupResult<Vec<Ipv6Addr>> {
        strip(self.0.lookup_aaaa(name).await)
    }
    async fn lookup_mx<'lookup, 'a>(&'lookup self, name: &'a Name) -> LookupResult<Vec<Name>> {
        strip(self.0.lookup_mx(name).await)
    }
    async fn lookup_txt<'lookup, 'a>(&'lookup self, name: &'a Name) -> LookupResult<Vec<String>> {
        strip(self.0.lookup_txt(name).await)
    }
    async fn lookup_ptr<'lookup>(&'lookup self, ip: IpAddr) -> LookupResult<Vec<Name>> {
        strip(self.0.lookup_ptr(ip).await)
    }
}

/// Wraps a [`TtlLookup`] for one SPF evaluation and remembers the smallest
/// TTL among the answers it used (negative answers included).
#[derive(Debug)]
pub struct RecordingLookup<'a, L: ?Sized> {
    inner: &'a L,
    // A std Mutex: held only to compare two durations, never across await.
    min_ttl: Mutex<Option<Duration>>,
    fallback_negative_ttl: Duration,
}

impl<'a, L: TtlLookup + ?Sized> RecordingLookup<'a, L> {
    /// Records over `inner`; a negative answer without TTL counts as
    /// `fallback_negative_ttl`.
    pub fn new(inner: &'a L, fallback_negative_ttl: Duration) -> Self {
        Self {
            inner,
            min_ttl: Mutex::new(None),
            fallback_negative_ttl,
        }
    }

    /// The smallest TTL seen so far; `None` if no answer was used.
    pub fn min_ttl(&self) -> Option<Duration> {
        *self.min_ttl.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record<T>(&self, r: TtlResult<T>) -> LookupResult<Vec<T>> {
        let ttl = match &r {
            Ok(a) => Some(a.ttl),
            Err(TtlLookupError::NoRecords { ttl }) => {
                Some(ttl.unwrap_or(self.fallback_negative_ttl))
            }
            Err(_) => None,
        };
        if let Some(ttl) = ttl {
            let mut min = self.min_ttl.lock().unwrap_or_else(|e| e.into_inner());
            *min = Some(min.map_or(ttl, |m| m.min(ttl)));
        }
        strip(r)
    }
}

#[async_trait]
impl<L: TtlLookup + ?Sized> Lookup for RecordingLookup<'_, L> {
    async fn lookup_a<'lookup, 'a>(&'lookup self, name: &'a Name) -> LookupResult<Vec<Ipv4Addr>> {
        self.record(self.inner.lookup_a(name).await)
    }
    async fn lookup_aaaa<'lookup, 'a>(
        &'lookup self,
        name: &'a Name,
    ) -> LookupResult<Vec<Ipv6Addr>> {
        self.record(self.inner.lookup_aaaa(name).await)
    }
    async fn lookup_mx<'lookup, 'a>(&'lookup self, name: &'a Name) -> LookupResult<Vec<Name>> {
        self.record(self.inner.lookup_mx(name).await)
    }
    async fn lookup_txt<'lookup, 'a>(&'lookup self, name: &'a Name) -> LookupResult<Vec<String>> {
        self.record(self.inner.lookup_txt(name).await)
    }
    async fn lookup_ptr<'lookup>(&'lookup self, ip: IpAddr) -> LookupResult<Vec<Name>> {
        self.record(self.inner.lookup_ptr(ip).await)
    }
}
