//! DNS for nobounce: [hickory-resolver] behind nobounce-core's
//! [`TtlLookup`](nobounce_core::dns::TtlLookup) port.
//!
//! # Layout
//!
//! - [`DnsConfig`]: which name servers to ask, per-query timeout, tries,
//!   size of the answer cache.
//! - [`HickoryLookup`]: one shared, caching resolver. It implements
//!   [`TtlLookup`](nobounce_core::dns::TtlLookup) (answers with their TTL, for
//!   caching SPF results); `nobounce_core::dns::TtlAsLookup` serves it as
//!   viaspf's `Lookup` (the same answers without TTL).
//!
//! # Caching
//!
//! hickory's resolver keeps every answer, positive or negative, for its TTL
//! (negative answers: the SOA's negative TTL, RFC 2308), up to
//! [`DnsConfig::cache_size`] entries. Create **one** [`HickoryLookup`] per
//! process and clone it (clones share the cache and the connections): then
//! SPF evaluations of the same domain on different SMTP connections share
//! their lookups, and TTLs reported on a cache hit count down from the time
//! the answer was received.
//!
//! [hickory-resolver]: https://docs.rs/hickory-resolver/0.26

mod config;
mod lookup;

pub use config::{DnsConfig, Error};
pub use lookup::HickoryLookup;
