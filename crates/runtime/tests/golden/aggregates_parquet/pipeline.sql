-- Daily statistics per region over Parquet files in Hive folders
-- (`dt=YYYY-MM-DD/region=xx/`; `region` is read from the folder name). The Parquet files are
-- written by the test runner from the CSV files under input/_parquet_src/ (folders starting
-- with `_` are not read by the source). Exercises COUNT(col), COUNT(DISTINCT), MIN/MAX on
-- strings and timestamps, MIN over only NULLs, AVG on DECIMAL and INT, SUM on INT.
CREATE TABLE sales (
  sale_id  BIGINT,
  customer STRING,
  product  STRING,
  price    DECIMAL(8, 2),
  qty      INT,
  sold_at  TIMESTAMP(3),
  region   STRING,
  WATERMARK FOR sold_at AS sold_at - INTERVAL '1' HOUR
) WITH (
  'connector' = 'files',
  'path' = 'input/sales',
  'format' = 'parquet'
);

CREATE TABLE daily_stats WITH ('connector' = 'files', 'path' = 'out/daily_stats', 'format' = 'csv');

INSERT INTO daily_stats
SELECT window_start, region,
       COUNT(*) AS sales,
       COUNT(customer) AS with_customer,
       COUNT(DISTINCT customer) AS customers,
       MIN(customer) AS first_customer,
       MIN(product) AS min_product,
       MAX(product) AS max_product,
       MIN(sold_at) AS first_sale,
       MAX(sold_at) AS last_sale,
       AVG(price) AS avg_price,
       AVG(qty) AS avg_qty,
       SUM(qty) AS units
FROM TABLE(TUMBLE(TABLE sales, DESCRIPTOR(sold_at), INTERVAL '1' DAY))
GROUP BY window_start, window_end, region;
