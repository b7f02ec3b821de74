//! Random references and secrets, from the operating system's generator.

use rand::RngCore;

/// `N` random bytes.
pub(crate) fn bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// 16 random bytes for a reference (a payment, a share link).
pub(crate) fn reference() -> [u8; 16] {
    bytes::<16>()
}
