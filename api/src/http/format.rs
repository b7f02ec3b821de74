//! Addresses, hashes and credit amounts as clients send and read them.

use alloy::primitives::{Address, B256, U256};

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

/// "N credits" for `units` credit units (6 decimals).
pub fn credits(units: u64) -> String {
    let (whole, fraction) = (units / 1_000_000, units % 1_000_000);
    if fraction == 0 {
        format!("{whole} credits")
    } else {
        format!("{whole}.{} credits", format!("{fraction:06}").trim_end_matches('0'))
    }
}

/// "N credits" for `units` credit units (6 decimals), however large.
pub fn credits_of(units: U256) -> String {
    match u64::try_from(units) {
        Ok(units) => credits(units),
        Err(_) => format!(
            "{} credits",
            alloy::primitives::utils::format_units(units, 6).unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use alloy::primitives::U256;

    #[test]
    fn amounts_read_as_credits() {
        assert_eq!(super::credits(5_000_000), "5 credits");
        assert_eq!(super::credits(1_500_000), "1.5 credits");
        assert_eq!(super::credits(250), "0.00025 credits");
        assert_eq!(super::credits_of(U256::from(1_500_000u64)), "1.5 credits");
        let huge = U256::from(u64::MAX) * U256::from(10u64);
        assert_eq!(super::credits_of(huge), "184467440737095.516150 credits");
    }
}
