//! Addresses and hashes as clients send and read them.

use alloy::primitives::{Address, B256};

use super::error::ApiError;

/// Parses an address given by a client.
pub fn parse_address(text: &str) -> Result<Address, ApiError> {
    text.parse()
        .map_err(|_| ApiError::BadRequest(format!("{text:?} is not a 0x-prefixed 20-byte address")))
}

/// Renders a stored address (checksummed).
pub fn show_address(bytes: &[u8]) -> String {
    Address::try_from(bytes)
        .map(|a| a.to_checksum(None))
        .unwrap_or_else(|_| format!("0x{}", hex::encode(bytes)))
}

/// Renders stored bytes as 0x-hex (hashes, references).
pub fn show_hex(bytes: &[u8]) -> String {
    match B256::try_from(bytes) {
        Ok(h) => h.to_string(),
        Err(_) => format!("0x{}", hex::encode(bytes)),
    }
}
