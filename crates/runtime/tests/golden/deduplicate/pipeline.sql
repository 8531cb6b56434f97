-- Deduplication: each user's first click in event time (ROW_NUMBER over the whole stream,
-- ORDER BY the event time, rn = 1), emitted once the watermark passes it. u2's click at 10:02
-- arrives after the one at 10:04 but within the watermark delay, so it is u2's first.
-- Later clicks of a user are dropped, as the query asks. (Keeping the last row per key is
-- update mode: see the agreement tests.)
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
