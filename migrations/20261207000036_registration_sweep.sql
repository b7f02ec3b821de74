-- Registrations whose outbox row is not written yet (the login recorded the request; writing the
-- transaction needs the chain node, and the sweep retries it): found without a scan.
create index account_registrations_unsent on account_registrations (chain_id, requested_at)
  where outbox_id is null;
