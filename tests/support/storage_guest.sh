# Runs inside the QEMU guest as root; tests/test_storage_qemu.py prepends PY= and OUT=.
# The storage probe on ext4 on a device-mapper device over an emulated NVMe namespace:
# healthy (a linear table), slow (a `delay` table: 200 ms on every I/O), then hung
# (`dmsetup suspend`, never resumed for two minutes and more), then resumed. One daemon
# the whole way through; its expositions go to $OUT, the test asserts outside.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# No udev in the guest: libdevmapper makes the /dev/mapper nodes itself.
export DM_DISABLE_UDEV=1
ip link set lo up
cd /tmp
mount -t tmpfs tmpfs /run  # dmsetup keeps its lock there; the host root is read-only
DM=nodeslo-state
TARGET=/tmp/state/nodeslo
ns=$(basename "$(ls -d /sys/class/nvme/nvme0/nvme0n* | head -n 1)")
sectors=$(blockdev --getsz "/dev/$ns")

# The port a daemon logged once it listens; empty if it exited first.
port_of() {
    for _ in $(seq 3000); do
        port=$(sed -n 's/.*"msg": "listening".*"address": "127.0.0.1:\([0-9]*\)".*/\1/p' "$1")
        [ -n "$port" ] && { echo "$port"; return 0; }
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
}
scrape() { busybox wget -q -O - "http://127.0.0.1:$port/metrics"; }
# A scrape, and the guest's monotonic clock at it (for rates over the phases).
capture() { cut -d' ' -f1 /proc/uptime >"$OUT/$1.uptime"; scrape >"$OUT/$1.prom"; }
table() { echo "0 $sectors $1" | dmsetup "$2" "$DM"; }

# 0. A linear device-mapper table over the namespace, ext4 on it, the probe's directory.
{
    modprobe dm-mod && modprobe dm-delay && modprobe ext4 &&
        table "linear /dev/$ns 0" create &&
        mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "/dev/mapper/$DM" &&
        mkdir -p /tmp/state && mount "/dev/mapper/$DM" /tmp/state
    echo "exit $?"
} >"$OUT/dm-create.log" 2>&1
dmsetup table "$DM" >"$OUT/table-linear.txt" 2>&1

# 1. The daemon with the storage probe only, at 10 operations per second. As root: a
#    probe process is started by exec'ing $PY, which lives under /root on the test
#    machines (see nvme_guest.sh, step 5).
"$PY" -m nodeslo serve --web.listen-address=127.0.0.1:0 --collector.disable-defaults \
    --no-probe.wakeup --probe.storage --probe.storage.target="$TARGET" \
    --probe.storage.rate=10 --log.format=json >/dev/null 2>"$OUT/serve.log" &
daemon=$!
port=$(port_of "$OUT/serve.log" "$daemon")
# Healthy: once the probe process reports and its operations succeed (Python takes a
# minute to start under emulation), a few seconds of it.
for _ in $(seq 600); do
    scrape | grep -q '^nodeslo_probe_up{probe="storage"} 1.0$' && break
    sleep 0.5
done
sleep 4
capture healthy

# 2. Slow: every I/O delayed by 200 ms (dm-delay), swapped in as LVM would.
{
    dmsetup suspend "$DM" && table "delay /dev/$ns 0 200" reload && dmsetup resume "$DM"
    echo "exit $?"
} >"$OUT/dm-delay.log" 2>&1
dmsetup table "$DM" >"$OUT/table-delay.txt" 2>&1
sleep 3
capture slow-1
sleep 10
capture slow-2

# 3. Hung: the table suspended (the file system frozen, I/O queued) and left so.
{ dmsetup suspend "$DM"; echo "exit $?"; } >"$OUT/dm-suspend.log" 2>&1
dmsetup info "$DM" >"$OUT/info-suspended.txt" 2>&1
sleep 10
capture hung-1
sleep 130
capture hung-2
# The probe's threads, blocked in the kernel (state D), while the process reports on.
probe=$(grep -l 'nodeslo.probes.storage' /proc/[0-9]*/cmdline 2>/dev/null | head -n 1 | cut -d/ -f3)
for task in /proc/"$probe"/task/*; do
    echo "$(cat "$task/comm") $(cut -d' ' -f3 "$task/stat") $(cat "$task/wchan" 2>/dev/null)"
done >"$OUT/probe-tasks.txt"

# 4. Resumed: what was queued completes, and the probe measures again.
{ dmsetup resume "$DM"; echo "exit $?"; } >"$OUT/dm-resume.log" 2>&1
sleep 5
capture resumed
kill "$daemon"; wait "$daemon"; echo "exit $?" >>"$OUT/serve.log"
umount /tmp/state && dmsetup remove "$DM"
echo done >"$OUT/done"
