-- A sink partitioned by two columns (Flink's PARTITIONED BY clause): one Hive folder per day
-- and category. Category values need escaping in folder names (`/`, `:`), and a NULL category
-- goes to Hive's default partition. An empty field is NULL here (`csv.null-literal` = '').
CREATE TABLE orders (
  order_id   BIGINT,
  category   STRING,
  amount     DECIMAL(10, 2),
  ordered_at TIMESTAMP(3),
  WATERMARK FOR ordered_at AS ordered_at - INTERVAL '30' MINUTE
) WITH (
  'connector' = 'files',
  'path' = 'input/orders.csv',
  'format' = 'csv',
  'csv.null-literal' = ''
);

CREATE TABLE category_daily PARTITIONED BY (day, category) WITH (
  'connector' = 'files',
  'path' = 'out/category_daily',
  'format' = 'csv'
);

INSERT INTO category_daily
SELECT CAST(window_start AS DATE) AS day, category,
       COUNT(*) AS orders, SUM(amount) AS revenue, MAX(amount) AS biggest
FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ordered_at), INTERVAL '1' DAY))
GROUP BY window_start, window_end, category;
