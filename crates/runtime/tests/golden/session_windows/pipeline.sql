-- Session windows: a user's clicks less than 10 minutes apart form one session, from the
-- first click to the last click + 10 minutes. u2's click at 10:16 arrives after u1's at 10:20
-- but within the watermark delay, so it still joins u2's open session. The second INSERT finds
-- sessions over all users (no PARTITION BY), with named arguments.
CREATE TABLE clicks (
  user_id    STRING,
  amount     INT,
  clicked_at TIMESTAMP(3),
  WATERMARK FOR clicked_at AS clicked_at - INTERVAL '5' MINUTE
) WITH (
  'connector' = 'files',
  'path' = 'input/clicks.csv',
  'format' = 'csv'
);

CREATE TABLE user_sessions WITH ('connector' = 'files', 'path' = 'out/user_sessions', 'format' = 'csv');
CREATE TABLE busy_periods WITH ('connector' = 'files', 'path' = 'out/busy_periods', 'format' = 'csv');

INSERT INTO user_sessions
SELECT window_start, window_end, user_id, COUNT(*) AS clicks, SUM(amount) AS total
FROM TABLE(SESSION(TABLE clicks PARTITION BY user_id, DESCRIPTOR(clicked_at), INTERVAL '10' MINUTE))
GROUP BY window_start, window_end, user_id;

INSERT INTO busy_periods
SELECT window_start, window_end, COUNT(*) AS clicks, COUNT(DISTINCT user_id) AS users
FROM TABLE(SESSION(DATA => TABLE clicks, TIMECOL => DESCRIPTOR(clicked_at), GAP => INTERVAL '10' MINUTE))
GROUP BY window_start, window_end;
