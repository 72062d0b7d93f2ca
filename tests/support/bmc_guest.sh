# Runs inside the QEMU guest as root; tests/test_bmc_qemu.py prepends PY= and OUT=.
# The host drives the simulated BMC between phases: the guest writes $OUT/phase-NAME
# when it has captured a phase and waits for $OUT/go-NEXT before the next one.
# Everything it learns goes to $OUT; the test asserts outside. Python starts slowly
# under emulation (about a minute over 9p), so the starts overlap.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
ip link set lo up
cd /tmp
modprobe ipmi_si && modprobe ipmi_devintf
ls -ln /dev/ipmi0 >"$OUT/devnode.txt" 2>&1

port_of() {
    for _ in $(seq 3000); do
        port=$(sed -n 's/.*"msg": "listening".*"address": "127.0.0.1:\([0-9]*\)".*/\1/p' "$1")
        [ -n "$port" ] && { echo "$port"; return 0; }
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
}
scrape() { busybox wget -q -O - "http://127.0.0.1:$1/metrics"; }
# Scrape into $2 until the exposition matches the regex $3 (at most about a minute).
scrape_until() {
    for _ in $(seq 600); do
        scrape "$1" >"$2.tmp" && grep -q "$3" "$2.tmp" && break
        sleep 0.1
    done
    mv "$2.tmp" "$2"
}
wait_for() { for _ in $(seq 3000); do [ -e "$OUT/$1" ] && return 0; sleep 0.1; done; return 1; }
# ipmitool, again if it fails: its first command after another process sometimes reads
# a stale answer ("unexpected ID").
ipmi() {
    for _ in 1 2 3; do ipmitool "$@" && return 0; sleep 0.5; done
    return 1
}
# ipmitool's view of phase $1: sensors with thresholds, the SDR list, each sensor's raw
# reading (state bits), the SEL.
ipmitool_view() {
    ipmi sensor >"$OUT/ipmitool-sensor-$1.txt" 2>&1
    ipmi sdr elist >"$OUT/ipmitool-sdr-$1.txt" 2>&1
    : >"$OUT/ipmitool-raw-$1.txt"
    for n in $(seq 1 15); do
        echo "$n $(ipmi raw 0x04 0x2d "$n" 2>&1)" >>"$OUT/ipmitool-raw-$1.txt"
    done
    ipmi sel list >"$OUT/ipmitool-sel-$1.txt" 2>&1
    ipmi sel info >"$OUT/ipmitool-selinfo-$1.txt" 2>&1
}

# 1. The daemon: started as root, it forks the IPMI helper and drops to nobody; polls
#    every second. Meanwhile, a recording of the healthy BMC (as root, straight to the
#    device) and a helper run as its own service, for the refusal test.
"$PY" -m nodeslo serve --web.listen-address=127.0.0.1:0 --collector.disable-defaults \
    --collector.bmc --collector.bmc.poll-interval=1s --collector.bmc.command-timeout=2s \
    --no-probe.storage --no-probe.wakeup --run-as-user nobody --log.format=json \
    >/dev/null 2>"$OUT/daemon.log" &
main=$!
"$PY" -m nodeslo bmc dump "$OUT/healthy.json" >"$OUT/healthy-decoded.json" \
    2>"$OUT/healthy-dump.err" &
dump=$!
# Its socket in a directory it creates: it refuses one others may write (/tmp itself).
"$PY" -m nodeslo bmc-helper --socket /tmp/nodeslo-bmc/helper.sock --socket-mode 0666 \
    --allow-user nobody --log.format=json 2>"$OUT/standalone-helper.log" &
standalone=$!
port=$(port_of "$OUT/daemon.log" "$main")
scrape_until "$port" "$OUT/healthy.prom" '^nodeslo_bmc_up{reason=""} 1.0$'
cat "/proc/$main/status" >"$OUT/daemon.status"
helper=$(cat /proc/[0-9]*/status 2>/dev/null |
    awk -v parent="$main" '/^Pid:/ {pid = $2} /^PPid:/ && $2 == parent {print pid}')
cat "/proc/$helper/status" >"$OUT/helper.status"
wait "$dump"; echo "exit $?" >>"$OUT/healthy-dump.err"
ipmitool_view healthy

# 2. What the whitelist refuses, through the standalone helper, from a process that
#    dropped to nobody as the daemon does; and nobody opening the device itself.
ipmi chassis status >"$OUT/chassis-before.txt" 2>&1
for _ in $(seq 600); do [ -S /tmp/nodeslo-bmc/helper.sock ] && break; sleep 0.1; done
cat "/proc/$standalone/status" >"$OUT/standalone-helper.status"
"$PY" - >"$OUT/refusals.json" 2>&1 <<'PYTHON'
import errno, json, os, socket
from nodeslo import privileges
from nodeslo.ipmi import helper as h
from nodeslo.privsep.server import unpack_response
privileges.drop_to_user("nobody")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
sock.connect("/tmp/nodeslo-bmc/helper.sock")
sock.settimeout(10)
tries = {
    "chassis_control_power_down": (0x00, 0x02, b"\x00"),
    "chassis_control_power_cycle": (0x00, 0x02, b"\x02"),
    "set_sensor_thresholds": (0x04, 0x26, bytes([5, 0x38, 0, 0, 0, 90, 95, 99])),
    "set_sensor_reading": (0x04, 0x30, bytes([5, 0x01, 90])),
    "clear_sel": (0x0A, 0x47, bytes([0, 0, 0x43, 0x4C, 0x52, 0xAA])),
    "set_sel_time": (0x0A, 0x49, bytes([0, 0, 0, 0])),
    "add_sel_entry": (0x0A, 0x44, bytes(8)),
    "cold_reset": (0x06, 0x02, b""),
    "master_write_read": (0x06, 0x52, bytes([0x01, 0xA0, 0x00, 0x00])),
    "send_message": (0x06, 0x34, bytes([0x00, 0x20, 0x00])),
    "get_sdr_wrong_length": (0x0A, 0x23, bytes(7)),
    "get_device_id": (0x06, 0x01, b""),
    "get_chassis_status": (0x00, 0x01, b""),
}
out = {}
for number, (name, (netfn, cmd, data)) in enumerate(tries.items(), 1):
    sock.send(h.REQUEST.pack(number, netfn, cmd, 0, len(data), data.ljust(8, b"\0"), 5000))
    response = unpack_response(sock.recv(4096), 272)
    out[name] = {"id": response.request_id, "errno": response.error, "data": response.data.hex()}
try:
    os.close(os.open("/dev/ipmi0", os.O_RDWR))
    out["open_as_nobody"] = 0
except OSError as exc:
    out["open_as_nobody"] = exc.errno
out["uid"] = os.getuid()
print(json.dumps(out))
PYTHON
ipmi chassis status >"$OUT/chassis-after.txt" 2>&1
ipmi sel info >"$OUT/selinfo-after-refusals.txt" 2>&1
kill "$standalone"; wait "$standalone"
touch "$OUT/phase-healthy"

# 3. Faults injected by the host: PSU2 failed with its input lost, redundancy lost,
#    FAN1 at 800 RPM, inlet at 42 °C, DIMM C uncorrectable ECC, 12V at 11.66 V.
wait_for go-faults || exit 1
scrape_until "$port" "$OUT/faults.prom" '^nodeslo_bmc_sensor_value{.*sensor="12V".*} 11.655$'
"$PY" -m nodeslo bmc dump "$OUT/faults.json" >"$OUT/faults-decoded.json" \
    2>"$OUT/faults-dump.err" &
dump=$!
ipmitool_view faults
wait "$dump"; echo "exit $?" >>"$OUT/faults-dump.err"
touch "$OUT/phase-faults"

# 4. The inlet at 46 °C: past its upper critical threshold.
wait_for go-hot || exit 1
scrape_until "$port" "$OUT/hot.prom" '^nodeslo_bmc_sensor_value{.*sensor="Inlet Temp".*} 46.0$'
ipmitool_view hot
touch "$OUT/phase-hot"

# 5. The BMC stops answering (the host killed the simulator): the daemon says so and
#    keeps its last values; a scrape still answers at once.
wait_for go-stale || exit 1
scrape_until "$port" "$OUT/stale.prom" '^nodeslo_bmc_up{reason="timeout"} 0.0$'
: >"$OUT/stale-scrape-ms.txt"
for _ in 1 2 3 4 5; do
    start=$(date +%s%N); scrape "$port" >/dev/null; end=$(date +%s%N)
    echo $(((end - start) / 1000000)) >>"$OUT/stale-scrape-ms.txt"
done
kill "$main"
for _ in $(seq 100); do kill -0 "$main" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$main" 2>/dev/null; then
    echo "still running 10s after SIGTERM" >>"$OUT/daemon.log"
    kill -9 "$main"
fi
wait "$main"; echo "exit $?" >>"$OUT/daemon.log"
echo done >"$OUT/done"
