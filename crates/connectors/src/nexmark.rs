//! Nexmark event generator that writes Arrow batches directly.
//!
//! # What it follows
//!
//! The generator follows the Nexmark benchmark as implemented by the Flink Nexmark suite
//! (`nexmark/nexmark`, `nexmark-flink/.../generator`: `GeneratorConfig`, `NexmarkConfiguration`,
//! `NexmarkGenerator`, `model/{Person,Auction,Bid}Generator`, `PriceGenerator`,
//! `StringsGenerator`, and the `nexmark` table of `queries/ddl.sql` / `NexmarkTableSource`):
//!
//! * **Event kinds.** Event number `n` (0-based) has event id `n`; `n % 50` (the sum of the
//!   proportions person : auction : bid = 1 : 3 : 46) decides the kind: `0` a person, `1..=3` an
//!   auction, the rest a bid.
//! * **Ids.** Persons and auctions are numbered densely from 1000 (`FIRST_PERSON_ID`,
//!   `FIRST_AUCTION_ID`) in event order: the id is "the last person (auction) id at this event id"
//!   (`lastBase0PersonId` / `lastBase0AuctionId`). A reference to a person picks one of the last
//!   `num_active_people` persons plus `person_id_lead` (10) ids ahead; a reference to an auction
//!   picks one of the last `num_in_flight_auctions` auctions plus `auction_id_lead` (10) ahead. Hot
//!   rules: with probability `1 - 1/hot_auction_ratio` a bid goes to the first auction of the
//!   current block of 100 auctions, with probability `1 - 1/hot_bidders_ratio` the bidder is the
//!   second person of the current block of 100 persons, with probability
//!   `1 - 1/hot_sellers_ratio` the seller is the first person of that block. Categories are
//!   `10 + uniform(num_categories)`.
//! * **Auction expiry.** `expires = dateTime + 1 + uniform(max(2 * horizon, 1))` where `horizon`
//!   is the time until the event `num_in_flight_auctions * 50 / 3` events ahead.
//! * **Prices.** `round(10^(6u) * 100)` with `u` uniform in `[0, 1)` (1.00 to 1 000 000.00 in
//!   cents); `reserve = initialBid + price`.
//! * **Strings.** Names from Flink's first/last name lists, cities from its city list and the
//!   states `AZ, CA, ID, OR, WA, WY` **in upper case** (as Flink; q3 filters on `'OR','ID','CA'`).
//!   E-mail `<string(7)>@<string(5)>.com`, credit card `dddd dddd dddd dddd`, item name
//!   `string(20)`, description `string(100)` where `string(max)` has `3..max-1` characters, each a
//!   space with probability 1/13, else `a..z`, then trimmed.
//! * **Bid channel and url.** With probability 1/2 one of the hot channels `Google`, `Facebook`,
//!   `Baidu`, `Apple` with its fixed url; else `channel-<c>` for `c` uniform in `0..10000`, whose
//!   url is `https://www.nexmark.com/<s>/<s>/<s>/item.htm?query=1` (`s` a `string(5)` with `_`
//!   for the special character) followed, for 9 channels in 10, by
//!   `&channel_id=<abs(Integer.reverse(c))>`. A channel always has the same url.
//! * **`extra` padding.** Each event gets an `extra` string of `a..z` so that its idealized size
//!   averages `avg_person_byte_size` (200), `avg_auction_byte_size` (500), `avg_bid_byte_size`
//!   (100): length `d - δ + uniform(2δ)` with `d` the missing size and `δ = round(d / 5)`.
//! * **Time.** Event number `n` has `dateTime = base_time_ms + floor(n * 1000 / first_event_rate)`
//!   (Flink's `timestampForEvent` with one generator). With `out_of_order_group_size = k > 1`,
//!   position `p` emits event number `(p / k) * k + (p * 953) % k` (Flink's
//!   `nextAdjustedEventNumber`): kind, ids, content and timestamp all follow that event number, so
//!   each group of `k` positions holds the same events as in order, permuted, and every
//!   timestamp stays within its group's time range. (For `k` dividing 952, `953 % k == 1` and
//!   Flink's permutation is the identity. When `events` is not a multiple of `k`, the last,
//!   partial group emits some event numbers of the full group, past `events`, as Flink does.)
//!
//! # Defaults ([`NexmarkConfig::default`])
//!
//! `events` 100 000 000 (the Flink suite's `100m` workload), `layout` [`Layout::Nested`],
//! `base_time_ms` [`DEFAULT_BASE_TIME_MS`] (2024-01-01T00:00:00Z, fixed: never the wall clock),
//! `first_event_rate` 10 000 events/s, `out_of_order_group_size` 1 (in order), proportions
//! 1 / 3 / 46, `avg_person_byte_size` 200, `avg_auction_byte_size` 500, `avg_bid_byte_size` 100,
//! `hot_auction_ratio` 2, `hot_sellers_ratio` 4, `hot_bidders_ratio` 4, `num_active_people` 1000,
//! `num_in_flight_auctions` 100, `num_categories` 5, `person_id_lead` 10, `auction_id_lead` 10,
//! `seed` 0.
//!
//! # Determinism and ranges
//!
//! An event is a pure function of `(config, event number)`: every event draws from its own
//! pseudo-random stream seeded by `(seed, event id)`. The same config always yields the same
//! events, and generating positions `[a, b)` then `[b, c)` (with [`NexmarkGenerator::at`] or
//! [`NexmarkGenerator::skip_to`], in any batch sizes) yields exactly the rows of generating
//! `[a, c)`, so a stream can be generated in parallel ranges or resumed from a position.
//!
//! # Output
//!
//! [`Layout::Nested`] is Flink's `nexmark` table ([`nested_schema`]): `event_type INT` (0 person,
//! 1 auction, 2 bid) and the structs `person`, `auction`, `bid`; a row's other two structs are
//! NULL (and so are their fields). [`Layout::Split`] gives three flat tables `person`, `auction`,
//! `bid` ([`person_schema`], [`auction_schema`], [`bid_schema`]) with the struct fields as columns
//! (the views of Flink's `ddl.sql`, with `dateTime` taken from the struct). Field names and order
//! are Flink's (`emailAddress`, `creditCard`, `dateTime`, `itemName`, `initialBid`, ...);
//! `BIGINT` is `Int64`, `INT` is `Int32`, `VARCHAR` is `Utf8`, `TIMESTAMP(3)` is
//! `Timestamp(Millisecond, None)`; every field is nullable, as Flink's types are.
//!
//! # Differences from Flink's Java generator
//!
//! * **PRNG.** The random source is a small internal generator (a wyrand stream per event,
//!   seeded through SplitMix64's finalizer from `(seed, event id)`), not
//!   `java.util.Random` / `SplittableRandom`, so values differ from Flink's byte for byte while
//!   following the same distributions and the same id and time rules. Flink's generator is not
//!   reproducible anyway (its `Random` is unseeded and its channel urls come from a fresh
//!   `Random` per JVM); here content is reproducible and independent of batch boundaries, which
//!   parallel and resumed generation need. `seed` changes content (names, prices, random
//!   references, ...) but not kinds, entity ids or timestamps.
//! * **First event.** Event number 0 is the first event (a person with id 1000), as in Beam's
//!   Nexmark and the Rust `nexmark` crate. Flink's table factory starts its generator at
//!   `firstEventId = 1, firstEventNumber = 1`, which makes its first event id 2 (an auction).
//! * **Bidder id.** Flink adds `FIRST_PERSON_ID` to the bidder twice (nexmark/nexmark#30, bidder
//!   ids from 2000); here once, so bidders reference existing person ids.
//! * **`extra` letters.** Flink's `nextExactString` computes `'a' + rnd % 26` on a possibly
//!   negative `int`, which yields some characters outside `a..z`; here always `a..z`.
//! * **Time arithmetic.** Exact integer `floor(n * 1000 / rate)` instead of Flink's `double`
//!   inter-event delay (identical for rates dividing 10^6, such as the default).
//! * **Rate shape.** One constant rate (`first_event_rate`); Flink's `next-event.rate`, rate
//!   shapes and per-generator timelines are not modelled (its `GeneratorConfig` uses only
//!   `firstEventRate`).
//! * **Out-of-order groups.** A group size that is a multiple of 953 is refused: Flink's
//!   permutation `(p * 953) % k` is then not a permutation and would repeat events (duplicate
//!   person and auction ids).
//! * **Case.** States are upper case as in Flink (the Rust `nexmark` crate lowercases names,
//!   cities and states, which breaks q3).

use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, BooleanBufferBuilder, Int32Array, Int64Array, RecordBatch, StringArray, StructArray,
    TimestampMillisecondArray,
};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Default [`NexmarkConfig::base_time_ms`]: 2024-01-01T00:00:00Z in milliseconds since the epoch.
pub const DEFAULT_BASE_TIME_MS: i64 = 1_704_067_200_000;

/// First person id (Flink's `GeneratorConfig.FIRST_PERSON_ID`).
pub const FIRST_PERSON_ID: i64 = 1000;
/// First auction id (Flink's `GeneratorConfig.FIRST_AUCTION_ID`).
pub const FIRST_AUCTION_ID: i64 = 1000;
/// First category id (Flink's `GeneratorConfig.FIRST_CATEGORY_ID`).
pub const FIRST_CATEGORY_ID: i64 = 10;

/// Most rows (events) in one batch, whatever `max_rows` asks: keeps every string column far
/// below the 2 GiB limit of `Utf8` offsets.
pub const MAX_BATCH_ROWS: usize = 1 << 20;

/// Hot auctions, bidders and sellers are picked in blocks of this many ids (Flink's
/// `HOT_AUCTION_RATIO`, `HOT_BIDDER_RATIO`, `HOT_SELLER_RATIO` constants).
const HOT_BLOCK: i64 = 100;
/// Half of the bids use a hot channel (Flink's `HOT_CHANNELS_RATIO`).
const HOT_CHANNELS_RATIO: u64 = 2;
/// Number of ordinary channels (Flink's `CHANNELS_NUMBER`).
const CHANNELS_NUMBER: usize = 10_000;
/// Flink's out-of-order permutation multiplier.
const OUT_OF_ORDER_MULTIPLIER: u64 = 953;

const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];

/// Which tables [`NexmarkGenerator::next_output`] produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// Flink's `nexmark` table: `event_type` and the `person`, `auction`, `bid` structs.
    #[default]
    Nested,
    /// Three flat tables `person`, `auction`, `bid`.
    Split,
}

/// The kind of an event, with Flink's `event_type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Person = 0,
    Auction = 1,
    Bid = 2,
}

/// Generator parameters. Field names follow Flink's `NexmarkConfiguration`; see the module
/// documentation for the defaults and rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NexmarkConfig {
    /// Number of events in the whole stream: positions `0..events` (bounded).
    pub events: u64,
    /// Output layout of [`NexmarkGenerator::next_output`].
    pub layout: Layout,
    /// Timestamp of event number 0, in milliseconds since the epoch.
    pub base_time_ms: i64,
    /// Events per second of event time (Flink's `first-event.rate`).
    pub first_event_rate: u64,
    /// Events per out-of-order group; 1 means in order (Flink's `outOfOrderGroupSize`).
    pub out_of_order_group_size: u64,
    pub person_proportion: u64,
    pub auction_proportion: u64,
    pub bid_proportion: u64,
    pub avg_person_byte_size: u32,
    pub avg_auction_byte_size: u32,
    pub avg_bid_byte_size: u32,
    /// A bid is for a hot auction with probability `1 - 1/hot_auction_ratio`.
    pub hot_auction_ratio: u32,
    /// An auction is by a hot seller with probability `1 - 1/hot_sellers_ratio`.
    pub hot_sellers_ratio: u32,
    /// A bid is by a hot bidder with probability `1 - 1/hot_bidders_ratio`.
    pub hot_bidders_ratio: u32,
    /// Persons considered active for new auctions and bids.
    pub num_active_people: u32,
    /// Auctions considered in flight for new bids.
    pub num_in_flight_auctions: u32,
    /// Number of auction categories (ids `10..10 + num_categories`).
    pub num_categories: u32,
    /// Person ids a reference may run ahead of the last generated person (Flink's
    /// `PERSON_ID_LEAD`).
    pub person_id_lead: u32,
    /// Auction ids a reference may run ahead of the last generated auction (Flink's
    /// `AUCTION_ID_LEAD`).
    pub auction_id_lead: u32,
    /// Seed of the content; does not change kinds, entity ids or timestamps.
    pub seed: u64,
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        Self {
            events: 100_000_000,
            layout: Layout::Nested,
            base_time_ms: DEFAULT_BASE_TIME_MS,
            first_event_rate: 10_000,
            out_of_order_group_size: 1,
            person_proportion: 1,
            auction_proportion: 3,
            bid_proportion: 46,
            avg_person_byte_size: 200,
            avg_auction_byte_size: 500,
            avg_bid_byte_size: 100,
            hot_auction_ratio: 2,
            hot_sellers_ratio: 4,
            hot_bidders_ratio: 4,
            num_active_people: 1000,
            num_in_flight_auctions: 100,
            num_categories: 5,
            person_id_lead: 10,
            auction_id_lead: 10,
            seed: 0,
        }
    }
}

/// A configuration the generator cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid nexmark configuration: {0}")]
pub struct NexmarkConfigError(pub String);

/// The largest `*.avg-size` accepted (batches of such events are cut to stay under 1 GiB of
/// text per column).
pub const MAX_AVG_BYTE_SIZE: u32 = 1 << 20;

/// Rows of Nexmark's side input, the dimension table q13 joins on `MOD(auction, 10000)`.
pub const SIDE_INPUT_ROWS: u64 = 10_000;

/// Writes `<flink_home>/data/side_input.txt`, the side input q13 reads (its path is
/// `${FLINK_HOME}/data/side_input.txt`), as upstream's `side_input_gen.sh` makes it: one CSV
/// line `key,value` per key `0..SIDE_INPUT_ROWS`, the value the key as text.
pub fn write_side_input(flink_home: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    use std::fmt::Write as _;
    let dir = flink_home.join("data");
    std::fs::create_dir_all(&dir)?;
    let mut text = String::new();
    for key in 0..SIDE_INPUT_ROWS {
        let _ = writeln!(text, "{key},{key}");
    }
    let path = dir.join("side_input.txt");
    std::fs::write(&path, text)?;
    Ok(path)
}

impl NexmarkConfig {
    /// Checks that every rule of the generator is defined for this configuration.
    pub fn validate(&self) -> Result<(), NexmarkConfigError> {
        let err = |m: &str| Err(NexmarkConfigError(m.to_string()));
        if self.first_event_rate == 0 {
            return err("first_event_rate must be at least 1");
        }
        if self.out_of_order_group_size == 0 {
            return err("out_of_order_group_size must be at least 1");
        }
        if self
            .out_of_order_group_size
            .is_multiple_of(OUT_OF_ORDER_MULTIPLIER)
        {
            return err(
                "out_of_order_group_size must not be a multiple of 953 (events would repeat)",
            );
        }
        if self.person_proportion == 0 || self.auction_proportion == 0 {
            return err("person_proportion and auction_proportion must be at least 1");
        }
        let total = self
            .person_proportion
            .checked_add(self.auction_proportion)
            .and_then(|t| t.checked_add(self.bid_proportion));
        if total.is_none_or(|t| t > u32::MAX as u64) {
            return err("person + auction + bid proportions must fit in 32 bits");
        }
        if self.hot_auction_ratio == 0 || self.hot_sellers_ratio == 0 || self.hot_bidders_ratio == 0
        {
            return err("hot ratios must be at least 1");
        }
        if self.num_active_people == 0 || self.num_categories == 0 {
            return err("num_active_people and num_categories must be at least 1");
        }
        if self.base_time_ms < 0 {
            return err("base_time_ms must not be negative");
        }
        // The `extra` strings are sized from these; a batch's text column holds at most 2 GiB.
        let most = self
            .avg_person_byte_size
            .max(self.avg_auction_byte_size)
            .max(self.avg_bid_byte_size);
        if most > MAX_AVG_BYTE_SIZE {
            return err(&format!(
                "average event sizes (person.avg-size, auction.avg-size, bid.avg-size) must be at most {MAX_AVG_BYTE_SIZE} bytes (1 MiB); got {most}"
            ));
        }
        Ok(())
    }

    fn total_proportion(&self) -> u64 {
        self.person_proportion + self.auction_proportion + self.bid_proportion
    }

    /// The event number emitted at stream position `position` (Flink's
    /// `nextAdjustedEventNumber`): the position itself when in order.
    pub fn event_number_at(&self, position: u64) -> u64 {
        let k = self.out_of_order_group_size;
        if k <= 1 {
            return position;
        }
        let offset = (u128::from(position % k) * u128::from(OUT_OF_ORDER_MULTIPLIER % k)
            % u128::from(k)) as u64;
        (position / k) * k + offset
    }

    /// Event time of event number `event_number` in milliseconds (Flink's `timestampForEvent`).
    pub fn timestamp_for_event(&self, event_number: u64) -> i64 {
        let ms = match event_number.checked_mul(1000) {
            Some(m) => m / self.first_event_rate,
            None => (u128::from(event_number) * 1000 / u128::from(self.first_event_rate)) as u64,
        };
        self.base_time_ms.saturating_add(ms as i64)
    }

    /// Kind of event number `event_number`.
    pub fn kind_of_event(&self, event_number: u64) -> EventKind {
        self.event_ids(event_number).kind
    }

    /// Kind of event id `event_id` and the last person and auction ids (base 0) generated up to
    /// it: Flink's `lastBase0PersonId` (the person's own id for a person event) and
    /// `lastBase0AuctionId` (the auction's own id for an auction event, -1 before the first).
    #[inline]
    fn event_ids(&self, event_id: u64) -> EventIds {
        let total = self.total_proportion();
        let (epoch, offset) = ((event_id / total) as i64, (event_id % total) as i64);
        let person = self.person_proportion as i64;
        let auction = self.auction_proportion as i64;
        let (kind, person_offset, auction_epoch, auction_offset) = if offset < person {
            (EventKind::Person, offset, epoch - 1, auction - 1)
        } else if offset < person + auction {
            (EventKind::Auction, person - 1, epoch, offset - person)
        } else {
            (EventKind::Bid, person - 1, epoch, auction - 1)
        };
        EventIds {
            kind,
            last_person: epoch * person + person_offset,
            last_auction: auction_epoch * auction + auction_offset,
        }
    }
}

/// What an event id determines about ids (see [`NexmarkConfig::event_ids`]).
#[derive(Debug, Clone, Copy)]
struct EventIds {
    kind: EventKind,
    last_person: i64,
    last_auction: i64,
}

/// Schema fields of the `person` struct / table.
pub fn person_fields() -> Fields {
    Fields::from(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("emailAddress", DataType::Utf8, true),
        Field::new("creditCard", DataType::Utf8, true),
        Field::new("city", DataType::Utf8, true),
        Field::new("state", DataType::Utf8, true),
        Field::new("dateTime", timestamp_type(), true),
        Field::new("extra", DataType::Utf8, true),
    ])
}

/// Schema fields of the `auction` struct / table.
pub fn auction_fields() -> Fields {
    Fields::from(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("itemName", DataType::Utf8, true),
        Field::new("description", DataType::Utf8, true),
        Field::new("initialBid", DataType::Int64, true),
        Field::new("reserve", DataType::Int64, true),
        Field::new("dateTime", timestamp_type(), true),
        Field::new("expires", timestamp_type(), true),
        Field::new("seller", DataType::Int64, true),
        Field::new("category", DataType::Int64, true),
        Field::new("extra", DataType::Utf8, true),
    ])
}

/// Schema fields of the `bid` struct / table.
pub fn bid_fields() -> Fields {
    Fields::from(vec![
        Field::new("auction", DataType::Int64, true),
        Field::new("bidder", DataType::Int64, true),
        Field::new("price", DataType::Int64, true),
        Field::new("channel", DataType::Utf8, true),
        Field::new("url", DataType::Utf8, true),
        Field::new("dateTime", timestamp_type(), true),
        Field::new("extra", DataType::Utf8, true),
    ])
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

/// Flink's `nexmark` table: `event_type INT, person ROW<..>, auction ROW<..>, bid ROW<..>`.
pub fn nested_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("event_type", DataType::Int32, true),
                Field::new_struct("person", person_fields(), true),
                Field::new_struct("auction", auction_fields(), true),
                Field::new_struct("bid", bid_fields(), true),
            ]))
        })
        .clone()
}

/// The flat `person` table of [`Layout::Split`].
pub fn person_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| Arc::new(Schema::new(person_fields())))
        .clone()
}

/// The flat `auction` table of [`Layout::Split`].
pub fn auction_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| Arc::new(Schema::new(auction_fields())))
        .clone()
}

/// The flat `bid` table of [`Layout::Split`].
pub fn bid_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| Arc::new(Schema::new(bid_fields())))
        .clone()
}

/// One call's events in [`Layout::Split`]: a batch per table (any of them may have no rows).
#[derive(Debug, Clone)]
pub struct SplitBatches {
    pub person: RecordBatch,
    pub auction: RecordBatch,
    pub bid: RecordBatch,
}

/// Output of [`NexmarkGenerator::next_output`], by [`NexmarkConfig::layout`].
#[derive(Debug, Clone)]
pub enum NexmarkBatch {
    Nested(RecordBatch),
    Split(SplitBatches),
}

/// Deterministic Nexmark generator over stream positions `position..config.events`.
#[derive(Debug, Clone)]
pub struct NexmarkGenerator {
    config: NexmarkConfig,
    /// Next stream position to emit.
    position: u64,
    /// Events from an auction's event to the auction `num_in_flight_auctions` ahead.
    events_for_in_flight_auctions: u64,
    seed_key: u64,
    channels: &'static ChannelTable,
    /// The kinds whose `extra` is left empty, because nothing reads it.
    unread_extra: UnreadExtra,
}

/// Which kinds' `extra` padding a reader does not need ([`NexmarkGenerator::leave_extra_empty`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnreadExtra {
    pub person: bool,
    pub auction: bool,
    pub bid: bool,
}

impl NexmarkGenerator {
    /// A generator for the whole stream, starting at position 0.
    pub fn new(config: NexmarkConfig) -> Result<Self, NexmarkConfigError> {
        Self::at(config, 0)
    }

    /// A generator starting at stream position `first_event_number` (ending at
    /// `config.events`): emits exactly the events a generator from 0 emits from there on.
    pub fn at(config: NexmarkConfig, first_event_number: u64) -> Result<Self, NexmarkConfigError> {
        config.validate()?;
        let total_proportion = config.total_proportion();
        let events_for_in_flight_auctions =
            u64::from(config.num_in_flight_auctions) * total_proportion / config.auction_proportion;
        Ok(Self {
            seed_key: mix64(config.seed ^ 0x6E65_786D_6172_6B00),
            position: first_event_number,
            events_for_in_flight_auctions,
            channels: channel_table(),
            config,
            unread_extra: UnreadExtra::default(),
        })
    }

    /// Leaves the `extra` padding of these kinds empty: generating it is a large share of the
    /// generator's work, and queries rarely read it. Every other value is unchanged, because
    /// `extra` is the last value drawn for an event.
    pub fn leave_extra_empty(&mut self, unread: UnreadExtra) {
        self.unread_extra = unread;
    }

    /// Moves to stream position `position` (forwards or backwards).
    pub fn skip_to(&mut self, position: u64) {
        self.position = position;
    }

    /// The next stream position to emit.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Events left before `config.events`.
    pub fn remaining(&self) -> u64 {
        self.config.events.saturating_sub(self.position)
    }

    pub fn config(&self) -> &NexmarkConfig {
        &self.config
    }

    /// The next at most `max_events` events in the configured layout; `None` at the end.
    pub fn next_output(&mut self, max_events: usize) -> Option<NexmarkBatch> {
        match self.config.layout {
            Layout::Nested => self.next_batch(max_events).map(NexmarkBatch::Nested),
            Layout::Split => self.next_batches(max_events).map(NexmarkBatch::Split),
        }
    }

    /// The next at most `max_rows` events (at least one, at most [`MAX_BATCH_ROWS`]) as one batch
    /// of Flink's `nexmark` table ([`nested_schema`]); `None` when all events were emitted.
    pub fn next_batch(&mut self, max_rows: usize) -> Option<RecordBatch> {
        let rows = self.take_rows(max_rows)?;
        let mut cols = Columns::new(rows, true, &self.config);
        self.fill(rows, &mut cols);
        Some(cols.finish_nested(rows))
    }

    /// The next at most `max_events` events (at least one, at most [`MAX_BATCH_ROWS`]) as the
    /// three flat tables of [`Layout::Split`]; `None` when all events were emitted.
    pub fn next_batches(&mut self, max_events: usize) -> Option<SplitBatches> {
        let rows = self.take_rows(max_events)?;
        let mut cols = Columns::new(rows, false, &self.config);
        self.fill(rows, &mut cols);
        Some(cols.finish_split())
    }

    fn take_rows(&self, max_rows: usize) -> Option<usize> {
        let remaining = self.remaining();
        if remaining == 0 {
            return None;
        }
        // A text column's offsets are i32: keep a batch's `extra` (up to 1.2 × the average size,
        // plus the other texts) under 1 GiB.
        let c = &self.config;
        let most = c
            .avg_person_byte_size
            .max(c.avg_auction_byte_size)
            .max(c.avg_bid_byte_size) as u64;
        let fits = ((1u64 << 30) / (most * 6 / 5 + 256)).max(1);
        let rows = (max_rows.clamp(1, MAX_BATCH_ROWS) as u64).min(fits);
        Some(rows.min(remaining) as usize)
    }

    fn fill(&mut self, rows: usize, cols: &mut Columns) {
        let start = self.position;
        for row in 0..rows {
            let number = self.config.event_number_at(start + row as u64);
            // Event ids equal event numbers (Flink's firstEventId = 0).
            let event_id = number;
            let ts = self.config.timestamp_for_event(number);
            let mut rng = EventRng::new(self.seed_key, event_id);
            let ids = self.config.event_ids(event_id);
            cols.push_kind(ids.kind);
            match ids.kind {
                EventKind::Person => {
                    cols.person.start_row(row);
                    self.person(&mut rng, &ids, ts, &mut cols.person);
                }
                EventKind::Auction => {
                    cols.auction.start_row(row);
                    self.auction(&mut rng, number, &ids, ts, &mut cols.auction);
                }
                EventKind::Bid => {
                    cols.bid.start_row(row);
                    self.bid(&mut rng, &ids, ts, &mut cols.bid);
                }
            }
        }
        self.position = start + rows as u64;
    }

    /// Flink's `PersonGenerator.nextPerson`.
    fn person(&self, rng: &mut EventRng, ids: &EventIds, ts: i64, c: &mut PersonColumns) {
        c.id.push(ids.last_person + FIRST_PERSON_ID);

        let first = FIRST_NAMES[rng.below(FIRST_NAMES.len() as u64) as usize];
        let last = LAST_NAMES[rng.below(LAST_NAMES.len() as u64) as usize];
        c.name.data.extend_from_slice(first.as_bytes());
        c.name.data.push(b' ');
        c.name.data.extend_from_slice(last.as_bytes());
        let name_len = c.name.end_value();

        push_random_string(rng, 7, b' ', &mut c.email.data);
        c.email.data.push(b'@');
        push_random_string(rng, 5, b' ', &mut c.email.data);
        c.email.data.extend_from_slice(b".com");
        let email_len = c.email.end_value();

        let mut card = [b' '; 19];
        for group in 0..4 {
            let n = rng.below(10_000) as u16;
            let at = group * 5;
            card[at] = b'0' + (n / 1000) as u8;
            card[at + 1] = b'0' + (n / 100 % 10) as u8;
            card[at + 2] = b'0' + (n / 10 % 10) as u8;
            card[at + 3] = b'0' + (n % 10) as u8;
        }
        let card_len = c.credit_card.push(&card);

        let city = US_CITIES[rng.below(US_CITIES.len() as u64) as usize];
        let city_len = c.city.push(city.as_bytes());
        let state = US_STATES[rng.below(US_STATES.len() as u64) as usize];
        let state_len = c.state.push(state.as_bytes());

        c.date_time.push(ts);
        if !self.unread_extra.person {
            let current = 8 + name_len + email_len + card_len + city_len + state_len;
            let len = extra_len(rng, current, self.config.avg_person_byte_size as usize);
            push_letters(rng, len, &mut c.extra.data);
        }
        c.extra.end_value();
    }

    /// Flink's `AuctionGenerator.nextAuction`.
    fn auction(
        &self,
        rng: &mut EventRng,
        number: u64,
        ids: &EventIds,
        ts: i64,
        c: &mut AuctionColumns,
    ) {
        let cfg = &self.config;
        c.id.push(ids.last_auction + FIRST_AUCTION_ID);

        let seller = if rng.below(u64::from(cfg.hot_sellers_ratio)) > 0 {
            // The first person of the current block of 100.
            (ids.last_person / HOT_BLOCK) * HOT_BLOCK
        } else {
            self.next_base0_person_id(rng, ids)
        };
        c.seller.push(seller + FIRST_PERSON_ID);
        c.category
            .push(FIRST_CATEGORY_ID + rng.below(u64::from(cfg.num_categories)) as i64);

        let initial_bid = next_price(rng);
        c.initial_bid.push(initial_bid);

        // Average auction length: the time until `num_in_flight_auctions` more auctions exist.
        let future =
            cfg.timestamp_for_event(number.saturating_add(self.events_for_in_flight_auctions));
        let horizon = (future - ts).max(0) as u64;
        let length = 1 + rng.below(horizon.saturating_mul(2).max(1)) as i64;
        c.date_time.push(ts);
        c.expires.push(ts.saturating_add(length));

        push_random_string(rng, 20, b' ', &mut c.item_name.data);
        let name_len = c.item_name.end_value();
        push_random_string(rng, 100, b' ', &mut c.description.data);
        let desc_len = c.description.end_value();
        c.reserve.push(initial_bid + next_price(rng));

        if !self.unread_extra.auction {
            let current = 8 + name_len + desc_len + 8 + 8 + 8 + 8 + 8;
            let len = extra_len(rng, current, cfg.avg_auction_byte_size as usize);
            push_letters(rng, len, &mut c.extra.data);
        }
        c.extra.end_value();
    }

    /// Flink's `BidGenerator.nextBid` (with the bidder offset added once).
    fn bid(&self, rng: &mut EventRng, ids: &EventIds, ts: i64, c: &mut BidColumns) {
        let cfg = &self.config;
        let auction = if rng.below(u64::from(cfg.hot_auction_ratio)) > 0 {
            // The first auction of the current block of 100.
            (ids.last_auction / HOT_BLOCK) * HOT_BLOCK
        } else {
            self.next_base0_auction_id(rng, ids)
        };
        c.auction.push(auction + FIRST_AUCTION_ID);

        let bidder = if rng.below(u64::from(cfg.hot_bidders_ratio)) > 0 {
            // The second person of the block, so hot bidders and hot sellers differ.
            (ids.last_person / HOT_BLOCK) * HOT_BLOCK + 1
        } else {
            self.next_base0_person_id(rng, ids)
        };
        c.bidder.push(bidder + FIRST_PERSON_ID);
        c.price.push(next_price(rng));

        let channel = if rng.below(HOT_CHANNELS_RATIO) > 0 {
            &self.channels.hot[rng.below(HOT_CHANNELS.len() as u64) as usize]
        } else {
            &self.channels.channels[rng.below(CHANNELS_NUMBER as u64) as usize]
        };
        c.channel.push_slot(&channel.name, channel.name_len);
        c.url.push_slot(&channel.url, channel.url_len);
        c.date_time.push(ts);

        if !self.unread_extra.bid {
            let len = extra_len(rng, 8 + 8 + 8 + 8, cfg.avg_bid_byte_size as usize);
            push_letters(rng, len, &mut c.extra.data);
        }
        c.extra.end_value();
    }

    /// Flink's `PersonGenerator.nextBase0PersonId`: one of the active persons or a few ahead.
    fn next_base0_person_id(&self, rng: &mut EventRng, ids: &EventIds) -> i64 {
        let num_people = ids.last_person + 1;
        let active = num_people.min(i64::from(self.config.num_active_people));
        let n = rng.below((active + i64::from(self.config.person_id_lead)) as u64) as i64;
        num_people - active + n
    }

    /// Flink's `AuctionGenerator.nextBase0AuctionId`: an in-flight auction or a few ahead.
    fn next_base0_auction_id(&self, rng: &mut EventRng, ids: &EventIds) -> i64 {
        let max_auction = ids.last_auction;
        let min_auction = (max_auction - i64::from(self.config.num_in_flight_auctions)).max(0);
        let span = max_auction - min_auction + 1 + i64::from(self.config.auction_id_lead);
        min_auction + rng.below(span.max(1) as u64) as i64
    }
}

/// Flink's `PriceGenerator.nextPrice`: `round(10^(6u) * 100)`.
#[inline]
fn next_price(rng: &mut EventRng) -> i64 {
    (rng.unit() * 6.0 * std::f64::consts::LN_10)
        .exp()
        .mul_add(100.0, 0.5) as i64
}

/// Flink's `StringsGenerator.nextExtra`: the length of the padding.
#[inline]
fn extra_len(rng: &mut EventRng, current: usize, desired_average: usize) -> usize {
    if current > desired_average {
        return 0;
    }
    let d = desired_average - current;
    // round(d * 0.2) without floating point (d / 5 never ends in exactly .5).
    let delta = (2 * d + 5) / 10;
    let min = d - delta;
    if delta == 0 {
        min
    } else {
        min + rng.below(2 * delta as u64) as usize
    }
}

/// Flink's `StringsGenerator.nextString(random, max_len, special)`: `3..max_len` characters, each
/// `special` with probability 1/13, else `a..z`; trimmed when `special` is a space.
fn push_random_string(rng: &mut EventRng, max_len: usize, special: u8, out: &mut Vec<u8>) {
    debug_assert!((4..=128).contains(&max_len));
    let len = 3 + rng.below((max_len - 3) as u64) as usize;
    let mut buf = [0u8; 128];
    let mut i = 0;
    while i < len {
        // One draw gives five base-338 digits (338 = 13 * 26): digit < 26 is the special
        // character (1/13), else a letter (uniform).
        let mut r = rng.next_u64();
        let end = (i + 5).min(len);
        while i < end {
            let m = u128::from(r) * 338;
            let d = (m >> 64) as u32;
            r = m as u64;
            buf[i] = if d < 26 {
                special
            } else {
                b'a' + (d % 26) as u8
            };
            i += 1;
        }
    }
    let mut s = &buf[..len];
    if special == b' ' {
        while let [b' ', rest @ ..] = s {
            s = rest;
        }
        while let [rest @ .., b' '] = s {
            s = rest;
        }
    }
    out.extend_from_slice(s);
}

/// Flink's `StringsGenerator.nextExactString`: `len` letters `a..z`.
#[inline]
fn push_letters(rng: &mut EventRng, len: usize, out: &mut Vec<u8>) {
    out.reserve(len);
    let mut left = len;
    let mut buf = [0u8; 128];
    while left > 0 {
        let n = left.min(buf.len());
        // Four letters per 64-bit draw, one per 16-bit lane (`lane * 26 >> 16`: uniform up to
        // 0.04%); the lanes are independent, so this runs at the speed of the draws.
        for group in buf[..n.div_ceil(4) * 4].chunks_exact_mut(4) {
            let r = rng.next_u64();
            for (k, b) in group.iter_mut().enumerate() {
                let lane = u32::from((r >> (16 * k)) as u16);
                *b = b'a' + ((lane * 26) >> 16) as u8;
            }
        }
        // A constant-size copy cut back to `n` beats a variable-length one.
        let end = out.len() + n;
        out.extend_from_slice(&buf);
        out.truncate(end);
        left -= n;
    }
}

// ---------------------------------------------------------------------------------------------
// Pseudo-random numbers
// ---------------------------------------------------------------------------------------------

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finalizer.
#[inline]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// wyrand stream seeded with SplitMix64's finalizer. Not Java's `Random`: values differ from
/// Flink's generator.
#[derive(Debug, Clone)]
struct EventRng {
    state: u64,
}

impl EventRng {
    /// The stream of one event (or, with another key, one channel).
    #[inline]
    fn new(key: u64, id: u64) -> Self {
        Self {
            state: mix64(key ^ id.wrapping_mul(GOLDEN_GAMMA)),
        }
    }

    /// wyrand step: one 64x64->128 multiply per draw.
    #[inline]
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xA076_1D64_78BD_642F);
        let t = u128::from(self.state) * u128::from(self.state ^ 0xE703_7ED1_A0B4_28DB);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Uniform in `0..n` (`n >= 1`), by multiply-shift.
    #[inline]
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

// ---------------------------------------------------------------------------------------------
// Channels
// ---------------------------------------------------------------------------------------------

/// Longest channel name: `channel-9999`.
const NAME_SLOT: usize = 16;
/// Longest url: 24 (`https://www.nexmark.com/`) + 3 * 5 (`xxxx/`) + 16 (`item.htm?query=1`) +
/// 12 (`&channel_id=`) + 11 (`-2147483648`) = 78 bytes.
const URL_SLOT: usize = 80;

/// A channel's name and url in fixed-size slots, copied with constant-size moves.
#[derive(Debug)]
struct Channel {
    name: [u8; NAME_SLOT],
    name_len: usize,
    url: [u8; URL_SLOT],
    url_len: usize,
}

impl Channel {
    fn new(name: &str, url: &str) -> Self {
        let mut channel = Channel {
            name: [0; NAME_SLOT],
            name_len: name.len(),
            url: [0; URL_SLOT],
            url_len: url.len(),
        };
        channel.name[..name.len()].copy_from_slice(name.as_bytes());
        channel.url[..url.len()].copy_from_slice(url.as_bytes());
        channel
    }
}

#[derive(Debug)]
struct ChannelTable {
    /// The hot channels `Google`, `Facebook`, `Baidu`, `Apple` with their urls.
    hot: Vec<Channel>,
    /// `channel-<c>` for `c` in `0..CHANNELS_NUMBER`.
    channels: Vec<Channel>,
}

/// Fixed for all generators (Flink draws them from an unseeded `Random` per JVM).
fn channel_table() -> &'static ChannelTable {
    static TABLE: OnceLock<ChannelTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        const HOT_KEY: u64 = 0x686F_745F_7572_6C73;
        const CHANNEL_KEY: u64 = 0x6368_616E_6E65_6C73;
        let hot = HOT_CHANNELS
            .iter()
            .zip(0u64..)
            .map(|(name, i)| Channel::new(name, &base_url(&mut EventRng::new(HOT_KEY, i))))
            .collect();
        let channels = (0..CHANNELS_NUMBER)
            .map(|c| {
                let mut rng = EventRng::new(CHANNEL_KEY, c as u64);
                let mut url = base_url(&mut rng);
                if rng.below(10) > 0 {
                    // Java's Math.abs(Integer.reverse(c)) (wrapping, as Java's int).
                    let id = (c as i32).reverse_bits().wrapping_abs();
                    url.push_str("&channel_id=");
                    url.push_str(&id.to_string());
                }
                Channel::new(&format!("channel-{c}"), &url)
            })
            .collect();
        ChannelTable { hot, channels }
    })
}

/// Flink's `BidGenerator.getBaseUrl`.
fn base_url(rng: &mut EventRng) -> String {
    let mut url = b"https://www.nexmark.com/".to_vec();
    for _ in 0..3 {
        push_random_string(rng, 5, b'_', &mut url);
        url.push(b'/');
    }
    url.extend_from_slice(b"item.htm?query=1");
    String::from_utf8(url).expect("ASCII url")
}

// ---------------------------------------------------------------------------------------------
// Column buffers
// ---------------------------------------------------------------------------------------------

/// A `Utf8` column under construction: offsets and bytes.
#[derive(Debug)]
struct Utf8Column {
    offsets: Vec<i32>,
    data: Vec<u8>,
}

impl Utf8Column {
    fn with_capacity(rows: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Self {
            offsets,
            data: Vec::with_capacity(bytes),
        }
    }

    /// Ends the value written into `data` since the last end; returns its length.
    #[inline]
    fn end_value(&mut self) -> usize {
        let start = *self.offsets.last().expect("offsets start with 0") as usize;
        self.offsets.push(self.data.len() as i32);
        self.data.len() - start
    }

    #[inline]
    fn push(&mut self, value: &[u8]) -> usize {
        self.data.extend_from_slice(value);
        self.end_value()
    }

    /// Pushes `slot[..len]`, copying the whole slot (a constant-size copy, cheaper than a
    /// variable-length one for short values) and cutting it back.
    #[inline]
    fn push_slot<const N: usize>(&mut self, slot: &[u8; N], len: usize) -> usize {
        debug_assert!(len <= N);
        let end = self.data.len() + len;
        self.data.extend_from_slice(slot);
        self.data.truncate(end);
        self.end_value()
    }

    /// Empty values up to `rows` values.
    fn pad_to(&mut self, rows: usize) {
        let last = *self.offsets.last().expect("offsets start with 0");
        self.offsets.resize(rows + 1, last);
    }

    fn finish(self, nulls: Option<NullBuffer>) -> ArrayRef {
        assert!(
            i32::try_from(self.data.len()).is_ok(),
            "nexmark string column over 2 GiB"
        );
        Arc::new(StringArray::new(
            OffsetBuffer::new(ScalarBuffer::from(self.offsets)),
            Buffer::from_vec(self.data),
            nulls,
        ))
    }
}

fn int64(values: Vec<i64>, nulls: Option<NullBuffer>) -> ArrayRef {
    Arc::new(Int64Array::new(ScalarBuffer::from(values), nulls))
}

fn timestamps(values: Vec<i64>, nulls: Option<NullBuffer>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::new(
        ScalarBuffer::from(values),
        nulls,
    ))
}

/// Validity of a struct in the nested layout (None in the split layout).
#[derive(Debug)]
struct Validity(Option<BooleanBufferBuilder>);

impl Validity {
    fn new(rows: usize, nested: bool) -> Self {
        Self(nested.then(|| BooleanBufferBuilder::new(rows)))
    }

    fn finish(self) -> Option<NullBuffer> {
        self.0.map(|mut b| NullBuffer::new(b.finish()))
    }
}

#[derive(Debug)]
struct PersonColumns {
    valid: Validity,
    id: Vec<i64>,
    name: Utf8Column,
    email: Utf8Column,
    credit_card: Utf8Column,
    city: Utf8Column,
    state: Utf8Column,
    date_time: Vec<i64>,
    extra: Utf8Column,
}

impl PersonColumns {
    fn new(rows: usize, expected: usize, nested: bool) -> Self {
        Self {
            valid: Validity::new(rows, nested),
            id: Vec::with_capacity(rows),
            name: Utf8Column::with_capacity(rows, expected * 14),
            email: Utf8Column::with_capacity(rows, expected * 16),
            credit_card: Utf8Column::with_capacity(rows, expected * 19),
            city: Utf8Column::with_capacity(rows, expected * 9),
            state: Utf8Column::with_capacity(rows, expected * 2),
            date_time: Vec::with_capacity(rows),
            extra: Utf8Column::with_capacity(rows, expected * 150),
        }
    }

    /// In the nested layout: NULL rows up to `row`.
    #[inline]
    fn pad(&mut self, row: usize) {
        if let Some(valid) = &mut self.valid.0 {
            if self.id.len() < row {
                valid.append_n(row - self.id.len(), false);
                self.id.resize(row, 0);
                self.name.pad_to(row);
                self.email.pad_to(row);
                self.credit_card.pad_to(row);
                self.city.pad_to(row);
                self.state.pad_to(row);
                self.date_time.resize(row, 0);
                self.extra.pad_to(row);
            }
        }
    }

    /// In the nested layout: NULL rows up to `row`, then `row` valid.
    #[inline]
    fn start_row(&mut self, row: usize) {
        self.pad(row);
        if let Some(valid) = &mut self.valid.0 {
            valid.append(true);
        }
    }

    fn finish(mut self, rows: Option<usize>) -> (Vec<ArrayRef>, Option<NullBuffer>) {
        if let Some(rows) = rows {
            self.pad(rows);
        }
        let nulls = self.valid.finish();
        let arrays = vec![
            int64(self.id, nulls.clone()),
            self.name.finish(nulls.clone()),
            self.email.finish(nulls.clone()),
            self.credit_card.finish(nulls.clone()),
            self.city.finish(nulls.clone()),
            self.state.finish(nulls.clone()),
            timestamps(self.date_time, nulls.clone()),
            self.extra.finish(nulls.clone()),
        ];
        (arrays, nulls)
    }
}

#[derive(Debug)]
struct AuctionColumns {
    valid: Validity,
    id: Vec<i64>,
    item_name: Utf8Column,
    description: Utf8Column,
    initial_bid: Vec<i64>,
    reserve: Vec<i64>,
    date_time: Vec<i64>,
    expires: Vec<i64>,
    seller: Vec<i64>,
    category: Vec<i64>,
    extra: Utf8Column,
}

impl AuctionColumns {
    fn new(rows: usize, expected: usize, nested: bool) -> Self {
        Self {
            valid: Validity::new(rows, nested),
            id: Vec::with_capacity(rows),
            item_name: Utf8Column::with_capacity(rows, expected * 12),
            description: Utf8Column::with_capacity(rows, expected * 52),
            initial_bid: Vec::with_capacity(rows),
            reserve: Vec::with_capacity(rows),
            date_time: Vec::with_capacity(rows),
            expires: Vec::with_capacity(rows),
            seller: Vec::with_capacity(rows),
            category: Vec::with_capacity(rows),
            extra: Utf8Column::with_capacity(rows, expected * 400),
        }
    }

    #[inline]
    fn pad(&mut self, row: usize) {
        if let Some(valid) = &mut self.valid.0 {
            if self.id.len() < row {
                valid.append_n(row - self.id.len(), false);
                self.id.resize(row, 0);
                self.item_name.pad_to(row);
                self.description.pad_to(row);
                self.initial_bid.resize(row, 0);
                self.reserve.resize(row, 0);
                self.date_time.resize(row, 0);
                self.expires.resize(row, 0);
                self.seller.resize(row, 0);
                self.category.resize(row, 0);
                self.extra.pad_to(row);
            }
        }
    }

    /// In the nested layout: NULL rows up to `row`, then `row` valid.
    #[inline]
    fn start_row(&mut self, row: usize) {
        self.pad(row);
        if let Some(valid) = &mut self.valid.0 {
            valid.append(true);
        }
    }

    fn finish(mut self, rows: Option<usize>) -> (Vec<ArrayRef>, Option<NullBuffer>) {
        if let Some(rows) = rows {
            self.pad(rows);
        }
        let nulls = self.valid.finish();
        let arrays = vec![
            int64(self.id, nulls.clone()),
            self.item_name.finish(nulls.clone()),
            self.description.finish(nulls.clone()),
            int64(self.initial_bid, nulls.clone()),
            int64(self.reserve, nulls.clone()),
            timestamps(self.date_time, nulls.clone()),
            timestamps(self.expires, nulls.clone()),
            int64(self.seller, nulls.clone()),
            int64(self.category, nulls.clone()),
            self.extra.finish(nulls.clone()),
        ];
        (arrays, nulls)
    }
}

#[derive(Debug)]
struct BidColumns {
    valid: Validity,
    auction: Vec<i64>,
    bidder: Vec<i64>,
    price: Vec<i64>,
    channel: Utf8Column,
    url: Utf8Column,
    date_time: Vec<i64>,
    extra: Utf8Column,
}

impl BidColumns {
    fn new(rows: usize, expected: usize, nested: bool) -> Self {
        Self {
            valid: Validity::new(rows, nested),
            auction: Vec::with_capacity(rows),
            bidder: Vec::with_capacity(rows),
            price: Vec::with_capacity(rows),
            channel: Utf8Column::with_capacity(rows, expected * 10),
            url: Utf8Column::with_capacity(rows, expected * 64),
            date_time: Vec::with_capacity(rows),
            extra: Utf8Column::with_capacity(rows, expected * 70),
        }
    }

    #[inline]
    fn pad(&mut self, row: usize) {
        if let Some(valid) = &mut self.valid.0 {
            if self.auction.len() < row {
                valid.append_n(row - self.auction.len(), false);
                self.auction.resize(row, 0);
                self.bidder.resize(row, 0);
                self.price.resize(row, 0);
                self.channel.pad_to(row);
                self.url.pad_to(row);
                self.date_time.resize(row, 0);
                self.extra.pad_to(row);
            }
        }
    }

    /// In the nested layout: NULL rows up to `row`, then `row` valid.
    #[inline]
    fn start_row(&mut self, row: usize) {
        self.pad(row);
        if let Some(valid) = &mut self.valid.0 {
            valid.append(true);
        }
    }

    fn finish(mut self, rows: Option<usize>) -> (Vec<ArrayRef>, Option<NullBuffer>) {
        if let Some(rows) = rows {
            self.pad(rows);
        }
        let nulls = self.valid.finish();
        let arrays = vec![
            int64(self.auction, nulls.clone()),
            int64(self.bidder, nulls.clone()),
            int64(self.price, nulls.clone()),
            self.channel.finish(nulls.clone()),
            self.url.finish(nulls.clone()),
            timestamps(self.date_time, nulls.clone()),
            self.extra.finish(nulls.clone()),
        ];
        (arrays, nulls)
    }
}

/// All columns of one call.
#[derive(Debug)]
struct Columns {
    nested: bool,
    event_type: Vec<i32>,
    person: PersonColumns,
    auction: AuctionColumns,
    bid: BidColumns,
}

impl Columns {
    fn new(rows: usize, nested: bool, config: &NexmarkConfig) -> Self {
        let total = config.total_proportion() as usize;
        // Expected rows of a kind, with room for a partial proportion cycle and out-of-order
        // groups (vectors grow if needed).
        let expected = |p: u64| rows / total * p as usize + (p as usize).min(rows) + 16;
        let slots = |p: u64| if nested { rows } else { expected(p).min(rows) };
        Self {
            nested,
            event_type: Vec::with_capacity(if nested { rows } else { 0 }),
            person: PersonColumns::new(
                slots(config.person_proportion),
                expected(config.person_proportion),
                nested,
            ),
            auction: AuctionColumns::new(
                slots(config.auction_proportion),
                expected(config.auction_proportion),
                nested,
            ),
            bid: BidColumns::new(
                slots(config.bid_proportion),
                expected(config.bid_proportion).min(rows),
                nested,
            ),
        }
    }

    #[inline]
    fn push_kind(&mut self, kind: EventKind) {
        if self.nested {
            self.event_type.push(kind as i32);
        }
    }

    fn finish_nested(self, rows: usize) -> RecordBatch {
        let (person, person_nulls) = self.person.finish(Some(rows));
        let (auction, auction_nulls) = self.auction.finish(Some(rows));
        let (bid, bid_nulls) = self.bid.finish(Some(rows));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::new(ScalarBuffer::from(self.event_type), None)),
            Arc::new(StructArray::new(person_fields(), person, person_nulls)),
            Arc::new(StructArray::new(auction_fields(), auction, auction_nulls)),
            Arc::new(StructArray::new(bid_fields(), bid, bid_nulls)),
        ];
        RecordBatch::try_new(nested_schema(), columns).expect("nexmark nested batch")
    }

    fn finish_split(self) -> SplitBatches {
        let (person, _) = self.person.finish(None);
        let (auction, _) = self.auction.finish(None);
        let (bid, _) = self.bid.finish(None);
        SplitBatches {
            person: RecordBatch::try_new(person_schema(), person).expect("nexmark person batch"),
            auction: RecordBatch::try_new(auction_schema(), auction)
                .expect("nexmark auction batch"),
            bid: RecordBatch::try_new(bid_schema(), bid).expect("nexmark bid batch"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use arrow::array::{Array, AsArray};
    use arrow::compute::concat_batches;
    use arrow::datatypes::{Int32Type, Int64Type, TimestampMillisecondType};

    use super::*;

    fn config(events: u64) -> NexmarkConfig {
        NexmarkConfig {
            events,
            ..NexmarkConfig::default()
        }
    }

    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    struct Person {
        id: i64,
        name: String,
        email: String,
        credit_card: String,
        city: String,
        state: String,
        date_time: i64,
        extra: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    struct Auction {
        id: i64,
        item_name: String,
        description: String,
        initial_bid: i64,
        reserve: i64,
        date_time: i64,
        expires: i64,
        seller: i64,
        category: i64,
        extra: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    struct Bid {
        auction: i64,
        bidder: i64,
        price: i64,
        channel: String,
        url: String,
        date_time: i64,
        extra: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    enum Event {
        Person(Person),
        Auction(Auction),
        Bid(Bid),
    }

    impl Event {
        fn date_time(&self) -> i64 {
            match self {
                Event::Person(p) => p.date_time,
                Event::Auction(a) => a.date_time,
                Event::Bid(b) => b.date_time,
            }
        }
    }

    fn i64_at(columns: &[ArrayRef], c: usize, row: usize) -> i64 {
        columns[c].as_primitive::<Int64Type>().value(row)
    }

    fn ts_at(columns: &[ArrayRef], c: usize, row: usize) -> i64 {
        columns[c]
            .as_primitive::<TimestampMillisecondType>()
            .value(row)
    }

    fn str_at(columns: &[ArrayRef], c: usize, row: usize) -> String {
        columns[c].as_string::<i32>().value(row).to_string()
    }

    fn person_row(c: &[ArrayRef], row: usize) -> Person {
        Person {
            id: i64_at(c, 0, row),
            name: str_at(c, 1, row),
            email: str_at(c, 2, row),
            credit_card: str_at(c, 3, row),
            city: str_at(c, 4, row),
            state: str_at(c, 5, row),
            date_time: ts_at(c, 6, row),
            extra: str_at(c, 7, row),
        }
    }

    fn auction_row(c: &[ArrayRef], row: usize) -> Auction {
        Auction {
            id: i64_at(c, 0, row),
            item_name: str_at(c, 1, row),
            description: str_at(c, 2, row),
            initial_bid: i64_at(c, 3, row),
            reserve: i64_at(c, 4, row),
            date_time: ts_at(c, 5, row),
            expires: ts_at(c, 6, row),
            seller: i64_at(c, 7, row),
            category: i64_at(c, 8, row),
            extra: str_at(c, 9, row),
        }
    }

    fn bid_row(c: &[ArrayRef], row: usize) -> Bid {
        Bid {
            auction: i64_at(c, 0, row),
            bidder: i64_at(c, 1, row),
            price: i64_at(c, 2, row),
            channel: str_at(c, 3, row),
            url: str_at(c, 4, row),
            date_time: ts_at(c, 5, row),
            extra: str_at(c, 6, row),
        }
    }

    /// Events of a nested batch, checking the NULL structure on the way.
    fn nested_events(batch: &RecordBatch) -> Vec<Event> {
        let kinds = batch.column(0).as_primitive::<Int32Type>();
        let person = batch.column(1).as_struct();
        let auction = batch.column(2).as_struct();
        let bid = batch.column(3).as_struct();
        (0..batch.num_rows())
            .map(|row| {
                let kind = kinds.value(row);
                assert_eq!(person.is_valid(row), kind == 0, "person struct validity");
                assert_eq!(auction.is_valid(row), kind == 1, "auction struct validity");
                assert_eq!(bid.is_valid(row), kind == 2, "bid struct validity");
                for s in [person, auction, bid] {
                    for child in s.columns() {
                        assert_eq!(child.is_valid(row), s.is_valid(row), "child nulls = struct");
                    }
                }
                match kind {
                    0 => Event::Person(person_row(person.columns(), row)),
                    1 => Event::Auction(auction_row(auction.columns(), row)),
                    2 => Event::Bid(bid_row(bid.columns(), row)),
                    k => panic!("event_type {k}"),
                }
            })
            .collect()
    }

    fn nested(config: &NexmarkConfig, start: u64, batch_rows: usize) -> Vec<Event> {
        let mut generator = NexmarkGenerator::at(config.clone(), start).unwrap();
        let mut events = Vec::new();
        while let Some(batch) = generator.next_batch(batch_rows) {
            assert_eq!(batch.schema(), nested_schema());
            events.extend(nested_events(&batch));
        }
        events
    }

    #[derive(Debug, Default, PartialEq)]
    struct Split {
        persons: Vec<Person>,
        auctions: Vec<Auction>,
        bids: Vec<Bid>,
    }

    fn split(config: &NexmarkConfig, start: u64, batch_events: usize) -> Split {
        let mut generator = NexmarkGenerator::at(config.clone(), start).unwrap();
        let mut out = Split::default();
        while let Some(b) = generator.next_batches(batch_events) {
            assert_eq!(b.person.schema(), person_schema());
            assert_eq!(b.auction.schema(), auction_schema());
            assert_eq!(b.bid.schema(), bid_schema());
            for batch in [&b.person, &b.auction, &b.bid] {
                for column in batch.columns() {
                    assert_eq!(column.null_count(), 0);
                }
            }
            let (p, a, d) = (b.person.columns(), b.auction.columns(), b.bid.columns());
            out.persons
                .extend((0..b.person.num_rows()).map(|r| person_row(p, r)));
            out.auctions
                .extend((0..b.auction.num_rows()).map(|r| auction_row(a, r)));
            out.bids
                .extend((0..b.bid.num_rows()).map(|r| bid_row(d, r)));
        }
        out
    }

    fn split_of(events: &[Event]) -> Split {
        let mut out = Split::default();
        for e in events {
            match e {
                Event::Person(p) => out.persons.push(p.clone()),
                Event::Auction(a) => out.auctions.push(a.clone()),
                Event::Bid(b) => out.bids.push(b.clone()),
            }
        }
        out
    }

    #[test]
    fn proportions_and_kind_order_over_50k_events() {
        let events = nested(&config(50_000), 0, 8192);
        assert_eq!(events.len(), 50_000);
        let s = split_of(&events);
        assert_eq!(
            (s.persons.len(), s.auctions.len(), s.bids.len()),
            (1_000, 3_000, 46_000)
        );
        for (n, e) in events.iter().enumerate() {
            let expected = match n % 50 {
                0 => "person",
                1..=3 => "auction",
                _ => "bid",
            };
            let actual = match e {
                Event::Person(_) => "person",
                Event::Auction(_) => "auction",
                Event::Bid(_) => "bid",
            };
            assert_eq!(actual, expected, "event {n}");
        }
    }

    #[test]
    fn ids_start_at_1000_and_are_dense() {
        let s = split_of(&nested(&config(50_000), 0, 4096));
        let persons: Vec<i64> = s.persons.iter().map(|p| p.id).collect();
        let auctions: Vec<i64> = s.auctions.iter().map(|a| a.id).collect();
        assert_eq!(persons, (1000..2000).collect::<Vec<_>>());
        assert_eq!(auctions, (1000..4000).collect::<Vec<_>>());
        for a in &s.auctions {
            assert!((10..15).contains(&a.category), "category {}", a.category);
        }
    }

    /// Walks the stream in order, tracking the largest person and auction id generated so far.
    fn check_references(config: &NexmarkConfig, check: impl Fn(&Event, i64, i64)) {
        let mut max_person = FIRST_PERSON_ID - 1;
        let mut max_auction = FIRST_AUCTION_ID - 1;
        for e in nested(config, 0, 8192) {
            match &e {
                Event::Person(p) => max_person = max_person.max(p.id),
                Event::Auction(a) => max_auction = max_auction.max(a.id),
                Event::Bid(_) => {}
            }
            check(&e, max_person, max_auction);
        }
    }

    #[test]
    fn references_stay_within_active_and_in_flight_windows_plus_lead() {
        let c = config(50_000);
        let people = i64::from(c.num_active_people);
        let in_flight = i64::from(c.num_in_flight_auctions);
        let person_lead = i64::from(c.person_id_lead);
        let auction_lead = i64::from(c.auction_id_lead);
        check_references(&c, |e, max_person, max_auction| match e {
            Event::Auction(a) => {
                assert!(a.seller >= FIRST_PERSON_ID.max(max_person + 1 - people));
                assert!(a.seller <= max_person + person_lead, "{a:?} {max_person}");
            }
            Event::Bid(b) => {
                assert!(b.auction >= FIRST_AUCTION_ID.max(max_auction - in_flight));
                assert!(
                    b.auction <= max_auction + auction_lead,
                    "{b:?} {max_auction}"
                );
                assert!(b.bidder >= FIRST_PERSON_ID.max(max_person + 1 - people));
                assert!(b.bidder <= max_person + person_lead, "{b:?} {max_person}");
            }
            Event::Person(_) => {}
        });
    }

    #[test]
    fn without_leads_references_only_generated_ids() {
        let c = NexmarkConfig {
            person_id_lead: 0,
            auction_id_lead: 0,
            ..config(50_000)
        };
        check_references(&c, |e, max_person, max_auction| match e {
            Event::Auction(a) => assert!(a.seller <= max_person, "{a:?} {max_person}"),
            Event::Bid(b) => {
                assert!(b.auction <= max_auction, "{b:?} {max_auction}");
                // Flink's hot bidder is the second person of the current block of 100, which
                // exists only once the block has two persons.
                let hot = (max_person - FIRST_PERSON_ID) / 100 * 100 + 1 + FIRST_PERSON_ID;
                assert!(
                    b.bidder <= max_person || b.bidder == hot,
                    "{b:?} {max_person}"
                );
            }
            Event::Person(_) => {}
        });
    }

    #[test]
    fn hot_ratios_follow_the_config() {
        let events = nested(&config(50_000), 0, 8192);
        let (mut bids, mut hot_auction, mut hot_bidder) = (0, 0, 0);
        let (mut auctions, mut hot_seller) = (0, 0);
        let (mut max_person, mut max_auction) = (FIRST_PERSON_ID, FIRST_AUCTION_ID);
        for e in &events {
            let block = |max: i64, first: i64| (max - first) / 100 * 100 + first;
            match e {
                Event::Person(p) => max_person = p.id,
                Event::Auction(a) => {
                    max_auction = a.id;
                    auctions += 1;
                    hot_seller += i32::from(a.seller == block(max_person, FIRST_PERSON_ID));
                }
                Event::Bid(b) => {
                    bids += 1;
                    hot_auction += i32::from(b.auction == block(max_auction, FIRST_AUCTION_ID));
                    hot_bidder += i32::from(b.bidder == block(max_person, FIRST_PERSON_ID) + 1);
                }
            }
        }
        let share = |n: i32, of: i32| f64::from(n) / f64::from(of);
        // Hot with probability 1 - 1/ratio, plus the odd random pick of the same id.
        let hot_auctions = share(hot_auction, bids);
        assert!((0.49..0.53).contains(&hot_auctions), "{hot_auctions}");
        let hot_bidders = share(hot_bidder, bids);
        assert!((0.74..0.77).contains(&hot_bidders), "{hot_bidders}");
        let hot_sellers = share(hot_seller, auctions);
        assert!((0.72..0.79).contains(&hot_sellers), "{hot_sellers}");
    }

    #[test]
    fn same_config_same_events_and_seed_changes_content_only() {
        let c = config(5_000);
        let a = nested(&c, 0, 1000);
        assert_eq!(a, nested(&c, 0, 1000));
        let other = nested(
            &NexmarkConfig {
                seed: 7,
                ..c.clone()
            },
            0,
            1000,
        );
        assert!(a != other, "seed changes content");
        let (a, other) = (split_of(&a), split_of(&other));
        let ids = |s: &Split| {
            (
                s.persons
                    .iter()
                    .map(|p| (p.id, p.date_time))
                    .collect::<Vec<_>>(),
                s.auctions
                    .iter()
                    .map(|a| (a.id, a.date_time))
                    .collect::<Vec<_>>(),
                s.bids.iter().map(|b| b.date_time).collect::<Vec<_>>(),
            )
        };
        assert_eq!(ids(&a), ids(&other));
    }

    #[test]
    fn ranges_compose_in_any_batch_sizes() {
        for group in [1, 7, 1000] {
            let c = NexmarkConfig {
                out_of_order_group_size: group,
                ..config(6_000)
            };
            let whole = nested(&c, 0, 6_000);
            let first = nested(
                &NexmarkConfig {
                    events: 2_345,
                    ..c.clone()
                },
                0,
                333,
            );
            let second = nested(&c, 2_345, 1_000);
            assert_eq!([first, second].concat(), whole, "group {group}");

            // skip_to, also backwards.
            let mut generator = NexmarkGenerator::new(c.clone()).unwrap();
            generator.skip_to(5_000);
            let tail = nested_events(&generator.next_batch(10_000).unwrap());
            assert_eq!(tail, whole[5_000..]);
            generator.skip_to(10);
            assert_eq!(generator.position(), 10);
            let again = nested_events(&generator.next_batch(5).unwrap());
            assert_eq!(again, whole[10..15]);
            assert_eq!(generator.position(), 15);

            // Split layout: same events, same ranges property.
            assert_eq!(split(&c, 0, 777), split_of(&whole));
            let mut parts = split(
                &NexmarkConfig {
                    events: 4_000,
                    ..c.clone()
                },
                0,
                100,
            );
            let rest = split(&c, 4_000, 8192);
            parts.persons.extend(rest.persons);
            parts.auctions.extend(rest.auctions);
            parts.bids.extend(rest.bids);
            assert_eq!(parts, split_of(&whole));
        }
    }

    #[test]
    fn out_of_order_groups_permute_events_within_the_group() {
        let in_order = nested(&config(10_000), 0, 8192);
        // (953 % k == 1 for k dividing 952, e.g. 2, 4, 7, 8: Flink's permutation is then the
        // identity, so those sizes are not used here.)
        for group in [3, 10, 333, 1000] {
            let c = NexmarkConfig {
                out_of_order_group_size: group,
                ..config(10_000)
            };
            let shuffled = nested(&c, 0, 8192);
            assert!(shuffled != in_order, "group {group} reorders");
            let group = group as usize;
            for (g, (chunk, expected)) in shuffled
                .chunks(group)
                .zip(in_order.chunks(group))
                .enumerate()
            {
                let lo = c.timestamp_for_event((g * group) as u64);
                let hi = c.timestamp_for_event((g * group + group - 1) as u64);
                for e in chunk {
                    assert!((lo..=hi).contains(&e.date_time()), "group {g}");
                }
                if chunk.len() == group {
                    let mut chunk = chunk.to_vec();
                    let mut expected = expected.to_vec();
                    chunk.sort();
                    expected.sort();
                    assert_eq!(chunk, expected, "group {g}");
                }
            }
            // Each position carries the event of its adjusted event number.
            // (A last partial group may carry event numbers past `events`, as in Flink.)
            for (p, e) in shuffled.iter().enumerate() {
                if let Some(expected) = in_order.get(c.event_number_at(p as u64) as usize) {
                    assert_eq!(e, expected);
                }
            }
        }
    }

    #[test]
    fn states_are_upper_case_and_strings_come_from_flink_lists() {
        let s = split(&config(50_000), 0, 8192);
        let mut states: HashMap<&str, usize> = HashMap::new();
        for p in &s.persons {
            assert!(US_STATES.contains(&p.state.as_str()), "{}", p.state);
            assert_eq!(p.state, p.state.to_uppercase());
            assert!(US_CITIES.contains(&p.city.as_str()), "{}", p.city);
            let (first, last) = p.name.split_once(' ').unwrap();
            assert!(FIRST_NAMES.contains(&first) && LAST_NAMES.contains(&last));
            *states
                .entry(US_STATES.iter().find(|s| **s == p.state).unwrap())
                .or_default() += 1;
            let (user, domain) = p.email.split_once('@').unwrap();
            assert!(user.len() <= 6 && domain.ends_with(".com") && domain.len() <= 8);
            assert_eq!(p.credit_card.len(), 19);
            assert!(p
                .credit_card
                .split(' ')
                .all(|g| g.len() == 4 && g.bytes().all(|b| b.is_ascii_digit())));
        }
        assert_eq!(states.len(), 6, "every state occurs");
        for a in &s.auctions {
            assert!(a.item_name.len() <= 19 && a.description.len() <= 99);
            assert!(!a.item_name.starts_with(' ') && !a.item_name.ends_with(' '));
            assert!(a
                .item_name
                .bytes()
                .all(|b| b == b' ' || b.is_ascii_lowercase()));
        }
    }

    #[test]
    fn prices_expiry_and_timestamps_follow_the_rules() {
        let c = config(50_000);
        let events = nested(&c, 0, 8192);
        for (n, e) in events.iter().enumerate() {
            // 10 000 events/s: 10 events per millisecond.
            assert_eq!(e.date_time(), DEFAULT_BASE_TIME_MS + n as i64 / 10);
        }
        let s = split_of(&events);
        // The auction 100 in flight ahead is 1666 events ahead: 166.6 ms at 10 000 events/s.
        for a in &s.auctions {
            assert!((100..=100_000_000).contains(&a.initial_bid));
            assert!(a.reserve > a.initial_bid);
            let length = a.expires - a.date_time;
            assert!((1..=2 * 167).contains(&length), "{length}");
        }
        let mean: f64 = s
            .auctions
            .iter()
            .map(|a| (a.expires - a.date_time) as f64)
            .sum::<f64>()
            / s.auctions.len() as f64;
        assert!((155.0..180.0).contains(&mean), "{mean}");
        let prices: Vec<i64> = s.bids.iter().map(|b| b.price).collect();
        assert!(prices.iter().all(|p| (100..=100_000_000).contains(p)));
        // log10(price / 100) is uniform in [0, 6): half of the prices are below 10^5.
        let below = prices.iter().filter(|p| **p < 100_000).count() as f64 / prices.len() as f64;
        assert!((0.48..0.52).contains(&below), "{below}");

        // Another rate and base time.
        let c = NexmarkConfig {
            first_event_rate: 3,
            base_time_ms: 5,
            ..config(20)
        };
        let events = nested(&c, 0, 8);
        for (n, e) in events.iter().enumerate() {
            assert_eq!(e.date_time(), 5 + n as i64 * 1000 / 3);
        }
    }

    #[test]
    fn extra_pads_to_the_average_sizes() {
        let s = split(&config(100_000), 0, 8192);
        let mean = |sizes: Vec<usize>| sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
        let person = mean(
            s.persons
                .iter()
                .map(|p| {
                    8 + p.name.len()
                        + p.email.len()
                        + p.credit_card.len()
                        + p.city.len()
                        + p.state.len()
                        + p.extra.len()
                })
                .collect(),
        );
        let auction = mean(
            s.auctions
                .iter()
                .map(|a| 8 + a.item_name.len() + a.description.len() + 40 + a.extra.len())
                .collect(),
        );
        let bid = mean(s.bids.iter().map(|b| 32 + b.extra.len()).collect());
        assert!((196.0..204.0).contains(&person), "{person}");
        assert!((490.0..510.0).contains(&auction), "{auction}");
        assert!((99.0..101.0).contains(&bid), "{bid}");
        assert!(s.bids.iter().all(|b| (54..82).contains(&b.extra.len())));
        assert!(s
            .bids
            .iter()
            .all(|b| b.extra.bytes().all(|c| c.is_ascii_lowercase())));
    }

    #[test]
    fn channels_and_urls() {
        let s = split(&config(50_000), 0, 8192);
        let mut urls: HashMap<String, String> = HashMap::new();
        let mut hot = 0;
        let mut with_id = 0;
        for b in &s.bids {
            assert!(b.url.starts_with("https://www.nexmark.com/"), "{}", b.url);
            assert!(b.url.contains("/item.htm?query=1"), "{}", b.url);
            let previous = urls.insert(b.channel.clone(), b.url.clone());
            assert!(previous.is_none_or(|u| u == b.url), "one url per channel");
            if HOT_CHANNELS.contains(&b.channel.as_str()) {
                hot += 1;
                assert!(b.url.ends_with("item.htm?query=1"));
            } else {
                let c: i32 = b.channel.strip_prefix("channel-").unwrap().parse().unwrap();
                assert!((0..10_000).contains(&c));
                if let Some((_, id)) = b.url.split_once("&channel_id=") {
                    with_id += 1;
                    assert_eq!(id, c.reverse_bits().wrapping_abs().to_string());
                }
            }
        }
        let hot = f64::from(hot) / s.bids.len() as f64;
        assert!((0.48..0.52).contains(&hot), "{hot}");
        let with_id = f64::from(with_id) / (s.bids.len() as f64 * (1.0 - hot));
        assert!((0.85..0.95).contains(&with_id), "{with_id}");
    }

    #[test]
    fn schemas_are_flink_nexmark_exactly() {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        let names = |fields: &Fields| -> Vec<(String, DataType, bool)> {
            fields
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
                .collect()
        };
        let expect = |spec: &[(&str, &DataType)]| -> Vec<(String, DataType, bool)> {
            spec.iter()
                .map(|(n, t)| (n.to_string(), (*t).clone(), true))
                .collect()
        };
        let (i64t, utf8) = (DataType::Int64, DataType::Utf8);
        let person = expect(&[
            ("id", &i64t),
            ("name", &utf8),
            ("emailAddress", &utf8),
            ("creditCard", &utf8),
            ("city", &utf8),
            ("state", &utf8),
            ("dateTime", &ts),
            ("extra", &utf8),
        ]);
        let auction = expect(&[
            ("id", &i64t),
            ("itemName", &utf8),
            ("description", &utf8),
            ("initialBid", &i64t),
            ("reserve", &i64t),
            ("dateTime", &ts),
            ("expires", &ts),
            ("seller", &i64t),
            ("category", &i64t),
            ("extra", &utf8),
        ]);
        let bid = expect(&[
            ("auction", &i64t),
            ("bidder", &i64t),
            ("price", &i64t),
            ("channel", &utf8),
            ("url", &utf8),
            ("dateTime", &ts),
            ("extra", &utf8),
        ]);
        assert_eq!(names(person_schema().fields()), person);
        assert_eq!(names(auction_schema().fields()), auction);
        assert_eq!(names(bid_schema().fields()), bid);

        let nested = nested_schema();
        let top: Vec<&str> = nested.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(top, ["event_type", "person", "auction", "bid"]);
        assert_eq!(nested.field(0).data_type(), &DataType::Int32);
        for (i, expected) in [(1, &person), (2, &auction), (3, &bid)] {
            let DataType::Struct(fields) = nested.field(i).data_type() else {
                panic!("struct")
            };
            assert_eq!(&names(fields), expected);
            assert!(nested.field(i).is_nullable());
        }

        let mut generator = NexmarkGenerator::new(config(100)).unwrap();
        assert_eq!(generator.next_batch(100).unwrap().schema(), nested);
        generator.skip_to(0);
        let b = generator.next_batches(100).unwrap();
        assert_eq!(b.person.schema(), person_schema());
        assert_eq!(b.auction.schema(), auction_schema());
        assert_eq!(b.bid.schema(), bid_schema());
    }

    #[test]
    fn bounded_count_is_honoured() {
        let mut generator = NexmarkGenerator::new(config(12_345)).unwrap();
        let mut sizes = Vec::new();
        while let Some(batch) = generator.next_batch(1000) {
            sizes.push(batch.num_rows());
        }
        assert_eq!(sizes.len(), 13);
        assert_eq!(sizes.iter().sum::<usize>(), 12_345);
        assert_eq!(*sizes.last().unwrap(), 345);
        assert!(generator.next_batch(1000).is_none());
        assert_eq!(generator.remaining(), 0);

        // A start past the end, zero max rows (one row), the split layout and next_output.
        assert!(NexmarkGenerator::at(config(10), 11)
            .unwrap()
            .next_batch(5)
            .is_none());
        let mut generator = NexmarkGenerator::new(config(3)).unwrap();
        assert_eq!(generator.next_batch(0).unwrap().num_rows(), 1);
        let split_config = NexmarkConfig {
            layout: Layout::Split,
            ..config(1_001)
        };
        let mut generator = NexmarkGenerator::new(split_config).unwrap();
        let mut total = 0;
        while let Some(out) = generator.next_output(100) {
            let NexmarkBatch::Split(b) = out else {
                panic!("split layout")
            };
            let rows = b.person.num_rows() + b.auction.num_rows() + b.bid.num_rows();
            assert!(rows <= 100);
            total += rows;
        }
        assert_eq!(total, 1_001);
        let mut generator = NexmarkGenerator::new(config(10)).unwrap();
        assert!(matches!(
            generator.next_output(100),
            Some(NexmarkBatch::Nested(b)) if b.num_rows() == 10
        ));
        assert!(generator.next_output(100).is_none());
    }

    #[test]
    fn nested_batches_concatenate_like_one_batch() {
        let c = config(3_000);
        let mut generator = NexmarkGenerator::new(c.clone()).unwrap();
        let mut batches = Vec::new();
        while let Some(b) = generator.next_batch(256) {
            batches.push(b);
        }
        let joined = concat_batches(&nested_schema(), &batches).unwrap();
        let one = NexmarkGenerator::new(c).unwrap().next_batch(3_000).unwrap();
        assert_eq!(joined, one);
        // Struct NULLs are real NULLs: a bid row has no person.
        let person = one.column(1).as_struct();
        assert_eq!(person.null_count(), 3_000 - 60);
        assert_eq!(person.column(0).null_count(), 3_000 - 60);
    }

    #[test]
    fn invalid_configs_are_refused() {
        let bad = [
            NexmarkConfig {
                first_event_rate: 0,
                ..config(1)
            },
            NexmarkConfig {
                out_of_order_group_size: 0,
                ..config(1)
            },
            NexmarkConfig {
                out_of_order_group_size: 953 * 2,
                ..config(1)
            },
            NexmarkConfig {
                person_proportion: 0,
                ..config(1)
            },
            NexmarkConfig {
                hot_auction_ratio: 0,
                ..config(1)
            },
            NexmarkConfig {
                num_active_people: 0,
                ..config(1)
            },
            NexmarkConfig {
                base_time_ms: -1,
                ..config(1)
            },
        ];
        for c in bad {
            assert!(NexmarkGenerator::new(c.clone()).is_err(), "{c:?}");
        }
        assert!(NexmarkConfig::default().validate().is_ok());
        assert_eq!(NexmarkConfig::default().base_time_ms, DEFAULT_BASE_TIME_MS);
    }
}
