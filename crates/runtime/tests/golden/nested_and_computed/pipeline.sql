-- Nested ROW types, field access and computed columns: the Nexmark source table as Flink's
-- Nexmark suite declares it (`dateTime` is computed from whichever ROW the event carries, and
-- the watermark is declared on it), its `bid` and `person` views, and a CSV table whose event
-- time is computed from text (`ts AS TO_TIMESTAMP(raw_ts)`, the usual Flink pattern).
-- Rejects: a bid whose price is not a number (the `bid` ROW does not convert), a bid event
-- without its ROW (no event time), and a reading whose time does not parse (its computed column
-- fails: the reject names the column). A ROW column in CSV is the JSON text of its field.
CREATE TABLE datagen (
    event_type int,
    person ROW<
        id  BIGINT,
        name  VARCHAR,
        emailAddress  VARCHAR,
        creditCard  VARCHAR,
        city  VARCHAR,
        state  VARCHAR,
        dateTime TIMESTAMP(3),
        extra  VARCHAR>,
    auction ROW<
        id  BIGINT,
        itemName  VARCHAR,
        description  VARCHAR,
        initialBid  BIGINT,
        reserve  BIGINT,
        dateTime  TIMESTAMP(3),
        expires  TIMESTAMP(3),
        seller  BIGINT,
        category  BIGINT,
        extra  VARCHAR>,
    bid ROW<
        auction  BIGINT,
        bidder  BIGINT,
        price  BIGINT,
        channel  VARCHAR,
        url  VARCHAR,
        dateTime  TIMESTAMP(3),
        extra  VARCHAR>,
    dateTime AS
        CASE
            WHEN event_type = 0 THEN person.dateTime
            WHEN event_type = 1 THEN auction.dateTime
            ELSE bid.dateTime
        END,
    processed_at AS PROCTIME(),
    WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND
) WITH ('connector' = 'files', 'path' = 'input/events.jsonl', 'format' = 'json');

CREATE VIEW person AS
SELECT person.id, person.name, person.emailAddress, person.creditCard, person.city,
       person.state, dateTime, person.extra
FROM datagen WHERE event_type = 0;

CREATE VIEW bid AS
SELECT bid.auction, bid.bidder, bid.price, bid.channel, bid.url, dateTime, bid.extra
FROM datagen WHERE event_type = 2;

CREATE TABLE readings (
  sensor STRING,
  raw_ts STRING,
  v      INT,
  meta   ROW<unit STRING, tags ARRAY<STRING>>,
  ts AS TO_TIMESTAMP(raw_ts),
  doubled AS v * 2,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'files', 'path' = 'input/readings.csv', 'format' = 'csv');

CREATE TABLE bids WITH ('connector' = 'files', 'path' = 'out/bids', 'format' = 'csv');
CREATE TABLE bid_windows WITH ('connector' = 'files', 'path' = 'out/bid_windows', 'format' = 'csv');
CREATE TABLE people WITH ('connector' = 'files', 'path' = 'out/people', 'format' = 'csv');
CREATE TABLE units WITH ('connector' = 'files', 'path' = 'out/units', 'format' = 'csv');
CREATE TABLE minutes WITH ('connector' = 'files', 'path' = 'out/minutes', 'format' = 'csv');

INSERT INTO bids
SELECT auction, bidder, price, channel, dateTime FROM bid WHERE price > 15;

INSERT INTO bid_windows
SELECT auction, window_start, window_end, COUNT(*) AS bids, MAX(price) AS top
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
GROUP BY auction, window_start, window_end;

INSERT INTO people
SELECT id, UPPER(name) AS name, city, state FROM person WHERE state IN ('ID', 'OR');

INSERT INTO minutes
SELECT sensor, window_start, SUM(doubled) AS total
FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '1' MINUTE))
GROUP BY sensor, window_start, window_end;

INSERT INTO units
SELECT sensor, meta.unit, cardinality(meta.tags) AS tags FROM readings;
