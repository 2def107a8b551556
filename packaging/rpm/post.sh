# vault-locator %post: $1 is 1 on install, 2 on upgrade.
if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers vault-locator.conf || :
fi
chown root:vault-locator /etc/vault-locator/config.toml 2>/dev/null || :
chmod 0640 /etc/vault-locator/config.toml 2>/dev/null || :
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
    if [ "$1" -eq 1 ]; then
        systemctl enable --now vault-locator.service || :
    fi
    systemctl try-reload-or-restart systemd-resolved.service || :
fi
