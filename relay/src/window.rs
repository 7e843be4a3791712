//! The position rule: which outbox rows a lane's next read may publish, so that every row is
//! published once its transaction has committed, none is skipped, and the rows of one order
//! keep their order (decision 0026).
//!
//! **Windows between snapshots.** Every outbox row carries its transaction's id (`tx`). A
//! relay reads a lane in windows: a window holds the rows of the transactions that a later
//! snapshot (`hi`) sees and an earlier one (`lo`) does not, and the next window starts where
//! this one ended (`lo := hi`). A transaction belongs to exactly one window, the first whose
//! `hi` was taken after it committed. A row whose transaction drew a low id and committed late
//! therefore lands in a later window, and is not skipped. This is how PgQ (Skytools) cuts a
//! queue into batches.
//!
//! **In id order within a window.** Two events of one order come from transactions that each
//! locked the order's row first (`messaging::outbox`). The second transaction got the lock,
//! and so drew its id, only after the first committed. So the first event's window is never
//! later than the second's, and inside one window its id is lower. Transaction ids would not
//! do here: the second transaction may have taken its transaction id before it waited for
//! the lock.
//!
//! **Where a read starts (floors).** To read a window in id order without walking rows
//! already published, a read starts after a *floor*: an id that no row of the window can be
//! at or below. Writers take their transaction id before they draw an outbox id
//! (`outbox_next_id()`). So if a read saw the id sequence at `seq`, and a later read saw
//! Postgres about to hand out transaction id `next_xid`, then every transaction with an id at
//! or above `next_xid` drew all its outbox ids above `seq` ([`Ticks`]). This needs `seq` never
//! to be ahead of the ids handed out: a plain `SELECT last_value` of the sequence can be, by
//! up to 32, so reads take it from `outbox_last_id()` (messaging migration 000012, decision
//! 0026). A window's rows come from
//! transactions that `lo` did not see. Those are the ones `lo` lists as running, and the ones
//! from `lo.xmax` on. The floor of the newer ones comes from the ticks. A running one that has
//! committed since is looked up in the read statement itself, and only it lowers the floor.
//! So a long transaction still open costs nothing. When it commits, one read walks back to
//! where it started.
//!
//! One room, over 300 lines: the snapshots, the floors and a lane's reading state are one
//! rule, and each part's correctness leans on the others.

use std::collections::VecDeque;
use std::fmt;

/// A Postgres snapshot (`pg_snapshot`, printed `xmin:xmax:xip,…`): which transactions had
/// finished when it was taken. A transaction it *sees* had committed (or rolled back) by then.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Snapshot {
    pub xmin: u64,
    pub xmax: u64,
    /// Running when the snapshot was taken, between `xmin` and `xmax`; ascending.
    pub xip: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a snapshot: {0:?}")]
pub struct BadSnapshot(pub String);

impl Snapshot {
    /// The snapshot a new lane starts from: it sees no transaction at all (ids below 3 are
    /// Postgres's own, never a writer's).
    pub fn nothing() -> Self {
        Self { xmin: 3, xmax: 3, xip: Vec::new() }
    }

    /// Reads `xmin:xmax:xip,…` as Postgres prints a `pg_snapshot`.
    pub fn parse(text: &str) -> Result<Self, BadSnapshot> {
        let bad = || BadSnapshot(text.to_owned());
        let mut parts = text.split(':');
        let (Some(xmin), Some(xmax), Some(xip), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let number = |s: &str| s.parse::<u64>().map_err(|_| bad());
        let mut xip: Vec<u64> =
            if xip.is_empty() { Vec::new() } else { xip.split(',').map(number).collect::<Result<_, _>>()? };
        xip.sort_unstable();
        let (xmin, xmax) = (number(xmin)?, number(xmax)?);
        if xmin > xmax || xip.iter().any(|&x| x < xmin || x >= xmax) {
            return Err(bad());
        }
        Ok(Self { xmin, xmax, xip })
    }

    /// Whether transaction `xid` had finished when the snapshot was taken
    /// (`pg_visible_in_snapshot`).
    pub fn sees(&self, xid: u64) -> bool {
        xid < self.xmin || (xid < self.xmax && self.xip.binary_search(&xid).is_err())
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:", self.xmin, self.xmax)?;
        for (i, x) in self.xip.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{x}")?;
        }
        Ok(())
    }
}

/// What the relay's reads saw of the id sequence and of the transaction ids: pairs
/// `(next_xid, seq)` where every transaction with an id at or above `next_xid` drew its outbox
/// ids above `seq`. A read reports the next transaction id and the sequence as it found them.
/// The sequence value is paired with the *next* read's transaction id, which was certainly
/// read after it.
#[derive(Debug, Default, Clone)]
pub struct Ticks {
    /// Ascending in both.
    pairs: VecDeque<(u64, i64)>,
    last_seq: Option<i64>,
}

/// Pairs kept at most: older ones are thinned out. Floors then come from older reads, which
/// is still correct, only less tight.
const MAX_TICKS: usize = 4096;

impl Ticks {
    /// A read found Postgres about to hand out `next_xid` and the id sequence at `seq`.
    pub fn record(&mut self, next_xid: u64, seq: i64) {
        if let Some(seq_before) = self.last_seq {
            let ascending = self.pairs.back().is_none_or(|&(x, s)| next_xid >= x && seq_before >= s);
            if ascending {
                self.pairs.push_back((next_xid, seq_before));
            }
        }
        self.last_seq = Some(self.last_seq.map_or(seq, |last| last.max(seq)));
        if self.pairs.len() > MAX_TICKS {
            self.thin();
        }
    }

    /// An id at or below which transaction `xid` drew no outbox id, if the reads tell one.
    pub fn floor(&self, xid: u64) -> Option<i64> {
        let after = self.pairs.partition_point(|&(next_xid, _)| next_xid <= xid);
        after.checked_sub(1).map(|i| self.pairs[i].1)
    }

    /// Forgets what no floor of a transaction at or above `xid` needs.
    pub fn forget_below(&mut self, xid: u64) {
        let needed = self.pairs.partition_point(|&(next_xid, _)| next_xid <= xid).saturating_sub(1);
        self.pairs.drain(..needed);
    }

    /// Drops every other pair of the older half.
    fn thin(&mut self) {
        let half = self.pairs.len() / 2;
        let mut kept = VecDeque::with_capacity(self.pairs.len());
        for (i, pair) in self.pairs.drain(..).enumerate() {
            if i >= half || i % 2 == 1 {
                kept.push_back(pair);
            }
        }
        self.pairs = kept;
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// Where a lane is published up to, in the form the relay writes to `outbox_lanes`: every row
/// of a transaction `done` sees, and of the transactions `window`'s snapshot sees, the rows up
/// to its id. Every row of a transaction `done` does not see has an id above `floor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub done: Snapshot,
    pub floor: i64,
    pub window: Option<(Snapshot, i64)>,
}

impl Position {
    /// A lane nothing of which is published.
    pub fn start() -> Self {
        Self { done: Snapshot::nothing(), floor: 0, window: None }
    }

    /// Whether a row of transaction `tx` with id `id` is published at this position.
    pub fn covers(&self, tx: u64, id: i64) -> bool {
        self.done.sees(tx) || self.window.as_ref().is_some_and(|(end, last)| id <= *last && end.sees(tx))
    }
}

/// One lane's next read, as the read statement takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneRead {
    pub lane: i16,
    /// Rows of transactions this snapshot sees are published already.
    pub lo: Snapshot,
    /// The window's end, once the read that opened it took it; `None`: this read opens a
    /// window, ending at its own snapshot.
    pub hi: Option<Snapshot>,
    /// Rows at or below this id are not in the window (the floor, or the last row read).
    pub after: i64,
    /// For a window being opened: transactions `lo` saw running, with the floor of each where
    /// it is below `after`. The read starts at the lowest floor of those that have committed
    /// by its own snapshot.
    pub late: Vec<(u64, i64)>,
}

impl LaneRead {
    /// No row of the window is at or below this id: `after`, or the floor of a late
    /// transaction below it. The read starts no lower; a segment that took nothing stands here.
    pub fn start(&self) -> i64 {
        self.late.iter().map(|&(_, floor)| floor).fold(self.after, i64::min)
    }
}

/// What one lane's read returned, for [`LaneReader::read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOutcome {
    /// How many rows came back, and how many the read was allowed.
    pub rows: usize,
    pub limit: usize,
    /// The id of the last row taken (admitted to the pipeline); `None` if none was.
    pub last_taken: Option<i64>,
    /// Whether every row that came back was taken (none held back for an order in flight).
    pub all_taken: bool,
}

/// The part of a window that one read took, to be settled when its batch has been answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Where the lane stood when the read was made...
    pub lo: Snapshot,
    pub lo_floor: i64,
    /// ...and the window it read from, after which id ([`LaneRead::start`]).
    pub hi: Snapshot,
    pub after: i64,
    /// The last id it took (`after` if it took none).
    pub last: i64,
    /// Whether this read came to the window's end: then the lane stands at `hi` once the
    /// segment is settled, with `hi_floor`.
    pub closes: bool,
    pub hi_floor: i64,
}

impl Segment {
    /// The position once every row of the segment is on the broker.
    pub fn end(&self) -> Position {
        if self.closes {
            Position { done: self.hi.clone(), floor: self.hi_floor, window: None }
        } else {
            self.up_to(self.last)
        }
    }

    /// The position with the rows up to `id` of the segment on the broker.
    pub fn up_to(&self, id: i64) -> Position {
        Position { done: self.lo.clone(), floor: self.lo_floor, window: Some((self.hi.clone(), id)) }
    }
}

/// What a lane reads next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneReader {
    lo: Snapshot,
    lo_floor: i64,
    /// The window being read: its end, and the last id read from it.
    open: Option<(Snapshot, i64)>,
}

impl LaneReader {
    /// A reader that continues from `position`.
    pub fn from(position: &Position) -> Self {
        Self { lo: position.done.clone(), lo_floor: position.floor, open: position.window.clone() }
    }

    /// The lane's next read.
    pub fn next_read(&self, lane: i16, ticks: &Ticks) -> LaneRead {
        match &self.open {
            Some((hi, last)) => {
                LaneRead { lane, lo: self.lo.clone(), hi: Some(hi.clone()), after: *last, late: Vec::new() }
            }
            None => {
                let floor_of = |xid: u64| ticks.floor(xid).map_or(self.lo_floor, |f| f.max(self.lo_floor));
                let after = floor_of(self.lo.xmax);
                let late = self.lo.xip.iter().map(|&x| (x, floor_of(x))).filter(|&(_, f)| f < after).collect();
                LaneRead { lane, lo: self.lo.clone(), hi: None, after, late }
            }
        }
    }

    /// Moves past what a read of this lane took, and returns the segment to settle. `read` is
    /// what was asked, `snapshot` the read statement's own snapshot, `ticks` already holding
    /// what that read saw.
    pub fn read(&mut self, read: &LaneRead, snapshot: &Snapshot, outcome: ReadOutcome, ticks: &Ticks) -> Segment {
        let hi = read.hi.clone().unwrap_or_else(|| snapshot.clone());
        let start = read.start();
        // Rows come in id order, so the last taken is the highest; a late transaction's rows
        // may lie below `read.after`.
        let last = outcome.last_taken.unwrap_or(start);
        let closes = outcome.all_taken && outcome.rows < outcome.limit;
        // Every transaction `hi` does not see started at or after its xmin.
        let hi_floor = ticks.floor(hi.xmin).map_or(self.lo_floor, |f| f.max(self.lo_floor));
        let segment = Segment {
            lo: self.lo.clone(),
            lo_floor: self.lo_floor,
            hi: hi.clone(),
            after: start,
            last,
            closes,
            hi_floor,
        };
        if closes {
            self.lo = hi;
            self.lo_floor = hi_floor;
            self.open = None;
        } else {
            self.open = Some((hi, last));
        }
        segment
    }

    /// After a delivery failed: read again from `position` (the last one acknowledged).
    pub fn reset(&mut self, position: &Position) {
        *self = Self::from(position);
    }

    /// The snapshot whose running transactions the ticks may still be asked about.
    pub fn oldest_needed(&self) -> u64 {
        self.lo.xmin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_reads_and_prints_as_postgres_does() {
        for text in ["3:3:", "100:105:100,102", "7:9:8"] {
            assert_eq!(Snapshot::parse(text).unwrap().to_string(), text);
        }
        for bad in ["", "1:2", "5:3:", "1:5:7", "a:b:", "1:5:2,x", "1:2:3:4"] {
            assert!(Snapshot::parse(bad).is_err(), "{bad:?} is not a snapshot");
        }
    }

    #[test]
    fn a_snapshot_sees_what_finished_before_it() {
        let snapshot = Snapshot::parse("100:105:100,102").unwrap();
        let seen: Vec<u64> = (98..107).filter(|&x| snapshot.sees(x)).collect();
        assert_eq!(seen, [98, 99, 101, 103, 104]);
        assert!(!Snapshot::nothing().sees(3));
    }

    #[test]
    fn a_floor_comes_from_the_sequence_of_the_read_before_the_transaction_id() {
        let mut ticks = Ticks::default();
        ticks.record(100, 10);
        assert_eq!(ticks.floor(150), None, "a lone read pairs with nothing");
        ticks.record(110, 20);
        ticks.record(120, 30);
        // (110, 10), (120, 20)
        assert_eq!(ticks.floor(109), None);
        assert_eq!(ticks.floor(110), Some(10));
        assert_eq!(ticks.floor(119), Some(10));
        assert_eq!(ticks.floor(500), Some(20));
        ticks.forget_below(119);
        assert_eq!(ticks.floor(119), Some(10), "the pair a floor at 119 needs is kept");
        ticks.forget_below(125);
        assert_eq!(ticks.len(), 1);
        assert_eq!(ticks.floor(119), None);
    }

    #[test]
    fn thinned_ticks_still_give_floors_below_the_true_ones() {
        let mut ticks = Ticks::default();
        for i in 0..(3 * MAX_TICKS as u64) {
            ticks.record(1000 + i, 10 * i as i64);
        }
        assert!(ticks.len() <= MAX_TICKS);
        for xid in [1500, 3000, 9000, 12_000] {
            let exact = 10 * (xid - 1000) as i64 - 10;
            let floor = ticks.floor(xid).unwrap_or(i64::MIN);
            assert!(floor <= exact, "{floor} > {exact}");
        }
    }

    #[test]
    fn a_new_window_starts_at_the_floor_and_names_the_late_transactions_below_it() {
        let mut ticks = Ticks::default();
        ticks.record(90, 5);
        ticks.record(100, 40);
        ticks.record(110, 70);
        // (100, 5), (110, 40)
        let reader =
            LaneReader::from(&Position { done: Snapshot::parse("95:112:95,104,111").unwrap(), floor: 2, window: None });
        let read = reader.next_read(3, &ticks);
        assert_eq!(read.hi, None);
        assert_eq!(read.after, 40, "transactions from 112 on drew above 40");
        assert_eq!(read.late, [(95, 2), (104, 5)], "111 drew above 40 too");
    }

    #[test]
    fn a_window_closes_when_a_read_takes_everything_it_returned_short_of_the_limit() {
        let ticks = Ticks::default();
        let mut reader = LaneReader::from(&Position::start());
        let read = reader.next_read(0, &ticks);
        let now = Snapshot::parse("200:205:201").unwrap();
        let full = ReadOutcome { rows: 10, limit: 10, last_taken: Some(57), all_taken: true };
        let segment = reader.read(&read, &now, full, &ticks);
        assert!(!segment.closes);
        assert_eq!(segment.end(), Position { done: Snapshot::nothing(), floor: 0, window: Some((now.clone(), 57)) });
        let next = reader.next_read(0, &ticks);
        assert_eq!((next.hi.as_ref(), next.after), (Some(&now), 57), "the same window, after the last row");

        let later = Snapshot::parse("300:300:").unwrap();
        let short = ReadOutcome { rows: 3, limit: 10, last_taken: Some(90), all_taken: true };
        let segment = reader.read(&next, &later, short, &ticks);
        assert!(segment.closes);
        assert_eq!(segment.end().done, now, "the window's own end, not the later read's snapshot");
        assert_eq!(reader.next_read(0, &ticks).lo, now);

        let held = ReadOutcome { rows: 3, limit: 10, last_taken: Some(95), all_taken: false };
        let open = reader.next_read(0, &ticks);
        let segment = reader.read(&open, &later, held, &ticks);
        assert!(!segment.closes, "a row was held back: the window goes on after the last row taken");
        assert_eq!(reader.next_read(0, &ticks).after, 95);
    }

    #[test]
    fn a_position_covers_what_its_snapshots_see() {
        let position = Position {
            done: Snapshot::parse("100:100:").unwrap(),
            floor: 0,
            window: Some((Snapshot::parse("110:110:").unwrap(), 50)),
        };
        assert!(position.covers(99, 1_000));
        assert!(position.covers(105, 50));
        assert!(!position.covers(105, 51));
        assert!(!position.covers(110, 10));
    }
}
