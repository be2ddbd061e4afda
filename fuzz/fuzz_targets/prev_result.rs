//! prevResult of every spec version (0.1.0 through 1.1.0): parsed, then
//! emitted in every version we speak and parsed again. What we emit, we (and
//! the next plugin of the chain) must be able to read back, unchanged.

#![no_main]

use libcni::result::CniResult;
use libcni::version::SpecVersion;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(result) = CniResult::parse(&value) else {
        return;
    };
    for version in SpecVersion::ALL {
        let emitted = result.to_json(version);
        let again = CniResult::parse(&emitted)
            .unwrap_or_else(|e| panic!("{version}: cannot re-read {emitted}: {e}"));
        let twice = again.to_json(version);
        assert_eq!(emitted, twice, "{version}: not stable");
    }
});
