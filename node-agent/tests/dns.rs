//! The embedded DNS responder on the real kernel (run as root).
//!
//! Everything happens inside namespaces these tests create: sandbox namespaces where the responder
//! listens on 127.0.0.11:53, and for forwarding a "node" namespace (where the forwarder's sockets are
//! made) joined by a veth to an "upstream" namespace running fake DNS servers. No test ever talks to the
//! machine's own resolver, and nothing is added to the root namespace. A guard deletes the namespaces
//! (and the /etc/netns files of the glibc test), also on panic.
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use berth_agent::dns::{DNS_ADDR, DnsServer, FORWARD_TIMEOUT, Names, STAGGER};
use berth_agent::kernel::netns;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Deletes every namespace (and /etc/netns directory) it handed out when dropped.
struct Namespaces {
    names: Mutex<Vec<String>>,
    etc_dirs: Mutex<Vec<std::path::PathBuf>>,
}

impl Namespaces {
    fn new() -> Namespaces {
        assert!(nix::unistd::geteuid().is_root(), "the DNS tests need root");
        Namespaces {
            names: Mutex::new(Vec::new()),
            etc_dirs: Mutex::new(Vec::new()),
        }
    }

    async fn create(&self) -> String {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "bd-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        self.names.lock().unwrap().push(name.clone());
        assert!(netns::create(&name, "berth:test").await.expect("creating netns"));
        name
    }

    /// `/etc/netns/NS/resolv.conf` with `text`, which `ip netns exec NS` shows as /etc/resolv.conf.
    fn resolv_conf(&self, ns: &str, text: &str) {
        let dir = std::path::Path::new("/etc/netns").join(ns);
        self.etc_dirs.lock().unwrap().push(dir.clone());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("resolv.conf"), text).unwrap();
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for dir in self.etc_dirs.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = std::fs::remove_dir_all(&dir);
        }
        let names = std::mem::take(&mut *self.names.lock().unwrap_or_else(|e| e.into_inner()));
        for name in names.iter().rev() {
            if let Err(e) = netns::delete_sync(name) {
                eprintln!("cleanup: deleting netns {name}: {e}");
            }
        }
    }
}

/// Names per (sandbox, name), changeable while serving.
#[derive(Default)]
struct FakeNames {
    map: Mutex<HashMap<(String, String), Vec<Ipv4Addr>>>,
}

impl FakeNames {
    fn set(&self, sandbox: &str, name: &str, addrs: &[Ipv4Addr]) {
        let key = (sandbox.to_owned(), name.to_owned());
        let mut map = self.map.lock().unwrap();
        if addrs.is_empty() {
            map.remove(&key);
        } else {
            map.insert(key, addrs.to_vec());
        }
    }
}

impl Names for FakeNames {
    fn lookup(&self, sandbox_id: &str, name: &str) -> Option<Vec<Ipv4Addr>> {
        assert_eq!(name, name.to_ascii_lowercase(), "lookup gets lowercase names");
        assert!(!name.ends_with('.'), "lookup gets names without the trailing dot");
        let key = (sandbox_id.to_owned(), name.to_owned());
        self.map.lock().unwrap().get(&key).cloned()
    }

    fn reverse(&self, sandbox_id: &str, addr: std::net::IpAddr) -> Option<Vec<String>> {
        let std::net::IpAddr::V4(addr) = addr else {
            return None;
        };
        let map = self.map.lock().unwrap();
        let names: Vec<String> = map
            .iter()
            .filter(|((s, _), ips)| s == sandbox_id && ips.contains(&addr))
            .map(|((_, n), _)| n.clone())
            .collect();
        (!names.is_empty()).then_some(names)
    }
}

fn query_bytes(name: &str, ty: RecordType) -> (u16, Vec<u8>) {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    msg.set_edns(edns);
    (msg.metadata.id, msg.to_vec().unwrap())
}

/// Sends one query from inside `ns` to 127.0.0.11:53 over UDP (or TCP) and waits up to 3 s for the
/// reply. Returns the parsed reply (checked to carry the query's id) and the round-trip time.
async fn ask(ns: &str, name: &str, ty: RecordType, tcp: bool) -> (std::io::Result<Message>, Duration) {
    let (id, bytes) = query_bytes(name, ty);
    netns::run_in(ns, move || {
        let server = SocketAddr::from((DNS_ADDR, 53));
        let start = Instant::now();
        let reply = if tcp {
            ask_tcp(server, &bytes)
        } else {
            ask_udp(server, &bytes)
        };
        let elapsed = start.elapsed();
        let reply = reply.map(|r| {
            let msg = Message::from_vec(&r).expect("a parsable reply");
            assert_eq!(msg.metadata.id, id, "reply carries the query id");
            assert_eq!(msg.metadata.message_type, MessageType::Response);
            msg
        });
        (reply, elapsed)
    })
    .await
    .expect("entering the sandbox namespace")
}

fn ask_udp(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_secs(3)))?;
    socket.connect(server)?;
    socket.send(query)?;
    let mut buf = vec![0; 65535];
    let n = socket.recv(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn ask_tcp(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    write_framed(&mut stream, query)?;
    read_framed(&mut stream)
}

fn write_framed(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(msg);
    stream.write_all(&framed)
}

fn read_framed(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0; 2];
    stream.read_exact(&mut len)?;
    let mut msg = vec![0; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut msg)?;
    Ok(msg)
}

fn a_records(msg: &Message) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = msg
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => a.0,
            other => panic!("unexpected record {other:?}"),
        })
        .collect();
    ips.sort();
    ips
}

/// Asks and expects an answer: (rcode, sorted A addresses, round-trip time).
async fn resolve(ns: &str, name: &str, ty: RecordType) -> (ResponseCode, Vec<Ipv4Addr>, Duration) {
    let (reply, rtt) = ask(ns, name, ty, false).await;
    let msg = reply.unwrap_or_else(|e| panic!("no reply for {name} {ty}: {e}"));
    (msg.metadata.response_code, a_records(&msg), rtt)
}

const WEB1: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
const WEB2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
const DB: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_names_per_sandbox_and_refuses_others_without_upstreams() {
    let ns = Namespaces::new();
    let (ns1, ns2) = (ns.create().await, ns.create().await);
    let names = Arc::new(FakeNames::default());
    names.set("s1", "web", &[WEB1]);
    names.set("s1", "db", &[DB]);
    names.set("s1", "database", &[DB]); // an alias
    names.set("s2", "web", &[WEB2]);
    let server = DnsServer::new(names.clone(), Vec::new());
    let start = Instant::now();
    server.serve("s1", &ns1).await.unwrap();
    eprintln!("serve took {:?}", start.elapsed());
    server.serve("s1", &ns1).await.expect("a second serve is a no-op");
    server.serve("s2", &ns2).await.unwrap();
    assert_eq!(server.serving(), ["s1", "s2"]);

    let (code, ips, rtt) = resolve(&ns1, "web", RecordType::A).await;
    assert_eq!((code, ips), (ResponseCode::NoError, vec![WEB1]));
    eprintln!("A web (UDP) answered in {rtt:?}");
    let (code, ips, _) = resolve(&ns1, "WeB.", RecordType::A).await;
    assert_eq!(
        (code, ips),
        (ResponseCode::NoError, vec![WEB1]),
        "case-insensitive"
    );
    let (code, ips, _) = resolve(&ns1, "database", RecordType::A).await;
    assert_eq!((code, ips), (ResponseCode::NoError, vec![DB]), "alias");
    let (code, ips, _) = resolve(&ns1, "web", RecordType::AAAA).await;
    assert_eq!(
        (code, ips),
        (ResponseCode::NoError, vec![]),
        "AAAA: NOERROR, no records"
    );
    let (code, ips, _) = resolve(&ns1, "web", RecordType::MX).await;
    assert_eq!((code, ips), (ResponseCode::NoError, vec![]));

    // The same name, another sandbox: another answer; a name s2 does not share: not berth's.
    let (code, ips, _) = resolve(&ns2, "web", RecordType::A).await;
    assert_eq!((code, ips), (ResponseCode::NoError, vec![WEB2]));
    let (code, ips, rtt) = resolve(&ns2, "db", RecordType::A).await;
    assert_eq!((code, ips), (ResponseCode::Refused, vec![]));
    assert!(rtt < Duration::from_millis(500), "refused at once, took {rtt:?}");
    eprintln!("REFUSED (no upstreams) in {rtt:?}");
    let (code, _, _) = resolve(&ns1, "example.com", RecordType::A).await;
    assert_eq!(code, ResponseCode::Refused);

    // Changes take effect at once (TTL 0, nothing cached).
    names.set("s2", "db", &[DB]);
    let (code, ips, _) = resolve(&ns2, "db", RecordType::A).await;
    assert_eq!((code, ips), (ResponseCode::NoError, vec![DB]));
    names.set("s2", "db", &[]);
    let (code, _, _) = resolve(&ns2, "db", RecordType::A).await;
    assert_eq!(code, ResponseCode::Refused);

    // Several addresses (a shared alias): all of them, rotated between answers.
    names.set("s1", "pool", &[WEB1, DB]);
    let (reply, _) = ask(&ns1, "pool", RecordType::A, false).await;
    let first = reply.unwrap();
    assert_eq!(a_records(&first), vec![WEB1, DB]);
    assert!(first.answers.iter().all(|r| r.ttl == 0));
    let mut orders = std::collections::HashSet::new();
    for _ in 0..4 {
        let msg = ask(&ns1, "pool", RecordType::A, false).await.0.unwrap();
        orders.insert(msg.answers.iter().map(|r| r.data.clone()).collect::<Vec<_>>());
    }
    assert_eq!(orders.len(), 2, "round robin");

    // PTR for a berth address.
    let msg = ask(&ns1, "2.0.18.172.in-addr.arpa.", RecordType::PTR, false)
        .await
        .0
        .unwrap();
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    let targets: Vec<String> = msg.answers.iter().map(|r| r.data.to_string()).collect();
    assert!(targets.contains(&"web.".to_owned()), "{msg}");

    // TCP works too.
    let (reply, rtt) = ask(&ns1, "web", RecordType::A, true).await;
    assert_eq!(a_records(&reply.unwrap()), vec![WEB1]);
    eprintln!("A web (TCP, incl. connect) answered in {rtt:?}");

    // Latency over many UDP queries.
    let (_, bytes) = query_bytes("web", RecordType::A);
    let timings = netns::run_in(&ns1, move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        socket.connect((DNS_ADDR, 53)).unwrap();
        let mut buf = [0; 1500];
        let mut rtts: Vec<Duration> = (0..1000)
            .map(|_| {
                let t = Instant::now();
                socket.send(&bytes).unwrap();
                socket.recv(&mut buf).unwrap();
                t.elapsed()
            })
            .collect();
        rtts.sort();
        (rtts[500], rtts[990], rtts[999])
    })
    .await
    .unwrap();
    eprintln!(
        "1000 UDP queries: median {:?}, p99 {:?}, max {:?}",
        timings.0, timings.1, timings.2
    );
    assert!(timings.0 < Duration::from_millis(5));

    server.stop("s1");
    server.stop("s1");
    server.stop("s2");
    assert!(server.serving().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_the_sockets_and_serve_again_works() {
    let ns = Namespaces::new();
    let sandbox = ns.create().await;
    let names = Arc::new(FakeNames::default());
    names.set("s", "web", &[WEB1]);
    let server = DnsServer::new(names, Vec::new());
    server.serve("s", &sandbox).await.unwrap();
    assert!(server.is_serving("s"));
    assert_eq!(resolve(&sandbox, "web", RecordType::A).await.1, vec![WEB1]);

    server.stop("s");
    assert!(!server.is_serving("s"));
    // The task is aborted at once; its sockets close when the runtime drops it, a moment later
    // (on a loaded 2-core machine that moment can be long: this waits for the close, it does
    // not time it).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (reply, rtt) = ask(&sandbox, "web", RecordType::A, false).await;
        match reply {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                eprintln!("after stop: {e} in {rtt:?}");
                break;
            }
            other => assert!(Instant::now() < deadline, "still answering after stop: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (reply, _) = ask(&sandbox, "web", RecordType::A, true).await;
    assert_eq!(
        reply.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused,
        "TCP closed too"
    );

    // Serving again rebinds at once.
    server.serve("s", &sandbox).await.unwrap();
    assert_eq!(resolve(&sandbox, "web", RecordType::A).await.1, vec![WEB1]);

    // Dropping the server stops everything.
    drop(server);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (reply, _) = ask(&sandbox, "web", RecordType::A, false).await;
    assert!(reply.is_err());

    // Errors name the sandbox (here: a missing namespace).
    let server = DnsServer::new(Arc::new(FakeNames::default()), Vec::new());
    let err = server.serve("x", "bd-no-such-netns").await.unwrap_err();
    assert!(err.to_string().contains("sandbox x"), "{err}");
}

/// Whether link `name` exists in namespace `ns`.
fn link_exists(ns: &str, name: &str) -> bool {
    Command::new("ip")
        .args(["-n", ns, "link", "show", name])
        .output()
        .expect("running ip")
        .status
        .success()
}

/// Polls `cond` every 10 ms for up to `limit`; returns how long it took, or None.
async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// An open socket pins its namespace: deleting a served sandbox's namespace leaves it (and its veth)
/// alive until `stop`, after which the kernel tears it down at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_releases_the_namespace() {
    let ns = Namespaces::new();
    let (node, sandbox) = (ns.create().await, ns.create().await);
    ip(&[
        "link", "add", "h0", "netns", &node, "type", "veth", "peer", "name", "eth0", "netns", &sandbox,
    ]);
    let server = DnsServer::new(Arc::new(FakeNames::default()), Vec::new());
    server.serve("s", &sandbox).await.unwrap();
    assert_eq!(
        resolve(&sandbox, "x", RecordType::A).await.0,
        ResponseCode::Refused
    );

    netns::delete(&sandbox).await.unwrap();
    let gone = wait_for(Duration::from_millis(300), || !link_exists(&node, "h0")).await;
    assert_eq!(gone, None, "the serving socket keeps the namespace alive");
    server.stop("s");
    let gone = wait_for(Duration::from_secs(2), || !link_exists(&node, "h0")).await;
    let took = gone.expect("namespace released after stop");
    eprintln!("after stop, the deleted namespace's veth vanished in {took:?}");
}

/// Fake upstream DNS servers on 10.99.0.2 (UDP and TCP: `example.com` → 192.0.2.1, anything else
/// NXDOMAIN) and a silent one on 10.99.0.3 (bound, never answers); 10.99.0.4 has nothing bound.
/// Lives in namespace `up`, joined to namespace `node` (10.99.0.1) by a veth.
struct FakeUpstream {
    stop: Arc<AtomicBool>,
    queries: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

const EXAMPLE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const GOOD: &str = "10.99.0.2:53";
const SILENT: &str = "10.99.0.3:53";
const CLOSED: &str = "10.99.0.4:53";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl FakeUpstream {
    async fn start(node: &str, up: &str) -> FakeUpstream {
        // Created directly in the two test namespaces; nothing touches the root namespace.
        ip(&[
            "link", "add", "fw0", "netns", node, "type", "veth", "peer", "name", "up0", "netns", up,
        ]);
        ip(&["-n", node, "addr", "add", "10.99.0.1/29", "dev", "fw0"]);
        ip(&["-n", node, "link", "set", "fw0", "up"]);
        for addr in ["10.99.0.2/29", "10.99.0.3/29", "10.99.0.4/29"] {
            ip(&["-n", up, "addr", "add", addr, "dev", "up0"]);
        }
        ip(&["-n", up, "link", "set", "up0", "up"]);

        let (udp, tcp, silent) = netns::run_in(up, || {
            let udp = UdpSocket::bind(GOOD).unwrap();
            let tcp = TcpListener::bind(GOOD).unwrap();
            let silent = UdpSocket::bind(SILENT).unwrap();
            (udp, tcp, silent)
        })
        .await
        .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        {
            let (stop, queries) = (stop.clone(), queries.clone());
            udp.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            threads.push(std::thread::spawn(move || {
                let _silent = silent;
                let mut buf = [0; 4096];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, peer)) = udp.recv_from(&mut buf) {
                        queries.fetch_add(1, Ordering::Relaxed);
                        udp.send_to(&upstream_answer(&buf[..n]), peer).unwrap();
                    }
                }
            }));
        }
        {
            let (stop, queries) = (stop.clone(), queries.clone());
            tcp.set_nonblocking(true).unwrap();
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match tcp.accept() {
                        Ok((mut stream, _)) => {
                            stream.set_nonblocking(false).unwrap();
                            stream.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                            if let Ok(query) = read_framed(&mut stream) {
                                queries.fetch_add(1, Ordering::Relaxed);
                                let _ = write_framed(&mut stream, &upstream_answer(&query));
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            }));
        }
        FakeUpstream {
            stop,
            queries,
            threads,
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn upstream_answer(query: &[u8]) -> Vec<u8> {
    let req = Message::from_vec(query).unwrap();
    let mut msg = Message::response(req.metadata.id, OpCode::Query);
    msg.metadata.recursion_desired = req.metadata.recursion_desired;
    msg.metadata.recursion_available = true;
    msg.add_queries(req.queries.clone());
    let q = &req.queries[0];
    if q.name().to_ascii().eq_ignore_ascii_case("example.com.") && q.query_type() == RecordType::A {
        msg.add_answer(Record::from_rdata(q.name().clone(), 300, RData::A(A(EXAMPLE))));
    } else {
        msg.metadata.response_code = ResponseCode::NXDomain;
    }
    msg.to_vec().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_other_names_from_the_node_namespace() {
    let ns = Namespaces::new();
    let (node, up, sandbox) = (ns.create().await, ns.create().await, ns.create().await);
    let upstream = FakeUpstream::start(&node, &up).await;
    let names = Arc::new(FakeNames::default());
    names.set("s", "web", &[WEB1]);
    let upstreams = |list: &[&str]| -> Vec<SocketAddr> { list.iter().map(|s| s.parse().unwrap()).collect() };

    let server = DnsServer::with_forward_netns(names.clone(), upstreams(&[GOOD]), &node).unwrap();
    server.serve("s", &sandbox).await.unwrap();
    let (code, ips, rtt) = resolve(&sandbox, "example.com", RecordType::A).await;
    assert_eq!((code, ips), (ResponseCode::NoError, vec![EXAMPLE]));
    eprintln!("forwarded A example.com answered in {rtt:?}");
    let (code, _, _) = resolve(&sandbox, "nosuch.example", RecordType::A).await;
    assert_eq!(code, ResponseCode::NXDomain, "upstream's NXDOMAIN relayed");
    let (reply, rtt) = ask(&sandbox, "example.com", RecordType::A, true).await;
    assert_eq!(a_records(&reply.unwrap()), vec![EXAMPLE]);
    eprintln!("forwarded over TCP in {rtt:?}");
    // Berth names never reach the upstream.
    let before = upstream.queries.load(Ordering::Relaxed);
    assert_eq!(resolve(&sandbox, "web", RecordType::A).await.1, vec![WEB1]);
    assert_eq!(
        resolve(&sandbox, "web", RecordType::AAAA).await.0,
        ResponseCode::NoError
    );
    assert_eq!(upstream.queries.load(Ordering::Relaxed), before);
    assert_eq!(before, 3);
    drop(server);

    // A refusing upstream (nothing bound: ICMP port unreachable) is skipped at once.
    let server = DnsServer::with_forward_netns(names.clone(), upstreams(&[CLOSED, GOOD]), &node).unwrap();
    server.serve("s", &sandbox).await.unwrap();
    let (code, ips, rtt) = resolve(&sandbox, "example.com", RecordType::A).await;
    assert_eq!((code, ips), (ResponseCode::NoError, vec![EXAMPLE]));
    assert!(rtt < STAGGER, "took {rtt:?}");
    eprintln!("closed upstream, then good one: {rtt:?}");
    drop(server);

    // A silent upstream: the next one is asked after STAGGER.
    let server = DnsServer::with_forward_netns(names.clone(), upstreams(&[SILENT, GOOD]), &node).unwrap();
    server.serve("s", &sandbox).await.unwrap();
    let (code, ips, rtt) = resolve(&sandbox, "example.com", RecordType::A).await;
    assert_eq!((code, ips), (ResponseCode::NoError, vec![EXAMPLE]));
    assert!(rtt >= STAGGER && rtt < STAGGER * 2, "took {rtt:?}");
    eprintln!("silent upstream, then good one: {rtt:?}");
    drop(server);

    // Only failing upstreams: SERVFAIL, at once when they refuse, after FORWARD_TIMEOUT when silent.
    let server = DnsServer::with_forward_netns(names.clone(), upstreams(&[CLOSED]), &node).unwrap();
    server.serve("s", &sandbox).await.unwrap();
    let (code, _, rtt) = resolve(&sandbox, "example.com", RecordType::A).await;
    assert_eq!(code, ResponseCode::ServFail);
    assert!(rtt < Duration::from_millis(200), "took {rtt:?}");
    eprintln!("only a closed upstream: SERVFAIL in {rtt:?}");
    drop(server);
    let server = DnsServer::with_forward_netns(names.clone(), upstreams(&[SILENT]), &node).unwrap();
    server.serve("s", &sandbox).await.unwrap();
    let (code, _, rtt) = resolve(&sandbox, "example.com", RecordType::A).await;
    assert_eq!(code, ResponseCode::ServFail);
    assert!(
        rtt >= FORWARD_TIMEOUT && rtt < FORWARD_TIMEOUT + Duration::from_millis(500),
        "took {rtt:?}"
    );
    eprintln!("only a silent upstream: SERVFAIL in {rtt:?}");
    // While a forward hangs, local names are still answered at once.
    let slow = tokio::spawn({
        let sandbox = sandbox.clone();
        async move { resolve(&sandbox, "example.com", RecordType::A).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, ips, rtt) = resolve(&sandbox, "web", RecordType::A).await;
    assert_eq!(ips, vec![WEB1]);
    assert!(rtt < Duration::from_millis(100), "took {rtt:?}");
    assert_eq!(slow.await.unwrap().0, ResponseCode::ServFail);
    // Stop aborts the forwards in flight: the client gets no answer.
    let pending = tokio::spawn({
        let sandbox = sandbox.clone();
        async move { ask(&sandbox, "example.com", RecordType::A, false).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.stop("s");
    assert!(pending.await.unwrap().0.is_err(), "no reply after stop");
}

/// glibc's own resolver (getent) in a sandbox whose resolv.conf names 127.0.0.11, as `ip netns exec`
/// shows it (it bind-mounts /etc/netns/NS/resolv.conf over /etc/resolv.conf).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glibc_resolves_through_it() {
    let ns = Namespaces::new();
    let sandbox = ns.create().await;
    ns.resolv_conf(&sandbox, "nameserver 127.0.0.11\nsearch .\n");
    let names = Arc::new(FakeNames::default());
    names.set("s", "web", &[WEB1]);
    names.set("s", "web.mynet", &[WEB1]);
    let server = DnsServer::new(names, Vec::new());
    server.serve("s", &sandbox).await.unwrap();
    let getent = |args: &[&str]| {
        let start = Instant::now();
        let out = Command::new("ip")
            .args(["netns", "exec", &sandbox, "getent"])
            .args(args)
            .output()
            .expect("running getent");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            start.elapsed(),
        )
    };
    for name in ["web", "WEB", "web.mynet"] {
        let (code, out, took) = tokio::task::block_in_place(|| getent(&["ahosts", name]));
        assert_eq!(code, Some(0), "getent ahosts {name}: {out}");
        assert!(out.starts_with("172.18.0.2 "), "{out}");
        eprintln!("getent ahosts {name} in {took:?}");
    }
    let (code, _, took) = tokio::task::block_in_place(|| getent(&["hosts", "nosuch"]));
    assert_eq!(code, Some(2), "not found");
    assert!(took < Duration::from_millis(1000), "failed fast: {took:?}");
    eprintln!("getent hosts nosuch (REFUSED) failed in {took:?}");
}
