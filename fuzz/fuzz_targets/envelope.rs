//! Envelope addresses and ESMTP parameters as the MTA passes them, and the
//! socket addresses of the configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nobounce_core::{address::declared_size, Endpoint, EnvelopeAddress};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = EnvelopeAddress::parse(&text);
    // Printing and parsing again gives the same address.
    let again = EnvelopeAddress::parse(&parsed.to_string());
    if !matches!(parsed, EnvelopeAddress::Other(_)) {
        assert_eq!(parsed, again, "{text:?}");
    }
    let _ = parsed.domain();
    let _ = declared_size(text.split(' '));
    if let Ok(e) = text.parse::<Endpoint>() {
        let shown = e.to_string();
        assert_eq!(shown.parse::<Endpoint>().as_ref(), Ok(&e), "{text:?} -> {shown:?}");
        let _ = e.listen_addr();
    }
});
