//! rtnetlink replies as the suite's socket reads them (libcni's
//! `ReplyReader`: message splitting, sequence matching, dump end, errors and
//! the kernel's extack reason, netlink-packet-route's decoding).
//!
//! Input: 1 byte picks the request flags, 4 bytes the sequence number, then
//! datagrams separated by the bytes "\xffNL\xff".

#![no_main]

use libcni::netlink::ReplyReader;
use libfuzzer_sys::fuzz_target;

const FLAGS: [u16; 4] = [
    0x001,         // NLM_F_REQUEST (get)
    0x001 | 0x004, // REQUEST | ACK (execute)
    0x001 | 0x300, // REQUEST | DUMP
    0x001 | 0x004 | 0x300,
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let flags = FLAGS[usize::from(data[0]) % FLAGS.len()];
    let seq = u32::from_ne_bytes([data[1], data[2], data[3], data[4]]);
    let mut reader = ReplyReader::new(seq, flags);
    let rest = &data[5..];
    let sep = b"\xffNL\xff";
    let mut start = 0;
    let mut datagrams = Vec::new();
    let mut i = 0;
    while i + sep.len() <= rest.len() {
        if &rest[i..i + sep.len()] == sep {
            datagrams.push(&rest[start..i]);
            i += sep.len();
            start = i;
        } else {
            i += 1;
        }
    }
    datagrams.push(&rest[start..]);
    for d in datagrams {
        match reader.feed(d) {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => {}
        }
    }
});
