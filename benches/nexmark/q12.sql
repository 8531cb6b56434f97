-- Nexmark q12: Processing Time Windows (Not in original suite). How many bids does a user make within a fixed processing time limit?
-- Source: nexmark/nexmark nexmark-flink/src/main/resources/queries/q12.sql (Apache License 2.0)
-- Upstream commit: 63b8d3163c4b8df5d7ca6763ca7f6fcda9032c53
-- Changes from the published text: none.
-- Flowline: not applicable: its windows are over processing time (`PROCTIME()`), so its result depends on the machine's speed and cannot be compared across engines, modes or runs.
-- Note: This is the only revision of q12.sql in the stored index. Its sink is named discard_sink; upstream
--       master names it nexmark_q12 (seen only in a third-party copy), with the text otherwise the same.
--       Uses PROCTIME() (processing time), so its output is not deterministic.

-- -------------------------------------------------------------------------------------------------
-- Query 12: Processing Time Windows (Not in original suite)
-- -------------------------------------------------------------------------------------------------
-- How many bids does a user make within a fixed processing time limit?
-- Illustrates working in processing time window.
--
-- Group bids by the same user into processing time windows of 10 seconds.
-- Emit the count of bids per window.
-- -------------------------------------------------------------------------------------------------

CREATE TABLE discard_sink (
  bidder BIGINT,
  bid_count BIGINT,
  starttime TIMESTAMP(3),
  endtime TIMESTAMP(3)
) WITH (
  'connector' = 'blackhole'
);

CREATE VIEW B AS SELECT *, PROCTIME() as p_time FROM bid;

INSERT INTO discard_sink
SELECT
    bidder,
    count(*) as bid_count,
    window_start AS starttime,
    window_end AS endtime
FROM TABLE(
        TUMBLE(TABLE B, DESCRIPTOR(p_time), INTERVAL '10' SECOND))
GROUP BY bidder, window_start, window_end;
