//! Pacing per TCP connection, the way a WAN path or a CDN edge limits a download: every byte a
//! connection writes (headers, bodies of every response, every HTTP/2 stream, TLS records)
//! draws on one budget of that connection, so opening more connections is what gets more
//! throughput, not asking for more ranges on the same one.
//!
//! [`EdgeMix`] says what each new connection gets: a list of rates with weights (a mix of
//! slow and fast CDN edges), drawn per connection from a seed, so a run is repeatable.
//! [`PacedIo`] wraps the connection's socket and holds its writes to the rate drawn.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Most bytes one paced write puts on the socket: pieces of at most a twentieth of a second
/// keep the pace smooth at low rates, and 64 KiB keeps it cheap at high ones.
const MAX_PIECE: u64 = 64 * 1024;

/// The paces new connections draw from: `(bytes per second, weight)` entries and a seed.
///
/// Connection number `n` (the emulator's connection id) gets entry `i` with probability
/// `weight_i / sum(weights)`, from a hash of `(seed, n)`: the same seed gives the same edges
/// to the same connections, whatever their timing.
#[derive(Clone, PartialEq, Eq)]
pub struct EdgeMix {
    entries: Vec<(u64, u32)>,
    seed: u64,
}

impl EdgeMix {
    /// Every connection paced at `bytes_per_sec` (a per-connection cap, like nginx's
    /// `limit_rate` or a WAN path).
    pub fn uniform(bytes_per_sec: u64) -> Self {
        EdgeMix {
            entries: vec![(bytes_per_sec.max(1), 1)],
            seed: 0,
        }
    }

    /// A mix of `(bytes per second, weight)` entries; `None` when it is empty or every
    /// weight is zero.
    pub fn new(entries: Vec<(u64, u32)>) -> Option<Self> {
        let entries: Vec<(u64, u32)> = entries
            .into_iter()
            .filter(|(_, weight)| *weight > 0)
            .map(|(rate, weight)| (rate.max(1), weight))
            .collect();
        (!entries.is_empty()).then_some(EdgeMix { entries, seed: 0 })
    }

    /// The same mix drawn with another seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The `(bytes per second, weight)` entries.
    pub fn entries(&self) -> &[(u64, u32)] {
        &self.entries
    }

    /// The rate connection `connection` gets.
    pub fn draw(&self, connection: u64) -> u64 {
        let total: u64 = self.entries.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut pick = splitmix64(self.seed ^ splitmix64(connection)) % total.max(1);
        for (rate, weight) in &self.entries {
            if pick < u64::from(*weight) {
                return *rate;
            }
            pick -= u64::from(*weight);
        }
        self.entries[0].0
    }
}

impl fmt::Debug for EdgeMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EdgeMix({self} seed {})", self.seed)
    }
}

impl fmt::Display for EdgeMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (rate, weight)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{rate}B/s:{weight}")?;
        }
        Ok(())
    }
}

/// Parses `RATE[:WEIGHT],…`, e.g. `4MB/s:2,38MB/s:1` (weight 1 when left out). A rate is a
/// number with an optional unit: `B`, `kB`/`KB` (1000), `MB` (10^6), `GB` (10^9), `KiB`,
/// `MiB`, `GiB`, with or without `/s`.
impl FromStr for EdgeMix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (rate, weight) = match part.rsplit_once(':') {
                Some((rate, weight)) => {
                    let weight = weight.trim().parse::<u32>().map_err(|_| {
                        format!("edge mix `{text}`: weight `{weight}` is not a whole number")
                    })?;
                    (rate, weight)
                }
                None => (part, 1),
            };
            entries.push((
                parse_rate(rate).map_err(|e| format!("edge mix `{text}`: {e}"))?,
                weight,
            ));
        }
        EdgeMix::new(entries).ok_or_else(|| {
            format!("edge mix `{text}`: needs at least one rate with a weight above 0")
        })
    }
}

/// Parses a rate such as `38MB/s`, `512KiB`, `20000000` into bytes per second (above zero).
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let text = text.strip_suffix("/s").unwrap_or(text);
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a rate like 38MB/s"))?;
    let factor: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "k" | "kB" | "KB" => 1e3,
        "M" | "MB" => 1e6,
        "G" | "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown unit `{other}` in `{text}`")),
    };
    let rate = number * factor;
    if !(rate >= 1.0 && rate.is_finite()) {
        return Err(format!("`{text}` is not a rate above zero"));
    }
    Ok(rate as u64)
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A connection's socket with its writes held to a rate: a token bucket of the connection,
/// which every response and stream on it shares. Reads are not limited. Time not used is not
/// banked: a connection idle for a second does not then burst a second's worth.
pub(crate) struct PacedIo<S> {
    inner: S,
    /// Bytes per second; `None`: unpaced.
    rate: Option<u64>,
    /// When the bytes written so far are due to have left at the rate.
    next: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S> PacedIo<S> {
    /// `inner`, paced at `rate` bytes per second (`None`: not at all).
    pub(crate) fn new(inner: S, rate: Option<u64>) -> Self {
        PacedIo {
            inner,
            rate: rate.map(|r| r.max(1)),
            next: Instant::now(),
            sleep: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PacedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PacedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let Some(rate) = self.rate else {
            return Pin::new(&mut self.inner).poll_write(cx, buf);
        };
        loop {
            if let Some(sleep) = self.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                self.sleep = None;
            }
            let now = Instant::now();
            if self.next > now {
                let due = self.next;
                self.sleep = Some(Box::pin(tokio::time::sleep_until(due)));
                continue;
            }
            let piece = (rate / 20).clamp(1, MAX_PIECE) as usize;
            let end = buf.len().min(piece);
            let written = ready!(Pin::new(&mut self.inner).poll_write(cx, &buf[..end]))?;
            self.next = now + Duration::from_secs_f64(written as f64 / rate as f64);
            return Poll::Ready(Ok(written));
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_units() {
        assert_eq!(parse_rate("38MB/s"), Ok(38_000_000));
        assert_eq!(parse_rate("4MB"), Ok(4_000_000));
        assert_eq!(parse_rate("512KiB/s"), Ok(524_288));
        assert_eq!(parse_rate("1.5MB/s"), Ok(1_500_000));
        assert_eq!(parse_rate("20000000"), Ok(20_000_000));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("0MB/s").is_err());
        assert!(parse_rate("3 parsecs").is_err());
    }

    #[test]
    fn mixes_parse_and_reject_nonsense() {
        let mix: EdgeMix = "4MB/s:2, 38MB/s:1".parse().unwrap();
        assert_eq!(mix.entries(), &[(4_000_000, 2), (38_000_000, 1)]);
        assert_eq!(mix.to_string(), "4000000B/s:2,38000000B/s:1");
        let single: EdgeMix = "20MB/s".parse().unwrap();
        assert_eq!(single, EdgeMix::uniform(20_000_000));
        assert!("".parse::<EdgeMix>().is_err());
        assert!("4MB/s:0".parse::<EdgeMix>().is_err());
        assert!("4MB/s:x".parse::<EdgeMix>().is_err());
    }

    #[test]
    fn draws_follow_the_weights_and_the_seed() {
        let mix: EdgeMix = "4MB/s:2,38MB/s:1".parse().unwrap();
        let slow = (1..=3000).filter(|n| mix.draw(*n) == 4_000_000).count();
        // Two thirds of 3000, within a few percent.
        assert!((1850..=2150).contains(&slow), "{slow}");
        let again: Vec<u64> = (1..=20).map(|n| mix.draw(n)).collect();
        assert_eq!(again, (1..=20).map(|n| mix.draw(n)).collect::<Vec<_>>());
        let other = mix.clone().seed(7);
        assert_ne!(again, (1..=20).map(|n| other.draw(n)).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn paced_writes_hold_to_the_rate_across_writers() {
        use tokio::io::AsyncWriteExt;
        let (client, mut server) = tokio::io::duplex(1 << 22);
        let mut paced = PacedIo::new(client, Some(1_000_000));
        let start = Instant::now();
        // Two "responses" one after the other share one budget: 300 kB cannot leave in less
        // than 0.3 s at 1 MB/s (less the first piece, which goes at once).
        paced.write_all(&[1u8; 150_000]).await.unwrap();
        paced.write_all(&[2u8; 150_000]).await.unwrap();
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(240), "{elapsed:?}");
        drop(paced);
        let mut all = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut server, &mut all)
            .await
            .unwrap();
        assert_eq!(all.len(), 300_000);
        assert!(all[..150_000].iter().all(|b| *b == 1) && all[150_000..].iter().all(|b| *b == 2));
    }
}
