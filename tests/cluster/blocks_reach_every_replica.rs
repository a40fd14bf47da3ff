//! A block decided on one replica is enforced by every replica within a second, by the tower
//! middleware's 403, also by a replica started later; it ends with its TTL, and a lift on any
//! replica lifts it everywhere.
use std::convert::Infallible;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use tracing_usr::detection::DetectionConfig;

use crate::service::{request, send};
use crate::setup::{replica_with, replicas, RedisServer, Replica, SECRET};

async fn ok(_request: Request<String>) -> Result<Response<String>, Infallible> {
    Ok(Response::new("ok".to_owned()))
}

async fn status(replica: &Replica, ip: &str) -> StatusCode {
    send(&replica.h, &[], ok, request("/", ip, &[])).await.status()
}

/// Polls until `replica` answers `expected` to `ip`, for at most 5 s; the time it took.
async fn until(replica: &Replica, ip: &str, expected: StatusCode) -> Duration {
    let start = Instant::now();
    while status(replica, ip).await != expected {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{ip} never got {expected}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn a_blocked_ip_gets_403_everywhere_until_its_ttl_and_a_lift_reaches_every_replica() {
    let redis = RedisServer::start();
    let replicas = replicas(Some(&redis), 3, &DetectionConfig::default());
    for r in &replicas {
        assert_eq!(status(r, "203.0.113.50").await, StatusCode::OK);
    }
    let (short, long): (IpAddr, IpAddr) = ("203.0.113.50".parse().unwrap(), "203.0.113.60".parse().unwrap());
    let blocks = replicas[0].h.handle.block_list();
    blocks.block_ip(short, Some(Duration::from_secs(2)));
    blocks.block_ip(long, Some(Duration::from_secs(600)));
    let start = Instant::now();
    for r in &replicas {
        until(r, "203.0.113.50", StatusCode::FORBIDDEN).await;
        until(r, "203.0.113.60", StatusCode::FORBIDDEN).await;
    }
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "enforced in {:?}",
        start.elapsed()
    );

    // A replica started now loads the blocks still in force.
    let late = replica_with(Some(&redis), DetectionConfig::default(), SECRET);
    assert_eq!(status(&late, "203.0.113.60").await, StatusCode::FORBIDDEN);
    assert!(late.stats().remote_blocks >= 1, "{:?}", late.stats());

    // After the TTL, every replica lets the IP in.
    for r in replicas.iter().chain([&late]) {
        until(r, "203.0.113.50", StatusCode::OK).await;
    }
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "the block lasted its TTL"
    );

    // A lift on a replica that only knew the block from Redis reaches all, the origin too.
    late.h.handle.block_list().unblock_ip(long);
    let start = Instant::now();
    for r in replicas.iter().chain([&late]) {
        until(r, "203.0.113.60", StatusCode::OK).await;
    }
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "lifted in {:?}",
        start.elapsed()
    );
    assert!(!blocks.is_ip_blocked(long));
}

#[test]
fn blocked_users_of_the_builder_are_shared_too() {
    let redis = RedisServer::start();
    let builder = crate::support::builder_with_env(&[("DD_SERVICE", "shop")])
        .with_blocked_users([tracing_usr::blocking::BlockEntry {
            value: "mallory".into(),
            expiration: None,
        }])
        .with_redis(tracing_usr::detection::RedisConfig::new(redis.url(), SECRET));
    let configured = crate::support::Harness::new(builder);
    let other = replica_with(Some(&redis), DetectionConfig::default(), SECRET);
    crate::setup::wait_for("the builder's block on the other replica", || {
        other.h.handle.block_list().is_user_blocked("mallory")
    });
    assert!(
        !other.h.handle.block_list().is_user_blocked("Mallory"),
        "exact match"
    );
    drop(configured);
}
