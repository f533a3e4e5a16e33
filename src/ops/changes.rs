//! Backends added, drained and removed at run time through the admin API, kept apart from the
//! configuration file so that every reload applies them again.
//!
//! The rule: runtime changes outlive reloads and are forgotten on restart. A reload reads the
//! file, then [`RuntimeChanges::settled`] drops what the file has made moot (an added backend
//! the file now lists is the file's from then on; a removal of a backend the file no longer
//! lists is done), and [`RuntimeChanges::apply`] lays the rest over the file's pools.
//!
//! Backends found by DNS (`ops::discovery`) are recorded here as additions marked with the
//! entry they came from: they outlive a reload while the file keeps that entry.
//!
//! A value of this type lives in each `runtime::State` and is replaced with it; nothing here
//! is shared or locked. Pure: no I/O.

use crate::config::{Config, ServerConfig};

/// One backend in one pool, by the pool's name and the backend's URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub pool: String,
    pub url: String,
}

impl Place {
    pub fn new(pool: &str, url: &str) -> Place {
        Place { pool: pool.to_string(), url: url.to_string() }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeChanges {
    /// Backends added at run time, by pool name, in the order they came.
    added: Vec<(String, ServerConfig)>,
    /// Backends taken out at run time.
    removed: Vec<Place>,
    /// Backends that get no new exchanges.
    drained: Vec<Place>,
    /// Drained backends to take out once their in-flight exchanges end.
    removing: Vec<Place>,
}

impl RuntimeChanges {
    /// Adds `server` to `pool`, undoing an earlier removal of the same URL. (When the file
    /// lists that URL itself, the file's settings for it apply again from the next reload.)
    pub fn add(&mut self, pool: &str, server: ServerConfig) {
        let place = Place::new(pool, &server.url);
        self.forget(&place);
        self.removed.retain(|p| *p != place);
        self.added.push((pool.to_string(), server));
    }

    /// Gives an added backend new settings (a weight found by DNS changed), keeping its
    /// place and any drain.
    pub fn update(&mut self, pool: &str, server: ServerConfig) {
        for (name, added) in &mut self.added {
            if name == pool && added.url == server.url {
                *added = server.clone();
            }
        }
    }

    /// The backends of `pool` added for the DNS entry `name`.
    pub fn discovered<'a>(&'a self, pool: &'a str, name: &'a str) -> impl Iterator<Item = &'a ServerConfig> + 'a {
        self.added.iter().filter(move |(p, s)| p == pool && s.discovered_from.as_deref() == Some(name)).map(|(_, s)| s)
    }

    pub fn drain(&mut self, place: &Place) {
        if !self.drained.contains(place) {
            self.drained.push(place.clone());
        }
    }

    pub fn undrain(&mut self, place: &Place) {
        self.drained.retain(|p| p != place);
        self.removing.retain(|p| p != place);
    }

    /// Drains `place` now and marks it to be removed once idle.
    pub fn begin_removal(&mut self, place: &Place) {
        self.drain(place);
        if !self.removing.contains(place) {
            self.removing.push(place.clone());
        }
    }

    /// Takes `place` out of its pool.
    pub fn remove(&mut self, place: &Place) {
        let was_added = self.added.iter().any(|(pool, s)| *pool == place.pool && s.url == place.url);
        self.forget(place);
        if !was_added && !self.removed.contains(place) {
            self.removed.push(place.clone());
        }
    }

    fn forget(&mut self, place: &Place) {
        self.added.retain(|(pool, s)| !(*pool == place.pool && s.url == place.url));
        self.drained.retain(|p| p != place);
        self.removing.retain(|p| p != place);
    }

    pub fn is_drained(&self, place: &Place) -> bool {
        self.drained.contains(place)
    }

    /// Backends waiting for their in-flight exchanges to end before removal.
    pub fn removing(&self) -> &[Place] {
        &self.removing
    }

    pub fn is_removing(&self, place: &Place) -> bool {
        self.removing.contains(place)
    }

    pub fn was_added(&self, place: &Place) -> bool {
        self.added.iter().any(|(pool, s)| *pool == place.pool && s.url == place.url)
    }

    /// These changes as they stand against `file`, a configuration freshly read: what the
    /// file now says itself, or made impossible, is dropped.
    pub fn settled(&self, file: &Config) -> RuntimeChanges {
        let listed = |place: &Place| {
            file.pools.iter().any(|p| p.name == place.pool && p.servers.iter().any(|s| s.url == place.url))
        };
        // A backend found by DNS stays while its pool still has the entry it came from.
        let has_source = |pool: &str, s: &ServerConfig| {
            file.pools.iter().any(|p| {
                p.name == pool && s.discovered_from.as_ref().is_none_or(|from| p.dns.iter().any(|d| d.name == *from))
            })
        };
        let added: Vec<_> = self
            .added
            .iter()
            .filter(|(pool, s)| has_source(pool, s) && !listed(&Place::new(pool, &s.url)))
            .cloned()
            .collect();
        let still_known =
            |place: &&Place| listed(place) || added.iter().any(|(p, s)| *p == place.pool && s.url == place.url);
        RuntimeChanges {
            removed: self.removed.iter().filter(|p| listed(p)).cloned().collect(),
            drained: self.drained.iter().filter(still_known).cloned().collect(),
            removing: self.removing.iter().filter(still_known).cloned().collect(),
            added,
        }
    }

    /// `config` with the removals taken out and the additions appended to their pools.
    pub fn apply(&self, mut config: Config) -> Config {
        for pool in &mut config.pools {
            pool.servers.retain(|s| !self.removed.contains(&Place::new(&pool.name, &s.url)));
            for (name, server) in &self.added {
                if *name == pool.name && !pool.servers.iter().any(|s| s.url == server.url) {
                    pool.servers.push(server.clone());
                }
            }
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::server_from_url;

    fn config(urls: &[&str]) -> Config {
        let servers: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
        let json = format!(r#"{{"listen": "127.0.0.1:0", "servers": [{}]}}"#, servers.join(","));
        Config::parse(&json, "test.json").unwrap()
    }

    fn urls(config: &Config) -> Vec<&str> {
        config.pools[0].servers.iter().map(|s| s.url.as_str()).collect()
    }

    const A: &str = "http://127.0.0.1:5001";
    const B: &str = "http://127.0.0.1:5002";
    const C: &str = "http://127.0.0.1:5003";

    #[test]
    fn added_backends_follow_the_file_and_removed_ones_leave_it() {
        let mut changes = RuntimeChanges::default();
        changes.add("default", server_from_url(C).unwrap());
        changes.remove(&Place::new("default", A));
        assert_eq!(urls(&changes.apply(config(&[A, B]))), [B, C]);
    }

    #[test]
    fn added_backends_survive_a_reload_until_the_file_lists_them() {
        let mut changes = RuntimeChanges::default();
        changes.add("default", server_from_url(C).unwrap());
        let reloaded = config(&[B]);
        let settled = changes.settled(&reloaded);
        assert_eq!(urls(&settled.apply(reloaded)), [B, C]);
        let now_listed = config(&[C, B]);
        let settled = changes.settled(&now_listed);
        assert!(!settled.was_added(&Place::new("default", C)));
        assert_eq!(urls(&settled.apply(now_listed)), [C, B]);
    }

    #[test]
    fn removing_an_added_backend_leaves_no_trace() {
        let mut changes = RuntimeChanges::default();
        changes.add("default", server_from_url(C).unwrap());
        changes.begin_removal(&Place::new("default", C));
        assert!(changes.is_drained(&Place::new("default", C)));
        changes.remove(&Place::new("default", C));
        assert_eq!(changes, RuntimeChanges::default());
    }

    #[test]
    fn adding_back_a_removed_file_backend_undoes_the_removal() {
        let mut changes = RuntimeChanges::default();
        changes.remove(&Place::new("default", A));
        let effective = changes.apply(config(&[A, B]));
        assert_eq!(urls(&effective), [B]);
        changes.add("default", server_from_url(A).unwrap());
        assert_eq!(urls(&changes.apply(effective)), [B, A]);
        assert_eq!(urls(&changes.apply(config(&[A, B]))), [A, B]);
        assert_eq!(changes.settled(&config(&[A, B])), RuntimeChanges::default());
    }

    #[test]
    fn drains_outlive_a_reload_while_the_backend_is_listed() {
        let mut changes = RuntimeChanges::default();
        changes.drain(&Place::new("default", A));
        changes.begin_removal(&Place::new("default", B));
        let settled = changes.settled(&config(&[A, B]));
        assert!(settled.is_drained(&Place::new("default", A)));
        assert!(settled.is_removing(&Place::new("default", B)));
        let settled = changes.settled(&config(&[C]));
        assert_eq!(settled, RuntimeChanges::default());
    }

    #[test]
    fn backends_found_by_dns_outlive_a_reload_while_their_entry_stays() {
        let with_entry = |entry: &str| {
            let json = format!(r#"{{"listen": "127.0.0.1:0", "servers": ["{A}", {{"dns": "{entry}"}}]}}"#);
            Config::parse(&json, "test.json").unwrap()
        };
        let mut found = server_from_url(C).unwrap();
        found.discovered_from = Some("web.test:5003".into());
        let mut changes = RuntimeChanges::default();
        changes.add("default", found.clone());
        let kept = changes.settled(&with_entry("web.test:5003"));
        assert_eq!(kept.discovered("default", "web.test:5003").collect::<Vec<_>>(), [&found]);
        let dropped = changes.settled(&with_entry("other.test:5003"));
        assert_eq!(dropped, RuntimeChanges::default());
        let mut heavier = found.clone();
        heavier.weight = 7;
        changes.update("default", heavier);
        assert_eq!(changes.discovered("default", "web.test:5003").next().map(|s| s.weight), Some(7));
    }

    #[test]
    fn changes_to_a_pool_the_file_dropped_are_forgotten() {
        let mut changes = RuntimeChanges::default();
        changes.add("gone", server_from_url(C).unwrap());
        assert_eq!(changes.settled(&config(&[A])), RuntimeChanges::default());
    }
}
