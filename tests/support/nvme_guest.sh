# Runs inside the QEMU guest as root; tests/test_nvme_qemu.py prepends PY= and OUT=.
# Everything it learns goes to $OUT (the writable share); the test asserts outside.
# Python starts slowly under emulation (about a minute over 9p), so it is started as
# few times as possible, and the starts overlap.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
ip link set lo up
cd /tmp
ls /sys/class/nvme >"$OUT/controllers.txt"
controllers=$(cat "$OUT/controllers.txt")

# `nodeslo serve` as root, dropping to nobody, logging to $1.
serve() {
    log=$1; shift
    "$PY" -m nodeslo serve --web.listen-address=127.0.0.1:0 --collector.disable-defaults \
        --collector.nvme --no-probe.storage --no-probe.wakeup --run-as-user nobody \
        --log.format=json "$@" >/dev/null 2>"$log" &
}
# The port a daemon logged once it listens; empty if it exited first.
port_of() {
    for _ in $(seq 3000); do
        port=$(sed -n 's/.*"msg": "listening".*"address": "127.0.0.1:\([0-9]*\)".*/\1/p' "$1")
        [ -n "$port" ] && { echo "$port"; return 0; }
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
}
scrape() { busybox wget -q -O - "http://127.0.0.1:$1/metrics"; }

# 1. Two daemons start at once: one on the devices through its forked helper, one
#    replaying $OUT/dump (empty for now; it polls every second until the dump lands).
serve "$OUT/live.log"
main=$!
serve "$OUT/replay.log" --collector.nvme.replay-dir "$OUT/dump" --collector.nvme.poll-interval 1s
replay=$!
live_port=$(port_of "$OUT/live.log" "$main")
scrape "$live_port" >"$OUT/live.prom"
cat "/proc/$main/status" >"$OUT/main.status"
# One pass over /proc (a process per file is slow under emulation); Pid precedes PPid.
helper=$(cat /proc/[0-9]*/status 2>/dev/null |
    awk -v parent="$main" '/^Pid:/ {pid = $2} /^PPid:/ && $2 == parent {print pid}')
cat "/proc/$helper/status" >"$OUT/helper.status"

# 2. Meanwhile: capture every controller, and show the ioctl refused without privilege,
#    with an fd opened as root by a process that then dropped privileges as the daemon
#    does, and by opening the device as that user.
"$PY" -m nodeslo nvme dump $controllers "$OUT/dump" >"$OUT/dump.json" 2>"$OUT/dump.err" &
dump=$!
"$PY" - >"$OUT/unprivileged.json" 2>&1 <<'PYTHON' &
import json, os
from nodeslo import privileges
from nodeslo.nvme import ioctl
fd = ioctl.open_controller("/dev/nvme0")
privileges.drop_to_user("nobody")
result = {"uid": os.getuid(), "caps": privileges.capabilities()}
try:
    ioctl.submit(fd, ioctl.get_log_page(0x02, 512), 5000)
    result["ioctl_errno"] = 0
except OSError as exc:
    result["ioctl_errno"] = exc.errno
try:
    os.close(ioctl.open_controller("/dev/nvme0"))
    result["open_errno"] = 0
except OSError as exc:
    result["open_errno"] = exc.errno
print(json.dumps(result))
PYTHON
unprivileged=$!

# 3. nvme-cli's view of the same controllers, after the daemon's poll.
for c in $controllers; do
    nvme smart-log "/dev/$c" -o json >"$OUT/smart-log-$c.json" 2>&1
    nvme id-ctrl "/dev/$c" -o json >"$OUT/id-ctrl-$c.json" 2>&1
done
wait "$dump"; echo "exit $?" >>"$OUT/dump.err"
wait "$unprivileged"
kill "$main"; wait "$main"; echo "exit $?" >>"$OUT/live.log"

# 4. The capture, replayed: once every controller is up there, scrape it.
replay_port=$(port_of "$OUT/replay.log" "$replay")
for _ in $(seq 600); do
    scrape "$replay_port" >"$OUT/replay.prom"
    [ "$(grep -c '^nodeslo_nvme_smart_up{.*} 1.0$' "$OUT/replay.prom")" -eq "$(echo $controllers | wc -w)" ] && break
    sleep 0.5
done
kill "$replay"; wait "$replay"; echo "exit $?" >>"$OUT/replay.log"
echo done >"$OUT/done"
