-- Secondary indexes the indexer set aside for a long backfill (maintaining them row by row costs
-- more than building them once at the end), with the statements that rebuild them. An index is
-- dropped in the same transaction that records it here, and rebuilt in the same transaction that
-- removes its row, so a crash at any point neither loses an index nor builds one twice.
create table indexer_deferred_indexes (
    name text primary key,
    definition text not null,
    deferred_at timestamptz not null default now()
);
