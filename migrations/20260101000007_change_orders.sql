-- OrderPay and OrderCancel for a batch of orders in one call: one round trip and one commit for
-- all of them. The service reads the orders first, without locks, decides each request in arrival
-- order against the order as the requests before it left it, and builds the events (Protobuf, by
-- the same encoder as every other event). This call then applies the changes of the orders that
-- no one changed since that read, and returns the others as stale: the service reads and decides
-- their requests again. Every change of an order moves its event_seq, so an order whose event_seq
-- is the one read has not changed.
--
-- Each order comes once: a change leaves an order payed or cancelled, and neither changes again.
-- Orders are locked in id order, then the stock rows in sku order, as every other writer of stocks
-- locks them, so concurrent batches cannot deadlock. A change returns its order's reservation
-- (p_unreserve) and takes its units off the stock (p_write_off), as its new status asks.
--
-- A call repeated after its acknowledgement was lost finds its orders changed, and applies nothing.
CREATE OR REPLACE FUNCTION change_orders(
    p_ids bigint[],
    p_seen_seqs bigint[],
    p_statuses text[],
    p_unreserve boolean[],
    p_write_off boolean[],
    p_topic text,
    p_keys text[],
    p_payloads bytea[],
    p_headers jsonb[],
    OUT stale bigint[]
) LANGUAGE plpgsql AS $$
DECLARE
    fresh bigint[];
    skus bigint[];
    unreserved bigint[];
    written_off bigint[];
    locked int;
BEGIN
    SELECT COALESCE(array_agg(o.id), '{}') INTO fresh
    FROM (SELECT id, event_seq FROM orders WHERE id = ANY (p_ids) ORDER BY id FOR UPDATE) o
    JOIN unnest(p_ids, p_seen_seqs) AS u(id, seq) ON u.id = o.id AND u.seq = o.event_seq;
    stale := ARRAY(SELECT id FROM unnest(p_ids) AS id WHERE id <> ALL (fresh));

    SELECT COALESCE(array_agg(d.sku ORDER BY d.sku), '{}'),
           COALESCE(array_agg(d.unreserved ORDER BY d.sku), '{}'),
           COALESCE(array_agg(d.written_off ORDER BY d.sku), '{}')
    INTO skus, unreserved, written_off
    FROM (SELECT l.sku,
                 sum(l.count)::bigint AS unreserved,
                 COALESCE(sum(l.count) FILTER (WHERE u.write_off), 0)::bigint AS written_off
          FROM unnest(p_ids, p_unreserve, p_write_off) AS u(id, unreserve, write_off)
          JOIN orders o ON o.id = u.id
          CROSS JOIN LATERAL unnest(o.skus, o.counts) AS l(sku, count)
          WHERE u.unreserve AND u.id = ANY (fresh)
          GROUP BY l.sku) d;

    -- The stock rows the changes touch, locked in sku order before any is updated.
    SELECT count(*) INTO locked
    FROM (SELECT sku FROM stocks WHERE sku = ANY (skus) ORDER BY sku FOR UPDATE) s;

    UPDATE stocks s
    SET reserved = s.reserved - d.unreserved, total_count = s.total_count - d.written_off
    FROM unnest(skus, unreserved, written_off) AS d(sku, unreserved, written_off)
    WHERE s.sku = d.sku;

    UPDATE orders o SET status = u.status, event_seq = u.seq + 1, updated_at = now()
    FROM unnest(p_ids, p_seen_seqs, p_statuses) AS u(id, seq, status)
    WHERE o.id = u.id AND u.id = ANY (fresh);

    -- Events in the batch's order: ids are taken in this order.
    INSERT INTO outbox (topic, key, payload, headers)
    SELECT p_topic, p_keys[n], p_payloads[n], p_headers[n]
    FROM generate_series(1, cardinality(p_ids)) AS n
    WHERE p_ids[n] = ANY (fresh)
    ORDER BY n;
END
$$;
