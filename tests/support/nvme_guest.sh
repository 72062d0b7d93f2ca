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

# 0. A RAID10 over the controllers' namespaces with the real md driver, and ext4 on it
#    for the storage probe (step 5). Built before any daemon starts, and ext4's lazy
#    init done by mkfs, so that the drives are idle while steps 1-4 compare counters.
mount -t tmpfs tmpfs /run  # mdadm keeps its map there; the host root is read-only
members=$(for c in $controllers; do ls -d /sys/class/nvme/$c/${c}n*; done | xargs -n1 basename)
{
    modprobe raid10 && modprobe ext4 &&
        mdadm --create /dev/md0 --level=10 --raid-devices=4 --run --assume-clean \
            $(for m in $members; do echo "/dev/$m"; done) &&
        mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 /dev/md0
    echo "exit $?"
} >"$OUT/md-create.log" 2>&1
echo "$members" >"$OUT/md-members.txt"

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

# 1. Three daemons start at once: one on the devices through its forked helper, one
#    replaying $OUT/dump (empty for now; it polls every second until the dump lands),
#    and one with the redundancy collector too, for steps 6 and 7 (started now so that
#    its slow start overlaps the others').
serve "$OUT/live.log"
main=$!
serve "$OUT/replay.log" --collector.nvme.replay-dir "$OUT/dump" --collector.nvme.poll-interval 1s
replay=$!
serve "$OUT/late.log" --collector.redundancy
late=$!
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

# 5. The storage probe on the md array, and the array losing a member to the kernel's
#    own `mdadm --fail`: a daemon with the redundancy collector and the storage probe.
mkdir -p /tmp/state && mount /dev/md0 /tmp/state
# As root, unlike steps 1-4: a probe process is started by exec'ing $PY, which lives
# under /root on the test machines, out of nobody's reach (the daemon would log
# "cannot start ...: Permission denied" and report nodeslo_probe_up 0).
"$PY" -m nodeslo serve --web.listen-address=127.0.0.1:0 --collector.disable-defaults \
    --collector.redundancy --no-probe.wakeup --probe.storage \
    --probe.storage.target=/tmp/state/nodeslo --log.format=json >/dev/null 2>"$OUT/md.log" &
md=$!
md_port=$(port_of "$OUT/md.log" "$md")
cat /proc/mdstat >"$OUT/mdstat-healthy.txt"
# Until the probe has opened its file on md0 and measured both operations through it on
# the healthy array. Counts alone are not enough: intended starts missed while the probe
# file is first written (seconds under TCG) are counted too, before the target is open.
for _ in $(seq 240); do
    scrape "$md_port" >"$OUT/md-healthy.prom"
    grep -q '^nodeslo_probe_storage_target_info{device="md0",.*} 1.0$' "$OUT/md-healthy.prom" &&
        grep -q '^nodeslo_probe_up{probe="storage"} 1.0$' "$OUT/md-healthy.prom" &&
        [ "$(grep -c '^nodeslo_probe_io_latency_seconds_count{.*} [1-9]' "$OUT/md-healthy.prom")" -eq 2 ] &&
        break
    sleep 0.5
done
failed=$(echo "$members" | sed -n 2p)  # the second controller's: BAD00002, reliability degraded
mdadm /dev/md0 --fail "/dev/$failed" >"$OUT/md-fail.log" 2>&1
cat /proc/mdstat >"$OUT/mdstat-failed.txt"
for _ in $(seq 120); do
    scrape "$md_port" >"$OUT/md-degraded.prom"
    grep -q '^nodeslo_md_disks{device="md0",state="failed"} 1.0$' "$OUT/md-degraded.prom" && break
    sleep 0.5
done
kill "$md"; wait "$md"; echo "exit $?" >>"$OUT/md.log"

# 6. The array stopped (gone from sysfs), then re-assembled short of members the way
#    udev does at boot: `mdadm --incremental` without --run leaves it inactive.
late_port=$(port_of "$OUT/late.log" "$late")
scrape "$late_port" >"$OUT/late-before.prom"
umount /tmp/state
mdadm --stop /dev/md0 >"$OUT/md-stop.log" 2>&1
for _ in $(seq 120); do
    scrape "$late_port" >"$OUT/md-stopped.prom"
    grep -q '^nodeslo_md_info{' "$OUT/md-stopped.prom" || break
    sleep 0.5
done
{
    for m in $(echo "$members" | sed -n '1p;3p'); do mdadm --incremental "/dev/$m"; done
    echo "exit $?"
} >"$OUT/md-incremental.log" 2>&1
cat /proc/mdstat >"$OUT/mdstat-inactive.txt"
grep . /sys/block/md*/md/array_state /sys/block/md*/md/dev-*/state >"$OUT/md-inactive-sysfs.txt" 2>&1
for _ in $(seq 120); do
    scrape "$late_port" >"$OUT/md-inactive.prom"
    grep -q '^nodeslo_md_state{device="md[0-9]*",state="inactive"} 1.0$' "$OUT/md-inactive.prom" && break
    sleep 0.5
done
mdadm --stop --scan >>"$OUT/md-stop.log" 2>&1

# 7. A drive vanishes: the last controller is removed from the PCI bus.
gone=$(echo $controllers | tr ' ' '\n' | tail -n 1)
echo "$gone" >"$OUT/removed.txt"
echo 1 >"/sys/class/nvme/$gone/device/remove"
for _ in $(seq 120); do
    scrape "$late_port" >"$OUT/nvme-removed.prom"
    [ "$(grep -c '^nodeslo_nvme_info{' "$OUT/nvme-removed.prom")" -lt "$(echo $controllers | wc -w)" ] && break
    sleep 0.5
done
kill "$late"; wait "$late"; echo "exit $?" >>"$OUT/late.log"
echo done >"$OUT/done"
