-- Window Top-N: the two best stores of each hour by revenue (ROW_NUMBER over a window
-- aggregate, ties broken by store), the same with RANK (ties share a place, so an hour may
-- keep three), and the biggest single order of each hour, ranked over the window's rows.
CREATE TABLE orders (
  store_id   STRING,
  amount     DECIMAL(10, 2),
  ordered_at TIMESTAMP(3),
  WATERMARK FOR ordered_at AS ordered_at - INTERVAL '1' MINUTE
) WITH (
  'connector' = 'files',
  'path' = 'input/orders.csv',
  'format' = 'csv'
);

CREATE TABLE top_stores WITH ('connector' = 'files', 'path' = 'out/top_stores', 'format' = 'csv');
CREATE TABLE ranked_stores WITH ('connector' = 'files', 'path' = 'out/ranked_stores', 'format' = 'csv');
CREATE TABLE biggest_orders WITH ('connector' = 'files', 'path' = 'out/biggest_orders', 'format' = 'csv');

CREATE VIEW hourly AS
SELECT window_start, window_end, store_id, SUM(amount) AS revenue
FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ordered_at), INTERVAL '1' HOUR))
GROUP BY window_start, window_end, store_id;

INSERT INTO top_stores
SELECT window_start, window_end, store_id, revenue, rn
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY revenue DESC, store_id) AS rn
  FROM hourly
) WHERE rn <= 2;

INSERT INTO ranked_stores
SELECT window_start, store_id, revenue, place
FROM (
  SELECT *, RANK() OVER (PARTITION BY window_start, window_end ORDER BY revenue DESC) AS place
  FROM hourly
) WHERE place <= 2;

INSERT INTO biggest_orders
SELECT window_start, store_id, amount, ordered_at
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY window_end ORDER BY amount DESC, ordered_at) AS rn
  FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ordered_at), INTERVAL '1' HOUR))
) WHERE rn = 1;
