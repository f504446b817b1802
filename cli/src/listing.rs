//! How `keyward clients list` prints the registry (the records as `list_clients` answers them): a
//! table, or JSON; and times to the second in RFC 3339 (UTC).

use serde_json::Value;
use time::macros::format_description;

/// Unix milliseconds as RFC 3339 UTC, to the second: `2026-11-27T10:00:00Z` (the audit log's
/// format without milliseconds).
pub fn rfc3339_seconds(unix_ms: u64) -> String {
    crate::audit::utc(unix_ms, format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z"))
}

/// The records as pretty JSON.
pub fn as_json(records: &[Value]) -> anyhow::Result<String> {
    Ok(format!("{}\n", serde_json::to_string_pretty(records)?))
}

/// The identity column: `cert sha256:` and the first 16 hex digits, or `uid N`.
fn identity_text(identity: &Value) -> String {
    if let Some(hash) = identity["cert"]["spki_sha256"].as_str() {
        return format!("cert sha256:{}…", hash.get(..16).unwrap_or(hash));
    }
    match identity["uid"].as_u64() {
        Some(uid) => format!("uid {uid}"),
        None => "?".into(),
    }
}

/// The records as a table: name, role, identity, created, revoked (or `-`).
pub fn table(records: &[Value]) -> String {
    let mut rows = vec![["NAME", "ROLE", "IDENTITY", "CREATED", "REVOKED"].map(str::to_owned)];
    for record in records {
        rows.push([
            record["name"].as_str().unwrap_or("?").to_owned(),
            record["role"].as_str().unwrap_or("?").to_owned(),
            identity_text(&record["identity"]),
            record["created_unix_ms"].as_u64().map_or_else(|| "?".into(), rfc3339_seconds),
            record["revoked_unix_ms"].as_u64().map_or_else(|| "-".into(), rfc3339_seconds),
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(width - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use keyward_core::client_json;
    use keyward_core::{ClientRecord, Identity, Role};

    use super::*;

    #[test]
    fn times_are_rfc3339_utc_to_the_second() {
        assert_eq!(rfc3339_seconds(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_seconds(1_700_000_000_123), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_seconds(4_107_542_399_999), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn the_table_shortens_keys_and_marks_active_clients() {
        let records = vec![
            client_json(&ClientRecord {
                name: "default".into(),
                role: Role::Owner,
                identity: Identity::Cert { spki_sha256: [0xab; 32] },
                created_unix_ms: 0,
                revoked_unix_ms: None,
            }),
            client_json(&ClientRecord {
                name: "r1".into(),
                role: Role::Reader,
                identity: Identity::Uid { uid: 1000 },
                created_unix_ms: 0,
                revoked_unix_ms: Some(1_700_000_000_000),
            }),
        ];
        let text = table(&records);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("NAME     ROLE    IDENTITY"), "{text}");
        assert!(lines[1].contains("cert sha256:abababababababab…") && lines[1].ends_with(" -"), "{text}");
        assert!(lines[2].contains("uid 1000") && lines[2].ends_with("2023-11-14T22:13:20Z"), "{text}");
    }
}
