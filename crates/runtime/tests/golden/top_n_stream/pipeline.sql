-- Top-N over a whole stream (Nexmark q19's shape): the three highest bids of each auction,
-- ties in arrival order (a NULL price sorts first under DESC, as in PostgreSQL and DataFusion;
-- write NULLS LAST to change it). In a stream this runs in update mode, each row
-- keyed by (auction, rank_number): a downstream upsert holds exactly this batch answer.
CREATE TABLE bid (
  auction  BIGINT,
  bidder   BIGINT,
  price    BIGINT,
  bid_time TIMESTAMP(3),
  WATERMARK FOR bid_time AS bid_time - INTERVAL '4' SECOND
) WITH ('connector' = 'files', 'path' = 'input/bids.csv', 'format' = 'csv');

CREATE TABLE top_bids WITH ('connector' = 'files', 'path' = 'out/top_bids', 'format' = 'csv');

INSERT INTO top_bids
SELECT * FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number
  FROM bid
) WHERE rank_number <= 3;
