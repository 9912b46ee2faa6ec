//! Differential fuzzing of unmasking: every masking kernel the CPU has, and
//! the size-dispatching `apply_mask` / `unmask_text`, against a byte loop,
//! at arbitrary lengths, key offsets and start addresses.
//!
//! Input: 4 key bytes, 1 byte for the key offset and the start address
//! within the buffer, then the payload.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast::proto::mask::{self, MaskKernel};

fn byte_loop(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(i + offset) & 3];
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((head, payload)) = data.split_first_chunk::<5>() else {
        return;
    };
    let key = [head[0], head[1], head[2], head[3]];
    let offset = usize::from(head[4] & 3);
    let start = usize::from(head[4] >> 2) & 31;

    // The payload sits `start` bytes into a buffer, with guard bytes around
    // it that no kernel may touch.
    let mut plain = vec![0xa5u8; start + payload.len() + 32];
    plain[start..start + payload.len()].copy_from_slice(payload);
    let range = start..start + payload.len();
    let mut want = plain.clone();
    byte_loop(&mut want[range.clone()], key, offset);
    let ascii = want[range.clone()].is_ascii();

    let mut got = plain.clone();
    mask::apply_mask(&mut got[range.clone()], key, offset);
    assert_eq!(got, want, "apply_mask");
    let mut got = plain.clone();
    assert_eq!(mask::unmask_text(&mut got[range.clone()], key, offset), ascii, "unmask_text");
    assert_eq!(got, want, "unmask_text");

    for kernel in MaskKernel::ALL.into_iter().filter(|k| k.is_available()) {
        let mut got = plain.clone();
        kernel.apply(&mut got[range.clone()], key, offset);
        assert_eq!(got, want, "{}", kernel.name());
        let mut got = plain.clone();
        let verdict = kernel.unmask_text(&mut got[range.clone()], key, offset);
        assert_eq!(verdict, ascii, "{} ASCII verdict", kernel.name());
        assert_eq!(got, want, "{} text", kernel.name());
    }
});
