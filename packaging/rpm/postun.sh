# vault-locator %postun: $1 is 0 on removal, 1 on upgrade.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart vault-locator.service || :
    fi
    systemctl try-reload-or-restart systemd-resolved.service || :
fi
