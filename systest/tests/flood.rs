//! `connection_flood`'s short form: loms under 256 file descriptors, 600 connections that never
//! send a byte, ordinary load beside them; nothing hangs, the admin listener answers throughout,
//! every idle connection is closed by the server, and nothing is lost, reordered or invented.

#[test]
fn a_connection_flood_neither_stops_loms_nor_is_kept_open() {
    let scenario = &systest::chaos_scenarios(&["connection_flood"], &[], false, &[])[0];
    assert_eq!(
        scenario["flood_closed_by_server"],
        scenario["flood_connections"]
    );
    assert_eq!(scenario["probes_hung"], 0);
    assert_eq!(scenario["admin_failed"], 0);
    assert!(
        scenario["admin_answered"].as_u64().unwrap_or(0) > 0,
        "{scenario}"
    );
}
