-- Ledger movements are stored once, in `events`, with their values in typed columns, instead of a
-- second row per movement in a table of their own: a backfill of ledger events wrote every
-- movement twice, which cost more than a third of its time. `credit_entries` stays as a view with
-- the same columns, so readers do not change.

delete from indexer_deferred_indexes where definition like '%credit_entries%';
drop table credit_entries;

alter table events
    -- recharge | fiat | deduction | skipped; null for events that are not ledger movements
    add column credit_kind text,
    add column service_id bigint,
    add column credits numeric(78, 0),
    add column balance_after numeric(78, 0),
    add column token bytea,
    add column token_amount numeric(78, 0),
    add column reference bytea;

-- Every credit movement with its reference (the history `/billing/history` reads).
create view credit_entries as
select chain_id, block_number, log_index, account, credit_kind as kind, service_id, credits,
       balance_after, token, token_amount, reference, block_time, tx_hash
from events
where credit_kind is not null;

-- Per-account history is served by `events_by_account`; per-service reads by this.
create index events_credit_by_service on events (chain_id, service_id, block_number, log_index)
    where credit_kind is not null and service_id is not null;
