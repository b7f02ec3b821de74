//! An authoritative DNS server for one test (hickory-server, in process, UDP on a free loopback
//! port) holding one zone whose TXT and A records the test sets; stopped when dropped.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
};

use hickory_server::{
    Server,
    proto::rr::{
        LowerName, Name, RData, Record, RecordType, RrKey,
        rdata::{A, SOA, TXT},
    },
    store::in_memory::InMemoryZoneHandler,
    zone_handler::{AxfrPolicy, Catalog, ZoneType},
};

/// A running server for one zone.
pub struct TestDns {
    /// Where it answers (UDP).
    pub addr: SocketAddr,
    zone: Arc<InMemoryZoneHandler>,
    serial: AtomicU32,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TestDns {
    /// Serves `origin` (e.g. `example.test`), with its SOA and nothing else.
    pub async fn start(origin: &str) -> anyhow::Result<Self> {
        let origin = Name::from_ascii(format!("{}.", origin.trim_end_matches('.')))?;
        let mut zone =
            InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
        let soa = SOA::new(
            Name::from_ascii(format!("ns.{origin}"))?,
            Name::from_ascii(format!("hostmaster.{origin}"))?,
            1,
            3600,
            600,
            86_400,
            60,
        );
        zone.upsert_mut(Record::from_rdata(origin.clone(), 3600, RData::SOA(soa)), 1);
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![zone.clone()]);
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let mut server = Server::new(catalog);
        server.register_socket(socket);
        let server = tokio::spawn(async move {
            server.block_until_done().await.ok();
        });
        Ok(Self { addr, zone, serial: AtomicU32::new(2), server })
    }

    /// Adds a TXT record (`name` fully qualified without the trailing dot).
    pub async fn add_txt(&self, name: &str, value: &str) -> anyhow::Result<()> {
        let name = Name::from_ascii(format!("{}.", name.trim_end_matches('.')))?;
        let record = Record::from_rdata(name, 60, RData::TXT(TXT::new(vec![value.to_owned()])));
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        anyhow::ensure!(self.zone.upsert(record, serial).await, "the zone refused the record");
        Ok(())
    }

    /// Adds an address record (`name` fully qualified without the trailing dot).
    pub async fn add_a(&self, name: &str, ip: std::net::Ipv4Addr) -> anyhow::Result<()> {
        let name = Name::from_ascii(format!("{}.", name.trim_end_matches('.')))?;
        let record = Record::from_rdata(name, 60, RData::A(A(ip)));
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        anyhow::ensure!(self.zone.upsert(record, serial).await, "the zone refused the record");
        Ok(())
    }

    /// Removes every TXT record at `name`.
    pub async fn remove_txt(&self, name: &str) -> anyhow::Result<()> {
        let name = Name::from_ascii(format!("{}.", name.trim_end_matches('.')))?;
        let key = RrKey::new(LowerName::new(&name), RecordType::TXT);
        anyhow::ensure!(self.zone.records_mut().await.remove(&key).is_some(), "no TXT at {name}");
        Ok(())
    }
}
