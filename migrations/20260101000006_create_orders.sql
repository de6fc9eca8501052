-- OrderCreate for a batch of orders in one call: one round trip and one commit for all of them.
-- A function rather than one set-based statement because each order is decided against the stock
-- as the orders before it in the batch left it, which is a loop, not a join.
--
-- Each order is decided on its own, all or nothing, in the order given. Every stock row the batch
-- names is locked first, in sku order, as every other writer of stocks locks them, so concurrent
-- batches cannot deadlock. Lines come flat: order i has lines line_ends[i-1]+1 .. line_ends[i]
-- of p_skus and p_counts (each order's sorted by sku, one line per sku). Every order has
-- p_event_seq events, in p_keys and, for each outcome, in its payloads and headers.
--
-- Returns, per order, whether it was reserved and, per line, the units that were available when
-- its order was decided (NULL for a sku with no stock). A batch whose first order exists already
-- was committed by an earlier call whose acknowledgement was lost: it is reported, not applied
-- again (line_available is then empty).
CREATE OR REPLACE FUNCTION create_orders(
    p_ids bigint[],
    p_user_ids bigint[],
    p_line_ends int[],
    p_skus bigint[],
    p_counts bigint[],
    p_reserved_status text,
    p_failed_status text,
    p_event_seq bigint,
    p_topic text,
    p_keys text[],
    p_reserved_payloads bytea[],
    p_reserved_headers jsonb[],
    p_failed_payloads bytea[],
    p_failed_headers jsonb[],
    OUT outcomes boolean[],
    OUT line_available bigint[]
) LANGUAGE plpgsql AS $$
DECLARE
    stock_skus bigint[];
    stock_before bigint[];
    stock_left bigint[];
    i int;
    j int;
    pos int;
    first_line int := 1;
    fits boolean;
BEGIN
    outcomes := '{}';
    line_available := '{}';
    IF EXISTS (SELECT 1 FROM orders WHERE id = p_ids[1]) THEN
        SELECT array_agg(o.status = p_reserved_status ORDER BY u.n) INTO outcomes
        FROM unnest(p_ids) WITH ORDINALITY AS u(id, n) JOIN orders o ON o.id = u.id;
        RETURN;
    END IF;

    SELECT COALESCE(array_agg(s.sku ORDER BY s.sku), '{}'),
           COALESCE(array_agg(s.total_count - s.reserved ORDER BY s.sku), '{}')
    INTO stock_skus, stock_before
    FROM (SELECT sku, total_count, reserved FROM stocks
          WHERE sku = ANY (p_skus) ORDER BY sku FOR UPDATE) s;
    stock_left := stock_before;

    FOR i IN 1 .. cardinality(p_ids) LOOP
        fits := true;
        FOR j IN first_line .. p_line_ends[i] LOOP
            pos := array_position(stock_skus, p_skus[j]);
            line_available[j] := stock_left[pos];
            IF pos IS NULL OR stock_left[pos] < p_counts[j] THEN
                fits := false;
            END IF;
        END LOOP;
        IF fits THEN
            FOR j IN first_line .. p_line_ends[i] LOOP
                pos := array_position(stock_skus, p_skus[j]);
                stock_left[pos] := stock_left[pos] - p_counts[j];
            END LOOP;
        END IF;
        outcomes[i] := fits;
        first_line := p_line_ends[i] + 1;
    END LOOP;

    UPDATE stocks s SET reserved = s.reserved + (d.before - d.left_over)
    FROM unnest(stock_skus, stock_before, stock_left) AS d(sku, before, left_over)
    WHERE s.sku = d.sku AND d.before <> d.left_over;

    INSERT INTO orders (id, user_id, status, event_seq, skus, counts)
    SELECT p_ids[n], p_user_ids[n],
           CASE WHEN outcomes[n] THEN p_reserved_status ELSE p_failed_status END,
           p_event_seq,
           p_skus[COALESCE(p_line_ends[n - 1], 0) + 1 : p_line_ends[n]],
           p_counts[COALESCE(p_line_ends[n - 1], 0) + 1 : p_line_ends[n]]
    FROM generate_series(1, cardinality(p_ids)) AS n;

    -- Events in the batch's order, each order's in its own: ids are taken in this order.
    INSERT INTO outbox (topic, key, payload, headers)
    SELECT p_topic, p_keys[e],
           CASE WHEN outcomes[(e - 1) / p_event_seq + 1] THEN p_reserved_payloads[e] ELSE p_failed_payloads[e] END,
           CASE WHEN outcomes[(e - 1) / p_event_seq + 1] THEN p_reserved_headers[e] ELSE p_failed_headers[e] END
    FROM generate_series(1, cardinality(p_keys)) AS e
    ORDER BY e;
END
$$;
