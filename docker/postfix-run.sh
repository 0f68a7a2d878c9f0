#!/bin/bash
# Postfix in the rig: the same main.cf/master.cf templates as the native end-to-end tests
# (tests/e2e/), filled in for this container, run in the foreground.
set -euo pipefail
dir=/var/spool/rig
mkdir -p "$dir/etc" "$dir/queue" "$dir/data"
for f in main.cf master.cf; do
    sed -e "s#@DIR@#$dir#g" -e "s#@SMTP_PORT@#${SMTP_PORT}#g" -e "s#@MILTER@#${MILTER}#g" \
        -e "s#@RELAY@#${RELAY}#g" -e "s#@HOSTNAME@#${MYHOSTNAME}#g" "/e2e/$f" > "$dir/etc/$f"
done
chown postfix:postfix "$dir/data"
: > "$dir/maillog"
tail -F "$dir/maillog" &
exec /usr/sbin/postfix -c "$dir/etc" start-fg
