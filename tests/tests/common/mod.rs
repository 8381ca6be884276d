//! What several end-to-end tests share: nobounce with its policy service,
//! a test DNS server and recipients in a map file and Maildir++ quotas.

use nobounce_test_support::dns::{TestDnsServer, TestRecord};
use nobounce_test_support::{bind_loopback, free_port, Background};
use std::{fs, net::SocketAddr};

/// Users of `example.test`: `ann@` (room), `full@` (19 000 of 20 000 bytes
/// used), `small@` (1 000 of 4 000). Any other address is unknown.
pub const USERS: &[&str] = &[
    "ann@example.test",
    "full@example.test",
    "small@example.test",
];

/// nobounce serving the policy protocol (and a milter socket nobody needs
/// to use); SPF: `pass.test` passes 127.0.0.0/8, `fail.test` fails all.
pub struct PolicySite {
    /// Where the policy service listens.
    pub policy: SocketAddr,
    _dns: TestDnsServer,
    _dir: tempfile::TempDir,
    _nobounce: Background<Result<(), nobounce_server::RunError>>,
}

impl PolicySite {
    pub async fn start() -> Self {
        let dns = TestDnsServer::start([
            TestRecord::txt("pass.test", "v=spf1 ip4:127.0.0.0/8 -all", 300),
            TestRecord::txt("fail.test", "v=spf1 -all", 300),
        ])
        .await
        .expect("DNS server");
        let dir = tempfile::tempdir().expect("tempdir");
        let map = dir.path().join("recipients");
        fs::write(&map, USERS.join("\n")).unwrap();
        for (user, maildirsize) in [("full", "20000S\n19000 10\n"), ("small", "4000S\n1000 1\n")] {
            let d = dir.path().join(user);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("maildirsize"), maildirsize).unwrap();
        }
        let policy = SocketAddr::from(([127, 0, 0, 1], free_port().expect("free port")));
        let config = nobounce_config::Config::from_toml_str(&format!(
            "[policy]\nsocket = \"inet:{policy}\"\n\
             [dns]\nnameservers = [\"{dns}\"]\ntimeout = \"1s\"\nattempts = 1\n\
             [spf]\ntrusted_networks = []\n\
             [recipients]\ndefault_chain = [\"users\", \"quota\"]\n\
             [recipients.backends.users]\ntype = \"map_file\"\npath = \"{map}\"\n\
             [recipients.backends.quota]\ntype = \"maildir\"\npath_template = \"{root}/{{local}}\"\n",
            dns = dns.addr(),
            map = map.display(),
            root = dir.path().display(),
        ))
        .expect("config");
        let listener = bind_loopback().await.expect("bind");
        let nobounce = Background::spawn(|stop| nobounce_server::run_tcp(listener, config, stop));
        nobounce
            .wait_listening(policy)
            .await
            .expect("the policy service listens");
        Self {
            policy,
            _dns: dns,
            _dir: dir,
            _nobounce: nobounce,
        }
    }
}
