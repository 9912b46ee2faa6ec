//! Helpers the JSON-reading fuzz targets share.

use simd_json::prelude::*;
use simd_json::OwnedValue;

/// An independent parse of `bytes` (simd-json rewrites its input).
pub fn json(bytes: &[u8]) -> Option<OwnedValue> {
    simd_json::to_owned_value(&mut bytes.to_vec()).ok()
}

/// `part` lies inside `whole`: it was borrowed, not rebuilt.
pub fn is_slice_of(part: &[u8], whole: &[u8]) -> bool {
    let (p, w) = (part.as_ptr() as usize, whole.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
}

/// Whether two parsed values are the same JSON. simd-json's `==` is wrong
/// for objects with a repeated key (it looks each member up by key, so the
/// second copy is compared with the first), so objects that repeat a key
/// are compared member by member in order; both sides come from the same
/// text, so they list their members in the same order.
pub fn same(a: &OwnedValue, b: &OwnedValue) -> bool {
    match (a.as_object(), b.as_object()) {
        (Some(x), Some(y)) => {
            if x.len() != y.len() {
                return false;
            }
            let mut keys: Vec<&str> = x.keys().map(String::as_str).collect();
            keys.sort_unstable();
            keys.dedup();
            if keys.len() == x.len() {
                x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
            } else {
                x.iter()
                    .zip(y.iter())
                    .all(|((k, v), (l, w))| k == l && same(v, w))
            }
        }
        (None, None) => match (a.as_array(), b.as_array()) {
            (Some(x), Some(y)) => x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w)),
            (None, None) => a == b,
            _ => false,
        },
        _ => false,
    }
}

/// [`same`] for optional values.
pub fn same_opt(a: Option<&OwnedValue>, b: Option<&OwnedValue>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same(a, b),
        (None, None) => true,
        _ => false,
    }
}
