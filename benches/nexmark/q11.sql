-- Nexmark q11: User Sessions (Not in original suite). How many bids did a user make in each session they were active?
-- Source: nexmark/nexmark nexmark-flink/src/main/resources/queries/q11.sql (Apache License 2.0)
-- Upstream commit: 0f96e93c85ae6f5c29116f8b736e95cb5dc5a318
-- Changes from the published text: none.
-- Note: Newest upstream revision in the stored index. Upstream master later quotes the column as `dateTime`
--       (nexmark PR #63, for Calcite 1.34); that revision is not in the index. Only the quoting differs.

-- -------------------------------------------------------------------------------------------------
-- Query 11: User Sessions (Not in original suite)
-- -------------------------------------------------------------------------------------------------
-- How many bids did a user make in each session they were active? Illustrates session windows.
--
-- Group bids by the same user into sessions with max session gap.
-- Emit the number of bids per session.
-- -------------------------------------------------------------------------------------------------

CREATE TABLE nexmark_q11 (
  bidder BIGINT,
  bid_count BIGINT,
  starttime TIMESTAMP(3),
  endtime TIMESTAMP(3)
) WITH (
  'connector' = 'blackhole'
);

INSERT INTO nexmark_q11
SELECT
    B.bidder,
    count(*) as bid_count,
    SESSION_START(B.dateTime, INTERVAL '10' SECOND) as starttime,
    SESSION_END(B.dateTime, INTERVAL '10' SECOND) as endtime
FROM bid B
GROUP BY B.bidder, SESSION(B.dateTime, INTERVAL '10' SECOND);
