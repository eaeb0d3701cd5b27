//! Per-sprite networking: slots (a network namespace with a veth and a /30, see `slot.rs`),
//! a pool of idle ones, nftables isolation and NAT (`nft.rs`), and the per-sprite DNS
//! resolver that enforces egress policies (`dns.rs`, `policy.rs`).
//!
//! * A running or warm sprite holds one slot; its init joins the slot's namespace
//!   (`KeeperConfig::netns`). Going cold or being destroyed hands the slot back, and the next
//!   start takes one again, usually from the idle pool (`--net-pool-size`, default 4), which
//!   a background task refills, so no start waits for a namespace to be built.
//! * Which sprite has which slot is in `<data-dir>/run/netns/wv<N>.owner`, next to the
//!   namespace mount `wv<N>`, so a restarted wispd finds its slots again; at start, slots of
//!   sprites whose keeper still answers are kept, the others go back to the pool, broken ones
//!   are removed.
//! * Egress: masquerade out of any non-sprite interface; sprite to sprite and sprite to host
//!   dropped (except DNS and ping to its own gateway); private, loopback, link-local and
//!   multicast destinations rejected. With a restrictive policy, the resolver answers
//!   REFUSED for denied names and adds the addresses of allowed answers to the slot's allow
//!   sets (timeouts from the TTLs), and new connections to anything else are rejected.
//!   A policy change rewrites the sets and drops the conntrack entries of connections to
//!   destinations it blocks, so they are cut at once.
//!
//! wispd enables `net.ipv4.ip_forward` when it starts (sprites need it for egress) and
//! leaves it on.

mod addr;
pub mod dns;
mod netlink;
mod nft;
mod slot;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use wisp_api::policy::NetworkPolicy;
use wisp_api::policy_match::Compiled;

pub use addr::Subnet;
use slot::SlotInfo;

pub const DEFAULT_SUBNET: &str = "10.213.0.0/16";
pub const DEFAULT_POOL_SIZE: usize = 4;
const DNS_PORT: u16 = 53;
/// Resolved addresses stay allowed at least this long (connections opened later by programs
/// that cache DNS longer than the TTL keep working), and at most a day.
const MIN_ALLOW: Duration = Duration::from_secs(300);
const MAX_ALLOW: Duration = Duration::from_secs(86_400);

/// What the rest of wispd may know about a sprite's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpriteNet {
    /// The sprite's address (on its `eth0`).
    pub ip: Ipv4Addr,
    /// The host end of its veth: its default route and DNS server.
    pub gateway: Ipv4Addr,
    /// Its network namespace (for `setns`).
    pub netns: PathBuf,
    /// The host end's interface name (`wv<N>`).
    pub ifname: String,
}

#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub data_dir: PathBuf,
    pub subnet: Subnet,
    /// Idle slots kept ready.
    pub pool_size: usize,
    pub dns_upstreams: Vec<SocketAddr>,
}

/// Addresses a sprite's resolver handed out, and the names they answered.
#[derive(Debug, Clone)]
struct Learned {
    names: BTreeSet<String>,
    expires: Instant,
}

struct Slot {
    info: SlotInfo,
    owner: Option<String>,
    policy: Compiled,
    learned: HashMap<IpAddr, Learned>,
    /// The slot is in the table's egress map (its new connections go through its allow sets).
    wired: bool,
    dns: Vec<JoinHandle<()>>,
}

impl Slot {
    fn net(&self) -> SpriteNet {
        SpriteNet {
            ip: self.info.addrs.sprite,
            gateway: self.info.addrs.gateway,
            netns: self.info.netns.clone(),
            ifname: self.info.ifname.clone(),
        }
    }

    /// Learned addresses the policy allows, with their remaining time in seconds.
    fn allowed(&self, now: Instant) -> Vec<(IpAddr, u64)> {
        self.learned
            .iter()
            .filter(|(_, l)| l.expires > now && l.names.iter().any(|n| self.policy.allows(n)))
            .map(|(ip, l)| (*ip, l.expires.duration_since(now).as_secs().max(1)))
            .collect()
    }
}

#[derive(Default)]
struct State {
    slots: BTreeMap<u32, Slot>,
    idle: VecDeque<u32>,
    owners: HashMap<String, u32>,
}

pub struct Network {
    cfg: NetworkConfig,
    /// `<data-dir>/run/netns`
    dir: PathBuf,
    table: String,
    state: Mutex<State>,
    /// Held across every nft run, so that scripts built from the state apply in order.
    nft: tokio::sync::Mutex<()>,
    /// One slot build at a time (the pool filler and a start that found the pool empty).
    build: tokio::sync::Mutex<()>,
    refill: Notify,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("table", &self.table)
            .field("subnet", &self.cfg.subnet)
            .finish_non_exhaustive()
    }
}

fn owner_file(dir: &Path, ifname: &str) -> PathBuf {
    dir.join(format!("{ifname}.owner"))
}

async fn blocking_io<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("blocking task: {e}")))?
}

/// Turns on IPv4 forwarding (sprites' egress is routed through the host).
fn enable_forwarding() -> io::Result<()> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    let before = std::fs::read_to_string(PATH)?;
    if before.trim() != "1" {
        std::fs::write(PATH, "1\n")?;
        tracing::info!(
            "enabled net.ipv4.ip_forward (was {}) for sprite egress",
            before.trim()
        );
    }
    Ok(())
}

/// The upstreams to use when none are configured: the host's resolv.conf.
pub fn default_upstreams() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .map(|t| dns::nameservers(&t))
        .unwrap_or_default()
}

impl Network {
    /// Sets up the host side: forwarding, the nftables table (replaced atomically, with the
    /// per-slot parts of every slot found on disk), and a resolver on every slot. Slots are
    /// not handed out until [`Network::reconcile`] has decided whose they are.
    pub async fn start(cfg: NetworkConfig) -> io::Result<Arc<Self>> {
        let dir = cfg.data_dir.join("run").join("netns");
        let table = nft::table_name(&cfg.data_dir);
        blocking_io(enable_forwarding).await?;
        let (d, subnet) = (dir.clone(), cfg.subnet);
        let slots = blocking_io(move || {
            slot::prepare_dir(&d)?;
            let slots = slot::scan(&d, subnet)?;
            // Owner files of slots that are gone.
            let names: HashSet<String> = slots.iter().map(|s| s.ifname.clone()).collect();
            for e in std::fs::read_dir(&d)?.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if let Some(ifname) = n.strip_suffix(".owner") {
                    if !names.contains(ifname) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
            Ok(slots)
        })
        .await?;
        nft::remove_orphan_tables(&table).await;
        let comment = nft::table_comment(&cfg.data_dir);
        nft::apply(&nft::full_ruleset(&table, &comment, &cfg.subnet, &slots)).await?;
        tracing::info!(
            table = %table,
            subnet = %cfg.subnet,
            slots = slots.len(),
            upstreams = ?cfg.dns_upstreams,
            "sprite networking ready"
        );
        let net = Arc::new(Network {
            dir,
            table,
            cfg,
            state: Mutex::new(State::default()),
            nft: tokio::sync::Mutex::new(()),
            build: tokio::sync::Mutex::new(()),
            refill: Notify::new(),
        });
        for info in slots {
            let owner = std::fs::read_to_string(owner_file(&net.dir, &info.ifname))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty());
            net.register(info, owner);
        }
        Ok(net)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.cfg.dns_upstreams
    }

    /// Adds a built slot (nft parts already in place) to the state, with its resolver.
    fn register(self: &Arc<Self>, info: SlotInfo, owner: Option<String>) {
        let dns = match dns::serve(self, &info, DNS_PORT) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(slot = %info.ifname, "DNS server on {}: {e}", info.addrs.gateway);
                Vec::new()
            }
        };
        let index = info.index;
        let mut st = self.lock();
        if let Some(o) = &owner {
            st.owners.insert(o.clone(), index);
        }
        st.slots.insert(
            index,
            Slot {
                info,
                owner,
                policy: Compiled::default(),
                learned: HashMap::new(),
                wired: false,
                dns,
            },
        );
    }

    /// Sprites that held a slot when the last wispd stopped.
    pub fn owners(&self) -> Vec<String> {
        self.lock().owners.keys().cloned().collect()
    }

    /// Decides, once at start, what happens to the slots found on disk: those of sprites in
    /// `live` (still running or warm) stay theirs, with these policies; the rest go back to
    /// the pool. Then starts the pool filler.
    pub async fn reconcile(self: &Arc<Self>, live: HashMap<String, NetworkPolicy>) {
        let owners = self.owners();
        for id in owners {
            match live.get(&id) {
                Some(p) => {
                    if let Err(e) = self.set_policy(&id, p).await {
                        tracing::warn!(sprite_id = %id, "re-applying its network policy: {e}");
                    }
                }
                None => self.release(&id).await,
            }
        }
        {
            let mut st = self.lock();
            let free: Vec<u32> = st
                .slots
                .values()
                .filter(|s| s.owner.is_none())
                .map(|s| s.info.index)
                .collect();
            for i in free {
                if !st.idle.contains(&i) {
                    st.idle.push_back(i);
                }
            }
        }
        self.trim_idle().await;
        let me = self.clone();
        tokio::spawn(async move { me.fill_pool().await });
    }

    /// Keeps `pool_size` idle slots ready.
    async fn fill_pool(self: Arc<Self>) {
        loop {
            let missing = self.cfg.pool_size.saturating_sub(self.lock().idle.len());
            for _ in 0..missing {
                match self.build_slot().await {
                    Ok(i) => self.lock().idle.push_back(i),
                    Err(e) => {
                        tracing::warn!("building a network slot: {e}");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        break;
                    }
                }
            }
            if self.lock().idle.len() >= self.cfg.pool_size {
                self.refill.notified().await;
            }
        }
    }

    /// Builds one slot and registers it (not idle yet: the caller decides).
    async fn build_slot(self: &Arc<Self>) -> io::Result<u32> {
        let _one = self.build.lock().await;
        let skip: Vec<u32> = self.lock().slots.keys().copied().collect();
        let (dir, subnet) = (self.dir.clone(), self.cfg.subnet);
        let started = Instant::now();
        let info = blocking_io(move || slot::build(&dir, subnet, &skip)).await?;
        let built = started.elapsed();
        let script = nft::add_slot(&self.table, &info.ifname);
        {
            let _nft = self.nft.lock().await;
            if let Err(e) = nft::apply(&script).await {
                let i = info.clone();
                let _ = blocking_io(move || slot::destroy(&i)).await;
                return Err(e);
            }
        }
        tracing::debug!(
            slot = %info.ifname,
            netns_ms = built.as_secs_f64() * 1e3,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            "network slot built"
        );
        let index = info.index;
        self.register(info, None);
        Ok(index)
    }

    /// The sprite's network, if it holds a slot.
    pub fn get(&self, sprite_id: &str) -> Option<SpriteNet> {
        let st = self.lock();
        let i = st.owners.get(sprite_id)?;
        st.slots.get(i).map(Slot::net)
    }

    /// Gives the sprite a slot (the one it holds already, an idle one, or a new one) with
    /// `policy` in force before anything in the sprite runs.
    pub async fn take(
        self: &Arc<Self>,
        sprite_id: &str,
        policy: &NetworkPolicy,
    ) -> io::Result<SpriteNet> {
        let started = Instant::now();
        let held = self.lock().owners.get(sprite_id).copied();
        let index = match held {
            Some(i) => i,
            None => {
                let idle = self.lock().idle.pop_front();
                let i = match idle {
                    Some(i) => i,
                    None => self.build_slot().await?,
                };
                self.refill.notify_one();
                let ifname = {
                    let mut st = self.lock();
                    st.owners.insert(sprite_id.to_string(), i);
                    let slot = st.slots.get_mut(&i).expect("registered slot");
                    slot.owner = Some(sprite_id.to_string());
                    slot.info.ifname.clone()
                };
                let path = owner_file(&self.dir, &ifname);
                let id = sprite_id.to_string();
                if let Err(e) =
                    blocking_io(move || crate::fsutil::write_replace(&path, id.as_bytes(), 0o600))
                        .await
                {
                    self.release(sprite_id).await;
                    return Err(e);
                }
                i
            }
        };
        if let Err(e) = self.set_policy(sprite_id, policy).await {
            self.release(sprite_id).await;
            return Err(e);
        }
        let net = self.lock().slots.get(&index).map(Slot::net);
        let net = net.ok_or_else(|| io::Error::other("slot vanished"))?;
        tracing::debug!(
            sprite_id,
            slot = %net.ifname,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "network slot taken"
        );
        Ok(net)
    }

    /// Hands the sprite's slot back (to the pool, or removes it when the pool is full).
    /// A no-op when it holds none.
    pub async fn release(self: &Arc<Self>, sprite_id: &str) {
        let _nft = self.nft.lock().await;
        let (info, script) = {
            let mut st = self.lock();
            let Some(i) = st.owners.remove(sprite_id) else {
                return;
            };
            let Some(slot) = st.slots.get_mut(&i) else {
                return;
            };
            slot.owner = None;
            slot.policy = Compiled::default();
            slot.learned.clear();
            // The allow sets matter only while the slot is wired, and wiring rewrites them.
            let mut script = String::new();
            if slot.wired {
                script = nft::replace_allowed(&self.table, &slot.info.ifname, &[]);
                script.push_str(&nft::unrestrict(&self.table, &slot.info.ifname));
                slot.wired = false;
            }
            (slot.info.clone(), script)
        };
        if let Err(e) = nft::apply(&script).await {
            tracing::warn!(slot = %info.ifname, "resetting a released slot: {e}");
        }
        // Nothing of the last sprite may linger in conntrack for the next one.
        let ip = IpAddr::V4(info.addrs.sprite);
        let _ = blocking_io(move || drop_conntrack(ip, &HashSet::new(), None)).await;
        let path = owner_file(&self.dir, &info.ifname);
        let _ = blocking_io(move || crate::fsutil::remove_file_if_exists(&path)).await;
        self.lock().idle.push_back(info.index);
        tracing::debug!(sprite_id, slot = %info.ifname, "network slot released");
        drop(_nft);
        self.trim_idle().await;
    }

    /// Removes idle slots beyond the pool size (after many sprites went cold, say).
    async fn trim_idle(self: &Arc<Self>) {
        loop {
            let victim = {
                let mut st = self.lock();
                if st.idle.len() <= self.cfg.pool_size {
                    return;
                }
                let Some(i) = st.idle.pop_back() else {
                    return;
                };
                st.slots.remove(&i)
            };
            let Some(slot) = victim else {
                continue;
            };
            for t in &slot.dns {
                t.abort();
            }
            {
                let _nft = self.nft.lock().await;
                let script = nft::remove_slot(&self.table, &slot.info.ifname, slot.wired);
                if let Err(e) = nft::apply(&script).await {
                    tracing::warn!(slot = %slot.info.ifname, "removing nft parts: {e}");
                }
            }
            let info = slot.info.clone();
            if let Err(e) = blocking_io(move || slot::destroy(&info)).await {
                tracing::warn!(slot = %slot.info.ifname, "removing a slot: {e}");
            }
        }
    }

    /// Puts `policy` in force for the sprite's slot (if it holds one): the allow sets are
    /// rewritten from what its resolver answered, and connections to destinations the new
    /// policy blocks are cut.
    pub async fn set_policy(&self, sprite_id: &str, policy: &NetworkPolicy) -> io::Result<()> {
        let _nft = self.nft.lock().await;
        let compiled = Compiled::new(policy);
        let now = Instant::now();
        let (script, ip, gateway, keep, restricted) = {
            let mut st = self.lock();
            let Some(i) = st.owners.get(sprite_id).copied() else {
                return Ok(());
            };
            let Some(slot) = st.slots.get_mut(&i) else {
                return Ok(());
            };
            slot.learned.retain(|_, l| l.expires > now);
            slot.policy = compiled;
            let allowed = slot.allowed(now);
            let ifname = slot.info.ifname.clone();
            let restricted = slot.policy.is_restricted();
            // Unrestricted and not wired (every start without a policy): nothing to change,
            // no nft run on the start path.
            let mut script = String::new();
            if restricted {
                script = nft::replace_allowed(&self.table, &ifname, &allowed);
                script.push_str(&nft::restrict(&self.table, &ifname));
            } else if slot.wired {
                script = nft::unrestrict(&self.table, &ifname);
            }
            let keep: HashSet<IpAddr> = allowed.iter().map(|(a, _)| *a).collect();
            (
                script,
                IpAddr::V4(slot.info.addrs.sprite),
                IpAddr::V4(slot.info.addrs.gateway),
                keep,
                restricted,
            )
        };
        nft::apply(&script).await?;
        {
            let mut st = self.lock();
            if let Some(slot) = st
                .owners
                .get(sprite_id)
                .copied()
                .and_then(|i| st.slots.get_mut(&i))
            {
                slot.wired = restricted;
            }
        }
        if restricted {
            let cut = blocking_io(move || drop_conntrack(ip, &keep, Some(gateway))).await?;
            if cut > 0 {
                tracing::info!(sprite_id, cut, "policy change cut connections");
            }
        }
        Ok(())
    }

    /// Whether the resolver of slot `index` may answer `name`.
    pub fn dns_allows(&self, index: u32, name: &str) -> bool {
        let st = self.lock();
        st.slots
            .get(&index)
            .is_some_and(|s| s.owner.is_some() && s.policy.allows(name))
    }

    /// Records what the resolver of slot `index` answered for `name` and, under a restrictive
    /// policy, lets the sprite reach those addresses (before the answer goes out). `false`
    /// when the policy changed meanwhile and now denies `name`.
    pub async fn learn(&self, index: u32, name: &str, addrs: &[(IpAddr, u32)]) -> io::Result<bool> {
        // Under the nft lock, so that a concurrent policy change sees this either wholly
        // before or wholly after itself.
        let _nft = self.nft.lock().await;
        let now = Instant::now();
        let script = {
            let mut st = self.lock();
            let Some(slot) = st.slots.get_mut(&index) else {
                return Ok(false);
            };
            if slot.owner.is_none() {
                return Ok(false);
            }
            if !slot.policy.allows(name) {
                return Ok(false);
            }
            slot.learned.retain(|_, l| l.expires > now);
            let mut fresh = Vec::new();
            for (ip, ttl) in addrs {
                let want = Duration::from_secs(u64::from(*ttl)).clamp(MIN_ALLOW, MAX_ALLOW);
                let entry = slot.learned.entry(*ip).or_insert_with(|| Learned {
                    names: BTreeSet::new(),
                    expires: now,
                });
                let new_name = entry.names.insert(name.to_string());
                // Refresh when less than half of the wanted time is left, or when the address
                // was learned only under names an earlier policy allowed.
                if entry.expires < now + want / 2 || new_name {
                    entry.expires = entry.expires.max(now + want);
                    let left = entry.expires.duration_since(now).as_secs();
                    fresh.push((*ip, left));
                }
            }
            if !slot.policy.is_restricted() || fresh.is_empty() {
                return Ok(true);
            }
            nft::add_allowed(&self.table, &slot.info.ifname, &fresh)
        };
        nft::apply(&script).await.map(|()| true)
    }
}

/// Deletes the conntrack entries of connections from `src`, except those to `keep` or to
/// `except` (its gateway: DNS). Returns how many went.
fn drop_conntrack(
    src: IpAddr,
    keep: &HashSet<IpAddr>,
    except: Option<IpAddr>,
) -> io::Result<usize> {
    let mut nl = netlink::Netlink::netfilter()?;
    let v6 = src.is_ipv6();
    let mut n = 0;
    for (tuple, s, d) in nl.ct_dump(v6)? {
        if s == src && !keep.contains(&d) && Some(d) != except {
            nl.ct_delete(v6, &tuple)?;
            n += 1;
        }
    }
    Ok(n)
}
