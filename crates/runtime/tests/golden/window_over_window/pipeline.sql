-- A window aggregate over a window aggregate, then a window join (Nexmark q5's shape): the
-- auctions with the most bids in each 10-minute window sliding by 5 minutes. The maximum per
-- window groups the first aggregate's results by its window bounds (renamed), so it is a
-- window aggregate of the same windows: each window's counts arrive before the watermark that
-- closes it. The join matches both on the window bounds: a window join. Ties are all kept.
CREATE TABLE bids (
  auction BIGINT,
  bid_at  TIMESTAMP(3),
  WATERMARK FOR bid_at AS bid_at - INTERVAL '1' MINUTE
) WITH ('connector' = 'files', 'path' = 'input/bids.csv', 'format' = 'csv');

CREATE TABLE hot_items WITH ('connector' = 'files', 'path' = 'out/hot_items', 'format' = 'csv');

CREATE VIEW auction_bids AS
SELECT auction, COUNT(*) AS num, window_start AS starttime, window_end AS endtime
FROM TABLE(HOP(TABLE bids, DESCRIPTOR(bid_at), INTERVAL '5' MINUTE, INTERVAL '10' MINUTE))
GROUP BY auction, window_start, window_end;

CREATE VIEW max_bids AS
SELECT MAX(num) AS maxn, starttime, endtime
FROM auction_bids
GROUP BY starttime, endtime;

INSERT INTO hot_items
SELECT a.starttime, a.auction, a.num
FROM auction_bids AS a
JOIN max_bids AS m
  ON a.starttime = m.starttime AND a.endtime = m.endtime AND a.num >= m.maxn;
