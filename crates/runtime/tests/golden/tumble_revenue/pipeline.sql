-- Hourly revenue per store and day: DECIMAL sums over a tumbling window, from CSV files in
-- Hive folders (`dt=YYYY-MM-DD/`, read into the DATE column `dt`). Some rows arrive out of
-- order, but never by more than the watermark delay, so stream mode must not reject them.
CREATE TABLE orders (
  order_id   BIGINT NOT NULL,
  store_id   VARCHAR,
  amount     DECIMAL(10, 2),
  event_time TIMESTAMP(3),
  dt         DATE,
  WATERMARK FOR event_time AS event_time - INTERVAL '5' MINUTE
) WITH (
  'connector' = 'files',
  'path' = 'input/orders',
  'format' = 'csv'
);

CREATE TABLE hourly_revenue WITH (
  'connector' = 'files',
  'path' = 'out/hourly_revenue',
  'format' = 'csv'
);

INSERT INTO hourly_revenue
SELECT window_start, window_end, dt, store_id, SUM(amount) AS revenue, COUNT(*) AS orders
FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(event_time), INTERVAL '1' HOUR))
GROUP BY window_start, window_end, dt, store_id;
