-- Events the relay cannot publish however often it retries (the broker refuses the record as
-- too large or invalid), with every later event of the same order behind them: one poison
-- event holds back only its own order. `loms outbox parked | retry | drop` handle them.
CREATE TABLE IF NOT EXISTS outbox_parked (
    id         BIGINT PRIMARY KEY,
    topic      TEXT NOT NULL,
    key        TEXT NOT NULL,
    payload    BYTEA NOT NULL,
    headers    JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    -- Why: the broker's refusal for the first event of the order, "behind" for the rest.
    error      TEXT NOT NULL,
    parked_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The relay asks, for every row it reads, whether its order has parked events.
CREATE INDEX IF NOT EXISTS outbox_parked_key ON outbox_parked (key);
