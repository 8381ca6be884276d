//! Recipient map files, and lookups in what parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nobounce_recipients::{map_file::MapOptions, RecipientMap};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (map_text, probe) = text.split_once('\u{0}').unwrap_or((&text, "x@example.org"));
    for options in [
        MapOptions::default(),
        MapOptions {
            case_sensitive_local_part: true,
            recipient_delimiter: "+-".into(),
        },
    ] {
        match RecipientMap::parse(map_text, Path::new("map"), options) {
            Ok(map) => {
                let _ = map.lookup(probe);
                let _ = map.len();
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});
