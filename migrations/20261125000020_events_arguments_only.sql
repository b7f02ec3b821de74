-- Known events are stored by their decoded arguments alone: the indexer rebuilds their exact
-- topics and data from `event_name` and `args` when it needs the log again (re-folds after a
-- reorg, `indexer reindex`). Raw topics and data stay for events the bindings do not know, and
-- rows written before this keep theirs (the indexer reads those first). A ledger movement's row
-- is about a third smaller for it.
alter table events
    alter column topics drop not null,
    alter column data drop not null,
    add constraint events_known_or_raw
        check ((event_name is not null and args is not null) or (topics is not null and data is not null));

-- Ledger movements carry no entity hash any more: each one states the balance after it, so a
-- balance is re-folded from the account's latest movement (read through events_by_account), and
-- the entity index keeps to the low-volume events (accounts, services, domains, settings).
update events set entity_hash = null where credit_kind in ('recharge', 'fiat', 'deduction');

-- The card-payment worker asks whether a payment's credit is indexed by its reference: fiat
-- credits are few, so this index stays small and cheap to keep.
create index events_fiat_by_reference on events (chain_id, reference) where credit_kind = 'fiat';
