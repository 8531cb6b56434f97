-- A stateless pipeline (no window, no watermark): CASE, CAST, upper, concat, coalesce,
-- date_trunc and a WHERE filter with NULL semantics. `csv.null-literal` makes the text NULL a
-- NULL for string columns too; an empty string field stays an empty string.
CREATE TABLE customers (
  id         INT,
  first_name STRING,
  last_name  STRING,
  email      STRING,
  tier       STRING,
  balance    DECIMAL(10, 2),
  signed_up  TIMESTAMP(3),
  score      DOUBLE
) WITH (
  'connector' = 'files',
  'path' = 'input/customers.csv',
  'format' = 'csv',
  'csv.null-literal' = 'NULL'
);

CREATE TABLE cleaned WITH ('connector' = 'files', 'path' = 'out/cleaned', 'format' = 'csv');

INSERT INTO cleaned
SELECT
  id,
  upper(last_name) AS last_upper,
  concat(first_name, ' ', last_name) AS full_name,
  coalesce(email, 'unknown') AS email,
  CASE
    WHEN balance >= 1000 THEN 'gold'
    WHEN balance >= 100 THEN 'silver'
    ELSE 'basic'
  END AS band,
  CAST(balance AS BIGINT) AS whole_balance,
  date_trunc('month', signed_up) AS signup_month,
  CAST(signed_up AS DATE) AS signup_day,
  CAST(score * 2 AS INT) AS double_score
FROM customers
WHERE tier <> 'banned' AND (balance > 0 OR email IS NOT NULL);
