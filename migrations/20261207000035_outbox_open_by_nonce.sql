-- The sender's every query reads a key's open rows by state, most in nonce order. Keyed on
-- (signer, state, nonce), the partial index of open rows serves them all; keyed on id, the planner
-- preferred the unique (signer, nonce) index over every row the key ever had, filtering the
-- state, and each pass grew slower as the key's history grew. The sender's updates by id name the
-- key and the state too, so that they go through this index as well.
drop index chain_outbox_open;
create index chain_outbox_open on chain_outbox (chain_id, signer, state, nonce)
  where state in ('queued', 'signed', 'pending', 'mined');

-- Sends not yet handed to the node: the sender marks them broadcast by id, through this index
-- rather than a scan of every send the table holds.
create index chain_outbox_sends_unsent on chain_outbox_sends (id) where broadcast_at is null;
