//! The authserv-id of an `Authentication-Results` header (RFC 8601/5322).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nobounce_core::spf::authserv_id_of;

fuzz_target!(|data: &[u8]| {
    let value = String::from_utf8_lossy(data);
    if let Some(id) = authserv_id_of(&value) {
        assert!(!id.is_empty());
        // A token id never carries the ';' that ends it (a quoted one may).
        if !value.contains('"') {
            assert!(!id.contains(';'), "{value:?} -> {id:?}");
        }
    }
});
