-- Chain-event webhook deliveries, recorded once each: a delivery only wakes the indexer, and a
-- replayed one does nothing.
create table listener_deliveries (
    delivery_id text primary key,
    chain_id bigint not null,
    block_number bigint not null,
    received_at timestamptz not null default now()
);
