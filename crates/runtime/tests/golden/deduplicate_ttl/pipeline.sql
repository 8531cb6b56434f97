-- Deduplication with a state TTL: a user's first click holds for clicks at most an hour after
-- it (event time), so a click later than that is a first click again, as in Flink. u1's click
-- at 11:00 is exactly an hour after 10:00: still a duplicate; 11:01 is not. u2's first click
-- is at 10:02 (it arrives after 10:04, within the watermark delay), so 11:03 starts u2 again
-- and 11:30 is a duplicate of that. The TTL is in event time, so batch and stream agree
-- whatever the batch sizes and watermarks, and a restored job too.
SET 'table.exec.state.ttl' = '1 h';

CREATE TABLE clicks (
  user_id    STRING,
  page       STRING,
  clicked_at TIMESTAMP(3),
  WATERMARK FOR clicked_at AS clicked_at - INTERVAL '5' MINUTE
) WITH ('connector' = 'files', 'path' = 'input/clicks.csv', 'format' = 'csv');

CREATE TABLE first_clicks WITH ('connector' = 'files', 'path' = 'out/first_clicks', 'format' = 'csv');

INSERT INTO first_clicks
SELECT user_id, page, clicked_at
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY clicked_at) AS rn
  FROM clicks
) WHERE rn = 1;
