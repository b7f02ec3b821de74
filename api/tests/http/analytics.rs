//! `/analytics/credit` projects when a balance runs out: within a century as an RFC 3339 date,
//! past it as null (a tiny spend against a large balance used to answer 500, or a five-digit
//! year that broke the document's own `date-time`).

use alloy::{primitives::Address, signers::local::PrivateKeySigner};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::support::{get, login, state};

/// Records, as the indexer would, a deduction of `credits` from `account` now, leaving
/// `balance`.
async fn spent(db: &PgPool, account: Address, credits: u64, balance: &str) {
    sqlx::query(
        r#"insert into events (chain_id, block_number, log_index, block_hash, block_time, tx_hash, tx_index,
                               address, contract, event_name, args, account, credit_kind, credits, balance_after)
           values (31337, 1, 0, '\x00', now(), '\x00', 0, '\x00', 'CreditLedger', 'CreditsDeducted', '{}',
                   $1, 'deduction', $2::text::numeric, $3::text::numeric)"#,
    )
    .bind(account.as_slice())
    .bind(credits.to_string())
    .bind(balance)
    .execute(db)
    .await
    .expect("deduction");
    sqlx::query(
        "insert into credit_balances (chain_id, account, balance) values (31337, $1, $2::text::numeric)
         on conflict (chain_id, account) do update set balance = excluded.balance",
    )
    .bind(account.as_slice())
    .bind(balance)
    .execute(db)
    .await
    .expect("balance");
}

#[sqlx::test(migrations = "../migrations")]
async fn depletion_is_a_date_within_a_century_and_null_past_it(db: PgPool) {
    let signer = PrivateKeySigner::random();
    let state = state(db.clone()).await;
    let token = login(&state, &signer).await;

    // 7 credit units spent this week: a burn of 1 a day.
    spent(&db, signer.address(), 7, "36000").await;
    let answer = get(&state, "/analytics/credit", Some(&token)).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["burn_rate_per_day"], "1");
    let when = answer.body["projected_depletion"].as_str().expect("a date").to_owned();
    let when: DateTime<Utc> = when.parse().expect("RFC 3339");
    let days = (when - Utc::now()).num_days();
    assert!((35_990..=36_000).contains(&days), "{days} days: {}", answer.text);

    // A balance that would last past a century, and one past any date type: null, not 500.
    for balance in
        ["40000", "115792089237316195423570985008687907853269984665640564039457584007913129639935"]
    {
        sqlx::query("update credit_balances set balance = $1::text::numeric")
            .bind(balance)
            .execute(&db)
            .await
            .expect("balance");
        let answer = get(&state, "/analytics/credit", Some(&token)).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert!(answer.body["projected_depletion"].is_null(), "{balance}: {}", answer.text);
        assert_eq!(answer.body["balance"], balance);
    }
}
