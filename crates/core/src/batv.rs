//! BATV (Bounce Address Tag Validation), `prvs` scheme: mail from our
//! domains leaves with its envelope sender signed,
//! `prvs=KDDDSSSSSS=local@domain`, and a bounce that comes back is accepted
//! only for a signed, valid, unexpired address. Bounces to addresses we
//! never used as senders (backscatter from someone forging us) are refused
//! during the SMTP dialog.
//!
//! - `K`: the key number (0–9);
//! - `DDD`: the day the tag expires, (days since the epoch + lifetime)
//!   mod 1000;
//! - `SSSSSS`: the first 3 bytes, in hex, of HMAC-SHA1(key, `K` ‖ `DDD` ‖
//!   `local@domain`).
//!
//! Unlike some implementations, the hex is read in either case, compared in
//! constant time, and the expiry is checked modulo 1000, so that a tag of
//! the previous 1000-day cycle does not pass. The address is hashed in
//! lower case: a bounce may come back with the case of its domain changed.

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha1::Sha1;
use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

type HmacSha1 = Hmac<Sha1>;

/// What to do with a bounce to one of our domains whose recipient is not
/// signed.
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unsigned {
    /// Accept and log (mail sent before BATV was turned on still gets its
    /// bounces). The default.
    #[default]
    Accept,
    /// Refuse with `550 5.7.1`.
    Reject,
}

/// `[batv]` without the keys (which come from a file).
#[derive(Clone, Debug, Eq, PartialEq, Serialize)]
pub struct BatvConfig {
    /// Sign and verify. Default off.
    pub enabled: bool,
    /// Our domains: their senders are signed, bounces to them verified.
    pub domains: Vec<String>,
    /// How long a signed address stays valid, in days (1–999). Default 7.
    pub lifetime_days: u16,
    /// Bounces to an unsigned address of ours.
    pub unsigned: Unsigned,
}

impl Default for BatvConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            domains: Vec::new(),
            lifetime_days: 7,
            unsigned: Unsigned::Accept,
        }
    }
}

impl BatvConfig {
    /// Whether `domain` is one of ours.
    pub fn is_ours(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.');
        self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }
}

/// The signing keys: several key numbers, so that keys can be rotated. The
/// newest signs; every key listed verifies (the grace period of a rotated
/// key lasts as long as it stays in the file).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct BatvKeys {
    /// (key number, secret), in file order; the last one signs.
    keys: Vec<(u8, Vec<u8>)>,
}

impl fmt::Debug for BatvKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets.
        let numbers: Vec<u8> = self.keys.iter().map(|(k, _)| *k).collect();
        f.debug_struct("BatvKeys")
            .field("numbers", &numbers)
            .finish()
    }
}

/// A key file that cannot be used, with the line at fault.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct KeyFileError {
    /// 1-based line number (0: the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

impl std::error::Error for KeyFileError {}

/// The shortest secret accepted: 16 bytes.
pub const MIN_SECRET: usize = 16;

impl BatvKeys {
    /// Reads a key file: one key per line, `K SECRET`, where `K` is the key
    /// number (0–9) and `SECRET` at least 16 characters without spaces;
    /// `#` comments and empty lines are ignored. The last key signs.
    ///
    /// ```
    /// use nobounce_core::batv::BatvKeys;
    /// let keys = BatvKeys::parse("# rotated 2026-11-01\n1 0123456789abcdef0123\n2 fedcba9876543210fedc\n").unwrap();
    /// assert_eq!(keys.signing_key(), Some(2));
    /// ```
    pub fn parse(text: &str) -> Result<Self, KeyFileError> {
        let mut keys: Vec<(u8, Vec<u8>)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let err = |message: String| KeyFileError {
                line: i + 1,
                message,
            };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(number), Some(secret), None) = (words.next(), words.next(), words.next())
            else {
                return Err(err(
                    "expected \"K SECRET\" (a key number 0-9, a space, the secret)".into(),
                ));
            };
            let number = match number.as_bytes() {
                [d @ b'0'..=b'9'] => d - b'0',
                _ => return Err(err(format!("{number:?} is not a key number 0-9"))),
            };
            if secret.len() < MIN_SECRET {
                return Err(err(format!(
                    "the secret of key {number} is shorter than {MIN_SECRET} characters"
                )));
            }
            if keys.iter().any(|(k, _)| *k == number) {
                return Err(err(format!("key number {number} is listed twice")));
            }
            keys.push((number, secret.as_bytes().to_vec()));
        }
        if keys.is_empty() {
            return Err(KeyFileError {
                line: 0,
                message: "no key in the file".into(),
            });
        }
        Ok(Self { keys })
    }

    /// The number of the key that signs (the last one).
    pub fn signing_key(&self) -> Option<u8> {
        self.keys.last().map(|(k, _)| *k)
    }

    fn secret(&self, number: u8) -> Option<&[u8]> {
        self.keys
            .iter()
            .find(|(k, _)| *k == number)
            .map(|(_, s)| s.as_slice())
    }
}

/// Days since the epoch of `now`.
pub fn day_number(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
        / 86_400
}

fn mac(secret: &[u8], key: u8, day: u16, address: &str) -> HmacSha1 {
    let mut mac =
        <HmacSha1 as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(&[b'0' + key]);
    mac.update(format!("{day:03}").as_bytes());
    mac.update(address.to_ascii_lowercase().as_bytes());
    mac
}

/// Signs `local@domain` (a bare address) with the signing key, for mail
/// sent `now`, valid `lifetime_days`: `prvs=KDDDSSSSSS=local@domain`.
/// `None` without keys.
pub fn sign(keys: &BatvKeys, address: &str, lifetime_days: u16, now: SystemTime) -> Option<String> {
    let key = keys.signing_key()?;
    let secret = keys.secret(key)?;
    let day =
        u16::try_from((day_number(now) + u64::from(lifetime_days)) % 1000).expect("below 1000");
    let hash = mac(secret, key, day, address).finalize().into_bytes();
    Some(format!(
        "prvs={key}{day:03}{:02x}{:02x}{:02x}={address}",
        hash[0], hash[1], hash[2]
    ))
}

/// A tagged address, taken apart.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Tagged {
    /// The key number.
    pub key: u8,
    /// The expiry day (mod 1000).
    pub day: u16,
    /// The 3 signature bytes.
    pub signature: [u8; 3],
    /// The address that was signed, `local@domain`.
    pub address: String,
}

/// Reads a BATV tag `KDDDSSSSSS` (hex in either case).
fn parse_tag(tag: &str) -> Option<(u8, u16, [u8; 3])> {
    let b = tag.as_bytes();
    if b.len() != 10 || !b[..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let key = b[0] - b'0';
    let day = tag[1..4].parse().ok()?;
    let mut signature = [0u8; 3];
    for (i, out) in signature.iter_mut().enumerate() {
        *out = u8::from_str_radix(tag.get(4 + 2 * i..6 + 2 * i)?, 16).ok()?;
    }
    Some((key, day, signature))
}

/// Takes apart a `prvs` address in any of its forms: `prvs=TAG=local@domain`
/// (the standard), `prvs=local=TAG@domain` (the order some senders use),
/// and `local+prvs=TAG@domain` (the sub-address form). `None` when
/// `address` is not tagged.
pub fn parse(address: &str) -> Option<Tagged> {
    let (local, domain) = address.rsplit_once('@')?;
    let lower = local.to_ascii_lowercase();
    let (tag, real_local) = if lower.starts_with("prvs=") {
        let rest = &local[5..];
        match rest.split_once('=') {
            Some((tag, real)) if parse_tag(tag).is_some() && !real.is_empty() => {
                (tag, real.to_owned())
            }
            _ => {
                let (real, tag) = rest.rsplit_once('=')?;
                if real.is_empty() {
                    return None;
                }
                (tag, real.to_owned())
            }
        }
    } else {
        let at = lower.rfind("+prvs=")?;
        let real = &local[..at];
        if real.is_empty() {
            return None;
        }
        (&local[at + 6..], real.to_owned())
    };
    let (key, day, signature) = parse_tag(tag)?;
    Some(Tagged {
        key,
        day,
        signature,
        address: format!("{real_local}@{domain}"),
    })
}

/// What a tag is worth.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Check {
    /// Signed by one of our keys, and not expired.
    Valid,
    /// Expired (more than `lifetime_days` old, or from another 1000-day
    /// cycle).
    Expired,
    /// Not our signature (or a key number we do not have).
    BadSignature,
}

/// Checks `tagged` against `keys` on `now`'s day.
pub fn verify(keys: &BatvKeys, tagged: &Tagged, lifetime_days: u16, now: SystemTime) -> Check {
    let Some(secret) = keys.secret(tagged.key) else {
        return Check::BadSignature;
    };
    let signed = mac(secret, tagged.key, tagged.day, &tagged.address);
    // Constant time: never tell an attacker how many bytes matched.
    if signed.verify_truncated_left(&tagged.signature).is_err() {
        return Check::BadSignature;
    }
    let today = day_number(now) % 1000;
    let left = (u64::from(tagged.day) + 1000 - today) % 1000;
    if left <= u64::from(lifetime_days) {
        Check::Valid
    } else {
        Check::Expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn keys() -> BatvKeys {
        BatvKeys::parse("1 first-secret-0123456789\n2 second-secret-0123456789\n").unwrap()
    }

    fn at(day: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(day * DAY + 3600)
    }

    #[test]
    fn sign_then_verify_in_every_form() {
        let k = keys();
        let now = at(20_000);
        let signed = sign(&k, "Joe@Example.org", 7, now).unwrap();
        assert!(signed.starts_with("prvs=2007"), "{signed}");
        assert!(signed.ends_with("=Joe@Example.org"));
        let t = parse(&signed).unwrap();
        assert_eq!(t.address, "Joe@Example.org");
        assert_eq!(verify(&k, &t, 7, now), Check::Valid);
        // Upper-case hex and another case of the domain.
        let upper = format!(
            "{}@EXAMPLE.ORG",
            signed.rsplit_once('@').unwrap().0.to_ascii_uppercase()
        );
        let t2 = parse(&upper).unwrap();
        assert_eq!(verify(&k, &t2, 7, now), Check::Valid, "{upper}");
        // The swapped and the sub-address forms.
        let tag = &signed[5..15];
        for form in [
            format!("prvs=Joe={tag}@Example.org"),
            format!("Joe+prvs={tag}@Example.org"),
        ] {
            let t = parse(&form).unwrap_or_else(|| panic!("{form}"));
            assert_eq!(t.address, "Joe@Example.org");
            assert_eq!(verify(&k, &t, 7, now), Check::Valid, "{form}");
        }
    }

    #[test]
    fn expiry_is_checked_modulo_1000() {
        let k = keys();
        let sent = at(20_000);
        let t = parse(&sign(&k, "joe@example.org", 7, sent).unwrap()).unwrap();
        for (days, want) in [
            (0, Check::Valid),
            (7, Check::Valid),
            (8, Check::Expired),
            (500, Check::Expired),
        ] {
            assert_eq!(verify(&k, &t, 7, at(20_000 + days)), want, "+{days} days");
        }
        // Late in the 1000-day cycle the tag's DDD (7) is "ahead" of today
        // (992) in a plain comparison; modulo 1000 it is long expired.
        assert_eq!(verify(&k, &t, 7, at(20_992)), Check::Expired);
        // ... and across the wrap of DDD (day 999 -> 000) it still works.
        let wrap = at(20_995);
        let t = parse(&sign(&k, "joe@example.org", 7, wrap).unwrap()).unwrap();
        assert!(t.day < 10, "{}", t.day);
        assert_eq!(verify(&k, &t, 7, at(20_999)), Check::Valid);
        assert_eq!(verify(&k, &t, 7, at(21_002)), Check::Valid);
        assert_eq!(verify(&k, &t, 7, at(21_003)), Check::Expired);
    }

    #[test]
    fn forged_and_unknown_keys_fail() {
        let k = keys();
        let now = at(20_000);
        let signed = sign(&k, "joe@example.org", 7, now).unwrap();
        // Another address with the same tag.
        let other = signed.replace("joe@", "ann@");
        assert_eq!(
            verify(&k, &parse(&other).unwrap(), 7, now),
            Check::BadSignature
        );
        // A key number we do not have.
        let wrong = format!("prvs=9{}", &signed[6..]);
        assert_eq!(
            verify(&k, &parse(&wrong).unwrap(), 7, now),
            Check::BadSignature
        );
        // Rotation: signed with key 1 yesterday, key 2 now signs; key 1 still verifies.
        let old = BatvKeys::parse("1 first-secret-0123456789\n").unwrap();
        let yesterday = sign(&old, "joe@example.org", 7, at(19_999)).unwrap();
        assert_eq!(
            verify(&k, &parse(&yesterday).unwrap(), 7, now),
            Check::Valid
        );
        // Once key 1 leaves the file, its tags are bad.
        let only2 = BatvKeys::parse("2 second-secret-0123456789\n").unwrap();
        assert_eq!(
            verify(&only2, &parse(&yesterday).unwrap(), 7, now),
            Check::BadSignature
        );
    }

    #[test]
    fn untagged_and_malformed_addresses_are_not_tags() {
        for a in [
            "joe@example.org",
            "prvs=joe@example.org",
            "prvs=1234=@example.org",
            "prvs=12x4abcdef=joe@example.org",
            "prvs=1234abcdeg=joe@example.org",
            "+prvs=1234abcdef@example.org",
            "prvs=1234abcdef=joe",
            "",
        ] {
            assert_eq!(parse(a), None, "{a}");
        }
    }

    #[test]
    fn key_files_are_checked_line_by_line() {
        for (text, want) in [
            ("", "no key"),
            ("# only a comment\n", "no key"),
            ("1 short\n", "line 1: the secret of key 1 is shorter"),
            ("x 0123456789abcdef\n", "line 1: \"x\" is not a key number"),
            (
                "1 0123456789abcdef\n1 0123456789abcdeX\n",
                "line 2: key number 1 is listed twice",
            ),
            ("1 0123456789abcdef extra\n", "line 1: expected"),
        ] {
            let e = BatvKeys::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        assert!(
            !format!("{:?}", keys()).contains("secret"),
            "Debug shows no secret"
        );
    }
}
