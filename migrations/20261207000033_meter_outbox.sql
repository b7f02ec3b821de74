-- The meter's batches are sent through the chain outbox (ADR 0011): a charge handed over names
-- its batch's outbox row.
alter table meter_charges add column outbox_id bigint references chain_outbox (id);
create index meter_charges_outbox on meter_charges (outbox_id) where outbox_id is not null;
