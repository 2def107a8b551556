# vault-locator %preun: $1 is 0 on removal, 1 on upgrade.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl disable --now vault-locator.service || :
fi
