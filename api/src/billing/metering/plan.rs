//! The meter's arithmetic, kept apart from the database and the chain: how long a service was
//! active in a span, what that costs, and the usage references the ledger de-duplicates on.

use alloy::{
    primitives::{B256, U256, keccak256},
    sol_types::SolValue,
};

/// Seconds in the hour that prices are quoted per.
const HOUR: u64 = 3600;
/// Bytes in the GiB that storage is priced per.
const GIB: u64 = 1 << 30;

/// A service's state change: when (unix seconds) and whether it left the service active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The block time of the change.
    pub at: i64,
    /// Whether the service is active from then on.
    pub active: bool,
}

/// Seconds within `[from, until)` that a service with these state changes (in chain order, the
/// first being its creation) was active. Each state holds until the next change.
pub fn active_seconds(changes: &[Change], from: i64, until: i64) -> u64 {
    let mut total = 0u64;
    for (i, change) in changes.iter().enumerate() {
        if !change.active {
            continue;
        }
        let ends = changes.get(i + 1).map_or(until, |next| next.at);
        let (start, end) = (change.at.max(from), ends.min(until));
        if end > start {
            total += (end - start) as u64;
        }
    }
    total
}

/// A service's rates: its hourly price, and for storage the bytes it holds and the price of a
/// GiB-hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    /// Credit units per active hour (the on-chain price).
    pub per_hour: U256,
    /// Bytes stored.
    pub bytes: u64,
    /// Credit units per GiB stored for an hour.
    pub per_gib_hour: u64,
}

/// What `seconds` at `rates` cost, given `carry` left over from earlier charges (in credit units
/// × GiB-seconds, less than one unit's worth): the whole credit units to charge now, and what to
/// carry on. Summed over any split of the time, the charges equal the price of the whole time,
/// rounded down once.
pub fn charge(rates: Rates, seconds: u64, carry: U256) -> (U256, U256) {
    let (gib, secs) = (U256::from(GIB), U256::from(seconds));
    let owed = rates.per_hour * secs * gib
        + U256::from(rates.bytes) * U256::from(rates.per_gib_hour) * secs
        + carry;
    let unit = U256::from(HOUR) * gib;
    (owed / unit, owed % unit)
}

/// The usage reference of the active time of `service` from `period_start` (unix seconds). Each
/// span starts where the previous one ended, so a start names one charge for good: two plans of
/// the same time, however far each reaches, share the reference and the ledger takes one.
pub fn time_usage_ref(chain_id: u64, service: i64, period_start: i64) -> B256 {
    keccak256(
        (
            "decentraspace.meter.time",
            U256::from(chain_id),
            U256::from(service),
            U256::from(period_start),
        )
            .abi_encode(),
    )
}

/// The usage reference of usage recorded against `service` under the caller's `reference`: a
/// caller retrying with the same reference can never be charged twice.
pub fn recorded_usage_ref(chain_id: u64, service: i64, reference: &str) -> B256 {
    keccak256(
        ("decentraspace.meter.usage", U256::from(chain_id), U256::from(service), reference)
            .abi_encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn on(at: i64) -> Change {
        Change { at, active: true }
    }

    const fn off(at: i64) -> Change {
        Change { at, active: false }
    }

    #[test]
    fn active_time_counts_only_active_spans_inside_the_window() {
        // created at 0, paused at 100, resumed at 300, cancelled at 350
        let changes = [on(0), off(100), on(300), off(350)];
        assert_eq!(active_seconds(&changes, 0, 1000), 150);
        assert_eq!(active_seconds(&changes, 50, 320), 50 + 20);
        assert_eq!(active_seconds(&changes, 100, 300), 0);
        assert_eq!(active_seconds(&changes, 400, 1000), 0);
        // Still active: runs to the window's end.
        assert_eq!(active_seconds(&[on(10)], 0, 70), 60);
        // A window before creation.
        assert_eq!(active_seconds(&[on(10)], 0, 5), 0);
        assert_eq!(active_seconds(&[], 0, 5), 0);
    }

    #[test]
    fn a_change_at_the_window_edge_is_counted_once() {
        let changes = [on(0), off(3600), on(7200)];
        let first = active_seconds(&changes, 0, 3600);
        let second = active_seconds(&changes, 3600, 7200);
        let third = active_seconds(&changes, 7200, 10_800);
        assert_eq!((first, second, third), (3600, 0, 3600));
    }

    const fn hourly(per_hour: u64) -> Rates {
        Rates { per_hour: U256::from_limbs([per_hour, 0, 0, 0]), bytes: 0, per_gib_hour: 0 }
    }

    #[test]
    fn splitting_time_never_changes_the_total_charge() {
        let price = hourly(1000);
        // 7 spans of 1,000 s: 7,000 s at 1,000 per hour = 1,944.4…
        let (mut total, mut carry) = (U256::ZERO, U256::ZERO);
        for _ in 0..7 {
            let (now, left) = charge(price, 1000, carry);
            total += now;
            carry = left;
            assert!(carry < U256::from(HOUR * GIB));
        }
        assert_eq!(total, U256::from(1944u64));
        assert_eq!(charge(price, 7000, U256::ZERO).0, total);
        assert_eq!(charge(price, 3600, U256::ZERO), (U256::from(1000u64), U256::ZERO));
        assert_eq!(charge(hourly(0), 3600, U256::from(5u64)), (U256::ZERO, U256::from(5u64)));
    }

    #[test]
    fn stored_bytes_are_charged_by_the_gib_hour() {
        let storage = |bytes| Rates { per_hour: U256::from(500u64), bytes, per_gib_hour: 30 };
        // 2 GiB for an hour: 500 + 2 × 30.
        assert_eq!(charge(storage(2 * GIB), 3600, U256::ZERO).0, U256::from(560u64));
        // 512 MiB for two hours: 2 × 500 + 30.
        assert_eq!(charge(storage(GIB / 2), 7200, U256::ZERO).0, U256::from(1030u64));
        // A few bytes add fractions that carry on, never lost.
        let (first, carry) = charge(storage(1000), 3600, U256::ZERO);
        assert_eq!(first, U256::from(500u64));
        assert!(!carry.is_zero());
    }

    #[test]
    fn usage_references_differ_by_every_input() {
        let base = time_usage_ref(1, 2, 3);
        assert_ne!(base, time_usage_ref(2, 2, 3));
        assert_ne!(base, time_usage_ref(1, 3, 3));
        assert_ne!(base, time_usage_ref(1, 2, 4));
        assert_eq!(base, time_usage_ref(1, 2, 3));
        let usage = recorded_usage_ref(1, 2, "a");
        assert_ne!(usage, recorded_usage_ref(1, 2, "b"));
        assert_ne!(usage, recorded_usage_ref(1, 3, "a"));
        assert_ne!(usage, base);
    }
}
