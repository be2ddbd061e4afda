//! RDMA netlink (nldev) replies: message splitting, attributes, device,
//! port and netns-mode decoding, errors with extack (libcni::rdma::wire).
//!
//! Input: 1 byte picks the request flags, 4 bytes the sequence number, the
//! rest is one datagram.

#![no_main]

use libfuzzer_sys::fuzz_target;

const FLAGS: [u16; 4] = [0x001, 0x001 | 0x004, 0x001 | 0x300, 0x001 | 0x004 | 0x300];

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let flags = FLAGS[usize::from(data[0]) % FLAGS.len()];
    let seq = u32::from_ne_bytes([data[1], data[2], data[3], data[4]]);
    if let Ok(Some(replies)) = libcni::rdma::decode_replies(seq, flags, &data[5..]) {
        for r in replies {
            if let Some(d) = r.device {
                let _ = d.name.len();
            }
        }
    }
});
