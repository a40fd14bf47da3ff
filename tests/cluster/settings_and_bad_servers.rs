//! The settings of shared detection: a Unix socket URL, a missing secret, and a server that
//! answers garbage (detection stays in the process, with one warning, and never panics).
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use tracing_usr::detection::{DetectionConfig, RedisConfig, RuleId};

use crate::setup::{replica_with, wait_for, RedisServer, Replica, SECRET};
use crate::support::{builder_with_env, Harness};

#[test]
fn a_unix_socket_url_shares_like_tcp() {
    let redis = RedisServer::start();
    let url = format!("unix:{}", redis.socket.display());
    let vars = [
        ("TRACING_USR_REDIS_URL", url.as_str()),
        ("TRACING_USR_REDIS_SECRET", SECRET),
        ("DD_SERVICE", "shop"),
    ];
    let builder = builder_with_env(&vars).with_signal_sink(());
    let h = Harness::new(builder);
    wait_for("the socket connection", || {
        h.handle.cluster_stats().is_some_and(|s| s.connected)
    });
    let tcp = replica_with(Some(&redis), DetectionConfig::default(), SECRET);
    h.handle.block_list().block_user("over-the-socket", None);
    wait_for("the block over TCP", || {
        tcp.h.handle.block_list().is_user_blocked("over-the-socket")
    });
}

#[test]
fn rediss_with_a_private_ca_shares_over_tls_and_without_it_stays_local() {
    let redis = RedisServer::start_tls();
    let url = format!("rediss://localhost:{}", redis.port);
    let pem = std::fs::read(redis.certificate.as_ref().unwrap()).unwrap();
    let tls = crate::setup::unchecked_replica(RedisConfig::new(&url, SECRET).with_ca_pem(pem));
    wait_for("the TLS connection", || {
        tls.h.handle.cluster_stats().is_some_and(|s| s.connected)
    });
    for i in 0..31 {
        tls.failure("203.0.113.98", &format!("user-{}", i % 6));
    }
    let signals = tls.signals();
    assert_eq!(signals.len(), 1, "{signals:#?}");
    assert!(tls.stats().sent >= 31, "{:?}", tls.stats());
    // The system's roots do not know this certificate: no connection, detection stays local.
    let untrusted = crate::setup::unchecked_replica(RedisConfig::new(&url, SECRET));
    stays_local(untrusted, "this replica's events only");
}

#[test]
fn a_password_in_the_url_authenticates_and_never_shows_in_a_warning() {
    let redis = RedisServer::start();
    redis.require_password("hunter2-secret");
    let good = format!("redis://:hunter2-secret@127.0.0.1:{}", redis.port);
    let ok = crate::setup::unchecked_replica(RedisConfig::new(&good, SECRET));
    wait_for("the authenticated connection", || {
        ok.h.handle.cluster_stats().is_some_and(|s| s.connected)
    });
    let wrong = format!("redis://:wrong-password@127.0.0.1:{}", redis.port);
    let refused = crate::setup::unchecked_replica(RedisConfig::new(&wrong, SECRET));
    let text = format!("{:?}", RedisConfig::new(&wrong, SECRET));
    assert!(!text.contains("wrong-password"), "{text}");
    let events = Arc::clone(&refused.h.warnings.events);
    stays_local(refused, "this replica's events only");
    let warnings = format!("{:?}", events.lock().unwrap());
    assert!(
        !warnings.contains("wrong-password") && !warnings.contains("hunter2"),
        "{warnings}"
    );
}

/// A replica built from `builder` whose warnings mention `needle`, and that still detects in
/// process: 31 failures from one IP over 6 accounts raise the stuffing signal.
fn stays_local(replica: Replica, needle: &str) {
    wait_for("the warning", || {
        let events = replica.h.warnings.events.lock().unwrap();
        events.iter().any(|(_, text)| text.contains(needle))
    });
    for i in 0..31 {
        replica.failure("203.0.113.99", &format!("user-{}", i % 6));
    }
    wait_for("the local signal", || {
        let signals = replica.signals();
        signals.iter().any(|s| s.rule == RuleId::CredentialStuffing)
    });
}

#[test]
fn without_a_secret_redis_mode_does_not_start() {
    let redis = RedisServer::start();
    let replica = crate::setup::unchecked_replica(RedisConfig::new(redis.url(), ""));
    assert!(replica.h.handle.cluster_stats().is_none());
    stays_local(replica, "TRACING_USR_REDIS_SECRET");
}

#[test]
fn a_server_that_answers_garbage_leaves_detection_local() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(b"\x00\xffnot RESP at all\r\n*-7\r\n").is_err() {
                        return;
                    }
                }
            });
        }
    });
    let replica =
        crate::setup::unchecked_replica(RedisConfig::new(format!("redis://127.0.0.1:{port}"), SECRET));
    assert!(replica.h.handle.cluster_stats().is_some_and(|s| !s.connected));
    stays_local(replica, "this replica's events only");
}

#[test]
fn dropping_the_layer_ends_its_redis_thread_and_connection() {
    let redis = RedisServer::start();
    let mut conn = redis.connection();
    let clients = |conn: &mut redis::Connection| -> u64 {
        let info: String = redis::cmd("INFO").arg("clients").query(conn).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("connected_clients:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    let replica = replica_with(Some(&redis), DetectionConfig::default(), SECRET);
    replica.h.handle.block_list().block_user("someone", None);
    assert_eq!(clients(&mut conn), 2, "this connection and the replica's");
    drop(replica);
    wait_for("the replica's connection to close", || clients(&mut conn) == 1);
}
