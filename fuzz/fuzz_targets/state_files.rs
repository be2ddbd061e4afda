//! State files as a crash, a full disk or a tamperer may leave them: the
//! double-buffered record file (ippool's pools) and versioned JSON records
//! (sriov, rdma, coordinator), read through libcni::state.
//!
//! Input: first byte % 3: 0 = the rest follows a valid magic, 1 = raw file,
//! 2 = the rest is an ippool record inside a valid double-buffered file.

#![no_main]

use std::sync::OnceLock;

use libcni::state::{DoubleBufferedFile, StateDir};
use libfuzzer_sys::fuzz_target;

const MAGIC: &[u8; 8] = b"FUZZDB1\n";
/// ippool's file store (libcni/src/pool/file_store.rs).
const POOL_MAGIC: &[u8; 8] = b"IPPOOL\x02\n";

fn dir() -> &'static StateDir {
    static DIR: OnceLock<(tempfile::TempDir, StateDir)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::open(tmp.path()).expect("state dir");
        (tmp, dir)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let dir = dir();
    if pick % 3 == 2 {
        DoubleBufferedFile::create(dir, "p.state", POOL_MAGIC, &[rest]).expect("create");
        if let Ok(store) = libcni::pool::FileStore::open(dir.path()) {
            let _ = store.inspect("p");
        }
        return;
    }
    let mut bytes = Vec::with_capacity(rest.len() + 8);
    if pick % 3 == 0 {
        bytes.extend_from_slice(MAGIC);
    }
    bytes.extend_from_slice(rest);
    let path = dir.path().join("f");
    std::fs::write(&path, &bytes).expect("write");
    if let Ok(Some((mut file, record))) = DoubleBufferedFile::open(dir, "f", MAGIC) {
        // A record we accepted can be committed over and read back.
        file.commit(dir, "f", MAGIC, &[&record, b"+"])
            .expect("commit");
        let (_, again) = DoubleBufferedFile::open(dir, "f", MAGIC)
            .expect("reopen")
            .expect("present");
        assert_eq!(again, [&record[..], b"+"].concat());
    }
    let _ = dir.read_json::<serde_json::Value>("f", 3);
});
