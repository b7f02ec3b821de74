-- Relayed forward requests are sent through the chain outbox (ADR 0011): the record names its
-- outbox row, and follows it as the relayer key's sender moves it.
alter table relayed_transactions add column outbox_id bigint references chain_outbox (id);
create unique index relayed_transactions_outbox on relayed_transactions (outbox_id);

create function relay_follows_outbox() returns trigger language plpgsql as $$
begin
  if new.purpose = 'relay' and new.state is distinct from old.state then
    update relayed_transactions r
    set status = case new.state
                   when 'queued' then 'received'
                   when 'signed' then 'pending'
                   when 'pending' then 'pending'
                   when 'reverted' then 'failed'
                   else 'mined'
                 end,
        tx_hash = coalesce(new.tx_hash,
                           (select s.tx_hash from chain_outbox_sends s
                            where s.outbox_id = new.id order by s.id desc limit 1)),
        nonce = new.nonce,
        block_number = new.block_number,
        error = case when new.state = 'reverted' then 'reverted on-chain' end,
        updated_at = now()
    where r.outbox_id = new.id;
  end if;
  return null;
end $$;

create trigger relay_follows_outbox
  after update on chain_outbox
  for each row
  execute function relay_follows_outbox();
