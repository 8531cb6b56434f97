-- OVER aggregates: the velocity check of the seeds. Every transaction gets the number of
-- transactions (and their total) of its card in the last 60 seconds, including itself and any
-- other transaction at the same instant (RANGE peers). The second INSERT flags cards with a
-- large amount compared to the mean of their previous three transactions (ROWS frame), and
-- keeps a running count per card (UNBOUNDED PRECEDING). c2's transaction at 12:00:50 arrives
-- after c1's at 12:01:00 but within the watermark delay, so it still counts in order.
CREATE TABLE transactions (
  card_id  STRING,
  amount   BIGINT,
  tx_time  TIMESTAMP(3),
  WATERMARK FOR tx_time AS tx_time - INTERVAL '30' SECOND
) WITH (
  'connector' = 'files',
  'path' = 'input/transactions.csv',
  'format' = 'csv'
);

CREATE TABLE velocity WITH ('connector' = 'files', 'path' = 'out/velocity', 'format' = 'csv');
CREATE TABLE spikes WITH ('connector' = 'files', 'path' = 'out/spikes', 'format' = 'csv');
CREATE TABLE running WITH ('connector' = 'files', 'path' = 'out/running', 'format' = 'csv');

INSERT INTO velocity
SELECT card_id, tx_time, amount,
  COUNT(*) OVER w AS tx_last_minute,
  SUM(amount) OVER w AS spent_last_minute
FROM transactions
WINDOW w AS (PARTITION BY card_id ORDER BY tx_time RANGE BETWEEN INTERVAL '60' SECOND PRECEDING AND CURRENT ROW);

INSERT INTO spikes
SELECT card_id, tx_time, amount, recent_avg
FROM (
  SELECT card_id, tx_time, amount,
    AVG(amount) OVER (PARTITION BY card_id ORDER BY tx_time ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS recent_avg,
    MAX(amount) OVER (PARTITION BY card_id ORDER BY tx_time ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS recent_max
  FROM transactions
) WHERE amount = recent_max AND amount >= 2 * recent_avg;

INSERT INTO running
SELECT card_id, tx_time,
  COUNT(*) OVER (PARTITION BY card_id ORDER BY tx_time) AS tx_so_far,
  MIN(amount) OVER (PARTITION BY card_id ORDER BY tx_time) AS smallest_so_far
FROM transactions;
