-- Cumulating windows: every 30 minutes a new window starts and grows by 10 minutes, so each
-- store's running total within the half hour is emitted every 10 minutes (a row is in every
-- window of its half hour that ends after it). The second INSERT uses named arguments and
-- a window without keys.
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

CREATE TABLE running WITH ('connector' = 'files', 'path' = 'out/running', 'format' = 'csv');
CREATE TABLE running_all WITH ('connector' = 'files', 'path' = 'out/running_all', 'format' = 'csv');

INSERT INTO running
SELECT window_start, window_end, store_id, SUM(amount) AS revenue, COUNT(*) AS orders
FROM TABLE(CUMULATE(TABLE orders, DESCRIPTOR(ordered_at), INTERVAL '10' MINUTE, INTERVAL '30' MINUTE))
GROUP BY window_start, window_end, store_id;

INSERT INTO running_all
SELECT window_start, window_end, COUNT(*) AS orders, MAX(amount) AS biggest,
       APPROX_COUNT_DISTINCT(store_id) AS stores
FROM TABLE(CUMULATE(
  DATA => TABLE orders,
  TIMECOL => DESCRIPTOR(ordered_at),
  STEP => INTERVAL '10' MINUTE,
  SIZE => INTERVAL '30' MINUTE))
GROUP BY window_start, window_end;
