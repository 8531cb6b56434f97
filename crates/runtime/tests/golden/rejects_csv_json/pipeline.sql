-- Bad rows in a CSV and a JSON lines source: each goes to the reject bin with its reason, file
-- and line, and the good rows are still aggregated.
CREATE TABLE store_sales (
  sale_id BIGINT NOT NULL,
  store   STRING,
  amount  DECIMAL(6, 2),
  sold_at TIMESTAMP(3),
  WATERMARK FOR sold_at AS sold_at - INTERVAL '1' MINUTE
) WITH (
  'connector' = 'files',
  'path' = 'input/store_sales.csv',
  'format' = 'csv'
);

CREATE TABLE web_sales (
  sale_id BIGINT NOT NULL,
  store   STRING,
  amount  DECIMAL(6, 2),
  sold_at TIMESTAMP(3),
  WATERMARK FOR sold_at AS sold_at - INTERVAL '1' MINUTE
) WITH (
  'connector' = 'files',
  'path' = 'input/web_sales.jsonl',
  'format' = 'json'
);

CREATE TABLE store_hourly WITH ('connector' = 'files', 'path' = 'out/store_hourly', 'format' = 'csv');
CREATE TABLE web_hourly WITH ('connector' = 'files', 'path' = 'out/web_hourly', 'format' = 'csv');

INSERT INTO store_hourly
SELECT window_start, store, COUNT(*) AS sales, SUM(amount) AS revenue
FROM TABLE(TUMBLE(TABLE store_sales, DESCRIPTOR(sold_at), INTERVAL '1' HOUR))
GROUP BY window_start, window_end, store;

INSERT INTO web_hourly
SELECT window_start, store, COUNT(*) AS sales, SUM(amount) AS revenue
FROM TABLE(TUMBLE(TABLE web_sales, DESCRIPTOR(sold_at), INTERVAL '1' HOUR))
GROUP BY window_start, window_end, store;
