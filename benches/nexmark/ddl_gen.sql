-- Nexmark ddl_gen: the source table of generated Nexmark events (person, auction and bid as nested ROWs
-- of one stream, told apart by event_type 0/1/2), with a computed event-time column and a 4 s watermark.
-- Source: nexmark/nexmark nexmark-flink/src/main/resources/queries/ddl_gen.sql (Apache License 2.0)
-- Upstream commit: eb6c5a81318c537d832e6f3764b80463c0017358
-- Changes from the published text: the ${...} placeholders that the upstream runner fills in were
--   replaced by literal values: ${TPS} -> '10000000' (first-event.rate, next-event.rate),
--   ${EVENTS_NUM} -> '100000', ${PERSON_PROPORTION} -> '1', ${AUCTION_PROPORTION} -> '3',
--   ${BID_PROPORTION} -> '46'. Nothing else was changed.
-- Note: upstream names this table datagen; ddl_views.sql reads it through ${NEXMARK_TABLE}, which the
--       upstream runner sets to datagen (or to kafka when the Kafka source DDL is used).

CREATE TABLE datagen (
    event_type int,
    person ROW<
        id  BIGINT,
        name  VARCHAR,
        emailAddress  VARCHAR,
        creditCard  VARCHAR,
        city  VARCHAR,
        state  VARCHAR,
        `dateTime` TIMESTAMP(3),
        extra  VARCHAR>,
    auction ROW<
        id  BIGINT,
        itemName  VARCHAR,
        description  VARCHAR,
        initialBid  BIGINT,
        reserve  BIGINT,
        `dateTime`  TIMESTAMP(3),
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
        `dateTime`  TIMESTAMP(3),
        extra  VARCHAR>,
    `dateTime` AS
        CASE
            WHEN event_type = 0 THEN person.`dateTime`
            WHEN event_type = 1 THEN auction.`dateTime`
            ELSE bid.`dateTime`
        END,
    WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '4' SECOND
) WITH (
    'connector' = 'nexmark',
    'first-event.rate' = '10000000',
    'next-event.rate' = '10000000',
    'events.num' = '100000',
    'person.proportion' = '1',
    'auction.proportion' = '3',
    'bid.proportion' = '46'
);
