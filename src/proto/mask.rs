//! XOR masking of frame payloads (RFC 6455 §5.3), by the fastest kernel for
//! the buffer's size that the CPU offers.
//!
//! One file although long: every kernel here computes the same function,
//! one per instruction set, picked at run time and tested against each other.
//!
//! The crate is built for generic x86-64, so AVX2 lives in `#[target_feature]`
//! functions behind a run-time check; SSE2 is part of the x86-64 baseline and
//! needs none. Every kernel processes whole 4-byte key periods until the tail,
//! so one key, rotated once for the starting offset, serves the whole buffer.

/// Buffers shorter than this are masked by straight-line scalar code inlined
/// at the call site: up to three 8-byte words beat setting up a vector
/// register, and a call (measured on the README's machine: 16 B in 2.0 ns
/// against 3.1 for SSE2).
const SMALL_LEN: usize = 32;

/// Buffers shorter than this skip the AVX2 feature check and call: SSE2 is
/// as fast or faster there (measured: 125 B in 3.4 ns against 4.3).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
const AVX2_MIN_LEN: usize = 128;

/// Applies (or removes: the operation is its own inverse) the 4-byte masking
/// `key` to `buf`, as if `buf` started `offset` bytes into the payload.
///
/// `offset` lets a payload be unmasked in pieces as it arrives.
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate_key(key, offset);
    if buf.len() < SMALL_LEN {
        small::<false>(buf, key);
    } else {
        wide::<false>(buf, key);
    }
}

/// Unmasks a text payload in place and reports whether every byte is ASCII,
/// so the caller can skip UTF-8 validation for the common case.
///
/// One pass: the unmasked bytes are OR-ed together as they are written, so
/// the payload is not read a second time for the ASCII check.
#[inline]
pub fn unmask_text(buf: &mut [u8], key: [u8; 4], offset: usize) -> bool {
    let key = rotate_key(key, offset);
    if buf.len() < SMALL_LEN {
        small::<true>(buf, key)
    } else {
        wide::<true>(buf, key)
    }
}

/// The key as seen by a buffer that starts `offset` bytes into the payload.
#[inline]
pub fn rotate_key(key: [u8; 4], offset: usize) -> [u8; 4] {
    // Byte `offset % 4` of the key moves to the front: a rotation of the
    // little-endian word by that many bytes.
    let shift = 8 * (offset & 3) as u32;
    u32::from_le_bytes(key).rotate_right(shift).to_le_bytes()
}

/// One masking implementation, selectable so that benchmarks and
/// differential tests can run each one; [`apply_mask`] picks for itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MaskKernel {
    /// One byte at a time: the reference the others are checked against.
    Byte,
    /// Portable 8-byte words; the fallback on CPUs without a SIMD kernel.
    Word,
    /// 16-byte SSE2 vectors (x86-64 only; every x86-64 CPU has SSE2).
    Sse2,
    /// 32-byte AVX2 vectors (x86-64 CPUs that report AVX2).
    Avx2,
}

impl MaskKernel {
    /// Every kernel, available on this CPU or not, narrowest first.
    pub const ALL: [MaskKernel; 4] = [Self::Byte, Self::Word, Self::Sse2, Self::Avx2];

    /// A short lowercase name, for benchmark and test labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Byte => "byte",
            Self::Word => "word",
            Self::Sse2 => "sse2",
            Self::Avx2 => "avx2",
        }
    }

    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Self::Byte | Self::Word => true,
            #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
            Self::Sse2 => true,
            #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
            Self::Avx2 => x86::avx2_available(),
            #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
            Self::Sse2 | Self::Avx2 => false,
        }
    }

    /// The widest kernel this CPU can run: what [`apply_mask`] uses for
    /// large buffers.
    pub fn best() -> MaskKernel {
        Self::ALL
            .into_iter()
            .rev()
            .find(|k| k.is_available())
            .unwrap_or(Self::Word)
    }

    /// [`apply_mask`] with this kernel for the whole buffer, whatever its size.
    ///
    /// # Panics
    /// If [`is_available`](Self::is_available) is false for this kernel.
    pub fn apply(self, buf: &mut [u8], key: [u8; 4], offset: usize) {
        self.run::<false>(buf, rotate_key(key, offset));
    }

    /// [`unmask_text`] with this kernel for the whole buffer, whatever its size.
    ///
    /// # Panics
    /// If [`is_available`](Self::is_available) is false for this kernel.
    pub fn unmask_text(self, buf: &mut [u8], key: [u8; 4], offset: usize) -> bool {
        self.run::<true>(buf, rotate_key(key, offset))
    }

    fn run<const TEXT: bool>(self, buf: &mut [u8], key: [u8; 4]) -> bool {
        assert!(
            self.is_available(),
            "{} is not available on this CPU",
            self.name()
        );
        match self {
            Self::Byte => byte::<TEXT>(buf, key),
            Self::Word => word::<TEXT>(buf, key),
            #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
            // SAFETY: SSE2 is enabled for the whole build (see the cfg).
            Self::Sse2 => unsafe { x86::sse2::<TEXT>(buf, key) },
            #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
            // SAFETY: `is_available` confirmed at run time that the CPU has AVX2.
            Self::Avx2 => unsafe { x86::avx2::<TEXT>(buf, key) },
            #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
            Self::Sse2 | Self::Avx2 => unreachable!("checked by is_available"),
        }
    }
}

/// Masks `buf` (at least [`SMALL_LEN`] bytes) with an already rotated
/// `key`; with `TEXT`, also reports whether every unmasked byte is ASCII
/// (without it, the result is meaningless). Kept out of line so that callers
/// inline only the small-buffer path.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(never)]
fn wide<const TEXT: bool>(buf: &mut [u8], key: [u8; 4]) -> bool {
    if buf.len() >= AVX2_MIN_LEN && x86::avx2_available() {
        // SAFETY: the CPU has AVX2, checked at run time just above.
        return unsafe { x86::avx2::<TEXT>(buf, key) };
    }
    // SAFETY: SSE2 is enabled for the whole build (see the cfg), so every
    // CPU this code runs on has it.
    unsafe { x86::sse2::<TEXT>(buf, key) }
}

/// Without a SIMD kernel for this target, the word kernel, which the
/// compiler may vectorise for it.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(never)]
fn wide<const TEXT: bool>(buf: &mut [u8], key: [u8; 4]) -> bool {
    word::<TEXT>(buf, key)
}

/// Masks fewer than [`SMALL_LEN`] bytes without a loop: at most three
/// 8-byte words, then [`tail`].
#[inline(always)]
fn small<const TEXT: bool>(buf: &mut [u8], key: [u8; 4]) -> bool {
    debug_assert!(buf.len() < SMALL_LEN);
    let k64 = u64::from(u32::from_ne_bytes(key)) * 0x1_0000_0001;
    let mut acc = 0u64;
    let (words, rest) = buf.as_chunks_mut::<8>();
    for i in 0..3 {
        if let Some(w) = words.get_mut(i) {
            let v = u64::from_ne_bytes(*w) ^ k64;
            *w = v.to_ne_bytes();
            acc |= v;
        }
    }
    acc |= tail(rest, key);
    !TEXT || acc & HIGH_BITS == 0
}

/// The reference kernel: one byte per step.
fn byte<const TEXT: bool>(buf: &mut [u8], key: [u8; 4]) -> bool {
    let mut acc = 0u8;
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[i & 3];
        acc |= *b;
    }
    !TEXT || acc < 0x80
}

/// The portable kernel: 8-byte words, then [`tail`].
#[inline(always)]
fn word<const TEXT: bool>(buf: &mut [u8], key: [u8; 4]) -> bool {
    let k64 = u64::from(u32::from_ne_bytes(key)) * 0x1_0000_0001;
    let mut acc = 0u64;
    let (words, rest) = buf.as_chunks_mut::<8>();
    for w in words {
        let v = u64::from_ne_bytes(*w) ^ k64;
        *w = v.to_ne_bytes();
        acc |= v;
    }
    acc |= tail(rest, key);
    !TEXT || acc & HIGH_BITS == 0
}

/// The high bit of every byte of a word: set in an OR of bytes if any of
/// them was not ASCII.
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// Masks the last bytes of a buffer, fewer than 16, with `key` rotated for
/// their start, and returns the OR of the words written (test it against
/// [`HIGH_BITS`]). Straight-line code: at most one 8-byte word, one 4-byte
/// word and three bytes.
#[inline(always)]
fn tail(buf: &mut [u8], key: [u8; 4]) -> u64 {
    debug_assert!(buf.len() < 16);
    let k32 = u32::from_ne_bytes(key);
    let mut acc = 0u64;
    let mut rest = buf;
    if rest.len() >= 8 {
        let (w, r) = core::mem::take(&mut rest)
            .split_first_chunk_mut::<8>()
            .expect("8 bytes");
        let v = u64::from_ne_bytes(*w) ^ (u64::from(k32) * 0x1_0000_0001);
        *w = v.to_ne_bytes();
        acc |= v;
        rest = r;
    }
    if rest.len() >= 4 {
        let (h, r) = core::mem::take(&mut rest)
            .split_first_chunk_mut::<4>()
            .expect("4 bytes");
        let v = u32::from_ne_bytes(*h) ^ k32;
        *h = v.to_ne_bytes();
        acc |= u64::from(v);
        rest = r;
    }
    for (b, k) in rest.iter_mut().zip(key) {
        *b ^= k;
        acc |= u64::from(*b);
    }
    acc
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod x86 {
    use core::arch::x86_64::{
        __m128i, __m256i, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_or_si256,
        _mm256_set1_epi32, _mm256_setzero_si256, _mm256_storeu_si256, _mm256_xor_si256,
        _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi32, _mm_setzero_si128,
        _mm_storeu_si128, _mm_xor_si128,
    };

    /// From this length on, the AVX2 kernel aligns its stores; below it the
    /// extra head costs more than the unaligned stores.
    pub(super) const ALIGN_MIN_LEN: usize = 256;

    /// Whether the CPU has AVX2. The standard library caches the answer, so
    /// after the first call this is one relaxed load and a bit test.
    #[inline]
    pub(super) fn avx2_available() -> bool {
        std::is_x86_feature_detected!("avx2")
    }

    /// XORs one 16-byte block with `k` in place and returns the new value.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn xor16(block: &mut [u8; 16], k: __m128i) -> __m128i {
        // SAFETY: `block` is a live, exclusively borrowed 16-byte array, so the
        // 16-byte read and write at its address stay in bounds; the `loadu` and
        // `storeu` forms accept any alignment.
        unsafe {
            let v = _mm_xor_si128(_mm_loadu_si128(block.as_ptr().cast()), k);
            _mm_storeu_si128(block.as_mut_ptr().cast(), v);
            v
        }
    }

    /// The SSE2 kernel: 16-byte blocks, then the word kernel for the tail.
    ///
    /// Callers outside `#[target_feature]` code need an `unsafe` block even
    /// though every x86-64 CPU has SSE2 (the module is compiled only when the
    /// build enables it).
    #[inline]
    #[target_feature(enable = "sse2")]
    pub(super) fn sse2<const TEXT: bool>(buf: &mut [u8], key: [u8; 4]) -> bool {
        let k = _mm_set1_epi32(i32::from_le_bytes(key));
        let mut acc = _mm_setzero_si128();
        // Four blocks per step, then at most three: short buffers run no loop.
        let (quads, rest) = buf.as_chunks_mut::<64>();
        for q in quads {
            for b in q.as_chunks_mut::<16>().0 {
                acc = _mm_or_si128(acc, xor16(b, k));
            }
        }
        let (blocks, rest) = rest.as_chunks_mut::<16>();
        // Spelled out: as a loop, the compiler unrolls it for eight blocks.
        if let Some(b) = blocks.get_mut(0) {
            acc = _mm_or_si128(acc, xor16(b, k));
        }
        if let Some(b) = blocks.get_mut(1) {
            acc = _mm_or_si128(acc, xor16(b, k));
        }
        if let Some(b) = blocks.get_mut(2) {
            acc = _mm_or_si128(acc, xor16(b, k));
        }
        // Each block is four key periods, so the tail starts on a period.
        let tail = super::tail(rest, key);
        !TEXT || (_mm_movemask_epi8(acc) == 0 && tail & super::HIGH_BITS == 0)
    }

    /// XORs one 32-byte block with `k` in place and returns the new value.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn xor32(block: &mut [u8; 32], k: __m256i) -> __m256i {
        // SAFETY: `block` is a live, exclusively borrowed 32-byte array, so the
        // 32-byte read and write at its address stay in bounds; the `loadu` and
        // `storeu` forms accept any alignment. AVX2 is enabled for this function
        // and its callers must have checked the CPU for it.
        unsafe {
            let v = _mm256_xor_si256(_mm256_loadu_si256(block.as_ptr().cast()), k);
            _mm256_storeu_si256(block.as_mut_ptr().cast(), v);
            v
        }
    }

    /// The AVX2 kernel: 32-byte blocks, then the SSE2 kernel for the tail.
    /// Long buffers first get a head of up to 31 bytes masked by the SSE2
    /// kernel, so that the blocks' stores never straddle cache lines.
    ///
    /// Safe to call only on a CPU with AVX2 (the caller checks).
    #[target_feature(enable = "avx2")]
    pub(super) fn avx2<const TEXT: bool>(buf: &mut [u8], key: [u8; 4]) -> bool {
        let (head_ascii, buf, key) = if buf.len() >= ALIGN_MIN_LEN {
            let head_len = buf.as_ptr().align_offset(32).min(buf.len());
            let (head, body) = buf.split_at_mut(head_len);
            (
                sse2::<TEXT>(head, key),
                body,
                super::rotate_key(key, head_len),
            )
        } else {
            (true, buf, key)
        };
        let k = _mm256_set1_epi32(i32::from_le_bytes(key));
        let mut acc = _mm256_setzero_si256();
        let (quads, rest) = buf.as_chunks_mut::<128>();
        for q in quads {
            for b in q.as_chunks_mut::<32>().0 {
                acc = _mm256_or_si256(acc, xor32(b, k));
            }
        }
        let (blocks, rest) = rest.as_chunks_mut::<32>();
        if let Some(b) = blocks.get_mut(0) {
            acc = _mm256_or_si256(acc, xor32(b, k));
        }
        if let Some(b) = blocks.get_mut(1) {
            acc = _mm256_or_si256(acc, xor32(b, k));
        }
        if let Some(b) = blocks.get_mut(2) {
            acc = _mm256_or_si256(acc, xor32(b, k));
        }
        // Fewer than 32 bytes left, starting on a key period.
        let tail_ascii = sse2::<TEXT>(rest, key);
        !TEXT || (_mm256_movemask_epi8(acc) == 0 && tail_ascii && head_ascii)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    // The length sweep (0..300, starts 0..32) must cross every size switch.
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    const _: () = assert!(x86::ALIGN_MIN_LEN + 32 < 300 && AVX2_MIN_LEN < 300);

    fn byte_loop(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[(i + offset) & 3];
        }
    }

    /// A pseudo-random payload, with bytes of every value.
    fn payload(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(151).wrapping_add(7))
            .collect()
    }

    /// Runs `f` (a kernel with the `apply_mask` signature) on every length in
    /// 0..300, every offset in 0..4 and every start address 0..32 bytes into
    /// a buffer, and compares with the byte loop; bytes around the slice must
    /// stay untouched.
    fn check_against_byte_loop(name: &str, f: impl Fn(&mut [u8], [u8; 4], usize)) {
        for len in 0..300 {
            let orig = payload(len + 64);
            for offset in 0..4 {
                for start in 0..32 {
                    let mut got = orig.clone();
                    let mut want = orig.clone();
                    f(&mut got[start..start + len], KEY, offset);
                    byte_loop(&mut want[start..start + len], KEY, offset);
                    assert_eq!(got, want, "{name}: len {len} offset {offset} start {start}");
                }
            }
        }
    }

    /// Checks the ASCII verdict of a `unmask_text`-shaped function at an
    /// unaligned start: all-ASCII output at every length and offset, then one
    /// non-ASCII byte (0x80 or 0xff) at every position of every length.
    fn check_text(name: &str, f: impl Fn(&mut [u8], [u8; 4], usize) -> bool) {
        for len in 0..300 {
            let mut plain: Vec<u8> = (0..len + 3).map(|i| b' ' + (i % 90) as u8).collect();
            for offset in 0..4 {
                let mut buf = plain.clone();
                byte_loop(&mut buf[3..], KEY, offset);
                assert!(
                    f(&mut buf[3..], KEY, offset),
                    "{name}: len {len} offset {offset}"
                );
                assert_eq!(buf, plain, "{name}: len {len} offset {offset}");
            }
            for pos in 0..len {
                let offset = (len + pos) & 3;
                let saved = plain[3 + pos];
                plain[3 + pos] = if pos & 1 == 0 { 0x80 } else { 0xff };
                let mut buf = plain.clone();
                byte_loop(&mut buf[3..], KEY, offset);
                let ascii = f(&mut buf[3..], KEY, offset);
                assert!(
                    !ascii,
                    "{name}: len {len} offset {offset} non-ASCII at {pos}"
                );
                assert_eq!(buf, plain, "{name}: len {len} offset {offset} pos {pos}");
                plain[3 + pos] = saved;
            }
        }
    }

    #[test]
    fn apply_mask_matches_byte_loop() {
        check_against_byte_loop("apply_mask", apply_mask);
    }

    #[test]
    fn unmask_text_matches_byte_loop_and_is_ascii() {
        check_against_byte_loop("unmask_text", |b, k, o| {
            let ascii_in_output = {
                let mut copy = b.to_vec();
                byte_loop(&mut copy, k, o);
                copy.is_ascii()
            };
            assert_eq!(unmask_text(b, k, o), ascii_in_output);
        });
        check_text("unmask_text", unmask_text);
    }

    #[test]
    fn every_available_kernel_matches_byte_loop() {
        for kernel in MaskKernel::ALL.into_iter().filter(|k| k.is_available()) {
            check_against_byte_loop(kernel.name(), |b, k, o| kernel.apply(b, k, o));
            check_text(kernel.name(), |b, k, o| kernel.unmask_text(b, k, o));
        }
    }

    #[test]
    fn small_path_directly() {
        for len in 0..SMALL_LEN {
            let orig = payload(len + 40);
            for offset in 0..4 {
                for start in 0..32 {
                    let mut got = orig.clone();
                    let mut want = orig.clone();
                    small::<false>(&mut got[start..start + len], rotate_key(KEY, offset));
                    byte_loop(&mut want[start..start + len], KEY, offset);
                    assert_eq!(got, want, "small: len {len} offset {offset} start {start}");
                    let mut got = orig.clone();
                    let ascii =
                        small::<true>(&mut got[start..start + len], rotate_key(KEY, offset));
                    assert_eq!(
                        got, want,
                        "small text: len {len} offset {offset} start {start}"
                    );
                    assert_eq!(ascii, want[start..start + len].is_ascii());
                }
            }
        }
        for len in 1..SMALL_LEN {
            for pos in 0..len {
                let mut buf = vec![b'a'; len];
                buf[pos] = 0x80;
                assert!(
                    !small::<true>(&mut buf, [0; 4]),
                    "len {len} non-ASCII at {pos}"
                );
            }
        }
    }

    #[test]
    fn word_kernel_directly() {
        check_against_byte_loop("word", |b, k, o| {
            word::<false>(b, rotate_key(k, o));
        });
        check_text("word", |b, k, o| word::<true>(b, rotate_key(k, o)));
    }

    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[test]
    fn sse2_kernel_directly() {
        check_against_byte_loop("sse2", |b, k, o| {
            // SAFETY: SSE2 is enabled for the whole build (see the cfg).
            unsafe { x86::sse2::<false>(b, rotate_key(k, o)) };
        });
        check_text("sse2", |b, k, o| {
            // SAFETY: SSE2 is enabled for the whole build (see the cfg).
            unsafe { x86::sse2::<true>(b, rotate_key(k, o)) }
        });
    }

    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[test]
    fn avx2_kernel_directly() {
        if !std::is_x86_feature_detected!("avx2") {
            eprintln!("avx2_kernel_directly: this CPU has no AVX2, nothing to check");
            return;
        }
        check_against_byte_loop("avx2", |b, k, o| {
            // SAFETY: AVX2 presence checked at the top of the test.
            unsafe { x86::avx2::<false>(b, rotate_key(k, o)) };
        });
        check_text("avx2", |b, k, o| {
            // SAFETY: AVX2 presence checked at the top of the test.
            unsafe { x86::avx2::<true>(b, rotate_key(k, o)) }
        });
    }

    #[test]
    fn best_kernel_is_available() {
        assert!(MaskKernel::best().is_available());
        #[cfg(target_arch = "x86_64")]
        assert!(matches!(
            MaskKernel::best(),
            MaskKernel::Sse2 | MaskKernel::Avx2
        ));
    }

    #[test]
    fn unmasking_in_pieces_equals_unmasking_whole() {
        let orig = payload(1000);
        let mut whole = orig.clone();
        apply_mask(&mut whole, KEY, 0);
        for cut in [1, 2, 3, 5, 17, 31, 32, 33, 64, 127, 999] {
            let mut pieces = orig.clone();
            let (a, b) = pieces.split_at_mut(cut);
            apply_mask(a, KEY, 0);
            apply_mask(b, KEY, cut);
            assert_eq!(pieces, whole, "cut at {cut}");
        }
    }

    #[test]
    fn rotate_key_by_offset() {
        let k = [1, 2, 3, 4];
        assert_eq!(rotate_key(k, 0), k);
        assert_eq!(rotate_key(k, 1), [2, 3, 4, 1]);
        assert_eq!(rotate_key(k, 2), [3, 4, 1, 2]);
        assert_eq!(rotate_key(k, 7), [4, 1, 2, 3]);
    }

    #[test]
    fn rfc_example_hello() {
        // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
        let mut buf = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut buf, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&buf, b"Hello");
        let mut buf = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        assert!(unmask_text(&mut buf, [0x37, 0xfa, 0x21, 0x3d], 0));
        assert_eq!(&buf, b"Hello");
    }
}
