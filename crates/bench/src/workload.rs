//! What is sent: deterministic, seeded envelope data per connection and per
//! transaction.
//!
//! Each transaction `i` (and each connection `c`) gets its own random stream
//! derived from the seed and its index, so transaction 17 carries the same
//! sender whatever the concurrency and scheduling were.

use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr};

/// The data a load run sends; see the fields for the defaults.
#[derive(Clone, Debug, Serialize)]
pub struct Workload {
    /// Seed of all random draws. Default 1.
    pub seed: u64,
    /// Number of sender domains `d{k}.bench.test`, `k` in `1..=domains`.
    /// Default 1000.
    pub domains: u32,
    /// Zipf exponent of the sender domain draw: domain `k` is drawn with
    /// weight `1 / k^zipf` (0 = uniform). Default 1.0.
    pub zipf: f64,
    /// Number of distinct client IP addresses (documentation/benchmark
    /// ranges, see [`client_ip`]). Default 100.
    pub client_ips: u32,
    /// HELO name. Default `client.bench.test`.
    pub helo: String,
    /// MTA host name sent as the `j` macro. Default `mx.bench.test`.
    pub mta_hostname: String,
    /// Send Postfix-like macros (`j`, `{client_addr}`, `i`, ...). Default false.
    pub macros: bool,
    /// Recipients per message. Default 1.
    pub recipients: u32,
    /// Recipients are `user{u}@{rcpt_domain}` with `u` in `0..rcpt_users`.
    /// Default 100.
    pub rcpt_users: u32,
    /// Recipient domain. Default `rcpt.bench.test`.
    pub rcpt_domain: String,
    /// Headers per message, as Postfix passes them: names and lengths of a
    /// real message (see [`header`]); a small body goes with them. `0`:
    /// no headers, no body. Default 12 (a Postfix message usually carries
    /// 10 to 20).
    pub headers: usize,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            seed: 1,
            domains: 1000,
            zipf: 1.0,
            client_ips: 100,
            helo: "client.bench.test".into(),
            mta_hostname: "mx.bench.test".into(),
            macros: false,
            recipients: 1,
            rcpt_users: 100,
            rcpt_domain: "rcpt.bench.test".into(),
            headers: 12,
        }
    }
}

/// The `n`-th header of a message (0-based) from `sender` with queue id
/// `queue_id`: the headers of a real message as Postfix passes them to a
/// milter, in their usual order and with their usual lengths (trace
/// headers and a DKIM signature are long). Past the 20 kinds, more
/// `Received` headers come (a message that went through many hops).
pub fn header(n: usize, sender: &str, queue_id: &str) -> (&'static str, String) {
    let received = |hop: usize| {
        format!(
            "from mail{hop}.d.bench.test (mail{hop}.d.bench.test [198.51.100.{}]) by mx.bench.test (Postfix) with ESMTPS id {queue_id} for <user@rcpt.bench.test>; Sun, 29 Nov 2026 11:{:02}:{:02} +0000 (UTC)",
            hop % 250 + 1,
            hop % 60,
            (hop * 7) % 60
        )
    };
    match n {
        0 => ("Received", received(0)),
        1 => ("Received", received(1)),
        2 => ("DKIM-Signature", format!("v=1; a=rsa-sha256; c=relaxed/relaxed; d=d.bench.test; s=s2026; t=1795780800; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; h=From:To:Subject:Date:Message-ID; b={}", "kB3nJ9xQ2zT8vL0mR5sW7yE1uP4cA6dF".repeat(8))),
        3 => ("From", format!("Bench Sender <{sender}>")),
        4 => ("To", "Bench Recipient <user@rcpt.bench.test>".into()),
        5 => ("Subject", format!("Benchmark message {queue_id}")),
        6 => ("Date", "Sun, 29 Nov 2026 11:09:09 +0000".into()),
        7 => ("Message-ID", format!("<{queue_id}.bench@d.bench.test>")),
        8 => ("MIME-Version", "1.0".into()),
        9 => ("Content-Type", "text/plain; charset=utf-8; format=flowed".into()),
        10 => ("Content-Transfer-Encoding", "8bit".into()),
        11 => ("Authentication-Results", "mx.upstream.test; dkim=pass header.d=d.bench.test; spf=pass smtp.mailfrom=d.bench.test".into()),
        12 => ("Reply-To", format!("<{sender}>")),
        13 => ("List-Unsubscribe", "<mailto:unsubscribe@d.bench.test?subject=unsubscribe>, <https://d.bench.test/u/1234567890abcdef>".into()),
        14 => ("List-Id", "Bench list <bench.d.bench.test>".into()),
        15 => ("X-Mailer", "nobounce-bench".into()),
        16 => ("Precedence", "bulk".into()),
        17 => ("Feedback-ID", "1234:5678:bench:d.bench.test".into()),
        18 => ("X-Spam-Status", "No, score=-0.1 required=5.0 tests=DKIM_SIGNED,DKIM_VALID".into()),
        19 => ("Received-SPF", "pass (mx.upstream.test: domain of d.bench.test designates 198.51.100.1 as permitted sender)".into()),
        hop => ("Received", received(hop)),
    }
}

/// SplitMix64: tiny, fast, and stable across releases of any crate, which
/// keeps runs with the same seed comparable over time.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`); the modulo bias is irrelevant here.
    pub(crate) fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % u64::from(n.max(1))) as u32
    }
}

/// Zipf distribution over ranks `1..=n` by inverse CDF lookup.
#[derive(Clone, Debug)]
pub(crate) struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub(crate) fn new(n: u32, s: f64) -> Self {
        let mut acc = 0.0;
        let cdf = (1..=n.max(1))
            .map(|k| {
                acc += 1.0 / f64::from(k).powf(s);
                acc
            })
            .collect();
        Self { cdf }
    }

    /// A rank in `1..=n`.
    pub(crate) fn sample(&self, rng: &mut SplitMix64) -> u32 {
        let total = *self.cdf.last().expect("at least one rank");
        let x = rng.next_f64() * total;
        let i = self
            .cdf
            .partition_point(|&c| c <= x)
            .min(self.cdf.len() - 1);
        u32::try_from(i + 1).expect("rank fits, n is a u32")
    }
}

/// Number of addresses [`client_ip`] can produce.
pub const MAX_CLIENT_IPS: u32 = 3 * 254 + 131_070;

/// The `i`-th client address: first the hosts of TEST-NET-1/2/3
/// (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, RFC 5737), then the
/// benchmarking range 198.18.0.0/15 (RFC 2544). These are only data inside
/// the milter protocol; nothing is ever sent to them.
pub fn client_ip(i: u32) -> IpAddr {
    let i = i % MAX_CLIENT_IPS;
    if i < 3 * 254 {
        let net = [[192, 0, 2], [198, 51, 100], [203, 0, 113]][(i / 254) as usize];
        let host = (i % 254 + 1) as u8;
        Ipv4Addr::new(net[0], net[1], net[2], host).into()
    } else {
        let j = i - 3 * 254 + 1; // 1..=131070, skips .0.0 and the last address
        Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + j).into()
    }
}

/// The per-connection data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConnPlan {
    pub(crate) client_ip: IpAddr,
    pub(crate) client_port: u16,
}

/// The per-transaction data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TxnPlan {
    pub(crate) queue_id: String,
    pub(crate) sender: String,
    pub(crate) recipients: Vec<String>,
}

/// Precomputed sampler for a [`Workload`].
#[derive(Clone, Debug)]
pub(crate) struct Generator {
    workload: Workload,
    zipf: Zipf,
}

const CONN_STREAM: u64 = 0xC0FF_EE00_0000_0000;

fn stream_seed(seed: u64, index: u64) -> u64 {
    // Decorrelate neighbouring indices before SplitMix64 takes over.
    SplitMix64::new(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}

impl Generator {
    pub(crate) fn new(workload: Workload) -> Self {
        let zipf = Zipf::new(workload.domains, workload.zipf);
        Self { workload, zipf }
    }

    pub(crate) fn workload(&self) -> &Workload {
        &self.workload
    }

    pub(crate) fn connection(&self, index: u64) -> ConnPlan {
        let mut rng = SplitMix64::new(stream_seed(self.workload.seed ^ CONN_STREAM, index));
        ConnPlan {
            client_ip: client_ip(rng.below(self.workload.client_ips)),
            client_port: 1024 + rng.below(64_000) as u16,
        }
    }

    pub(crate) fn transaction(&self, index: u64) -> TxnPlan {
        let w = &self.workload;
        let mut rng = SplitMix64::new(stream_seed(w.seed, index));
        let k = self.zipf.sample(&mut rng);
        let users = w.rcpt_users.max(1);
        let first = rng.below(users);
        let recipients = (0..w.recipients)
            .map(|j| format!("user{}@{}", (first + j) % users, w.rcpt_domain))
            .collect();
        TxnPlan {
            // Postfix-like hexadecimal queue id, unique within a run.
            queue_id: format!("{:010X}", index + 1),
            sender: format!("sender{k}@d{k}.bench.test"),
            recipients,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_transaction_whatever_the_order() {
        let g = Generator::new(Workload::default());
        let a: Vec<_> = (0..50).map(|i| g.transaction(i)).collect();
        let b: Vec<_> = (0..50).rev().map(|i| g.transaction(i)).collect();
        assert!(a.iter().eq(b.iter().rev()));
        let other = Generator::new(Workload {
            seed: 2,
            ..Workload::default()
        });
        assert!((0..50).any(|i| other.transaction(i).sender != a[i as usize].sender));
    }

    #[test]
    fn zipf_prefers_low_ranks_and_stays_in_range() {
        let z = Zipf::new(100, 1.2);
        let mut rng = SplitMix64::new(7);
        let mut counts = [0u32; 101];
        for _ in 0..20_000 {
            let k = z.sample(&mut rng);
            assert!((1..=100).contains(&k));
            counts[k as usize] += 1;
        }
        assert!(counts[1] > counts[2] && counts[2] > counts[10] && counts[10] > counts[100]);
    }

    #[test]
    fn zipf_zero_is_roughly_uniform() {
        let z = Zipf::new(4, 0.0);
        let mut rng = SplitMix64::new(3);
        let mut counts = [0u32; 5];
        for _ in 0..40_000 {
            counts[z.sample(&mut rng) as usize] += 1;
        }
        for c in &counts[1..] {
            assert!((9_000..11_000).contains(c), "{counts:?}");
        }
    }

    #[test]
    fn client_ips_are_documentation_or_benchmark_addresses() {
        let nets: [(Ipv4Addr, u32); 4] = [
            (Ipv4Addr::new(192, 0, 2, 0), 24),
            (Ipv4Addr::new(198, 51, 100, 0), 24),
            (Ipv4Addr::new(203, 0, 113, 0), 24),
            (Ipv4Addr::new(198, 18, 0, 0), 15),
        ];
        let mut seen = std::collections::HashSet::new();
        for i in (0..2000).chain(MAX_CLIENT_IPS - 5..MAX_CLIENT_IPS + 5) {
            let IpAddr::V4(ip) = client_ip(i) else {
                panic!("v4 expected")
            };
            let inside = nets.iter().any(|(net, len)| {
                let mask = u32::MAX << (32 - len);
                u32::from(ip) & mask == u32::from(*net)
            });
            assert!(inside, "{ip} outside the reserved ranges");
            if i < MAX_CLIENT_IPS {
                assert!(seen.insert(ip), "{ip} repeated");
            }
        }
    }

    #[test]
    fn recipients_are_distinct_within_a_message() {
        let g = Generator::new(Workload {
            recipients: 5,
            rcpt_users: 5,
            ..Workload::default()
        });
        let t = g.transaction(3);
        let set: std::collections::HashSet<_> = t.recipients.iter().collect();
        assert_eq!(set.len(), 5);
    }
}
