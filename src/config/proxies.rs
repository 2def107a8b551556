//! `[[proxy]]`: listeners, what DNS answers for them, their API side, their routes.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::file::FileProxy;
use super::validate::{tcp_listener_taken, Check, Checked};
use super::{ClusterConfig, ProxyConfig, RouteAction};
use crate::proxy::route::DEFAULT_ROUTES;
use crate::vault::modes::Kind;

/// Vault's API port: the API side's port when `answer = true` leaves it unset.
const VAULT_API_PORT: u16 = 8200;

impl Check<'_> {
    pub(super) fn proxies(
        &self,
        proxies: Vec<FileProxy>,
        clusters: &[ClusterConfig],
        has_replication: bool,
        dns: &[SocketAddr],
    ) -> Checked<Vec<ProxyConfig>> {
        let mut out: Vec<ProxyConfig> = Vec::new();
        for (i, p) in proxies.into_iter().enumerate() {
            let key = |k: &str| format!("proxy[{i}].{k}");
            let cluster = self.proxy_cluster(&p, &key, clusters, has_replication)?;
            let listen = self.proxy_listen(&p, &key, &cluster, dns, &out)?;
            let api_listen = self.api_side(&p, &key, listen, dns, &out)?;
            let routes = self.routes(i, &p.routes)?;
            self.proxy_limits(&p, &key)?;
            out.push(ProxyConfig {
                cluster,
                listen,
                api_listen,
                answer: p.answer,
                on_leader_change: p.on_leader_change,
                routes,
                default_route: p.default_route,
                no_alpn: p.no_alpn,
                client_hello_timeout: p.client_hello_timeout,
                max_client_hello: p.max_client_hello,
                connect_timeout: p.connect_timeout,
                max_connections: p.max_connections,
                data_path: p.data_path,
            });
        }
        Ok(out)
    }

    /// A configured cluster, or a virtual one when there is a replication set.
    fn proxy_cluster(
        &self,
        p: &FileProxy,
        key: &dyn Fn(&str) -> String,
        clusters: &[ClusterConfig],
        has_replication: bool,
    ) -> Checked<String> {
        let Some(given) = &p.cluster else {
            return self.fail(
                key("cluster"),
                "is required: the cluster whose leader it reaches",
            );
        };
        let cluster = given.to_ascii_lowercase();
        let is_virtual = Kind::from_label(&cluster).is_some();
        if is_virtual && !has_replication {
            return self.fail(
                key("cluster"),
                format!("{cluster} exists only with a [replication] set"),
            );
        }
        if !is_virtual && !clusters.iter().any(|c| c.name == cluster) {
            return self.fail(
                key("cluster"),
                format!("no [[clusters]] entry is named {given:?}"),
            );
        }
        Ok(cluster)
    }

    /// The listener address, free among ours, and (with `answer`) a concrete IP that
    /// no other proxy of the cluster answers with.
    fn proxy_listen(
        &self,
        p: &FileProxy,
        key: &dyn Fn(&str) -> String,
        cluster: &str,
        dns: &[SocketAddr],
        before: &[ProxyConfig],
    ) -> Checked<SocketAddr> {
        let Some(given) = &p.listen else {
            return self.fail(key("listen"), "is required: the IP:port to listen on");
        };
        let Ok(listen) = given.parse::<SocketAddr>() else {
            return self.fail(
                key("listen"),
                format!("{given:?} is not an IP:port address"),
            );
        };
        if tcp_listener_taken(dns, before, listen) {
            return self.fail(
                key("listen"),
                format!("{listen} is already used by another listener"),
            );
        }
        if p.answer && before.iter().any(|o| o.answer && o.cluster == cluster) {
            return self.fail(
                key("answer"),
                format!("another [[proxy]] already answers DNS for {cluster}"),
            );
        }
        if p.answer && listen.ip().is_unspecified() {
            return self.fail(
                key("answer"),
                format!("{listen} is a wildcard address; DNS needs a concrete IP to answer"),
            );
        }
        Ok(listen)
    }

    /// The API side: given, or (proxy mode) the answered IP's port 8200, which must be
    /// free now: Vault itself often listens there on every address of the host.
    fn api_side(
        &self,
        p: &FileProxy,
        key: &dyn Fn(&str) -> String,
        listen: SocketAddr,
        dns: &[SocketAddr],
        before: &[ProxyConfig],
    ) -> Checked<Option<SocketAddr>> {
        let api = match p.api_listen.as_deref() {
            Some("") => return Ok(None),
            Some(a) => match a.parse::<SocketAddr>() {
                Ok(api) => api,
                Err(_) => {
                    return self.fail(
                        key("api_listen"),
                        format!("{a:?} is not an IP:port address (\"\" disables)"),
                    )
                }
            },
            None if p.answer => SocketAddr::new(listen.ip(), VAULT_API_PORT),
            None => return Ok(None),
        };
        if api == listen || tcp_listener_taken(dns, before, api) {
            return self.fail(
                key("api_listen"),
                format!("{api} is already used by another listener"),
            );
        }
        if p.answer && api.ip() != listen.ip() {
            return self.fail(
                key("api_listen"),
                format!(
                    "{api} is not on {}, the IP DNS answers for this proxy: clients of the \
                     answered name would not reach the API side",
                    listen.ip()
                ),
            );
        }
        if let Err(e) = crate::net::check_bindable(api) {
            let hint = if p.api_listen.is_none() {
                " (the default for answer = true; set api_listen to another address, or \
                 \"\" for none)"
            } else {
                ""
            };
            return self.fail(
                key("api_listen"),
                format!("the API side cannot be bound on {api}: {e}{hint}"),
            );
        }
        Ok(Some(api))
    }

    /// The built-in ALPN table with the file's routes laid over it.
    fn routes(
        &self,
        i: usize,
        given: &BTreeMap<String, RouteAction>,
    ) -> Checked<BTreeMap<String, RouteAction>> {
        let mut routes: BTreeMap<String, RouteAction> = DEFAULT_ROUTES
            .iter()
            .map(|(id, a)| (id.to_string(), *a))
            .collect();
        for (id, action) in given {
            if id.is_empty() || id.len() > 255 || !id.is_ascii() {
                return self.fail(
                    format!("proxy[{i}].routes.{id:?}"),
                    "an ALPN id is 1 to 255 ASCII bytes",
                );
            }
            routes.insert(id.clone(), *action);
        }
        Ok(routes)
    }

    fn proxy_limits(&self, p: &FileProxy, key: &dyn Fn(&str) -> String) -> Checked<()> {
        if p.client_hello_timeout.is_zero() {
            return self.fail(key("client_hello_timeout"), "must be above 0");
        }
        if !(512..=65536).contains(&p.max_client_hello) {
            return self.fail(
                key("max_client_hello"),
                "must be between 512 and 65536 bytes",
            );
        }
        if p.connect_timeout.is_zero() {
            return self.fail(key("connect_timeout"), "must be above 0");
        }
        if p.max_connections == 0 {
            return self.fail(key("max_connections"), "must be above 0");
        }
        Ok(())
    }
}
