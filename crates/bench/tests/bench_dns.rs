//! bench-dns serves the generator's sender domains, directly and through
//! its delaying forwarder, and counts the queries. No timing is asserted.

use nobounce_bench::{
    dns::{sender_domain, BenchDns, BenchDnsConfig, BENCH_SPF},
    workload::{client_ip, MAX_CLIENT_IPS},
};
use nobounce_core::dns::{TtlLookup, TtlLookupError};
use nobounce_dns::{DnsConfig, HickoryLookup};
use std::{net::IpAddr, time::Duration};
use viaspf::lookup::Name;

fn resolver(dns: &BenchDns) -> HickoryLookup {
    HickoryLookup::new(&DnsConfig {
        nameservers: vec![dns.addr()],
        timeout: Duration::from_secs(5),
        attempts: 1,
        // No resolver cache: every lookup reaches the server.
        cache_size: 0,
    })
    .expect("resolver")
}

fn name(s: &str) -> Name {
    Name::new(s).expect("valid name")
}

async fn check(config: BenchDnsConfig) {
    let dns = BenchDns::start(&config).await.expect("bench-dns starts");
    assert!(dns.addr().ip().is_loopback());
    let lookup = resolver(&dns);

    for k in [1, config.domains] {
        let answer = lookup
            .lookup_txt(&name(&sender_domain(k)))
            .await
            .expect("TXT of a bench domain");
        assert_eq!(answer.records, vec![BENCH_SPF.to_owned()]);
        assert_eq!(answer.ttl, Duration::from_secs(u64::from(config.ttl)));
    }
    let helo = lookup
        .lookup_txt(&name("client.bench.test"))
        .await
        .expect("TXT of the HELO name");
    assert_eq!(helo.records, vec![BENCH_SPF.to_owned()]);
    let outside = lookup
        .lookup_txt(&name(&sender_domain(config.domains + 1)))
        .await;
    assert!(
        matches!(outside, Err(TtlLookupError::NoRecords { .. })),
        "{outside:?}"
    );
    assert_eq!(dns.queries(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_every_sender_domain_directly() {
    check(BenchDnsConfig {
        domains: 20,
        ttl: 120,
        ..BenchDnsConfig::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_through_the_delaying_forwarder() {
    check(BenchDnsConfig {
        domains: 5,
        ttl: 60,
        delay: Duration::from_millis(2),
        ..BenchDnsConfig::default()
    })
    .await;
}

#[tokio::test]
async fn refuses_a_non_loopback_address() {
    let config = BenchDnsConfig {
        listen: "192.0.2.1:0".parse().expect("address"),
        ..BenchDnsConfig::default()
    };
    assert!(BenchDns::start(&config).await.is_err());
}

/// The record authorises every address the generator can draw, and no
/// other: checked against the record's own ranges.
#[test]
fn spf_record_covers_every_generated_client() {
    let nets: Vec<(u32, u32)> = BENCH_SPF
        .split_whitespace()
        .filter_map(|t| t.strip_prefix("ip4:"))
        .map(|cidr| {
            let (ip, len) = cidr.split_once('/').expect("prefix length");
            let ip: std::net::Ipv4Addr = ip.parse().expect("IPv4");
            (u32::from(ip), len.parse().expect("length"))
        })
        .collect();
    assert_eq!(nets.len(), 4);
    for i in (0..MAX_CLIENT_IPS).step_by(97).chain([MAX_CLIENT_IPS - 1]) {
        let IpAddr::V4(ip) = client_ip(i) else {
            panic!("IPv4 expected")
        };
        let ip = u32::from(ip);
        assert!(
            nets.iter()
                .any(|&(net, len)| ip & (u32::MAX << (32 - len)) == net),
            "client {i} outside the SPF record"
        );
    }
}
