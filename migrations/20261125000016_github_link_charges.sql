-- What a GitHub link past the tier's included ones was charged (credit units; deducted on-chain
-- under a reference derived from the link's OAuth state). Null: the link was included.
alter table github_accounts add column charged_credits bigint;
