-- Aggregates with FILTER (WHERE ...) over 12-hour tumbling windows. A filtered SUM or MAX that
-- sees no row is NULL; a filtered COUNT is 0.
CREATE TABLE payments (
  payment_id BIGINT,
  merchant   STRING,
  kind       STRING,
  amount     DECIMAL(10, 2),
  paid_at    TIMESTAMP(3),
  WATERMARK FOR paid_at AS paid_at - INTERVAL '2' SECOND
) WITH (
  'connector' = 'files',
  'path' = 'input/payments.csv',
  'format' = 'csv'
);

CREATE TABLE merchant_halfdays WITH ('connector' = 'files', 'path' = 'out/merchant_halfdays', 'format' = 'csv');

INSERT INTO merchant_halfdays
SELECT window_start, window_end, merchant,
       COUNT(*) AS payments,
       COUNT(*) FILTER (WHERE kind = 'refund') AS refunds,
       SUM(amount) FILTER (WHERE kind = 'charge') AS charged,
       SUM(amount) FILTER (WHERE kind = 'refund') AS refunded,
       COUNT(DISTINCT kind) FILTER (WHERE amount > 10) AS big_kinds,
       MAX(amount) FILTER (WHERE kind = 'charge') AS biggest_charge
FROM TABLE(TUMBLE(TABLE payments, DESCRIPTOR(paid_at), INTERVAL '12' HOUR))
GROUP BY window_start, window_end, merchant;
