//! RFC 3339 timestamps as the E2B API renders them.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Formats a UTC timestamp as RFC 3339 with a `Z` zone.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC).format(&Rfc3339).unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Parses an RFC 3339 timestamp.
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_zone() {
        let t = parse_rfc3339("2026-11-22T10:15:44.268843Z").unwrap();
        assert_eq!(rfc3339(t), "2026-11-22T10:15:44.268843Z");
        assert!(parse_rfc3339("2026-11-22T10:15:44+01:00").is_some());
        assert!(parse_rfc3339("yesterday").is_none());
    }
}
