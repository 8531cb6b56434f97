-- Queries only batch mode runs (on DataFusion): an ORDER BY ... LIMIT and a TUMBLE window
-- aggregate sorted by ORDER BY (the window relation is materialized for DataFusion; no
-- WATERMARK is needed in batch mode). The LEFT JOIN with a dimension table and a plain GROUP
-- BY, the plain GROUP BY and the last INSERT run on the dataflow, from the same single read of
-- `orders`. Stream mode must refuse the whole pipeline at plan time, naming the LIMIT of the
-- second INSERT, before any output is written.
CREATE TABLE orders (
  order_id   BIGINT,
  store_id   STRING,
  amount     DECIMAL(10, 2),
  ordered_at TIMESTAMP(3)
) WITH (
  'connector' = 'files',
  'path' = 'input/orders.csv',
  'format' = 'csv'
);

CREATE TABLE stores (
  store_id STRING,
  city     STRING,
  opened   DATE
) WITH (
  'connector' = 'files',
  'path' = 'input/stores.jsonl',
  'format' = 'json'
);

CREATE TABLE city_revenue WITH ('connector' = 'files', 'path' = 'out/city_revenue', 'format' = 'csv');
CREATE TABLE top_orders WITH ('connector' = 'files', 'path' = 'out/top_orders', 'format' = 'csv');
CREATE TABLE store_totals WITH ('connector' = 'files', 'path' = 'out/store_totals', 'format' = 'csv');
CREATE TABLE hourly_ranked WITH ('connector' = 'files', 'path' = 'out/hourly_ranked', 'format' = 'csv');
CREATE TABLE big_orders WITH ('connector' = 'files', 'path' = 'out/big_orders', 'format' = 'csv');

INSERT INTO city_revenue
SELECT coalesce(s.city, 'unknown') AS city, COUNT(*) AS orders, SUM(o.amount) AS revenue
FROM orders o LEFT JOIN stores s ON o.store_id = s.store_id
GROUP BY coalesce(s.city, 'unknown');

INSERT INTO top_orders
SELECT order_id, store_id, amount
FROM orders
ORDER BY amount DESC, order_id
LIMIT 3;

INSERT INTO store_totals
SELECT store_id, COUNT(*) AS orders, MIN(ordered_at) AS first_order
FROM orders
GROUP BY store_id;

INSERT INTO hourly_ranked
SELECT window_start, store_id, SUM(amount) AS revenue
FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ordered_at), INTERVAL '1' HOUR))
GROUP BY window_start, window_end, store_id
ORDER BY revenue DESC, window_start;

INSERT INTO big_orders
SELECT order_id, upper(store_id) AS store, amount
FROM orders
WHERE amount >= 10;
